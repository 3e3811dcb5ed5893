// Single-sequence generation on a loaded model: prefill the prompt in chunks, then decode one token per
// step with the sampler, until max_tokens or a stop token. Blocking (waits on the GPU with Context::wait):
// for the command line and tests. The server's scheduler runs many sequences on the event loop instead.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "model/model.hpp"

namespace mach::engine {

struct GenerateOptions {
  SamplingParams sampling;
  uint32_t max_tokens = 16;
  std::vector<uint32_t> stop_ids;  // generation ends after emitting one of these (it is included in tokens)
  bool prompt_logits = false;      // keep the logits of every prompt position
};

struct GenerateResult {
  std::vector<uint32_t> tokens;     // generated ids only
  std::string finish_reason;        // "stop" or "length"
  std::vector<float> prompt_logits; // [prompt, V] when asked for
  double prefill_ms = 0, decode_ms = 0;
};

Result<GenerateResult> generate(gpu::Context& context, model::Model& model, std::span<const uint32_t> prompt,
                                const GenerateOptions& options);

}  // namespace mach::engine
