#include "ops/reference/elementwise.hpp"

#include <cassert>

namespace mach::ref {

void add(std::span<const float> a, std::span<const float> b, std::span<float> y) {
  assert(a.size() == b.size() && a.size() == y.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = a[i] + b[i];
}

}  // namespace mach::ref

namespace mach::ref {

void moe_combine(std::span<const float> y, std::span<const float> w, std::span<float> x, size_t tokens, size_t top_k,
                 size_t hidden) {
  assert(y.size() == tokens * top_k * hidden && w.size() == tokens * top_k && x.size() == tokens * hidden);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t h = 0; h < hidden; ++h) {
      double sum = 0;
      for (size_t j = 0; j < top_k; ++j) sum += static_cast<double>(w[t * top_k + j]) * y[(t * top_k + j) * hidden + h];
      x[t * hidden + h] = static_cast<float>(x[t * hidden + h] + sum);
    }
}

}  // namespace mach::ref
