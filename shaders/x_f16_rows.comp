#version 450
// Prepares activations for mul_mat_cm.comp: x [rows, K] f32 -> xs [rows, K] f16 = x / s_r and s_r per row,
// with s_r the smallest power of two >= max_k |x[r, k]| (1 for an all-zero row). Every xs value is then in
// [-1, 1] (no f16 overflow, whatever the activations' range) and the division is exact; the product kernel
// multiplies its f32 results by s_r. Values below 2^-14 s_r lose precision as f16 subnormals (a relative error
// of the dot product below ~1e-4 unless such tiny values carry it). NaN and infinity propagate as NaN.
// One workgroup of 256 invocations per row; K is a multiple of 8 (xs is written as 2 f16 per word).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X { vec2 x2[]; };
layout(binding = 1) writeonly buffer XS { uint xs[]; };
layout(binding = 2) writeonly buffer XScale { float x_scale[]; };
layout(push_constant) uniform Push {
  uint rows;
  uint k;
} p;

shared float partial[256];  // one per subgroup (at least 1 invocation each)

void main() {
  const uint r = flat_workgroup_id();
  if (r >= p.rows) return;  // the whole workgroup
  const uint tid = gl_LocalInvocationID.x;
  const uint half_k = p.k / 2;
  float m = 0.0;
  for (uint i = tid; i < half_k; i += 256) {
    const vec2 v = abs(x2[r * half_k + i]);
    m = max(m, max(v.x, v.y));  // max() drops NaN on some devices: checked below through the values
  }
  m = subgroupMax(m);
  if (subgroupElect()) partial[gl_SubgroupID] = m;
  barrier();
  m = 0.0;
  for (uint s = 0; s < gl_NumSubgroups; ++s) m = max(m, partial[s]);
  // exp2(ceil(log2(m))) without rounding doubt: the exponent of m, one more unless m is a power of two.
  float s = 1.0;
  if (m > 0.0 && m <= 3.0e38) {
    int e;
    const float f = frexp(m, e);  // m = f * 2^e, f in [0.5, 1)
    s = ldexp(1.0, f == 0.5 ? e - 1 : e);
  }
  const float inv = 1.0 / s;
  for (uint i = tid; i < half_k; i += 256) {
    const vec2 v = x2[r * half_k + i];
    const bool bad = any(isnan(v)) || any(isinf(v)) || m > 3.0e38;
    xs[r * half_k + i] = packHalf2x16(bad ? vec2(uintBitsToFloat(0x7fc00000u)) : v * inv);
  }
  if (tid == 0) x_scale[r] = s;
}
