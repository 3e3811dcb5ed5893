// warm_prefix: fill the prefix cache with a prompt prefix ahead of any request (a system prompt, tool
// definitions), so the first request that starts with it already skips it. Behind POST /v1/cache/warm_prefix.
#pragma once

#include <cstdint>
#include <span>

#include "engine/prefix_cache.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "model/model.hpp"

namespace mach::engine {

// Prefills `tokens` on KV sequence 0 (which must be free: the blocking generator's sequence) and stores their
// full blocks in `cache` (L1, and L2 when it has a folder). Returns the tokens now cached: tokens.size()
// rounded down to whole blocks. Blocks until done.
Result<uint32_t> warm_prefix(gpu::Context& context, model::Model& model, PrefixCache& cache,
                             std::span<const uint32_t> tokens);

}  // namespace mach::engine
