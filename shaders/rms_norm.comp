#version 450
// RMSNorm over rows: y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * scale, where scale is w (WEIGHT_MODE 1),
// 1 + w (WEIGHT_MODE 2, Qwen3.5 / Gemma 3 style) or 1 (WEIGHT_MODE 0, Gemma 4's unscaled v_norm / router norm).
// x, y: [rows, H] f32 with row strides (y may alias x, except in Q4H); w: [H] f32. One workgroup per row (Q4H:
// several, below); the workgroup size is specialization constant 0 and the reduction is a shared-memory tree,
// so any subgroup size works.
// Q4H: also writes y in the q4h form of mul_mat_vec_q4h.comp (q4h_prep.comp's format, q4h_funcs.glsl):
// xh: [rows, H/8] uvec4, xg: [rows, H/32] vec2, contiguous rows; H and the workgroup size multiples of 64.
// Each invocation packs the value of y it wrote, so the packed values are those of y exactly (what
// q4h_prep.comp would read, packed by the same code). A row is split over
// ceil(H / workgroup size) workgroups, each computing the whole row's sum of squares (as the plain variant
// does, so y is the same) and writing one workgroup-wide chunk: one workgroup looping over a 2048-column row
// took 13.7 us on an H200, a chain of 60 barriers. So y must not alias x here: one workgroup's y would change
// the x another one is still summing.
//! variant rms_norm_unit -DWEIGHT_MODE=0
//! variant rms_norm -DWEIGHT_MODE=1
//! variant rms_norm_1p -DWEIGHT_MODE=2
//! variant rms_norm_q4h_unit -DWEIGHT_MODE=0 -DQ4H=1
//! variant rms_norm_q4h -DWEIGHT_MODE=1 -DQ4H=1
//! variant rms_norm_q4h_1p -DWEIGHT_MODE=2 -DQ4H=1
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) buffer Y { float y[]; };
#ifdef Q4H
layout(binding = 3) writeonly buffer XH { uvec4 xh[]; };
layout(binding = 4) writeonly buffer XG { vec2 xg[]; };
#include "q4h_funcs.glsl"
#endif
layout(push_constant) uniform Push {
  uint rows;
  uint h;
  uint x_stride;  // floats between rows of x
  uint y_stride;  // floats between rows of y
  float eps;
} p;

shared float partial[gl_WorkGroupSize.x];

float weight_scale(uint i) {
#if WEIGHT_MODE == 0
  return 1.0;
#elif WEIGHT_MODE == 1
  return w[i];
#else
  return 1.0 + w[i];
#endif
}

void main() {
#ifdef Q4H
  const uint chunks = (p.h + gl_WorkGroupSize.x - 1) / gl_WorkGroupSize.x;
  const uint row = flat_workgroup_id() / chunks;
  const uint chunk = flat_workgroup_id() % chunks;
#else
  const uint row = flat_workgroup_id();
#endif
  if (row >= p.rows) return;
  const uint tid = gl_LocalInvocationID.x;
  const uint xb = row * p.x_stride, yb = row * p.y_stride;
  float sum = 0.0;
  for (uint i = tid; i < p.h; i += gl_WorkGroupSize.x) sum += x[xb + i] * x[xb + i];
  partial[tid] = sum;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (tid < s) partial[tid] += partial[tid + s];
    barrier();
  }
  const float inv = inversesqrt(partial[0] / float(p.h) + p.eps);
#ifdef Q4H
  // This workgroup's columns, packed by the whole workgroup (q4h_pack has barriers).
  const uint c = chunk * gl_WorkGroupSize.x + tid;
  const bool live = c < p.h;
  float v = 0.0;
  if (live) {
    v = x[xb + c] * inv * weight_scale(c);
    y[yb + c] = v;
  }
  q4h_pack(v, live, row, c / 64, p.h);
#else
  for (uint i = tid; i < p.h; i += gl_WorkGroupSize.x) y[yb + i] = x[xb + i] * inv * weight_scale(i);
#endif
}
