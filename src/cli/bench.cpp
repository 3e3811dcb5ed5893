// `mach bench MODEL_DIR [--quant q4] [--quick] [--profile] [--streaming --expert-slots N]`: end-to-end figures of a checkpoint on this device as JSON
// lines (prefill, decode at several contexts, verify blocks, concurrent decode), each with its bandwidth
// limit. See engine/model_bench.hpp and docs/performance.md.
#include <fmt/format.h>

#include <filesystem>
#include <optional>
#include <sstream>
#include <vector>

#include "cli/commands.hpp"
#include "cli/expert_options.hpp"
#include "engine/model_bench.hpp"
#include "experts/expert_stats.hpp"
#include "gpu/context.hpp"
#include "model/model.hpp"

namespace mach::cli {
namespace {

struct BenchArgs {
  std::string model_dir;
  std::string quant = "q4";
  int device = -1;
  uint32_t max_batch = 64;
  double kv_cache_gb = 8;
  uint32_t repeats = 5;
  bool quick = false;
  ExpertArgs experts;
  std::string only;
  std::vector<uint32_t> contexts;
  bool profile = false;
  uint32_t profile_context = 0;
  uint32_t profile_tokens = 1;
  uint32_t profile_sequences = 1;
  std::vector<uint32_t> profile_after;  // after the figures, profile steps of these token counts (same load)
};

int run_bench(const BenchArgs& a) {
  auto fail = [](const Error& e) {
    fmt::print(stderr, "mach bench: {}\n", e.message);
    return 1;
  };
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant) return fail({Errc::invalid_argument, fmt::format("--quant {}: use bf16, f16, f32, q8_0 or q4", a.quant)});
  engine::BenchOptions bo;
  bo.repeats = a.repeats;
  if (a.quick) {  // small enough for lavapipe and tiny checkpoints: checks the harness, not the device
    bo.prefill_lengths = {64};
    bo.decode_contexts = {0, 128};
    bo.verify_blocks = {1, 2, 4};
    bo.verify_context = 64;
    bo.concurrency = {2, 4};
    bo.decode_steps = 4;
    bo.repeats = std::min<uint32_t>(a.repeats, 2);
    bo.probe_bytes = 16ull << 20;
    bo.warm_ms = 0;
  }
  auto context = gpu::Context::create({.device_index = a.device});
  if (!context) return fail(context.error());
  model::LoadOptions lo;
  lo.weight_type = *quant;
  lo.max_step_tokens = 512;
  lo.max_context = bo.max_context();
  lo.max_sequences = a.max_batch;
  lo.kv_cache_bytes = static_cast<uint64_t>(a.kv_cache_gb * 1073741824.0);
  if (auto r = apply_expert_options(a.experts, lo); !r) return fail(r.error());
  if (!a.only.empty()) {
    bo.prefill = bo.decode = bo.verify = bo.concurrent = false;
    std::stringstream list(a.only);
    for (std::string t; std::getline(list, t, ',');) {
      if (t == "prefill") bo.prefill = true;
      else if (t == "decode") bo.decode = true;
      else if (t == "verify") bo.verify = true;
      else if (t == "concurrent") bo.concurrent = true;
      else return fail({Errc::invalid_argument, fmt::format("--only {}: the tests are prefill, decode, verify and "
                                                            "concurrent", t)});
    }
  }
  if (!a.contexts.empty()) bo.decode_contexts = a.contexts;
  lo.max_context = bo.max_context();
  std::vector<std::string> notes;  // the load's notes (e.g. what --host-experts auto chose), as a JSON line
  lo.log = [&notes](const std::string& note) { notes.push_back(note); };
  auto model = model::load_model(a.model_dir, **context, lo);
  if (!model) return fail(model.error());
  std::optional<experts::Sidecar> sidecar;
  if (a.experts.streaming) {
    auto opened = experts::Sidecar::open(std::filesystem::path(a.model_dir) / experts::kSidecarDir);
    if (!opened) return fail(opened.error());
    sidecar = std::move(opened).value();
    bo.sidecar = &*sidecar;
  }
  const std::string residency = a.experts.streaming ? "streaming" : "resident";
  try {
    const auto emit = [&](const nlohmann::json& line) {
      nlohmann::json out = line;
      out["quant"] = a.quant;
      out["residency"] = residency;
      fmt::print("{}\n", out.dump());
      std::fflush(stdout);
    };
    if (!notes.empty()) emit({{"test", "load"}, {"notes", notes}});
    auto r = a.profile ? engine::profile_decode_step(**context, **model, a.profile_context, emit, a.profile_tokens,
                                                       a.profile_sequences)
                       : engine::run_model_bench(**context, **model, bo, emit);
    if (!r) return fail(r.error());
    // Profiles in the same run: loading a real-size model takes about a minute of device time per invocation.
    for (uint32_t tokens : a.profile ? std::vector<uint32_t>{} : a.profile_after) {
      if (auto p = engine::profile_decode_step(**context, **model, a.profile_context, emit, tokens,
                                                   a.profile_sequences);
          !p)
        return fail(p.error());
    }
    if (a.experts.streaming) {
      // The figures above are GPU time; a streaming step also stands still on the host while it loads
      // experts, which these counters (stall_ms, read_ms per layer) measure.
      nlohmann::json out = {{"test", "expert_streaming"}, {"quant", a.quant}, {"residency", residency}};
      out.update(experts::to_json((*model)->expert_stats()));
      fmt::print("{}\n", out.dump());
    }
    if (auto p = save_expert_profile(a.experts, **model); !p) return fail(p.error());
  } catch (const Exception& e) {
    return fail(e.error());
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  static BenchArgs a;
  auto* cmd = app.add_subcommand("bench", "measure prefill, decode, verify and batched decode against bandwidth");
  cmd->add_option("model", a.model_dir, "checkpoint directory")->required();
  cmd->add_option("--quant", a.quant, "weight format on the GPU (default q4)");
  cmd->add_option("--device", a.device, "Vulkan device index");
  cmd->add_option("--max-batch", a.max_batch, "sequence slots (the largest concurrency tested)");
  cmd->add_option("--kv-cache-gb", a.kv_cache_gb, "KV cache budget")->check(CLI::PositiveNumber);
  cmd->add_option("--repeats", a.repeats, "repeats per figure")->check(CLI::PositiveNumber);
  cmd->add_flag("--profile", a.profile,
                "instead of the figures: the GPU time of every op of one decode step (batch 1), largest first");
  cmd->add_option("--profile-context", a.profile_context, "context tokens before the profiled step (default 0)");
  cmd->add_option("--profile-tokens", a.profile_tokens,
                  "tokens of one sequence in the profiled step (default 1; 16 profiles a verify block, 512 a prefill chunk)");
  cmd->add_option("--profile-sequences", a.profile_sequences,
                  "sequences in the profiled step, each with --profile-tokens at --profile-context (default 1; 32 "
                  "profiles a decode step of 32 concurrent requests)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--profile-after", a.profile_after,
                  "after the figures, the per-op table of one step of each of these token counts (e.g. 1,16,512), "
                  "without loading the model again")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--quick", a.quick, "tiny sizes: checks the harness (CI), not the device");
  cmd->add_option("--only", a.only, "comma list of the tests to run: prefill, decode, verify, concurrent (default all)");
  cmd->add_option("--contexts", a.contexts, "context lengths of the decode test (default 0 4096 16384)")->delimiter(',');
  add_expert_options(cmd, a.experts);
  cmd->callback([&exit_code] { exit_code = run_bench(a); });
}

}  // namespace mach::cli
