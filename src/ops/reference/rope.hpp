// CPU reference for RoPE: the oracle for tests.
#pragma once

#include <cstdint>
#include <span>

#include "ops/rope.hpp"

namespace mach::ref {

// x: [T, heads, D] with token stride shape.token_stride (0: heads * D), rotated in place exactly as
// ops::rope documents; inv_freq: [rotary_dim / 2]. The angle is the float product pos * inv_freq (as torch
// forms it), its cos/sin are taken in double.
void rope(std::span<float> x, std::span<const uint32_t> positions, std::span<const float> inv_freq,
          const ops::RopeShape& shape, ops::RopeStyle style, float attention_factor);

}  // namespace mach::ref
