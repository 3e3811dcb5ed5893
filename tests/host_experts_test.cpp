// The host experts' kernels (experts/host_experts.hpp) against the formats' own dequantizers, computed in
// double: the portable loop and the AVX2 kernel (where this CPU has it) on random q4 and q8_0 matrices, and
// the worker pool's phases (every item once, no item before the previous phase is done, job after job).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <vector>

#include "experts/host_experts.hpp"
#include "ops/weight_format.hpp"

namespace mach::test {
namespace {

using experts::HostMatrix;

std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

struct Case {
  ops::WeightType type;
  uint32_t rows, cols;
};

// The quantized activations dot_rows sees, dequantized.
std::vector<double> dequantized_acts(const std::vector<int8_t>& q, const std::vector<float>& scale, uint32_t group) {
  std::vector<double> v(q.size());
  for (size_t i = 0; i < q.size(); ++i) v[i] = double{scale[i / group]} * q[i];
  return v;
}

void check_rows(const Case& c, bool simd) {
  const std::vector<float> w = random_values(uint64_t{c.rows} * c.cols, 7, 0.05f);
  const std::vector<std::byte> bytes = ops::quantize(c.type, w, c.rows, c.cols);
  const std::vector<float> wd = ops::dequantize(c.type, bytes, c.rows, c.cols);
  const HostMatrix m{bytes.data(), c.type, c.rows, c.cols};
  const uint32_t group = ops::group_size(c.type);
  // Activations with a few large values, as a SwiGLU output has.
  std::vector<float> x = random_values(c.cols, 11);
  x[3] = 9.0f;
  x[c.cols - 5] = -6.0f;
  std::vector<int8_t> q(c.cols);
  std::vector<float> scale(c.cols / group), sum(c.cols / group);
  experts::quantize_acts(x, group, q.data(), scale.data(), sum.data());
  const std::vector<double> xd = dequantized_acts(q, scale, group);
  for (int8_t v : q) ASSERT_GE(v, -127);

  // Rows [5, rows - 3): the kernel's offsets matter.
  const uint32_t r0 = 5, r1 = c.rows - 3;
  std::vector<float> out(r1 - r0);
  const experts::RowActs acts{q.data(), scale.data(), sum.data(), out.data()};
  experts::dot_rows(m, r0, r1, std::span(&acts, 1), simd);
  double worst = 0;
  for (uint32_t r = r0; r < r1; ++r) {
    // What the kernel computes: the dequantized weights times the quantized activations, except that q4's
    // affine minimum multiplies the group's exact sum.
    // bound: each activation is off by at most half its group's step, times the weight part it meets.
    double want = 0, exact = 0, mag = 0, bound = 0;
    for (uint32_t j = 0; j < c.cols; ++j) {
      const double wj = wd[uint64_t{r} * c.cols + j];
      exact += wj * x[j];
      mag += std::abs(wj * x[j]);
      if (c.type == ops::WeightType::q4) {
        // w = scale * q + min: the q part meets the quantized activation, the min part the exact one.
        const uint32_t g = j / 64;
        const auto* sm = reinterpret_cast<const uint16_t*>(bytes.data() + ops::scales_offset(c.type, c.rows, c.cols)) +
                         (uint64_t{r} * (c.cols / 64) + g) * 2;
        const double mn = ops::half_to_float(sm[1]);
        want += (wj - mn) * xd[j] + mn * x[j];
        bound += std::abs(wj - mn) * scale[j / group] * 0.5;
      } else {
        want += wj * xd[j];
        bound += std::abs(wj) * scale[j / group] * 0.5;
      }
    }
    worst = std::max(worst, std::abs(out[r - r0] - want) / mag);
    // Against the unquantized activations, the int8 rounding remains, within its bound.
    EXPECT_LE(std::abs(out[r - r0] - exact), bound + 1e-5 * mag) << "row " << r << " against the float activations";
  }
  // Float sums of a few hundred terms: relative to the sum of magnitudes, well under 1e-5.
  EXPECT_LT(worst, 1e-5) << "rows against the same quantized activations";
}

TEST(HostExpertKernels, PortableRowsMatchTheDequantizedProduct) {
  // 640 columns: eight q4 groups in the vector loop and two in its tail.
  for (const Case& c : {Case{ops::WeightType::q4, 40, 640}, Case{ops::WeightType::q4, 16, 128},
                        Case{ops::WeightType::q8_0, 40, 96}}) {
    SCOPED_TRACE(std::string(ops::weight_type_name(c.type)) + " cols " + std::to_string(c.cols));
    check_rows(c, false);
  }
}

TEST(HostExpertKernels, Avx2RowsMatchTheDequantizedProduct) {
  if (!experts::host_has_avx2()) GTEST_SKIP() << "this CPU has no AVX2: the portable loop serves it";
  for (const Case& c : {Case{ops::WeightType::q4, 40, 640}, Case{ops::WeightType::q4, 16, 128},
                        Case{ops::WeightType::q4, 9, 2048}, Case{ops::WeightType::q4, 12, 768}}) {
    SCOPED_TRACE("q4 cols " + std::to_string(c.cols));
    check_rows(c, true);
  }
}

// Several tokens in one call (the AVX2 kernel shares each row's unpacked weights between up to four): each
// token's results are bit for bit those of a call with it alone.
TEST(HostExpertKernels, TokensTogetherComputeWhatEachComputesAlone) {
  for (const bool simd : {false, true}) {
    if (simd && !experts::host_has_avx2()) continue;
    const uint32_t rows = 24, cols = 640, tokens = 7;
    const std::vector<float> w = random_values(uint64_t{rows} * cols, 5, 0.05f);
    const std::vector<std::byte> bytes = ops::quantize(ops::WeightType::q4, w, rows, cols);
    const HostMatrix m{bytes.data(), ops::WeightType::q4, rows, cols};
    std::vector<int8_t> q(tokens * cols);
    std::vector<float> scale(tokens * cols / 64), sum(scale.size());
    for (uint32_t t = 0; t < tokens; ++t)
      experts::quantize_acts(random_values(cols, 100 + t), 64, q.data() + t * cols, scale.data() + t * cols / 64,
                             sum.data() + t * cols / 64);
    std::vector<float> together(tokens * rows), alone(tokens * rows);
    std::vector<experts::RowActs> acts;
    for (uint32_t t = 0; t < tokens; ++t) {
      const experts::RowActs a{q.data() + t * cols, scale.data() + t * cols / 64, sum.data() + t * cols / 64,
                               together.data() + t * rows};
      acts.push_back(a);
      experts::RowActs one = a;
      one.out = alone.data() + t * rows;
      experts::dot_rows(m, 0, rows, std::span(&one, 1), simd);
    }
    experts::dot_rows(m, 0, rows, acts, simd);  // 7 tokens: a call of 4 and one of 3
    EXPECT_EQ(together, alone) << (simd ? "avx2" : "portable");
  }
}

TEST(HostExpertKernels, QuantizedActivationsKeepTheGroupsSumAndAZeroGroup) {
  std::vector<float> x = random_values(128, 3);
  for (uint32_t j = 64; j < 128; ++j) x[j] = 0;
  std::vector<int8_t> q(128);
  std::vector<float> scale(2), sum(2);
  experts::quantize_acts(x, 64, q.data(), scale.data(), sum.data());
  float s = 0, amax = 0;
  for (uint32_t j = 0; j < 64; ++j) {
    s += x[j];
    amax = std::max(amax, std::abs(x[j]));
    EXPECT_NEAR(scale[0] * q[j], x[j], scale[0] * 0.5f + 1e-7f);
  }
  EXPECT_FLOAT_EQ(sum[0], s);
  EXPECT_FLOAT_EQ(scale[0], amax / 127.0f);
  EXPECT_EQ(scale[1], 0.0f);
  EXPECT_EQ(sum[1], 0.0f);
  for (uint32_t j = 64; j < 128; ++j) EXPECT_EQ(q[j], 0);
}

TEST(WorkerPool, RunsEveryItemOnceAfterThePreviousPhase) {
  experts::WorkerPool pool(4);
  EXPECT_EQ(pool.threads(), 4u);
  const std::vector<uint32_t> phases = {7, 100, 1, 50, 0, 3};
  for (int job = 0; job < 300; ++job) {
    std::vector<std::vector<std::atomic<int>>> runs;
    for (uint32_t n : phases) runs.emplace_back(n);
    std::vector<std::atomic<uint32_t>> done(phases.size());
    std::atomic<int> early{0};
    pool.start(phases, [&](uint32_t phase, uint32_t item) {
      if (phase > 0 && done[phase - 1].load() != phases[phase - 1]) early.fetch_add(1);
      // Some items take longer, so that threads overtake each other.
      if (item % 13 == 0) for (volatile int spin = 0; spin < 2000; ++spin) {}
      runs[phase][item].fetch_add(1);
      done[phase].fetch_add(1);
    });
    if (job % 3 == 0) std::this_thread::yield();  // sometimes the workers start alone
    pool.wait();
    ASSERT_EQ(early.load(), 0) << "job " << job;
    ASSERT_GT(pool.last_job_ns(), 0u) << "job " << job;
    for (size_t p = 0; p < phases.size(); ++p)
      for (uint32_t i = 0; i < phases[p]; ++i) ASSERT_EQ(runs[p][i].load(), 1) << "job " << job << " phase " << p;
  }
  // One thread: the caller alone runs the job in wait().
  experts::WorkerPool alone(1);
  uint32_t count = 0;
  alone.start({2, 3}, [&](uint32_t, uint32_t) { ++count; });
  alone.wait();
  EXPECT_EQ(count, 5u);
}

TEST(HostExpertsAuto, BalancesTheHostsPairsAgainstTheCopiesOfTheRest) {
  using experts::choose_host_experts;
  EXPECT_EQ(choose_host_experts(128, 32, 40, 51), 42u);  // 96 * 40 / 91 = 42.2
  EXPECT_EQ(choose_host_experts(128, 32, 80, 51), 59u);  // the H200 hosts measured; 48-64 measured alike
  EXPECT_EQ(choose_host_experts(128, 32, 50, 50), 48u);
  // The chosen N balances the two times: k N / E slabs at host speed against k (E - N - S) / E at upload speed.
  for (double host : {5.0, 12.0, 30.0, 80.0, 200.0})
    for (double up : {31.0, 51.0}) {
      const uint32_t n = choose_host_experts(128, 13, host, up);
      EXPECT_NEAR(n / host, (128.0 - n - 13) / up, 1.0 / std::min(host, up)) << host << " " << up;
    }
}

TEST(HostExpertsAuto, NothingWhenTheBankHoldsEveryExpertOrAProbeFailed) {
  using experts::choose_host_experts;
  EXPECT_EQ(choose_host_experts(128, 128, 80, 51), 0u);
  EXPECT_EQ(choose_host_experts(8, 9, 80, 51), 0u);
  EXPECT_EQ(choose_host_experts(128, 32, 0, 51), 0u);
  EXPECT_EQ(choose_host_experts(128, 32, 80, 0), 0u);
}

}  // namespace
}  // namespace mach::test
