// Gated (GLU) activations of expert and dense MLPs on the GPU: [T, I] gate and up -> [T, I] f32.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

enum class GluKind : uint32_t {
  swiglu = 0,      // silu(g) * u; with limit > 0 first g = min(g, limit), u = clamp(u, -limit, limit)
                   // (qwen3_moe, qwen3_5_moe: limit 0; deepseek_v4: swiglu_limit)
  swiglu_oai = 1,  // gpt_oss: g = min(g, limit), u = clamp(u, -limit, limit), (u + 1) * g * sigmoid(alpha * g)
  geglu = 2,       // gemma4: gelu_pytorch_tanh(g) * u
};

// Where gate and up sit in their rows (from what each family's gate_up weights produce).
enum class GluLayout : uint32_t {
  separate = 0,     // two [T, I] buffers (qwen3_moe gate_proj/up_proj, gemma4 dense MLP)
  fused = 1,        // one [T, 2I] row, gate = first I, up = second I (qwen3_5_moe, gemma4, deepseek_v4 gate_up_proj)
  interleaved = 2,  // one [T, 2I] row, gate at even, up at odd columns (gpt_oss gate_up_proj)
};

struct GluParams {
  GluKind kind = GluKind::swiglu;
  GluLayout layout = GluLayout::separate;
  uint32_t tokens = 0;
  uint32_t width = 0;    // I
  float limit = 0.0f;    // swiglu: 0 = no clamp; swiglu_oai: gpt-oss uses 7
  float alpha = 1.702f;  // swiglu_oai
};

// gate, up: per `layout` (for fused and interleaved pass the same [T, 2I] binding as both); out: [T, I] f32.
void glu(gpu::CommandList& cmd, gpu::Binding gate, gpu::Binding up, gpu::Binding out, const GluParams& params);

}  // namespace mach::ops
