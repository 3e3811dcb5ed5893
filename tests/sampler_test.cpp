#include "engine/sampler.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace mach::engine {
namespace {

TEST(Sampler, GreedyPicksTheLowestMaximum) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  Sampler s({.temperature = 0});
  EXPECT_EQ(s.sample(logits, {}), 1u);
}

TEST(Sampler, TopKAndTopPAndMinPTruncate) {
  // Probabilities after softmax at T=1: proportional to e^3, e^2, e^1, e^0.
  std::vector<float> base = {0.0f, 3.0f, 1.0f, 2.0f};
  {
    auto l = base;
    Sampler s({.temperature = 1, .top_k = 2});
    const auto d = s.distribution(l, {});
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(d[0].first, 1u);
    EXPECT_EQ(d[1].first, 3u);
    EXPECT_NEAR(d[0].second, std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-6);
  }
  {
    auto l = base;
    Sampler s({.temperature = 1, .top_p = 0.5f});
    const auto d = s.distribution(l, {});  // p(1) ~ 0.64 >= 0.5
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].first, 1u);
  }
  {
    auto l = base;
    Sampler s({.temperature = 1, .min_p = 0.3f});  // keeps p >= 0.3 * p(1): tokens 1 and 3 (e^-1 = 0.37)
    const auto d = s.distribution(l, {});
    ASSERT_EQ(d.size(), 2u);
  }
}

TEST(Sampler, DrawsFollowTheDistributionAndTheSeed) {
  std::vector<float> base = {0.0f, std::log(3.0f)};  // p = 1/4, 3/4
  Sampler a({.temperature = 1, .seed = 42}), b({.temperature = 1, .seed = 42});
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 20000; ++i) {
    auto l1 = base, l2 = base;
    const uint32_t x = a.sample(l1, {});
    EXPECT_EQ(x, b.sample(l2, {}));
    ++counts[x];
  }
  EXPECT_NEAR(counts[1] / 20000.0, 0.75, 0.02);
}

TEST(Sampler, PenaltiesFollowOpenAiSemantics) {
  std::vector<float> l = {1.0f, 1.0f, 1.0f};
  const std::vector<uint32_t> generated = {0, 0, 2};
  Sampler s({.temperature = 0, .presence_penalty = 0.5f, .frequency_penalty = 0.25f});
  EXPECT_EQ(s.sample(l, generated), 1u);
  EXPECT_FLOAT_EQ(l[0], 1.0f - 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(l[2], 1.0f - 0.5f - 0.25f);
}

}  // namespace
}  // namespace mach::engine
