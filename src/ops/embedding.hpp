// Token embedding gather on the GPU: ids [T] -> rows of a [V, H] weight table of any WeightType.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"
#include "ops/weight_format.hpp"

namespace mach::ops {

// out[t, :] = dequantize(table)[ids[t], :] * multiplier;  ids: [T] u32, table: [V, H] (rows = V, cols = H),
// out: [T, H] f32. An id >= V yields a zero row instead of reading out of bounds. Gemma multiplies by
// sqrt(H) rounded to the checkpoint dtype (transformers casts embed_scale to the weight dtype): pass that value.
void embedding(gpu::CommandList& cmd, const WeightRef& table, gpu::Binding ids, gpu::Binding out, uint32_t tokens,
               float multiplier = 1.0f);

}  // namespace mach::ops
