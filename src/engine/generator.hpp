// Single-sequence generation on a loaded model: prefill the prompt in chunks, then decode one token per
// step with the sampler, until max_tokens or a stop token. Blocking (waits on the GPU with Context::wait):
// for the command line and tests. The server's scheduler runs many sequences on the event loop instead.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/prefix_cache.hpp"
#include "engine/sampler.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "model/model.hpp"

namespace mach::engine {

struct GenerateOptions {
  SamplingParams sampling;
  uint32_t max_tokens = 16;
  std::vector<uint32_t> stop_ids;  // generation ends after emitting one of these (it is included in tokens)
  bool prompt_logits = false;      // keep the logits of every computed prompt position
  // When set: the prompt's longest cached prefix is restored instead of computed (all but its last token may
  // be), and the prompt's full blocks are stored once prefilled.
  PrefixCache* prefix_cache = nullptr;
};

struct GenerateResult {
  std::vector<uint32_t> tokens;     // generated ids only
  std::string finish_reason;        // "stop" or "length"
  uint32_t cached_tokens = 0;       // prompt tokens restored from the prefix cache, not computed
  std::vector<float> prompt_logits; // [prompt - cached_tokens, V] when asked for: positions cached_tokens..
  double prefill_ms = 0, decode_ms = 0;
};

Result<GenerateResult> generate(gpu::Context& context, model::Model& model, std::span<const uint32_t> prompt,
                                const GenerateOptions& options);

}  // namespace mach::engine
