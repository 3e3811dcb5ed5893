#version 450
// Rotary position embedding, in place on x: [T, heads, D] f32 (token stride given, head stride D).
// Dims [offset, offset + rotary_dim) of every head rotate, the rest pass through. Pair j (j < rotary_dim/2)
// rotates by angle pos[t] * inv_freq[j] and is (offset + j, offset + j + rotary_dim/2) in the NeoX layout
// (rotate halves) or (offset + 2j, offset + 2j + 1) in the interleaved (GPT-J) layout. cos and sin are
// multiplied by attention_factor (YaRN). One invocation per pair.
//! variant rope_neox -DROPE_INTERLEAVED=0
//! variant rope_interleaved -DROPE_INTERLEAVED=1
#include "common.glsl"
#include "math_funcs.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer Pos { uint pos[]; };
layout(binding = 2) readonly buffer Freq { float inv_freq[]; };
layout(push_constant) uniform Push {
  uint tokens;
  uint heads;
  uint head_dim;
  uint rotary_dim;
  uint offset;
  uint token_stride;  // floats between tokens of x
  float attention_factor;
} p;

void main() {
  const uint half_rot = p.rotary_dim / 2;
  const uint i = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  if (i >= p.tokens * p.heads * half_rot) return;
  const uint j = i % half_rot;
  const uint head = (i / half_rot) % p.heads;
  const uint t = i / (half_rot * p.heads);
  const float angle = reduce_angle(float(pos[t]) * inv_freq[j]);
  const float c = cos(angle) * p.attention_factor, s = sin(angle) * p.attention_factor;
  const uint base = t * p.token_stride + head * p.head_dim + p.offset;
#if ROPE_INTERLEAVED
  const uint a = base + 2 * j, b = a + 1;
#else
  const uint a = base + j, b = a + half_rot;
#endif
  const float x0 = x[a], x1 = x[b];
  x[a] = x0 * c - x1 * s;
  x[b] = x1 * c + x0 * s;
}
