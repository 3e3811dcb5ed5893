#include "engine/model_bench.hpp"

#include "engine/stats.hpp"
#include "experts/probes.hpp"
#include "experts/slab_reader.hpp"
#include "ops/matmul.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <thread>

namespace mach::engine {
namespace {

using Clock = std::chrono::steady_clock;

// Runs forward steps of the bench on sequences it owns; every step waits for the GPU.
class StepRunner {
 public:
  // profile: the command list writes a timestamp after every op (room for 16384 of them).
  StepRunner(gpu::Context& context, model::Model& model, bool profile = false)
      : context_(context), model_(model), profile_(profile) {
    cmd_ = profile ? std::make_unique<gpu::CommandList>(context, 16384) : context.begin_commands();
    cmd_->set_profile(profile);
  }
  const gpu::CommandList& commands() const { return *cmd_; }

  // Runs tokens of `seqs` (one run each: tokens[i] at positions from[i]...), logits for the last token of each
  // run; returns the GPU ns of the step.
  // Wall time instead of GPU time from step() (a streaming model stands still on the host between segments).
  void use_wall_clock(bool wall) { wall_ = wall; }

  double step(const std::vector<std::vector<uint32_t>>& tokens, const std::vector<uint32_t>& seqs,
              const std::vector<uint32_t>& from) {
    const auto t0 = Clock::now();
    batch_tokens_.clear(), seq_.clear(), pos_.clear(), rows_.clear();
    for (size_t i = 0; i < tokens.size(); ++i) {
      for (size_t j = 0; j < tokens[i].size(); ++j) {
        batch_tokens_.push_back(tokens[i][j]);
        seq_.push_back(seqs[i]);
        pos_.push_back(from[i] + static_cast<uint32_t>(j));
      }
      rows_.push_back(static_cast<uint32_t>(batch_tokens_.size()) - 1);
    }
    last_ = {};
    auto host = Clock::now();
    if (!profile_) {
      if (gpu::CommandList* replay = model_.replay_step({batch_tokens_, seq_, pos_, rows_})) {
        last_.host_ns = ns_since(host);
        context_.wait(context_.submit(*replay));
        last_.gpu_ns = replay->elapsed_ns();
        last_.wall_ns = ns_since(t0);
        return wall_ ? last_.wall_ns : last_.gpu_ns;
      }
    }
    cmd_->begin();
    model_.record_step(*cmd_, {batch_tokens_, seq_, pos_, rows_});
    submit_timed(host);
    // A streaming model's further segments (expert loads between them are host time, not counted here).
    while (model_.step_pending()) {
      host = Clock::now();
      cmd_->begin();
      model_.continue_step(*cmd_).value_or_throw();
      submit_timed(host);
    }
    last_.wall_ns = ns_since(t0);
    return wall_ ? last_.wall_ns : last_.gpu_ns;
  }

  // The last step's times: GPU (timestamps, summed over segments), wall (the whole call), host (recording and
  // the streamer's work: the GPU is idle meanwhile, as every step here waits for the previous one).
  struct Times {
    double gpu_ns = 0, wall_ns = 0, host_ns = 0;
  };
  const Times& last() const { return last_; }

  void submit_timed(Clock::time_point host_start) {
    cmd_->timestamp("step");
    cmd_->end();
    last_.host_ns += ns_since(host_start);
    context_.wait(context_.submit(*cmd_));
    last_.gpu_ns += cmd_->elapsed_ns();
  }

  static double ns_since(Clock::time_point t) {
    return std::chrono::duration<double, std::nano>(Clock::now() - t).count();
  }

  // Greedy next token of each run of the last step (NaN logits are an error).
  Result<std::vector<uint32_t>> argmax_rows() {
    const uint32_t V = model_.config().vocab_size;
    logits_.resize(uint64_t{rows_.size()} * V);
    context_.download(model_.logits(), 0, std::as_writable_bytes(std::span<float>(logits_)));
    std::vector<uint32_t> out;
    for (size_t r = 0; r < rows_.size(); ++r) {
      const float* row = logits_.data() + r * V;
      if (!std::all_of(row, row + V, [](float x) { return std::isfinite(x); }))
        return Error{Errc::gpu, "the model produced non-finite logits"};
      out.push_back(static_cast<uint32_t>(std::max_element(row, row + V) - row));
    }
    return out;
  }

  // Fills sequence `seq` with `n` random tokens (chunks of max_step_tokens), untimed. Returns the GPU ns.
  double prefill(uint32_t seq, uint32_t n, std::mt19937& gen) {
    double ns = 0;
    const uint32_t chunk = model_.max_step_tokens();
    for (uint32_t start = 0; start < n; start += chunk) {
      std::vector<uint32_t> t(std::min(chunk, n - start));
      for (auto& x : t) x = gen() % model_.config().vocab_size;
      ns += step({t}, {seq}, {start});
    }
    return ns;
  }

 private:
  gpu::Context& context_;
  model::Model& model_;
  std::unique_ptr<gpu::CommandList> cmd_;
  std::vector<uint32_t> batch_tokens_, seq_, pos_, rows_;
  std::vector<float> logits_;
  bool wall_ = false;
  bool profile_ = false;  // a profiled step is recorded into the runner's own list, never replayed
  Times last_;
};

// The sidecar's read bandwidth as the miss path sees it (io_uring, O_DIRECT where allowed, checksums),
// over about `bytes` of slabs spread over the layers, GB/s.
Result<double> probe_sidecar(const experts::Sidecar& sidecar, uint64_t bytes) {
  const auto& layout = sidecar.layout();
  auto reader = experts::SlabReader::open(sidecar, 64);
  if (!reader) return reader.error();
  const uint64_t slab = layout.slab_bytes;
  const uint64_t count = std::max<uint64_t>(1, std::min<uint64_t>(bytes / slab, layout.expert_count()));
  constexpr size_t kBatch = 64;
  std::vector<std::byte> dst(kBatch * slab);
  std::vector<experts::SlabRead> reads;
  uint64_t done = 0;
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < count; ++i) {
    const auto& layer = layout.layers[i % layout.layers.size()];
    const uint32_t expert = static_cast<uint32_t>((i / layout.layers.size()) % layer.experts.size());
    reads.push_back({layer.layer, expert, dst.data() + reads.size() * slab});
    if (reads.size() == kBatch || i + 1 == count) {
      for (auto& r : (*reader)->read(reads))
        if (!r) return r.error();
      done += reads.size() * slab;
      reads.clear();
    }
  }
  return done / std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

// Device read bandwidth as the decode kernels see it: a bf16 matrix-vector product over `bytes` of weights
// (pure streaming reads, the access pattern of a decode step), GB/s. Buffer copies are no probe on NVIDIA:
// vkCmdCopyBuffer read 848 GB/s on an H100 whose kernels read ~3 TB/s. The GPU must be warm: an idle NVIDIA
// GPU sits at a low clock and needs ~0.5 s of sustained load to boost, so the products run back to back for
// 600 ms first, and the timed figure is a submission of several, never a lone one after an idle gap.
double probe_bandwidth(gpu::Context& context, uint64_t bytes) {
  constexpr uint32_t kCols = 8192;
  const uint32_t rows = static_cast<uint32_t>(std::max<uint64_t>(64, bytes / (kCols * 2ull)));
  auto w = context.create_buffer(uint64_t{rows} * kCols * 2, gpu::MemoryKind::device, "bench probe weights");
  auto x = context.create_buffer(kCols * 4ull, gpu::MemoryKind::device, "bench probe x");
  auto y = context.create_buffer(rows * 4ull, gpu::MemoryKind::device, "bench probe y");
  const ops::WeightRef ref{&w, 0, ops::WeightType::bf16, rows, kCols};
  auto cmd = context.begin_commands();
  cmd->begin();
  cmd->fill(w, 0, w.size(), 0x3f803f80u);  // bf16 1.0 pairs
  cmd->fill(x, 0, x.size(), 0x3f800000u);
  cmd->end();
  context.wait(context.submit(*cmd));
  constexpr int kProducts = 8;
  const auto record = [&] {
    cmd->begin();
    for (int i = 0; i < kProducts; ++i) ops::mul_mat(*cmd, ref, gpu::in(x), gpu::out(y), 1);
    cmd->timestamp("products");
    cmd->end();
  };
  const auto warm_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
  while (std::chrono::steady_clock::now() < warm_until) {
    record();
    context.wait(context.submit(*cmd));
  }
  std::vector<double> ns;
  for (int r = 0; r < 5; ++r) {
    record();
    context.wait(context.submit(*cmd));
    ns.push_back(cmd->elapsed_ns() / kProducts);
  }
  return double(w.size()) / percentile(ns, 0.5);  // bytes per ns = GB/s
}

// Runs `step` untimed for at least `ms` milliseconds (and at least twice) so that the GPU's clocks are up
// when the timed repeats begin: an NVIDIA GPU drops its clocks within a fraction of a second of light load
// (host-side gaps between figures are enough), and the first figure of a run measured ~30% low without this.
// ms == 0 (--quick) runs it once.
void warm_up(const std::function<void()>& step, uint32_t ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(ms);
  step();
  if (ms > 0)
    for (int n = 1; n < 2 || Clock::now() < until; ++n) step();
}

nlohmann::json spread(const std::vector<double>& v) {
  return {{"median", percentile(v, 0.5)}, {"p10", percentile(v, 0.1)}, {"p90", percentile(v, 0.9)}};
}

}  // namespace

uint32_t BenchOptions::max_context() const {
  uint32_t n = verify_context + *std::max_element(verify_blocks.begin(), verify_blocks.end());
  for (uint32_t p : prefill_lengths) n = std::max(n, p);
  for (uint32_t c : decode_contexts) n = std::max(n, c + decode_steps + 1);
  return std::max(n, 64u);
}

uint64_t decode_bytes(const model::Model& model, uint64_t context_tokens, uint32_t tokens_in_step) {
  const auto& c = model.config();
  const uint64_t experts = uint64_t{c.num_layers} * c.num_experts * model.expert_bytes();
  // Experts a step touches: at most top-k per token, at most all of them.
  const uint64_t touched = uint64_t{c.num_layers} * model.expert_bytes() *
                           std::min<uint64_t>(c.num_experts, uint64_t{c.num_experts_per_tok} * tokens_in_step);
  uint64_t kv = 0;
  for (uint32_t l = 0; l < c.num_layers; ++l) kv += 2ull * c.kv_heads_of(l) * c.head_dim_of(l) * 2;  // K, V f16
  return model.weight_bytes() - experts + touched + kv * context_tokens * tokens_in_step;
}

Result<void> profile_decode_step(gpu::Context& context, model::Model& model, uint32_t context_tokens,
                                 const std::function<void(const nlohmann::json&)>& emit, uint32_t step_tokens,
                                 uint32_t sequences) {
  if (!context.info().timestamps) return Error{Errc::unsupported, "this device has no GPU timestamps to profile with"};
  auto& kv = model.kv_cache();
  if (step_tokens == 0 || step_tokens > model.max_step_tokens())
    return Error{Errc::invalid_argument, fmt::format("--profile-tokens must be 1 to {}", model.max_step_tokens())};
  if (sequences == 0 || sequences > kv.max_sequences())
    return Error{Errc::invalid_argument,
                 fmt::format("--profile-sequences must be 1 to {} (--max-batch)", kv.max_sequences())};
  if (uint64_t{sequences} * step_tokens > model.max_step_tokens())
    return Error{Errc::invalid_argument,
                 fmt::format("--profile-sequences {} x --profile-tokens {} is more than a step's {} tokens", sequences,
                             step_tokens, model.max_step_tokens())};
  std::vector<uint32_t> seqs, from;
  for (uint32_t s = 0; s < sequences; ++s) {
    if (!kv.reserve(s, context_tokens + step_tokens + 1)) {
      for (uint32_t r = 0; r < s; ++r) kv.release(r);
      return Error{Errc::invalid_argument, fmt::format("the KV cache cannot hold {} sequences of {} tokens", sequences,
                                                       context_tokens + step_tokens + 1)};
    }
    seqs.push_back(s);
    from.push_back(context_tokens);
  }
  std::mt19937 gen(99);
  StepRunner plain(context, model);
  if (context_tokens > 0)
    for (uint32_t s : seqs) plain.prefill(s, context_tokens, gen);
  // Warm the clocks (copies back to back, then unprofiled steps: the figure next to the table), then one
  // profiled step.
  probe_bandwidth(context, 64ull << 20);
  std::vector<double> unprofiled;
  const auto warm_until = Clock::now() + std::chrono::milliseconds(1500);
  // Random tokens, as the prefill figures use: one token repeated would route every row to the same experts
  // and make a many-token step look cheaper than a real prompt (the first profiles did, 240 ms against 331).
  std::vector<std::vector<uint32_t>> tokens(sequences);
  for (auto& t : tokens)
    for (uint32_t i = 0; i < step_tokens; ++i) t.push_back(gen() % model.config().vocab_size);
  while (Clock::now() < warm_until || unprofiled.size() < 5) unprofiled.push_back(plain.step(tokens, seqs, from));
  StepRunner profiled(context, model, /*profile=*/true);
  profiled.step(tokens, seqs, from);
  std::map<std::string, std::pair<uint64_t, double>> by_op;  // label -> (calls, ns)
  double total = 0;
  for (const auto& sample : profiled.commands().read_timestamps()) {
    if (sample.label == "step") continue;  // the runner's own end mark (nothing after the last op)
    auto& [calls, ns] = by_op[sample.label];
    ++calls;
    ns += sample.ns;
    total += sample.ns;
  }
  for (uint32_t s : seqs) kv.release(s);
  std::vector<std::pair<std::string, std::pair<uint64_t, double>>> rows(by_op.begin(), by_op.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.second > b.second.second; });
  for (const auto& [label, v] : rows) {
    emit({{"test", "profile"}, {"op", label}, {"calls", v.first}, {"us", v.second * 1e-3},
          {"us_per_call", v.second * 1e-3 / v.first}, {"share", total > 0 ? v.second / total : 0.0}});
  }
  emit({{"test", "profile_total"}, {"context", context_tokens}, {"step_tokens", step_tokens}, {"sequences", sequences},
        {"ops", profiled.commands().read_timestamps().size()},
        {"profiled_us", total * 1e-3}, {"unprofiled_us", percentile(unprofiled, 0.5) * 1e-3},
        {"note", "each op followed by a barrier and a timestamp: the ops run one after another"}});
  return {};
}

Result<void> run_model_bench(gpu::Context& context, model::Model& model, const BenchOptions& options,
                             const std::function<void(const nlohmann::json&)>& emit) {
  const auto& c = model.config();
  auto& kv = model.kv_cache();
  StepRunner runner(context, model);
  std::mt19937 gen(1234);
  // One product binds the whole probe matrix: at most what the device binds at once (lavapipe: 128 MiB).
  const uint64_t gpu_probe_bytes = std::min<uint64_t>(options.probe_bytes, context.info().max_storage_buffer_range);
  const double bandwidth = probe_bandwidth(context, gpu_probe_bytes);  // GB/s
  const nlohmann::json base = {{"device", context.info().name},
                               {"model_type", c.model_type},
                               {"layers", c.num_layers},
                               {"hidden", c.hidden_size},
                               {"experts", c.num_experts},
                               {"top_k", c.num_experts_per_tok},
                               {"weight_bytes", model.weight_bytes()}};
  {
    auto line = base;
    line["test"] = "bandwidth_probe";
    line["gb_per_s"] = bandwidth;
    line["probe_bytes"] = gpu_probe_bytes;
    line["method"] = "bf16 matrix-vector product (reads)";
    emit(line);
  }
  const bool streaming = model.expert_stats().streaming;
  runner.use_wall_clock(streaming);
  double host_read = 0;  // GB/s, streaming only
  if (options.sidecar) {
    auto line = base;
    line["test"] = "streaming_probes";
    auto read = probe_sidecar(*options.sidecar, uint64_t{1} << 30);
    if (!read) return read.error();
    line["sidecar_read_gb_per_s"] = *read;
    line["host_to_device_gb_per_s"] = experts::probe_upload(context, 256ull << 20);
    host_read = experts::probe_host_read(options.probe_bytes);  // 1 GiB, and 16 MiB with --quick
    line["host_read_gb_per_s"] = host_read;
    line["host_threads"] = std::thread::hardware_concurrency();
    emit(line);
  }
  // A streaming figure's expert counters: what its timed repeats loaded, from where, and how fast.
  auto expert_totals = [&] { return model.expert_stats().total(); };
  auto add_expert_counters = [&](nlohmann::json& line, const experts::ExpertLayerStats& before) {
    if (!streaming) return;
    const auto after = expert_totals();
    const uint64_t hits = after.hits - before.hits, misses = after.misses - before.misses;
    const uint64_t read = after.bytes_read - before.bytes_read;
    const double read_s = (after.read_ns - before.read_ns) * 1e-9;
    line["experts"] = {{"hits", hits},
                       {"misses", misses},
                       {"hit_rate", hits + misses ? double(hits) / double(hits + misses) : 0.0},
                       {"ram_hits", after.ram_hits - before.ram_hits},
                       {"bytes_read", read},
                       {"read_gb_per_s", read_s > 0 ? read / read_s * 1e-9 : 0.0},
                       {"bytes_uploaded", after.bytes_uploaded - before.bytes_uploaded},
                       {"stall_ms", (after.stall_ns - before.stall_ns) * 1e-6},
                       {"prefetch_predicted", after.prefetch_predicted - before.prefetch_predicted},
                       {"prefetch_correct", after.prefetch_correct - before.prefetch_correct},
                       {"prefetch_reads", after.prefetch_reads - before.prefetch_reads},
                       {"ahead_uploads", after.ahead_uploads - before.ahead_uploads},
                       {"ahead_used", after.ahead_used - before.ahead_used},
                       {"ahead_late", after.ahead_late - before.ahead_late},
                       {"ahead_late_age_ms", (after.ahead_late_age_ns - before.ahead_late_age_ns) * 1e-6},
                       {"transfer_queue", model.expert_stats().transfer_queue}};
    if (model.expert_stats().host_experts) {
      // --host-experts: the pairs the host's cores computed, the slab bytes they read for them (once per
      // pair: a pair reads its expert's whole slab), and that over the host's busy time.
      const uint64_t pairs = after.host_pairs - before.host_pairs;
      const double host_s = (after.host_ns - before.host_ns) * 1e-9;
      const double host_bytes = double(pairs) * double(model.expert_stats().slab_bytes);
      line["experts"]["host_experts"] = model.expert_stats().host_experts;
      line["experts"]["host_threads"] = model.expert_stats().host_threads;
      line["experts"]["host_simd"] = model.expert_stats().host_simd;
      line["experts"]["host_pairs"] = pairs;
      line["experts"]["host_ms"] = host_s * 1e3;
      line["experts"]["host_wait_ms"] = (after.host_wait_ns - before.host_wait_ns) * 1e-6;
      line["experts"]["host_bytes"] = host_bytes;
      line["experts"]["host_gb_per_s"] = host_s > 0 ? host_bytes / host_s * 1e-9 : 0.0;
    }
  };
  nlohmann::json clock_base = base;
  clock_base["clock"] = streaming ? "wall" : "gpu";
  auto skipped = [&](const std::string& test, nlohmann::json params, const std::string& why) {
    auto line = base;
    line["test"] = test;
    line.update(params);
    line["skipped"] = why;
    emit(line);
  };

  // Correctness before timing: the same greedy run twice gives the same tokens, all logits finite.
  {
    if (!kv.reserve(0, 64)) return Error{Errc::invalid_argument, "the KV cache cannot hold a 64-token sequence"};
    std::vector<uint32_t> runs[2];
    for (auto& tokens : runs) {
      std::mt19937 g(7);
      runner.prefill(0, 16, g);
      uint32_t last = 1;
      for (uint32_t i = 0; i < 8; ++i) {
        runner.step({{last}}, {0}, {16 + i});
        auto next = runner.argmax_rows();
        if (!next) return next.error();
        last = (*next)[0];
        tokens.push_back(last);
      }
    }
    kv.release(0);
    if (runs[0] != runs[1])
      return Error{Errc::gpu, "greedy decoding is not deterministic across two identical runs"};
  }

  for (uint32_t n : options.prefill ? options.prefill_lengths : std::vector<uint32_t>{}) {
    if (!kv.reserve(0, n)) {
      skipped("prefill", {{"tokens", n}}, "the KV cache (--max-context, --kv-cache-gb) has no room");
      continue;
    }
    std::vector<double> tok_s;
    warm_up([&] { runner.prefill(0, n, gen); }, options.warm_ms);
    const auto counted = expert_totals();
    for (uint32_t r = 0; r < options.repeats; ++r) tok_s.push_back(n / (runner.prefill(0, n, gen) * 1e-9));
    kv.release(0);
    auto line = clock_base;
    add_expert_counters(line, counted);
    line["test"] = "prefill";
    line["tokens"] = n;
    line["tok_per_s"] = spread(tok_s);
    emit(line);
  }

  for (uint32_t ctx : options.decode ? options.decode_contexts : std::vector<uint32_t>{}) {
    if (!kv.reserve(0, ctx + options.decode_steps + 1)) {
      skipped("decode", {{"context", ctx}, {"batch", 1}}, "the KV cache has no room");
      continue;
    }
    if (ctx > 0) runner.prefill(0, ctx, gen);
    std::vector<double> tok_s, gpu_tok_s, wall_tok_s, host_us;
    // The warm-up runs the timed steps themselves: with streaming, their tokens route to the experts the
    // repeats will use, so the RAM tier holds them before timing (a warm-up of one repeated token touched 8
    // experts per layer and left the first repeat reading the disk).
    const auto steps = [&] {
      double ns = 0;
      double gpu = 0, wall = 0;
      for (uint32_t i = 0; i < options.decode_steps; ++i) {
        ns += runner.step({{1u + i}}, {0}, {ctx + i});
        gpu += runner.last().gpu_ns, wall += runner.last().wall_ns;
        host_us.push_back(runner.last().host_ns * 1e-3);
      }
      gpu_tok_s.push_back(options.decode_steps / (gpu * 1e-9));
      wall_tok_s.push_back(options.decode_steps / (wall * 1e-9));
      return ns;
    };
    warm_up([&] { steps(); }, options.warm_ms);
    const auto counted = expert_totals();
    gpu_tok_s.clear(), wall_tok_s.clear(), host_us.clear();
    for (uint32_t r = 0; r < options.repeats; ++r) tok_s.push_back(options.decode_steps / (steps() * 1e-9));
    kv.release(0);
    const uint64_t bytes = decode_bytes(model, ctx + options.decode_steps / 2, 1);
    const double limit = bandwidth * 1e9 / bytes;
    auto line = clock_base;
    add_expert_counters(line, counted);
    if (streaming && host_read > 0) {
      // The alternative of computing the missed experts on the host's cores instead: at best their bytes
      // over the host's read bandwidth per token (the GPU's share of the step not even counted).
      const auto after = expert_totals();
      const double missed = double(after.misses - counted.misses) * model.expert_bytes() /
                            (double(options.repeats) * options.decode_steps);
      line["missed_bytes_per_token"] = missed;
      line["host_compute_bound_tok_per_s"] = missed > 0 ? host_read * 1e9 / missed : 0.0;
    }
    line["test"] = "decode";
    line["context"] = ctx;
    line["batch"] = 1;
    line["tok_per_s"] = spread(tok_s);
    // Both clocks and the host's share: recording the step (and, streaming, the streamer's work) while the GPU
    // waits. `tok_per_s` is the clock named by "clock".
    line["gpu_tok_per_s"] = spread(gpu_tok_s);
    line["wall_tok_per_s"] = spread(wall_tok_s);
    line["host_us_per_step"] = spread(host_us);
    line["bytes_per_token"] = bytes;
    line["limit_tok_per_s"] = limit;
    line["fraction_of_limit"] = percentile(tok_s, 0.5) / limit;
    emit(line);
  }

  if (options.verify && !options.verify_blocks.empty()) {
    const uint32_t ctx = options.verify_context;
    const uint32_t kmax = *std::max_element(options.verify_blocks.begin(), options.verify_blocks.end());
    if (!kv.reserve(0, ctx + kmax)) {
      skipped("verify", {{"context", ctx}}, "the KV cache has no room");
    } else {
      runner.prefill(0, ctx, gen);
      double one = 0;
      for (uint32_t k : options.verify_blocks) {
        std::vector<uint32_t> block(k);
        std::iota(block.begin(), block.end(), 1u);
        std::vector<double> ms;
        warm_up([&] { runner.step({block}, {0}, {ctx}); }, options.warm_ms / 2);
        const auto counted = expert_totals();
        for (uint32_t r = 0; r < options.repeats; ++r) ms.push_back(runner.step({block}, {0}, {ctx}) * 1e-6);
        const double median = percentile(ms, 0.5);
        if (k == 1) one = median;
        auto line = clock_base;
        add_expert_counters(line, counted);
        line["test"] = "verify";
        line["context"] = ctx;
        line["block"] = k;
        line["ms_per_step"] = spread(ms);
        if (one > 0) line["relative_to_one_token"] = median / one;
        const uint64_t bytes = decode_bytes(model, ctx, k);
        line["limit_ms"] = bytes / (bandwidth * 1e9) * 1e3;
        line["fraction_of_limit"] = line["limit_ms"].get<double>() / median;
        emit(line);
      }
      kv.release(0);
    }
  }

  for (uint32_t n : options.concurrent ? options.concurrency : std::vector<uint32_t>{}) {
    const uint32_t prompt = 32;
    uint32_t admitted = 0;
    while (admitted < n && admitted < kv.max_sequences() && kv.reserve(admitted, prompt + options.decode_steps + 1))
      ++admitted;
    if (admitted < n) {
      for (uint32_t s = 0; s < admitted; ++s) kv.release(s);
      skipped("decode_concurrent", {{"sequences", n}},
              fmt::format("only {} sequences fit (--max-batch / --kv-cache-gb)", admitted));
      continue;
    }
    for (uint32_t s = 0; s < n; ++s) runner.prefill(s, prompt, gen);
    std::vector<double> tok_s;
    std::vector<uint32_t> seqs(n), from(n);
    std::iota(seqs.begin(), seqs.end(), 0u);
    warm_up([&] {
      std::fill(from.begin(), from.end(), prompt);
      runner.step(std::vector<std::vector<uint32_t>>(n, std::vector<uint32_t>{1u}), seqs, from);
    }, options.warm_ms);
    const auto counted = expert_totals();
    for (uint32_t r = 0; r < options.repeats; ++r) {
      double ns = 0;
      for (uint32_t i = 0; i < options.decode_steps; ++i) {
        std::vector<std::vector<uint32_t>> tokens(n, std::vector<uint32_t>{1u + i});
        std::fill(from.begin(), from.end(), prompt + i);
        ns += runner.step(tokens, seqs, from);
      }
      tok_s.push_back(double(n) * options.decode_steps / (ns * 1e-9));
    }
    for (uint32_t s = 0; s < n; ++s) kv.release(s);
    const uint64_t bytes = decode_bytes(model, prompt + options.decode_steps / 2, n);
    auto line = clock_base;
    add_expert_counters(line, counted);
    line["test"] = "decode_concurrent";
    line["sequences"] = n;
    line["tok_per_s"] = spread(tok_s);
    line["limit_tok_per_s"] = n * bandwidth * 1e9 / bytes;
    line["fraction_of_limit"] = percentile(tok_s, 0.5) / line["limit_tok_per_s"].get<double>();
    emit(line);
  }
  return {};
}

}  // namespace mach::engine
