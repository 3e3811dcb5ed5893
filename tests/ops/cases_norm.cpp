// Op cases for RMSNorm: hidden-size rows, per-head rows (q/k norm), all three weight modes, in place.
#include <fmt/format.h>

#include "op_case.hpp"
#include "ops/norm.hpp"
#include "ops/reference/norm.hpp"

namespace mach::test {
namespace {

class RmsNormCase : public SimpleOpCase {
 public:
  RmsNormCase(uint32_t rows, uint32_t h, ops::NormWeight weight, bool in_place)
      : rows_(rows), h_(h), weight_(weight), in_place_(in_place) {}
  std::string op() const override { return "rms_norm"; }
  std::string params() const override {
    return fmt::format("rows={} h={} weight={} in_place={}", rows_, h_, static_cast<uint32_t>(weight_), in_place_);
  }
  double max_nmse() const override { return 1e-11; }
  double bytes() const override { return 8.0 * rows_ * h_ + 4.0 * h_; }
  double flops() const override { return 4.0 * rows_ * h_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint64_t n = uint64_t{rows_} * h_;
    const auto x = rng.normal_vec(n, 3.0f);
    const auto w = rng.normal_vec(h_, 0.5f);
    w_ = GuardedBuffer(context, h_ * 4ull, "w");
    w_.upload(w);
    output_ = GuardedBuffer(context, n * 4, "y");
    if (in_place_) {
      output_.upload(x);
      inputs_ = {&w_};
    } else {
      x_ = GuardedBuffer(context, n * 4, "x");
      x_.upload(x);
      inputs_ = {&x_, &w_};
    }
    expected_.resize(n);
    ref::rms_norm(x, w, expected_, rows_, h_, 1e-6f, weight_);
  }
  void record(gpu::CommandList& cmd) override {
    const ops::RmsNormShape shape{rows_, h_};
    if (in_place_)
      ops::rms_norm(cmd, output_.inout(), w_.in(), output_.inout(), shape, 1e-6f, weight_);
    else
      ops::rms_norm(cmd, x_.in(), w_.in(), output_.out(), shape, 1e-6f, weight_);
  }

 private:
  uint32_t rows_, h_;
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
  } else {
    cases.push_back(std::make_unique<RmsNormCase>(512, 4096, W::w, false));
    cases.push_back(std::make_unique<RmsNormCase>(512 * 32, 128, W::w, true));
  }
});

}  // namespace
}  // namespace mach::test
