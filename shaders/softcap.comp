#version 450
// Logit soft-capping in place: x[i] = cap * tanh(x[i] / cap) over n floats (Gemma's final logits, cap 30).
#include "common.glsl"
#include "math_funcs.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) buffer X { float x[]; };
layout(push_constant) uniform Push {
  uint n;
  float cap;
} p;

void main() {
  const uint i = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  if (i < p.n) x[i] = p.cap * safe_tanh(x[i] / p.cap);
}
