// Op cases for the gated activations: SwiGLU (plain and clamped), gpt-oss's clamped SwiGLU on interleaved rows,
// GeGLU, over separate, fused and interleaved gate/up layouts. Inputs are wide enough to hit the clamps.
#include <fmt/format.h>

#include "op_case.hpp"
#include "ops/activation.hpp"
#include "ops/reference/activation.hpp"

namespace mach::test {
namespace {

class GluCase : public SimpleOpCase {
 public:
  explicit GluCase(ops::GluParams p) : p_(p) {}
  std::string op() const override { return "glu"; }
  std::string params() const override {
    return fmt::format("kind={} layout={} t={} i={} limit={}", static_cast<uint32_t>(p_.kind),
                       static_cast<uint32_t>(p_.layout), p_.tokens, p_.width, p_.limit);
  }
  double max_nmse() const override { return 1e-11; }
  double bytes() const override { return 12.0 * p_.tokens * p_.width; }
  double flops() const override { return 10.0 * p_.tokens * p_.width; }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint64_t n = uint64_t{p_.tokens} * p_.width;
    output_ = GuardedBuffer(context, n * 4, "out");
    expected_.resize(n);
    if (p_.layout == ops::GluLayout::separate) {
      const auto g = rng.normal_vec(n, 4.0f), u = rng.normal_vec(n, 4.0f);
      gate_ = GuardedBuffer(context, n * 4, "gate");
      up_ = GuardedBuffer(context, n * 4, "up");
      gate_.upload(g);
      up_.upload(u);
      ref::glu(g, u, expected_, p_);
      inputs_ = {&gate_, &up_};
    } else {
      const auto gu = rng.normal_vec(2 * n, 4.0f);
      gate_ = GuardedBuffer(context, 2 * n * 4, "gate_up");
      gate_.upload(gu);
      ref::glu(gu, gu, expected_, p_);
      inputs_ = {&gate_};
    }
  }
  void record(gpu::CommandList& cmd) override {
    const bool separate = p_.layout == ops::GluLayout::separate;
    ops::glu(cmd, gate_.in(), separate ? up_.in() : gate_.in(), output_.out(), p_);
  }

 private:
  ops::GluParams p_;
  GuardedBuffer gate_, up_;
};

ops::GluParams make(ops::GluKind kind, ops::GluLayout layout, uint32_t t, uint32_t i, float limit = 0) {
  return {.kind = kind, .layout = layout, .tokens = t, .width = i, .limit = limit};
}

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using K = ops::GluKind;
  using L = ops::GluLayout;
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu, L::separate, 3, 37)));
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu, L::fused, 5, 769)));
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu, L::fused, 4, 100, 10.0f)));  // deepseek_v4
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu_oai, L::interleaved, 7, 45, 7.0f)));
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu_oai, L::interleaved, 1, 2880, 7.0f)));
    cases.push_back(std::make_unique<GluCase>(make(K::geglu, L::separate, 3, 1001)));
    cases.push_back(std::make_unique<GluCase>(make(K::geglu, L::fused, 2, 513)));
  } else {
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu, L::fused, 512, 768)));
    cases.push_back(std::make_unique<GluCase>(make(K::swiglu_oai, L::interleaved, 512, 2880, 7.0f)));
    cases.push_back(std::make_unique<GluCase>(make(K::geglu, L::separate, 512, 2112)));
  }
});

}  // namespace
}  // namespace mach::test
