// Op cases for RoPE: NeoX and interleaved layouts, partial and trailing rotary slices, default theta, YaRN
// (gpt-oss settings) and Gemma 4's proportional frequencies, long positions.
#include <fmt/format.h>

#include "op_case.hpp"
#include "ops/reference/rope.hpp"
#include "ops/rope.hpp"
#include "ops/rope_freq.hpp"

namespace mach::test {
namespace {

struct RopeSetup {
  std::string name;
  ops::RopeConfig config;
  ops::RopeStyle style = ops::RopeStyle::neox;
  bool trailing = false;        // rotate the last rotary_dim dims (DeepSeek-V4) instead of the first
  uint32_t extra_stride = 0;    // extra floats per token row, as for a slice of a fused QKV row
  uint32_t max_position = 4096;
};

class RopeCase : public SimpleOpCase {
 public:
  RopeCase(RopeSetup setup, uint32_t tokens, uint32_t heads) : s_(std::move(setup)), tokens_(tokens), heads_(heads) {}
  std::string op() const override { return "rope"; }
  std::string params() const override {
    return fmt::format("{} t={} heads={} d={}", s_.name, tokens_, heads_, s_.config.head_dim);
  }
  double max_nmse() const override { return 1e-10; }
  double bytes() const override { return 8.0 * tokens_ * heads_ * table_.rotary_dim; }
  double flops() const override { return 6.0 * tokens_ * heads_ * table_.rotary_dim / 2; }

  void prepare(gpu::Context& context, Rng& rng) override {
    table_ = ops::rope_table(s_.config);
    const uint32_t d = s_.config.head_dim;
    shape_ = {tokens_, heads_, d, table_.rotary_dim, s_.trailing ? d - table_.rotary_dim : 0,
              heads_ * d + s_.extra_stride};
    const uint64_t n = uint64_t{tokens_} * shape_.token_stride;
    auto x = rng.normal_vec(n);
    std::vector<uint32_t> pos(tokens_);
    for (auto& p : pos) p = rng.below(s_.max_position);
    pos_ = GuardedBuffer(context, tokens_ * 4ull, "positions");
    freq_ = GuardedBuffer(context, table_.inv_freq.size() * 4ull, "inv_freq");
    output_ = GuardedBuffer(context, n * 4, "x");
    pos_.upload(pos);
    freq_.upload(table_.inv_freq);
    output_.upload(x);
    in_place_input_ = x;
    ref::rope(x, pos, table_.inv_freq, shape_, s_.style, table_.attention_factor);
    expected_ = std::move(x);
    inputs_ = {&pos_, &freq_};
  }
  void record(gpu::CommandList& cmd) override {
    ops::rope(cmd, output_.inout(), pos_.in(), freq_.in(), shape_, s_.style, table_.attention_factor);
  }

 private:
  RopeSetup s_;
  uint32_t tokens_, heads_;
  ops::RopeTable table_;
  ops::RopeShape shape_;
  GuardedBuffer pos_, freq_;
};

RopeSetup qwen3() { return {"qwen3", {.theta = 1e6, .head_dim = 128}}; }
RopeSetup qwen3_5_partial() {
  return {"qwen3_5_partial", {.theta = 1e7, .head_dim = 256, .partial_rotary_factor = 0.25}, ops::RopeStyle::neox,
          false, 0, 262144};
}
RopeSetup gpt_oss_yarn() {
  ops::RopeConfig c{.theta = 150000, .head_dim = 64, .scaling = ops::RopeScaling::yarn, .factor = 32,
                    .max_position_embeddings = 131072, .original_max_position_embeddings = 4096};
  c.truncate = false;
  return {"gpt_oss_yarn", c, ops::RopeStyle::neox, false, 0, 131072};
}
RopeSetup deepseek_v4_trailing() {
  ops::RopeConfig c{.theta = 10000, .head_dim = 80, .partial_rotary_factor = 0.5};
  return {"deepseek_v4_interleaved_trailing", c, ops::RopeStyle::interleaved, true, 17, 65536};
}
RopeSetup deepseek_yarn_mscale() {
  ops::RopeConfig c{.theta = 10000, .head_dim = 64, .scaling = ops::RopeScaling::yarn, .factor = 40,
                    .max_position_embeddings = 163840, .original_max_position_embeddings = 4096};
  c.mscale = 1.0;
  c.mscale_all_dim = 1.0;
  return {"deepseek_yarn", c, ops::RopeStyle::interleaved, false, 0, 163840};
}
RopeSetup gemma4_proportional() {
  return {"gemma4_proportional",
          {.theta = 1e6, .head_dim = 512, .partial_rotary_factor = 0.25, .scaling = ops::RopeScaling::proportional},
          ops::RopeStyle::neox, false, 0, 262144};
}

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<RopeCase>(qwen3(), 5, 3));
    cases.push_back(std::make_unique<RopeCase>(qwen3_5_partial(), 7, 2));
    cases.push_back(std::make_unique<RopeCase>(gpt_oss_yarn(), 9, 7));
    cases.push_back(std::make_unique<RopeCase>(deepseek_v4_trailing(), 3, 5));
    cases.push_back(std::make_unique<RopeCase>(deepseek_yarn_mscale(), 4, 3));
    cases.push_back(std::make_unique<RopeCase>(gemma4_proportional(), 3, 2));
  } else {
    cases.push_back(std::make_unique<RopeCase>(qwen3(), 512, 32));
    cases.push_back(std::make_unique<RopeCase>(gpt_oss_yarn(), 512, 64));
  }
});

}  // namespace
}  // namespace mach::test
