#include "engine/generator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>

namespace mach::engine {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

Result<GenerateResult> generate(gpu::Context& context, model::Model& model, std::span<const uint32_t> prompt,
                                const GenerateOptions& options) {
  if (prompt.empty()) return Error{Errc::invalid_argument, "the prompt is empty"};
  const uint32_t V = model.config().vocab_size;
  for (uint32_t id : prompt)
    if (id >= V) return Error{Errc::invalid_argument, fmt::format("prompt token {} is outside the vocabulary ({})", id, V)};
  auto& kv = model.kv_cache();
  const uint64_t total = prompt.size() + options.max_tokens;
  if (total > kv.max_context())
    return Error{Errc::invalid_argument, fmt::format("prompt ({}) + max tokens ({}) exceed the context of {} tokens",
                                                     prompt.size(), options.max_tokens, kv.max_context())};
  if (!kv.reserve(0, static_cast<uint32_t>(total)))
    return Error{Errc::out_of_device_memory, "the KV cache has no room for this sequence"};

  GenerateResult result;
  Sampler sampler(options.sampling);
  auto cmd = context.begin_commands();
  std::vector<float> row(V);
  std::vector<uint32_t> seq, pos, rows;
  const uint32_t chunk = model.max_step_tokens();

  auto run = [&](std::span<const uint32_t> tokens, uint32_t first_pos, std::span<const uint32_t> logit_rows) {
    seq.assign(tokens.size(), 0);
    pos.resize(tokens.size());
    std::iota(pos.begin(), pos.end(), first_pos);
    return model::run_step(context, *cmd, model, {tokens, seq, pos, logit_rows});
  };

  const auto t0 = Clock::now();
  // The prompt's last token is always computed: its logits start decoding.
  PrefixCache* cache = options.prefix_cache;
  result.cached_tokens = cache ? cache->restore(context, kv, 0, prompt.first(prompt.size() - 1)) : 0;
  for (uint32_t start = result.cached_tokens, n = 0; start < prompt.size(); start += n) {
    // Chunks end at multiples of the chunk size, as in a cold run: after a restored prefix only the first
    // chunk differs from a cold run's steps (it has fewer tokens).
    n = std::min<uint32_t>(chunk - start % chunk, static_cast<uint32_t>(prompt.size()) - start);
    const bool last = start + n == prompt.size();
    rows.clear();
    if (options.prompt_logits) {
      rows.resize(n);
      std::iota(rows.begin(), rows.end(), 0u);
    } else if (last) {
      rows.push_back(n - 1);
    }
    if (auto r = run(prompt.subspan(start, n), start, rows); !r) {
      kv.release(0);
      return r.error();
    }
    if (options.prompt_logits) {
      const size_t at = result.prompt_logits.size();
      result.prompt_logits.resize(at + uint64_t{n} * V);
      context.download(model.logits(), 0,
                       std::as_writable_bytes(std::span<float>(result.prompt_logits.data() + at, uint64_t{n} * V)));
    }
    if (last) {
      // Logits of logit_rows land in output rows 0..R-1: the prompt's last token is the last of them.
      context.download(model.logits(), uint64_t{rows.size() - 1} * V * 4, std::as_writable_bytes(std::span<float>(row)));
    }
  }
  if (cache) cache->store(context, kv, 0, prompt);
  result.prefill_ms = ms_since(t0);

  const auto t1 = Clock::now();
  result.finish_reason = "length";
  const uint32_t last_row[] = {0};
  for (uint32_t i = 0; i < options.max_tokens; ++i) {
    const uint32_t next = sampler.sample(row, result.tokens);
    result.tokens.push_back(next);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    if (i + 1 == options.max_tokens) break;
    const uint32_t token[] = {next};
    if (auto r = run(token, static_cast<uint32_t>(prompt.size()) + i, last_row); !r) {
      kv.release(0);
      return r.error();
    }
    context.download(model.logits(), 0, std::as_writable_bytes(std::span<float>(row)));
  }
  result.decode_ms = ms_since(t1);
  kv.release(0);
  return result;
}

}  // namespace mach::engine
