#include "ops/reference/elementwise.hpp"

#include <cassert>

namespace mach::ref {

void add(std::span<const float> a, std::span<const float> b, std::span<float> y) {
  assert(a.size() == b.size() && a.size() == y.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = a[i] + b[i];
}

}  // namespace mach::ref
