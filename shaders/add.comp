#version 450
// Residual add: y[i] = a[i] + b[i] over n floats. a, b, y: [n] f32 (y may alias neither input).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer B { float b[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Push { uint n; } p;

void main() {
  const uint i = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  if (i < p.n) y[i] = a[i] + b[i];
}
