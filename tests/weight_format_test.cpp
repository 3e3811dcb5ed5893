#include "ops/weight_format.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace mach::ops {
namespace {

TEST(WeightFormat, HalfRoundTripsExactly) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint32_t exp = (h >> 10) & 0x1f;
    if (exp == 31 && (h & 0x3ff)) continue;  // NaN payloads need not round-trip
    EXPECT_EQ(float_to_half(half_to_float(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(WeightFormat, HalfRoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048), 0x3c00);        // halfway between 1 and next: to even (1)
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048), 0x3c02);        // halfway: to even (up)
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);                  // overflows to inf
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(5.9604645e-08f), 0x0001);            // smallest subnormal
}

TEST(WeightFormat, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);  // exactly halfway, even stays
}

TEST(WeightFormat, QuantizersStayWithinHalfAStep) {
  std::mt19937 gen(7);
  std::normal_distribution<float> dist;
  const uint64_t rows = 5, cols = 128;
  std::vector<float> w(rows * cols);
  for (auto& x : w) x = dist(gen);
  for (WeightType t : {WeightType::f32, WeightType::f16, WeightType::bf16, WeightType::q8_0, WeightType::q4}) {
    const auto bytes = quantize(t, w, rows, cols);
    ASSERT_EQ(bytes.size(), weight_bytes(t, rows, cols));
    const auto back = dequantize(t, bytes, rows, cols);
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t g = 0; g < cols / group_size(t); ++g) {
        float lo = INFINITY, hi = -INFINITY;
        const uint32_t gs = group_size(t);
        for (uint32_t j = 0; j < gs; ++j) lo = std::min(lo, w[r * cols + g * gs + j]), hi = std::max(hi, w[r * cols + g * gs + j]);
        const float amax = std::max(std::fabs(lo), std::fabs(hi));
        const float step = t == WeightType::q4 ? (hi - lo) / 15 : t == WeightType::q8_0 ? amax / 127 : 0;
        for (uint32_t j = 0; j < gs; ++j) {
          const uint64_t i = r * cols + g * gs + j;
          const float tol = step * 0.5f + std::fabs(w[i]) * (t == WeightType::bf16 ? 4e-3f : 1e-3f) + 1e-3f;
          EXPECT_NEAR(back[i], w[i], tol) << weight_type_name(t) << " at " << i;
        }
      }
    }
  }
}

TEST(WeightFormat, SizesAndNames) {
  EXPECT_EQ(weight_bytes(WeightType::q4, 2, 64), 64u + 16u);
  EXPECT_EQ(weight_bytes(WeightType::q8_0, 1, 32), 32u + 16u);
  EXPECT_FALSE(shape_fits(WeightType::q4, 3, 32));
  EXPECT_EQ(parse_weight_type("q8_0"), WeightType::q8_0);
  EXPECT_FALSE(parse_weight_type("q5"));
}

}  // namespace
}  // namespace mach::ops
