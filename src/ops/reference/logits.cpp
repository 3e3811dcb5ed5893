#include "ops/reference/logits.hpp"

#include <cmath>

namespace mach::ref {

void argmax(std::span<const float> x, std::span<uint32_t> out, uint32_t rows, uint32_t cols) {
  for (uint64_t r = 0; r < rows; ++r) {
    uint32_t best = 0;
    bool found = false;
    for (uint32_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c];
      if (std::isnan(v)) continue;
      if (!found || v > x[r * cols + best]) best = c, found = true;
    }
    out[r] = best;
  }
}

void softcap(std::span<float> x, float cap) {
  for (float& v : x) v = static_cast<float>(cap * std::tanh(double(v) / cap));
}

}  // namespace mach::ref
