// Op cases for RMSNorm: hidden-size rows, per-head rows (q/k norm), all three weight modes, in place.
#include <fmt/format.h>

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

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using W = ops::NormWeight;
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<RmsNormCase>(1, 1, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(5, 2049, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(37, 128, W::one_plus_w, true));   // per-head q/k norm
    cases.push_back(std::make_unique<RmsNormCase>(9, 257, W::none, false));
    cases.push_back(std::make_unique<RmsNormCase>(3, 4100, W::one_plus_w, true));
    cases.push_back(std::make_unique<RmsNormCase>(2 * 5, 256, W::one_plus_w, false, 512));
  } else {
    cases.push_back(std::make_unique<RmsNormCase>(512, 4096, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(512 * 32, 128, W::w, true));
  }
});

}  // namespace
}  // namespace mach::test
