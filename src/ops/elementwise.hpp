// Elementwise GPU ops. Shapes in comments: T tokens, H hidden.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

// y[i] = a[i] + b[i];  a, b, y: [n] f32. The residual add of every layer.
void add(gpu::CommandList& cmd, gpu::Binding a, gpu::Binding b, gpu::Binding y, uint32_t n);

}  // namespace mach::ops

namespace mach::ops {

// x[t, :] += sum_j w[t, j] * y[t, j, :]: the routed experts' weighted sum added to the residual.
// y: [T, k, H] f32, w: [T, k] f32, x: [T, H] f32 (read and written).
void moe_combine(gpu::CommandList& cmd, gpu::Binding y, gpu::Binding w, gpu::Binding x, uint32_t tokens,
                 uint32_t top_k, uint32_t hidden);
// The same over one pass of a streaming step: pairs whose expert has no slot (slot_table[ids[t, j]] ==
// kNoSlot, see matmul.hpp's MoeRouting) add nothing and their y rows are never read.
// ids: [T, k] u32; slot_table: [experts] u32.
void moe_combine(gpu::CommandList& cmd, gpu::Binding y, gpu::Binding w, gpu::Binding x, uint32_t tokens,
                 uint32_t top_k, uint32_t hidden, gpu::Binding ids, gpu::Binding slot_table);

}  // namespace mach::ops
