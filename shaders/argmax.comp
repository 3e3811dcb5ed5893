#version 450
// Row argmax: x [T, V] f32 -> out [T] u32, the lowest index among equal maxima (NaN never wins).
// One workgroup per row: strided scan, then a shared-memory tree that breaks ties by index.
#include "common.glsl"
const uint kThreads = 256;
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Out { uint outv[]; };
layout(push_constant) uniform Push {
  uint rows;
  uint cols;
} p;

shared float red_value[kThreads];
shared uint red_index[kThreads];

bool before(float va, uint ia, float vb, uint ib) { return va > vb || (va == vb && ia < ib); }

void main() {
  const uint row = flat_workgroup_id();
  if (row >= p.rows) return;
  const uint tid = gl_LocalInvocationID.x;
  float best = -1.0 / 0.0;
  uint best_index = 0xffffffffu;
  for (uint c = tid; c < p.cols; c += kThreads) {
    const float v = x[row * p.cols + c];
    if (before(v, c, best, best_index)) {
      best = v;
      best_index = c;
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
  // A row of only -inf/NaN leaves 0xffffffff; report index 0 then.
  if (tid == 0) outv[row] = red_index[0] == 0xffffffffu ? 0u : red_index[0];
}
