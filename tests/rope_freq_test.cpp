// RoPE frequency tables against values worked out by hand from transformers' modeling_rope_utils formulas.
// The op tests cannot catch a wrong table: the GPU op and the CPU reference share rope_table().
#include <gtest/gtest.h>

#include <cmath>

#include "ops/rope_freq.hpp"

namespace mach::ops {
namespace {

void expect_rel(double got, double want) { EXPECT_NEAR(got, want, 1e-6 * std::abs(want)) << "want " << want; }

TEST(RopeTable, DefaultThetaAndPartialRotary) {
  const auto t = rope_table({.theta = 1e7, .head_dim = 256, .partial_rotary_factor = 0.25});
  ASSERT_EQ(t.rotary_dim, 64u);
  ASSERT_EQ(t.inv_freq.size(), 32u);
  expect_rel(t.inv_freq[0], 1.0);
  expect_rel(t.inv_freq[1], std::pow(1e7, -2.0 / 64));
  expect_rel(t.inv_freq[31], std::pow(1e7, -62.0 / 64));
  EXPECT_EQ(t.attention_factor, 1.0f);
}

// gpt-oss: rope_theta 150000, factor 32, original 4096, beta 32/1, truncate false.
TEST(RopeTable, YarnGptOss) {
  RopeConfig c{.theta = 150000, .head_dim = 64, .scaling = RopeScaling::yarn, .factor = 32,
               .original_max_position_embeddings = 4096};
  c.truncate = false;
  const auto t = rope_table(c);
  ASSERT_EQ(t.inv_freq.size(), 32u);
  expect_rel(t.attention_factor, 1.3465735902799727);
  const std::pair<int, double> want[] = {{0, 1.0},
                                         {5, 0.15532298948448497},
                                         {10, 0.019335001126540362},
                                         {16, 0.00045648391922324086},
                                         {20, 1.818833668168956e-05},
                                         {31, 3.0235114281192144e-07}};
  for (auto [j, v] : want) expect_rel(t.inv_freq[j], v);
}

// DeepSeek style: truncated correction range, attention factor from mscale / mscale_all_dim.
TEST(RopeTable, YarnDeepSeekMscale) {
  RopeConfig c{.theta = 10000, .head_dim = 64, .scaling = RopeScaling::yarn, .factor = 40,
               .original_max_position_embeddings = 4096};
  c.mscale = 0.707;
  c.mscale_all_dim = 0.707;
  auto t = rope_table(c);
  expect_rel(t.attention_factor, 1.0);
  const std::pair<int, double> want[] = {{0, 1.0},     {5, 0.23713737056616555}, {10, 0.056234132519034905},
                                         {16, 0.0055}, {20, 0.0007905694150420945}, {31, 3.33380358040831e-06}};
  for (auto [j, v] : want) expect_rel(t.inv_freq[j], v);
  c.mscale = 1.0;
  expect_rel(rope_table(c).attention_factor, 1.0857263992561355);
  c.attention_factor = 0.5;
  expect_rel(rope_table(c).attention_factor, 0.5);
}

TEST(RopeTable, YarnFactorFromContextLengths) {
  RopeConfig c{.theta = 10000, .head_dim = 64, .scaling = RopeScaling::yarn, .factor = 0,
               .max_position_embeddings = 131072, .original_max_position_embeddings = 4096};
  expect_rel(rope_table(c).attention_factor, 0.1 * std::log(32.0) + 1.0);
}

// Gemma 4 full attention: head 512, partial 0.25 -> 64 rotating pairs over the full head, 192 identity pairs.
TEST(RopeTable, ProportionalGemma4) {
  const auto t = rope_table({.theta = 1e6, .head_dim = 512, .partial_rotary_factor = 0.25,
                             .scaling = RopeScaling::proportional});
  ASSERT_EQ(t.rotary_dim, 512u);
  ASSERT_EQ(t.inv_freq.size(), 256u);
  expect_rel(t.inv_freq[0], 1.0);
  expect_rel(t.inv_freq[1], 0.9474635256553754);
  expect_rel(t.inv_freq[63], 0.033376246942920386);
  EXPECT_EQ(t.inv_freq[64], 0.0f);
  EXPECT_EQ(t.inv_freq[255], 0.0f);
  EXPECT_EQ(t.attention_factor, 1.0f);
}

TEST(RopeTable, Linear) {
  const auto t = rope_table({.theta = 10000, .head_dim = 8, .scaling = RopeScaling::linear, .factor = 4});
  expect_rel(t.inv_freq[0], 0.25);
  expect_rel(t.inv_freq[2], 0.25 * std::pow(10000.0, -4.0 / 8));
}

}  // namespace
}  // namespace mach::ops
