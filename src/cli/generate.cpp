// `mach generate MODEL_DIR --prompt-ids 5,17,99 [--max-tokens N] [--temperature T] ... [--json]
//  [--dump-logits out.npy] [--prefix-cache [--cache-dir DIR]] [--streaming --expert-slots N | --expert-cache-gb G]`:
//  load a checkpoint onto the GPU and generate from token ids.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <fstream>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/expert_options.hpp"
#include "engine/generator.hpp"
#include "experts/expert_stats.hpp"
#include "experts/prune.hpp"
#include "engine/prefix_cache.hpp"
#include "engine/scheduler.hpp"
#include "gpu/context.hpp"
#include "model/model.hpp"
#include "model/npy.hpp"
#include "text/tokenizer.hpp"

namespace mach::cli {
namespace {

struct GenerateArgs {
  std::string model_dir;
  std::string prompt_ids;
  std::string prompt_text;
  uint32_t max_tokens = 16;
  float temperature = 1.0f;
  uint32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  std::string stop_ids;
  bool json = false;
  std::string dump_logits;
  std::string quant = "bf16";
  int device = -1;
  uint32_t max_context = 4096;
  uint32_t step_tokens = 256;
  std::string prompt_ids_file;
  std::string speculation = "none";
  uint32_t draft_max = 0;
  uint32_t max_batch = 8;
  double kv_cache_gb = 0;
  bool prefix_cache = false;
  std::string cache_dir;
  double cache_gb = 16;
  ExpertArgs experts;
};

Result<std::vector<uint32_t>> parse_ids(const std::string& text, const char* what);

Result<std::vector<std::vector<uint32_t>>> read_prompt_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Error{Errc::not_found, fmt::format("--prompt-ids-file {}: cannot open it", path)};
  std::vector<std::vector<uint32_t>> prompts;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto ids = parse_ids(line, "--prompt-ids-file");
    if (!ids) return Error{Errc::invalid_argument, fmt::format("{} line {}: {}", path, n, ids.error().message)};
    prompts.push_back(std::move(ids).value());
  }
  if (prompts.empty()) return Error{Errc::invalid_argument, fmt::format("--prompt-ids-file {} holds no prompt", path)};
  return prompts;
}

Result<std::vector<uint32_t>> parse_ids(const std::string& text, const char* what) {
  std::vector<uint32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    const unsigned long v = std::strtoul(item.c_str(), &end, 10);
    if (*end != '\0' || item[0] == '-' || v > UINT32_MAX)
      return Error{Errc::invalid_argument, fmt::format("{}: '{}' is not a token id", what, item)};
    ids.push_back(static_cast<uint32_t>(v));
  }
  return ids;
}

nlohmann::json result_json(const engine::SequenceResult& r, size_t prompt_tokens, const std::string& device) {
  return {{"tokens", r.tokens},
          {"finish_reason", r.finish_reason},
          {"prompt_tokens", prompt_tokens},
          {"speculation",
           {{"drafted", r.speculation.drafted},
            {"accepted", r.speculation.accepted},
            {"steps", r.speculation.steps},
            {"accepted_at", r.speculation.accepted_at},
            {"drafted_at", r.speculation.drafted_at}}},
          {"device", device}};
}

int run_generate(const GenerateArgs& a) {
  auto fail = [](const Error& e) {
    fmt::print(stderr, "mach generate: {}\n", e.message);
    return 1;
  };
  std::vector<std::vector<uint32_t>> prompts;
  std::optional<text::Tokenizer> tokenizer;
  if (!a.prompt_text.empty()) {
    if (!a.prompt_ids.empty() || !a.prompt_ids_file.empty())
      return fail({Errc::invalid_argument, "give one of --prompt, --prompt-ids and --prompt-ids-file"});
    auto t = text::Tokenizer::load(a.model_dir);
    if (!t && t.error().code == Errc::not_found)
      return fail({Errc::not_found, t.error().message + "; a checkpoint without a tokenizer (such as one written by "
                                                        "mach synth) takes token ids: --prompt-ids 1,2,3"});
    if (!t) return fail(t.error());
    tokenizer.emplace(std::move(t).value());
    // A raw prompt, as llama.cpp's -p: the tokenizer's own special tokens (Gemma's <bos>) are added.
    const auto ids = tokenizer->encode(a.prompt_text, {.match_special = true, .add_special_tokens = true});
    prompts.emplace_back(ids.begin(), ids.end());
    if (prompts[0].empty()) return fail({Errc::invalid_argument, "--prompt encodes to no token"});
  } else if (!a.prompt_ids_file.empty()) {
    if (!a.prompt_ids.empty()) return fail({Errc::invalid_argument, "give --prompt-ids or --prompt-ids-file, not both"});
    auto file = read_prompt_file(a.prompt_ids_file);
    if (!file) return fail(file.error());
    prompts = std::move(file).value();
  } else {
    auto prompt = parse_ids(a.prompt_ids, "--prompt-ids");
    if (!prompt) return fail(prompt.error());
    if (prompt->empty()) return fail({Errc::invalid_argument, "give the prompt with --prompt-ids 1,2,3"});
    prompts.push_back(std::move(prompt).value());
  }
  auto stop = parse_ids(a.stop_ids, "--stop-ids");
  if (!stop) return fail(stop.error());
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant) return fail({Errc::invalid_argument, fmt::format("--quant {}: use bf16, f16, f32, q8_0 or q4", a.quant)});
  const auto speculation = engine::parse_speculation(a.speculation);
  if (!speculation)
    return fail({Errc::invalid_argument,
                 fmt::format("--speculation {}: use none, ngram, summarization or classification", a.speculation)});
  if (!a.dump_logits.empty() && (prompts.size() > 1 || *speculation != engine::Speculation::none))
    return fail({Errc::invalid_argument, "--dump-logits takes one prompt and no speculation"});

  auto context = gpu::Context::create({.device_index = a.device});
  if (!context) return fail(context.error());
  model::LoadOptions lo;
  lo.weight_type = *quant;
  lo.max_context = a.max_context;
  lo.max_step_tokens = a.step_tokens;
  lo.max_sequences = a.dump_logits.empty() ? std::max<uint32_t>(1, a.max_batch) : 1;
  lo.kv_cache_bytes = static_cast<uint64_t>(a.kv_cache_gb * 1073741824.0);
  if (auto r = apply_expert_options(a.experts, lo); !r) return fail(r.error());
  lo.log = [](const std::string& line) { fmt::print(stderr, "mach generate: {}\n", line); };
  auto model = model::load_model(a.model_dir, **context, lo);
  if (!model) return fail(model.error());
  fmt::print(stderr, "mach generate: {}\n", (*model)->residency());
  const std::string device = (*context)->info().name;
  std::vector<uint32_t> stop_ids = *stop;
  for (int64_t id : (*model)->config().eos_token_ids)
    if (id >= 0) stop_ids.push_back(static_cast<uint32_t>(id));
  const engine::SamplingParams sampling{
      .temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p, .min_p = a.min_p, .seed = a.seed};

  std::unique_ptr<engine::PrefixCache> cache;
  if (a.prefix_cache) {
    // Blocks carry over between runs through the disk level (L2); within a run, prompts share them in L1.
    engine::PrefixCacheOptions po;
    po.cache_dir = a.cache_dir.empty() ? engine::default_prefix_cache_dir() : std::filesystem::path(a.cache_dir);
    po.l2_bytes = static_cast<uint64_t>(a.cache_gb * (1ull << 30));
    auto c = engine::PrefixCache::create((*model)->kv_cache(), (*model)->fingerprint(), po);
    if (!c) return fail(c.error());
    cache = std::move(c).value();
  }

  if (!a.dump_logits.empty()) {
    // The single-sequence path keeps the logits of every computed prompt position.
    engine::GenerateOptions go;
    go.sampling = sampling;
    go.max_tokens = a.max_tokens;
    go.stop_ids = stop_ids;
    go.prompt_logits = true;
    go.prefix_cache = cache.get();
    auto result = engine::generate(**context, **model, prompts[0], go);
    if (!result) return fail(result.error());
    if (!a.dump_logits.empty()) {
      const uint64_t shape[] = {prompts[0].size() - result->cached_tokens, (*model)->config().vocab_size};
      if (auto w = model::write_npy_f32(a.dump_logits, result->prompt_logits, shape); !w) return fail(w.error());
    }
    if (a.json) {
      nlohmann::json out = {{"tokens", result->tokens},         {"finish_reason", result->finish_reason},
                            {"prompt_tokens", prompts[0].size()}, {"prefill_ms", result->prefill_ms},
                            {"decode_ms", result->decode_ms},     {"device", device}};
      if (cache) {
        out["cached_tokens"] = result->cached_tokens;
        out["prefix_cache"] = cache->stats();
      }
      if (a.experts.streaming) out["experts"] = experts::to_json((*model)->expert_stats());
      fmt::print("{}\n", out.dump());
    } else {
      fmt::print("{}\n", fmt::join(result->tokens, ","));
    }
    if (auto r = save_expert_profile(a.experts, **model); !r) return fail(r.error());
    return 0;
  }

  engine::Scheduler scheduler(**context, **model, {.max_batch = lo.max_sequences, .prefix_cache = cache.get()});
  std::vector<uint32_t> ids;
  for (const auto& prompt : prompts) {
    engine::SequenceRequest req;
    req.prompt = prompt;
    req.sampling = sampling;
    req.max_tokens = a.max_tokens;
    req.stop_ids = stop_ids;
    req.speculation = *speculation;
    req.draft_max = a.draft_max;
    auto id = scheduler.submit(std::move(req));
    if (!id) return fail(id.error());
    ids.push_back(*id);
  }
  try {
    scheduler.run();
  } catch (const Exception& e) {
    return fail(e.error());
  }
  int status = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& r = scheduler.result(ids[i]);
    if (!r.error.empty()) {
      fmt::print(stderr, "mach generate: prompt {}: {}\n", i + 1, r.error);
      status = 1;
    }
    const auto text_of = [&](const std::vector<uint32_t>& tokens) {
      return tokenizer->decode(std::vector<text::TokenId>(tokens.begin(), tokens.end()), true);
    };
    if (a.json) {
      auto out = result_json(r, prompts[i].size(), device);
      if (tokenizer) out["text"] = text_of(r.tokens);
      if (cache) {
        out["cached_tokens"] = r.cached_tokens;
        out["prefix_cache"] = cache->stats();
      }
      if (!r.error.empty()) out["error"] = r.error;
      if (a.experts.streaming) out["experts"] = experts::to_json((*model)->expert_stats());
      fmt::print("{}\n", out.dump());
    }
    else if (tokenizer)
      fmt::print("{}\n", text_of(r.tokens));
    else
      fmt::print("{}\n", fmt::join(r.tokens, ","));
  }
  if (auto r = save_expert_profile(a.experts, **model); !r) return fail(r.error());
  return status;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  static GenerateArgs a;
  auto* cmd = app.add_subcommand("generate", "generate tokens from a checkpoint on the GPU");
  cmd->add_option("model", a.model_dir, "checkpoint directory (config.json + safetensors)")->required();
  cmd->add_option("--prompt-ids", a.prompt_ids, "prompt token ids, comma separated");
  cmd->add_option("--prompt", a.prompt_text, "prompt text, encoded with MODEL_DIR's tokenizer.json; prints text");
  cmd->add_option("--max-tokens", a.max_tokens, "tokens to generate (0: only the prompt)");
  cmd->add_option("--temperature", a.temperature, "0 for greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a.top_k, "0 = off");
  cmd->add_option("--top-p", a.top_p, "1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", a.min_p, "0 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a.seed, "sampling seed");
  cmd->add_option("--stop-ids", a.stop_ids, "extra stop token ids, comma separated (config eos ids always stop)");
  cmd->add_flag("--json", a.json, "print one JSON object");
  cmd->add_option("--dump-logits", a.dump_logits, "write the prompt positions' logits [T, vocab] f32 as .npy");
  cmd->add_option("--quant", a.quant, "weight format on the GPU: bf16 (default), f16, f32, q8_0, q4");
  cmd->add_option("--device", a.device, "Vulkan device index (default: $MACH_DEVICE or the best)");
  cmd->add_option("--max-context", a.max_context, "tokens of KV cache for the sequence");
  cmd->add_option("--step-tokens", a.step_tokens, "prompt tokens per forward step");
  cmd->add_option("--prompt-ids-file", a.prompt_ids_file,
                  "several prompts, one comma-separated line each, run as concurrent sequences");
  cmd->add_option("--speculation", a.speculation, "none, ngram, summarization or classification (draft-free)");
  cmd->add_option("--draft-max", a.draft_max, "longest draft per step (0: the preset's default)");
  cmd->add_option("--max-batch", a.max_batch, "sequences run together")->check(CLI::Range(1, 256));
  cmd->add_option("--kv-cache-gb", a.kv_cache_gb,
                  "device memory for the KV cache; sequences that do not fit wait (default: every sequence's full context)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--prefix-cache", a.prefix_cache, "restore the prompt's cached prefix from disk and store its blocks");
  cmd->add_option("--cache-dir", a.cache_dir, "prefix cache folder (default: ~/.cache/mach/prefix)");
  cmd->add_option("--cache-gb", a.cache_gb, "disk budget of the prefix cache per model, GiB")
      ->check(CLI::PositiveNumber);
  add_expert_options(cmd, a.experts);
  cmd->callback([&exit_code] { exit_code = run_generate(a); });
}

}  // namespace mach::cli
