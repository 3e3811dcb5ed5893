#include "ops/reference/attention_prep.hpp"

#include "ops/reference/norm.hpp"
#include "ops/reference/rope.hpp"

namespace mach::ref {

void qk_norm_rope(std::span<float> q, std::span<float> k, std::span<const float> q_norm,
                  std::span<const float> k_norm, std::span<const uint32_t> positions,
                  std::span<const float> inv_freq, const ops::QkNormRopeShape& shape,
                  const ops::QkNormRopeParams& params) {
  const uint32_t T = shape.tokens, D = shape.head_dim;
  rms_norm(q, q_norm, q, T * shape.q_heads, D, params.eps, params.weight);
  rms_norm(k, k_norm, k, T * shape.kv_heads, D, params.eps, params.weight);
  const ops::RopeShape q_rope{T, shape.q_heads, D, shape.rotary_dim, shape.offset, 0};
  const ops::RopeShape k_rope{T, shape.kv_heads, D, shape.rotary_dim, shape.offset, 0};
  rope(q, positions, inv_freq, q_rope, params.style, params.attention_factor);
  rope(k, positions, inv_freq, k_rope, params.style, params.attention_factor);
}

}  // namespace mach::ref
