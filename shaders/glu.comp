#version 450
// Gated activations: out[t, i] = act(gate[t, i]) * up[t, i] over [T, I], f32.
//   glu_swiglu:     silu(g) * u; with limit > 0, g = min(g, limit) and u = clamp(u, -limit, limit) first
//                   (DeepSeek-V4's swiglu_limit).
//   glu_swiglu_oai: gpt-oss: g = min(g, limit), u = clamp(u, -limit, limit), out = (u + 1) * g * sigmoid(alpha g).
//   glu_geglu:      gelu_pytorch_tanh(g) * u (Gemma).
// gate and up are read at row * row_stride + offset + i * elem_stride, so one layout covers two separate
// buffers (stride I, offsets 0), a fused [T, 2I] row (gate first: offsets 0 and I, stride 2I) and the
// interleaved gpt-oss row (offsets 0 and 1, stride 2I, elem_stride 2); gate and up may bind the same buffer.
//! variant glu_swiglu -DGLU_KIND=0
//! variant glu_swiglu_oai -DGLU_KIND=1
//! variant glu_geglu -DGLU_KIND=2
#include "common.glsl"
#include "math_funcs.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Gate { float gate[]; };
layout(binding = 1) readonly buffer Up { float up[]; };
layout(binding = 2) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform Push {
  uint tokens;
  uint width;  // I
  uint gate_offset;
  uint up_offset;
  uint row_stride;
  uint elem_stride;
  float limit;
  float alpha;
} p;

void main() {
  const uint idx = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  if (idx >= p.tokens * p.width) return;
  const uint t = idx / p.width, i = idx % p.width;
  float g = gate[t * p.row_stride + p.gate_offset + i * p.elem_stride];
  float u = up[t * p.row_stride + p.up_offset + i * p.elem_stride];
#if GLU_KIND == 0
  if (p.limit > 0.0) {
    g = min(g, p.limit);
    u = clamp(u, -p.limit, p.limit);
  }
  outv[idx] = g * sigmoid(g) * u;
#elif GLU_KIND == 1
  g = min(g, p.limit);
  u = clamp(u, -p.limit, p.limit);
  outv[idx] = (u + 1.0) * g * sigmoid(p.alpha * g);
#else
  const float inner = 0.7978845608028654 * (g + 0.044715 * g * g * g);
  outv[idx] = 0.5 * g * (1.0 + safe_tanh(inner)) * u;
#endif
}
