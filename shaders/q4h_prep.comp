#version 450
// Prepares activations for mul_mat_vec_q4h.comp: x [R, K] f32 -> per 64-column group g a scale s = max|x|,
// xq = x / s as f16 in the order in which the q4 kernel unpacks nibble pairs, and per 32-column unit the
// sum of x (for the q4 min term).
//   xh: [R, K/8] uvec4: unit u (= 2g + h) word i pairs (b, b+2), (b+32, b+34), (b+1, b+3), (b+33, b+35),
//       b = 16h + 4i, matching bits 0-3/16-19, 4-7/20-23, 8-11/24-27, 12-15/28-31 of q4 weight word i.
//   xg: [R, K/32] vec2 (s of the unit's group, sum of x over the unit's 32 columns).
// One workgroup of 64 invocations per (row, group), one column each. Dividing by the group maximum keeps
// every f16 in [-1, 1]: no overflow for large activations, and the products of the q4 kernel stay small
// enough for f16 sums. The packing lives in q4h_funcs.glsl, shared with rms_norm.comp's Q4H variants (a norm
// that emits this form of its output).
#include "common.glsl"
layout(local_size_x = 64) in;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer XH { uvec4 xh[]; };
layout(binding = 2) writeonly buffer XG { vec2 xg[]; };
layout(push_constant) uniform Push {
  uint rows;
  uint k;
} p;

#include "q4h_funcs.glsl"

void main() {
  const uint groups = p.k / 64;
  const uint id = flat_workgroup_id();
  if (id >= p.rows * groups) return;  // the whole workgroup
  const uint r = id / groups;
  const uint g = id - r * groups;
  q4h_pack(x[r * p.k + g * 64 + gl_LocalInvocationID.x], true, r, g, p.k);
}
