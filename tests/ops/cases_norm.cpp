// Op cases for RMSNorm: hidden-size rows, per-head rows (q/k norm), all three weight modes, in place; and
// rms_norm_q4h, whose q4h output must be the bits q4h_prep.comp writes for its y.
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "op_case.hpp"
#include "ops/norm.hpp"
#include "ops/reference/norm.hpp"

namespace mach::test {
namespace {

class RmsNormCase : public SimpleOpCase {
 public:
  // x_stride > h reads rows out of a wider row (Qwen3.5's q rows sit at stride 2 * head_dim beside the gate).
  RmsNormCase(uint32_t rows, uint32_t h, ops::NormWeight weight, bool in_place, uint32_t x_stride = 0)
      : rows_(rows), h_(h), x_stride_(x_stride ? x_stride : h), weight_(weight), in_place_(in_place) {}
  std::string op() const override { return "rms_norm"; }
  std::string params() const override {
    return fmt::format("rows={} h={} weight={} in_place={} x_stride={}", rows_, h_, static_cast<uint32_t>(weight_),
                       in_place_, x_stride_);
  }
  double max_nmse() const override { return 1e-11; }
  double bytes() const override { return 8.0 * rows_ * h_ + 4.0 * h_; }
  double flops() const override { return 4.0 * rows_ * h_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint64_t n = uint64_t{rows_} * h_;
    const auto wide = rng.normal_vec(uint64_t{rows_} * x_stride_, 3.0f);
    std::vector<float> x(n);
    for (uint64_t r = 0; r < rows_; ++r)
      for (uint32_t i = 0; i < h_; ++i) x[r * h_ + i] = wide[r * x_stride_ + i];
    const auto w = rng.normal_vec(h_, 0.5f);
    w_ = GuardedBuffer(context, h_ * 4ull, "w");
    w_.upload(w);
    output_ = GuardedBuffer(context, n * 4, "y");
    if (in_place_) {
      output_.upload(x);
      in_place_input_ = x;
      inputs_ = {&w_};
    } else {
      x_ = GuardedBuffer(context, wide.size() * 4, "x");
      x_.upload(wide);
      inputs_ = {&x_, &w_};
    }
    expected_.resize(n);
    ref::rms_norm(x, w, expected_, rows_, h_, 1e-6f, weight_);
  }
  void record(gpu::CommandList& cmd) override {
    const ops::RmsNormShape shape{rows_, h_, in_place_ ? h_ : x_stride_};
    if (in_place_)
      ops::rms_norm(cmd, output_.inout(), w_.in(), output_.inout(), shape, 1e-6f, weight_);
    else
      ops::rms_norm(cmd, x_.in(), w_.in(), output_.out(), shape, 1e-6f, weight_);
  }

 private:
  uint32_t rows_, h_, x_stride_;
  ops::NormWeight weight_;
  bool in_place_;
  GuardedBuffer x_, w_;
};

// rms_norm_q4h: y against the reference as above; xh and xg against q4h_prep.comp run on the op's own y
// (dispatched as ops::mul_mat prepares its x), which must give the same bits. Never in place (the op's contract).
class RmsNormQ4hCase : public SimpleOpCase {
 public:
  // zero_group: row 0's second 64-column group is zero (a group scale of 0, which packs as zeros).
  RmsNormQ4hCase(uint32_t rows, uint32_t h, ops::NormWeight weight, uint32_t x_stride = 0, bool zero_group = false)
      : rows_(rows), h_(h), x_stride_(x_stride ? x_stride : h), weight_(weight), zero_group_(zero_group) {}
  std::string op() const override { return "rms_norm_q4h"; }
  std::string params() const override {
    return fmt::format("rows={} h={} weight={} x_stride={} zero_group={}", rows_, h_, static_cast<uint32_t>(weight_),
                       x_stride_, zero_group_);
  }
  double max_nmse() const override { return 1e-11; }
  double bytes() const override { return 8.0 * rows_ * h_ + 4.0 * h_ + 2.25 * rows_ * h_; }
  double flops() const override { return 6.0 * rows_ * h_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint64_t n = uint64_t{rows_} * h_;
    auto wide = rng.normal_vec(uint64_t{rows_} * x_stride_, 3.0f);
    if (zero_group_) std::fill(wide.begin() + 64, wide.begin() + 128, 0.0f);
    std::vector<float> x(n);
    for (uint64_t r = 0; r < rows_; ++r)
      for (uint32_t i = 0; i < h_; ++i) x[r * h_ + i] = wide[r * x_stride_ + i];
    const auto w = rng.normal_vec(h_, 0.5f);
    w_ = GuardedBuffer(context, h_ * 4ull, "w");
    w_.upload(w);
    output_ = GuardedBuffer(context, n * 4, "y");
    xh_ = GuardedBuffer(context, n * 2, "xh");
    xg_ = GuardedBuffer(context, n / 4, "xg");
    x_ = GuardedBuffer(context, wide.size() * 4, "x");
    x_.upload(wide);
    inputs_ = {&x_, &w_, &xh_, &xg_};
    expected_.resize(n);
    ref::rms_norm(x, w, expected_, rows_, h_, 1e-6f, weight_);
  }
  void record(gpu::CommandList& cmd) override {
    const ops::RmsNormShape shape{rows_, h_, x_stride_};
    ops::rms_norm_q4h(cmd, x_.in(), w_.in(), output_.out(), xh_.out(), xg_.out(), shape, 1e-6f, weight_);
  }
  CheckResult check(gpu::Context& context) override {
    CheckResult r = SimpleOpCase::check(context);
    if (const size_t words = q4h_words_unlike_prep(context, output_, xh_, xg_, rows_, h_); words != 0) {
      r.nmse = INFINITY;
      r.detail += fmt::format(" xh/xg differ from q4h_prep's in {} words", words);
    }
    return r;
  }

 private:
  uint32_t rows_, h_, x_stride_;
  ops::NormWeight weight_;
  bool zero_group_;
  GuardedBuffer x_, w_, xh_, xg_;
};

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using W = ops::NormWeight;
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<RmsNormCase>(1, 1, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(5, 2049, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(37, 128, W::one_plus_w, true));   // per-head q/k norm
    cases.push_back(std::make_unique<RmsNormCase>(9, 257, W::none, false));
    cases.push_back(std::make_unique<RmsNormCase>(3, 4100, W::one_plus_w, true));
    cases.push_back(std::make_unique<RmsNormCase>(2 * 5, 256, W::one_plus_w, false, 512));
    // rms_norm_q4h: Qwen3-30B-A3B's hidden 2048 at decode and verify sizes, one group, the 64-thread
    // workgroup, in place, a strided x, a zero group.
    cases.push_back(std::make_unique<RmsNormQ4hCase>(1, 2048, W::w));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(8, 2048, W::w, 0, true));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(5, 64, W::one_plus_w));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(3, 256, W::none));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(4, 4096, W::one_plus_w));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(3, 1024, W::w, 1536));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(2, 320, W::w));  // a last chunk of 64 of 256 columns
  } else {
    cases.push_back(std::make_unique<RmsNormCase>(512, 4096, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(512 * 32, 128, W::w, true));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(1, 2048, W::w));
    cases.push_back(std::make_unique<RmsNormQ4hCase>(8, 4096, W::w));
  }
});

}  // namespace
}  // namespace mach::test
