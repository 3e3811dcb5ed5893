// Rotary position embedding on the GPU, in place on q or k. Shapes: T tokens, heads, D head_dim.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

enum class RopeStyle : uint32_t {
  neox = 0,         // rotate halves: pair (j, j + rotary_dim/2) — Qwen3, Qwen3.5, gpt-oss, Gemma
  interleaved = 1,  // adjacent pairs (2j, 2j + 1) — GPT-J, DeepSeek-V4
};

struct RopeShape {
  uint32_t tokens = 0;
  uint32_t heads = 0;
  uint32_t head_dim = 0;
  uint32_t rotary_dim = 0;     // <= head_dim, even (RopeTable::rotary_dim)
  uint32_t offset = 0;         // first rotated dim: 0 (Qwen3.5 partial rotary) or head_dim - rotary_dim (DeepSeek-V4)
  uint32_t token_stride = 0;   // floats between tokens of x; 0 means heads * head_dim (a slice of a fused QKV row
                               // passes its row width here and its column offset in the binding)
};

// x: [T, heads, D] f32, rotated in place; positions: [T] u32 (non-negative i32 has the same bits);
// inv_freq: [rotary_dim / 2] f32 from rope_table(); attention_factor from the same table.
void rope(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding positions, gpu::Binding inv_freq,
          const RopeShape& shape, RopeStyle style, float attention_factor);

}  // namespace mach::ops
