#include "ops/reference/embedding.hpp"

namespace mach::ref {

void embedding(std::span<const float> table, uint32_t rows, uint32_t cols, std::span<const uint32_t> ids,
               std::span<float> out, float multiplier) {
  for (uint64_t t = 0; t < ids.size(); ++t)
    for (uint64_t c = 0; c < cols; ++c)
      out[t * cols + c] = ids[t] < rows ? table[uint64_t{ids[t]} * cols + c] * multiplier : 0.0f;
}

}  // namespace mach::ref
