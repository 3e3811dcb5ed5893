// Summary statistics shared by mach bench and the bench programs.
#pragma once

#include <algorithm>
#include <vector>

namespace mach::engine {

// The q-quantile (0..1) of `v`, linearly interpolated between neighbours.
inline double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

}  // namespace mach::engine
