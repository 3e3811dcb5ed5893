#version 450
// RMSNorm over rows: y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * scale, where scale is w (WEIGHT_MODE 1),
// 1 + w (WEIGHT_MODE 2, Qwen3.5 / Gemma 3 style) or 1 (WEIGHT_MODE 0, Gemma 4's unscaled v_norm / router norm).
// x, y: [rows, H] f32 with row strides (y may alias x); w: [H] f32. One workgroup per row; the workgroup size
// is specialization constant 0 and the reduction is a shared-memory tree, so any subgroup size works.
//! variant rms_norm_unit -DWEIGHT_MODE=0
//! variant rms_norm -DWEIGHT_MODE=1
//! variant rms_norm_1p -DWEIGHT_MODE=2
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) buffer Y { float y[]; };
layout(push_constant) uniform Push {
  uint rows;
  uint h;
  uint x_stride;  // floats between rows of x
  uint y_stride;  // floats between rows of y
  float eps;
} p;

shared float partial[gl_WorkGroupSize.x];

void main() {
  const uint row = flat_workgroup_id();
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
  for (uint i = tid; i < p.h; i += gl_WorkGroupSize.x) {
#if WEIGHT_MODE == 0
    const float scale = 1.0;
#elif WEIGHT_MODE == 1
    const float scale = w[i];
#else
    const float scale = 1.0 + w[i];
#endif
    y[yb + i] = x[xb + i] * inv * scale;
  }
}
