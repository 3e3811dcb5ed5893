// CPU reference for the fused attention inputs (ops/attention_prep.hpp): the unfused reference ops composed.
#pragma once

#include <cstdint>
#include <span>

#include "ops/attention_prep.hpp"

namespace mach::ref {

// q: [T, QH, D], k: [T, KVH, D], normed and rotated in place as ref::rms_norm per head row, then ref::rope;
// q_norm, k_norm: [D]; positions: [T]; inv_freq: [rotary_dim / 2].
void qk_norm_rope(std::span<float> q, std::span<float> k, std::span<const float> q_norm,
                  std::span<const float> k_norm, std::span<const uint32_t> positions,
                  std::span<const float> inv_freq, const ops::QkNormRopeShape& shape,
                  const ops::QkNormRopeParams& params);

}  // namespace mach::ref
