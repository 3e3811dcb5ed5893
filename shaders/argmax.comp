#version 450
// Row argmax: x [T, V] f32 -> out [T] u32, the lowest index among equal maxima (NaN never wins).
// Rows are split into chunks of chunk_cols so that one long row (decode: T = 1, V = 262144) spreads over
// many workgroups:
//   argmax_chunks: one workgroup per (row, chunk); with one chunk per row it writes out[row] directly,
//                  else the pair (max as float bits, global index) to partial[row, chunk].
//   argmax_final:  one workgroup per row reduces its chunk pairs to out[row].
// Both reduce through a shared-memory tree that breaks ties by index, so any subgroup size works.
//! variant argmax_chunks -DARGMAX_FINAL=0
//! variant argmax_final -DARGMAX_FINAL=1
#include "common.glsl"
const uint kThreads = 256;
layout(local_size_x = 256) in;
#if ARGMAX_FINAL
layout(binding = 0) readonly buffer Partial { uint partial[]; };
#else
layout(binding = 0) readonly buffer X { float x[]; };
#endif
layout(binding = 1) writeonly buffer Out { uint outv[]; };
layout(push_constant) uniform Push {
  uint rows;
  uint cols;
  uint chunk_cols;
  uint chunks;
} p;

shared float red_value[kThreads];
shared uint red_index[kThreads];

bool before(float va, uint ia, float vb, uint ib) { return va > vb || (va == vb && ia < ib); }

void main() {
  const uint tid = gl_LocalInvocationID.x;
#if ARGMAX_FINAL
  const uint row = flat_workgroup_id();
  if (row >= p.rows) return;
  const uint begin = 0, end = p.chunks;
#else
  const uint row = flat_workgroup_id() / p.chunks, chunk = flat_workgroup_id() % p.chunks;
  if (row >= p.rows) return;
  const uint begin = chunk * p.chunk_cols, end = min(begin + p.chunk_cols, p.cols);
#endif
  float best = -1.0 / 0.0;
  uint best_index = 0xffffffffu;
  for (uint c = begin + tid; c < end; c += kThreads) {
#if ARGMAX_FINAL
    const float v = uintBitsToFloat(partial[(row * p.chunks + c) * 2]);
    const uint i = partial[(row * p.chunks + c) * 2 + 1];
#else
    const float v = x[row * p.cols + c];
    const uint i = c;
#endif
    if (before(v, i, best, best_index)) {
      best = v;
      best_index = i;
    }
  }
  red_value[tid] = best;
  red_index[tid] = best_index;
  barrier();
  for (uint s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s && before(red_value[tid + s], red_index[tid + s], red_value[tid], red_index[tid])) {
      red_value[tid] = red_value[tid + s];
      red_index[tid] = red_index[tid + s];
    }
    barrier();
  }
  if (tid != 0) return;
#if !ARGMAX_FINAL
  if (p.chunks > 1) {
    outv[(row * p.chunks + chunk) * 2] = floatBitsToUint(red_value[0]);
    outv[(row * p.chunks + chunk) * 2 + 1] = red_index[0];
    return;
  }
#endif
  // A row of only NaN leaves 0xffffffff; report index 0 then.
  outv[row] = red_index[0] == 0xffffffffu ? 0u : red_index[0];
}
