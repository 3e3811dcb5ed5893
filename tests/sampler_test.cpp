#include "engine/sampler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

namespace mach::engine {
namespace {

// The distribution sorted by descending probability, ties to the lower id (distribution() keeps no order).
std::vector<std::pair<uint32_t, float>> sorted(std::vector<std::pair<uint32_t, float>> d) {
  std::sort(d.begin(), d.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  return d;
}

// The truncations as written down, on a fully sorted vocabulary: temperature, top_k, softmax, the smallest
// prefix reaching top_p, then min_p within it (Hugging Face's order), renormalized.
std::vector<std::pair<uint32_t, double>> reference(std::vector<float> logits, const SamplingParams& sp) {
  std::vector<std::pair<uint32_t, double>> c;
  for (uint32_t i = 0; i < logits.size(); ++i) c.emplace_back(i, double{logits[i]} / sp.temperature);
  std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  if (sp.top_k > 0 && sp.top_k < c.size()) c.resize(sp.top_k);
  const double top = c.front().second;
  double sum = 0;
  for (auto& x : c) sum += x.second = std::exp(x.second - top);
  for (auto& x : c) x.second /= sum;
  size_t keep = c.size();
  if (sp.top_p < 1.0f) {
    double mass = 0;
    for (size_t i = 0; i < c.size(); ++i)
      if ((mass += c[i].second) >= sp.top_p) {
        keep = i + 1;
        break;
      }
  }
  size_t n = 1;
  while (n < keep && c[n].second >= sp.min_p * c[0].second) ++n;
  c.resize(n);
  double kept = 0;
  for (const auto& x : c) kept += x.second;
  for (auto& x : c) x.second /= kept;
  return c;
}

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
    const auto d = sorted(s.distribution(l, {}));
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

TEST(Sampler, TruncationsKeepWhatTheSortedReferenceKeeps) {
  // A vocabulary of Qwen3's size, logits spread like a model's (a few large, a long tail), every combination
  // of the truncations; ties included (rounded logits) to check which of equal tokens a cut keeps.
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  for (const bool ties : {false, true}) {
    std::vector<float> logits(151936);
    for (auto& x : logits) x = ties ? std::round(normal(gen)) : normal(gen);
    for (int i = 0; i < 20; ++i) logits[gen() % logits.size()] += 12.0f;
    for (const float temperature : {0.7f, 1.5f})
      for (const uint32_t top_k : {0u, 1u, 40u, 5000u})
        for (const float top_p : {1.0f, 0.9f, 0.5f, 0.999f})
          for (const float min_p : {0.0f, 0.05f}) {
            const SamplingParams sp{.temperature = temperature, .top_k = top_k, .top_p = top_p, .min_p = min_p};
            auto l = logits;
            auto got = Sampler(sp).distribution(l, {});
            auto want = reference(logits, sp);
            // Compared by id: equal probabilities may be listed in either order.
            std::sort(got.begin(), got.end());
            std::sort(want.begin(), want.end());
            SCOPED_TRACE(::testing::Message() << "ties " << ties << " T " << temperature << " top_k " << top_k
                                              << " top_p " << top_p << " min_p " << min_p);
            ASSERT_EQ(got.size(), want.size());
            for (size_t j = 0; j < got.size(); ++j) {
              ASSERT_EQ(got[j].first, want[j].first) << j;
              ASSERT_NEAR(got[j].second, want[j].second, 1e-6 + 1e-4 * want[j].second) << j;
            }
          }
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

TEST(Sampler, LogitBiasIsAddedBeforeEverythingElse) {
  const std::vector<float> base = {1.0f, 2.0f, 0.5f};
  {
    auto l = base;
    Sampler s({.temperature = 0, .logit_bias = {{2, 5.0f}}});
    EXPECT_EQ(s.sample(l, {}), 2u);
    EXPECT_FLOAT_EQ(l[2], 5.5f);
  }
  {
    auto l = base;  // -100 bans the favourite; a token past the row is ignored
    Sampler s({.temperature = 1, .seed = 1, .logit_bias = {{1, -100.0f}, {9, 100.0f}}});
    for (const auto& [token, p] : s.distribution(l, {})) EXPECT_TRUE(token != 1u || p < 1e-30f);
  }
  {
    auto l = base;  // top_k sees the biased logits
    Sampler s({.temperature = 1, .top_k = 1, .seed = 1, .logit_bias = {{0, 1.5f}}});
    EXPECT_EQ(s.sample(l, {}), 0u);
  }
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
