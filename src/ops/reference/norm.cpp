#include "ops/reference/norm.hpp"

#include <cassert>
#include <cmath>

namespace mach::ref {

void rms_norm(std::span<const float> x, std::span<const float> w, std::span<float> y, uint32_t rows, uint32_t h,
              float eps, ops::NormWeight weight) {
  assert(x.size() >= uint64_t{rows} * h && y.size() >= uint64_t{rows} * h);
  for (uint64_t r = 0; r < rows; ++r) {
    const float* xr = &x[r * h];
    double sum = 0;
    for (uint32_t i = 0; i < h; ++i) sum += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(sum / h + eps);
    for (uint32_t i = 0; i < h; ++i) {
      double scale = 1.0;
      if (weight == ops::NormWeight::w) scale = w[i];
      if (weight == ops::NormWeight::one_plus_w) scale = 1.0 + w[i];
      y[r * h + i] = static_cast<float>(xr[i] * inv * scale);
    }
  }
}

}  // namespace mach::ref
