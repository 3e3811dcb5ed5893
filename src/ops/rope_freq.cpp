#include "ops/rope_freq.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numbers>

namespace mach::ops {
namespace {

std::vector<double> default_inv_freq(double theta, uint32_t dim) {
  std::vector<double> f(dim / 2);
  for (uint32_t j = 0; j < dim / 2; ++j) f[j] = 1.0 / std::pow(theta, 2.0 * j / dim);
  return f;
}

double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// The dimension index at which a frequency completes `rotations` turns over the original context.
double correction_dim(double rotations, uint32_t dim, double theta, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2 * std::numbers::pi)) / (2 * std::log(theta));
}

void yarn(const RopeConfig& c, uint32_t dim, std::vector<double>& inv_freq, double& attention) {
  assert(c.original_max_position_embeddings > 0);
  const double factor =
      c.factor > 0 ? c.factor : double(c.max_position_embeddings) / c.original_max_position_embeddings;
  if (c.attention_factor) {
    attention = *c.attention_factor;
  } else if (c.mscale && c.mscale_all_dim && *c.mscale != 0 && *c.mscale_all_dim != 0) {
    attention = yarn_mscale(factor, *c.mscale) / yarn_mscale(factor, *c.mscale_all_dim);
  } else {
    attention = yarn_mscale(factor, 1.0);
  }
  const double max_pos = c.original_max_position_embeddings;
  double low = correction_dim(c.beta_fast, dim, c.theta, max_pos);
  double high = correction_dim(c.beta_slow, dim, c.theta, max_pos);
  if (c.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // as transformers: avoid a zero-width ramp
  for (uint32_t j = 0; j < dim / 2; ++j) {
    const double extrapolation = 1.0 / std::pow(c.theta, 2.0 * j / dim);
    const double interpolation = extrapolation / factor;
    const double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);
    const double extrapolation_weight = 1.0 - ramp;
    inv_freq[j] = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight;
  }
}

}  // namespace

RopeTable rope_table(const RopeConfig& c) {
  assert(c.head_dim > 0 && c.theta > 0);
  RopeTable table;
  double attention = 1.0;
  std::vector<double> inv_freq;
  if (c.scaling == RopeScaling::proportional) {
    table.rotary_dim = c.head_dim;
    const uint32_t rope_pairs = static_cast<uint32_t>(std::floor(c.partial_rotary_factor * c.head_dim / 2));
    inv_freq.assign(c.head_dim / 2, 0.0);
    for (uint32_t j = 0; j < rope_pairs && j < c.head_dim / 2; ++j)
      inv_freq[j] = 1.0 / std::pow(c.theta, 2.0 * j / c.head_dim) / c.factor;
  } else {
    table.rotary_dim = static_cast<uint32_t>(c.head_dim * c.partial_rotary_factor);
    inv_freq = default_inv_freq(c.theta, table.rotary_dim);
    if (c.scaling == RopeScaling::linear)
      for (double& f : inv_freq) f /= c.factor;
    if (c.scaling == RopeScaling::yarn) yarn(c, table.rotary_dim, inv_freq, attention);
  }
  assert(table.rotary_dim % 2 == 0 && table.rotary_dim <= c.head_dim);
  table.inv_freq.assign(inv_freq.begin(), inv_freq.end());
  table.attention_factor = static_cast<float>(attention);
  return table;
}

}  // namespace mach::ops
