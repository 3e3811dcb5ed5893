#include "ops/reference/rope.hpp"

#include <cassert>
#include <cmath>

namespace mach::ref {

void rope(std::span<float> x, std::span<const uint32_t> positions, std::span<const float> inv_freq,
          const ops::RopeShape& shape, ops::RopeStyle style, float attention_factor) {
  const uint32_t half = shape.rotary_dim / 2;
  const uint64_t stride = shape.token_stride ? shape.token_stride : uint64_t{shape.heads} * shape.head_dim;
  assert(inv_freq.size() >= half && positions.size() >= shape.tokens);
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    for (uint32_t h = 0; h < shape.heads; ++h) {
      float* head = &x[t * stride + uint64_t{h} * shape.head_dim + shape.offset];
      for (uint32_t j = 0; j < half; ++j) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[j];
        const double c = std::cos(double(angle)) * attention_factor;
        const double s = std::sin(double(angle)) * attention_factor;
        float& a = style == ops::RopeStyle::neox ? head[j] : head[2 * j];
        float& b = style == ops::RopeStyle::neox ? head[j + half] : head[2 * j + 1];
        const double x0 = a, x1 = b;
        a = static_cast<float>(x0 * c - x1 * s);
        b = static_cast<float>(x1 * c + x0 * s);
      }
    }
  }
}

}  // namespace mach::ref
