#include "engine/prefix_warm.hpp"

#include "engine/generator.hpp"

namespace mach::engine {

Result<uint32_t> warm_prefix(gpu::Context& context, model::Model& model, PrefixCache& cache,
                             std::span<const uint32_t> tokens) {
  // A generation of one token is a prefill plus one sample from the last logits: no decode step runs.
  GenerateOptions options;
  options.sampling.temperature = 0;
  options.max_tokens = 1;
  options.prefix_cache = &cache;
  auto result = generate(context, model, tokens, options);
  if (!result) return result.error();
  return cache.lookup(tokens);
}

}  // namespace mach::engine
