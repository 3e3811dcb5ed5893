#version 450
// Merges the split-K partial results of attention.comp: for each (token, head) row,
// out = sum_s o_s * exp(m_s - M) / (sum_s l_s * exp(m_s - M) [+ exp(sink - M)]), M the max of all m_s [and
// the sink]. part_o: [T, H, splits, D] f32 (unnormalized); part_ml: [T, H, splits] (m, l), m = -inf for a
// split that saw no key; sinks: [H] f32; out: [T, H, D] f32. One workgroup per row; splits <= 256.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(binding = 0) readonly buffer PartO { vec2 part_o[]; };
layout(binding = 1) readonly buffer PartML { vec2 part_ml[]; };
layout(binding = 2) readonly buffer Sinks { float sinks[]; };
layout(binding = 3) writeonly buffer Out { vec2 out_[]; };
layout(push_constant) uniform Push {
  uint rows;  // T * H
  uint n_heads;
  uint half_dim;
  uint splits;
  uint has_sinks;
} p;

shared float weight[256];

void main() {
  const uint row = flat_workgroup_id(), tid = gl_LocalInvocationID.x;
  if (row >= p.rows) return;
  const float neg_inf = uintBitsToFloat(0xff800000u);
  const float sink = p.has_sinks != 0 ? sinks[row % p.n_heads] : neg_inf;
  float mx = sink;
  for (uint s = 0; s < p.splits; ++s) mx = max(mx, part_ml[row * p.splits + s].x);
  for (uint s = tid; s < p.splits; s += 64) {
    const float ms = part_ml[row * p.splits + s].x;
    weight[s] = ms > neg_inf ? exp(ms - mx) : 0.0;
  }
  barrier();
  float denom = p.has_sinks != 0 ? exp(sink - mx) : 0.0;
  for (uint s = 0; s < p.splits; ++s) denom += part_ml[row * p.splits + s].y * weight[s];
  for (uint w = tid; w < p.half_dim; w += 64) {
    vec2 acc = vec2(0);
    for (uint s = 0; s < p.splits; ++s) acc += part_o[(row * p.splits + s) * p.half_dim + w] * weight[s];
    out_[row * p.half_dim + w] = acc / denom;
  }
}
