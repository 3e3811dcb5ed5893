// `mach bench`: end-to-end figures of a loaded model on this device, each against the limit the memory
// bandwidth sets (bytes a step must move over the bandwidth measured in the same run). Figures are GPU time
// from timestamps around whole forward steps (median and spread over repeats; "clock": "gpu"), except for a
// streaming model, whose figures are wall time ("clock": "wall": host recording and expert loads included).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "experts/sidecar.hpp"
#include "model/model.hpp"

namespace mach::engine {

struct BenchOptions {
  std::vector<uint32_t> prefill_lengths = {512, 4096};
  std::vector<uint32_t> decode_contexts = {0, 4096, 16384};
  std::vector<uint32_t> verify_blocks = {1, 2, 4, 8, 16};
  uint32_t verify_context = 512;  // tokens before the verified block
  std::vector<uint32_t> concurrency = {4, 16, 64};
  uint32_t decode_steps = 16;  // timed decode steps per figure
  uint32_t repeats = 5;
  uint64_t probe_bytes = 1ull << 30;  // weights the bandwidth probe's matrix-vector product reads
  uint32_t warm_ms = 1000;  // untimed run of each figure before its repeats (GPU clocks up); 0 runs it once
  bool prefill = true, decode = true, verify = true, concurrent = true;  // which tests run (`--only`)
  // A streaming model's figures are wall time (its steps wait on the host for expert loads) and carry the
  // expert counters of their repeats; with a sidecar, two probes first: O_DIRECT reads of its slabs and
  // host-to-device copies, the limits of a miss from disk and from the RAM tier.
  const experts::Sidecar* sidecar = nullptr;

  // The KV-cache tokens one sequence needs for every test above.
  uint32_t max_context() const;
};

// Runs every test the model's KV cache has room for and calls `emit` with one JSON object per figure
// (tests that do not fit emit a "skipped" line with the reason). Errors: NaN logits, or greedy tokens that
// differ between two identical runs (checked before anything is timed).
Result<void> run_model_bench(gpu::Context& context, model::Model& model, const BenchOptions& options,
                             const std::function<void(const nlohmann::json&)>& emit);

// `mach bench --profile`: one decode step (batch 1 at `context_tokens`) with a GPU timestamp after every op;
// emits one line per op name (calls, microseconds, share of the step), largest first, then the total next
// to an unprofiled step's time.
// step_tokens > 1 profiles a verify block or prefill chunk of one sequence instead; `sequences` > 1 a step of
// that many sequences (each `step_tokens` at `context_tokens`, logits for each one's last token): a batched
// decode step of the server.
Result<void> profile_decode_step(gpu::Context& context, model::Model& model, uint32_t context_tokens,
                                 const std::function<void(const nlohmann::json&)>& emit, uint32_t step_tokens = 1,
                                 uint32_t sequences = 1);

// Bytes one decode token must read: every non-expert weight, top-k experts per layer, and the KV cache
// of `context_tokens` positions.
uint64_t decode_bytes(const model::Model& model, uint64_t context_tokens, uint32_t tokens_in_step);

}  // namespace mach::engine
