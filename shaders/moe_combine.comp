#version 450
// MoE combine: x[t, h] += sum_j w[t, j] * y[t, j, h]  (the routed experts' weighted sum added to the residual).
// y: [T, k, H] f32 expert outputs, w: [T, k] f32 routing weights, x: [T, H] f32 residual, updated in place.
// One thread per (t, h); the k products are summed in slot order, as the CPU reference does.
// With SKIP_NO_SLOT (one pass of a streaming step): pairs whose expert has no slot (slot_table[ids[t, j]] ==
// ops::kNoSlot) are left out and their y rows never read, since mul_mat_id did not write them.
//! variant moe_combine
//! variant moe_combine_slots -DSKIP_NO_SLOT
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Y { float y[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) buffer X { float x[]; };
#ifdef SKIP_NO_SLOT
layout(binding = 3) readonly buffer Ids { uint ids[]; };
layout(binding = 4) readonly buffer Slots { uint slot_table[]; };
const uint NO_SLOT = 0xFFFFFFFFu;
#endif
layout(push_constant) uniform Push {
  uint tokens;
  uint top_k;
  uint hidden;
} p;

void main() {
  const uint i = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  if (i >= p.tokens * p.hidden) return;
  const uint t = i / p.hidden;
  const uint h = i - t * p.hidden;
  float sum = 0.0;
  for (uint j = 0; j < p.top_k; ++j) {
#ifdef SKIP_NO_SLOT
    if (slot_table[ids[t * p.top_k + j]] == NO_SLOT) continue;
#endif
    sum += w[t * p.top_k + j] * y[(t * p.top_k + j) * p.hidden + h];
  }
  x[i] += sum;
}
