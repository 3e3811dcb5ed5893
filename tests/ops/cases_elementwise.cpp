// Op cases for elementwise ops: residual add.
#include <fmt/format.h>

#include "op_case.hpp"
#include "ops/elementwise.hpp"
#include "ops/reference/elementwise.hpp"

namespace mach::test {
namespace {

class AddCase : public SimpleOpCase {
 public:
  explicit AddCase(uint32_t n) : n_(n) {}
  std::string op() const override { return "add"; }
  std::string params() const override { return fmt::format("n={}", n_); }
  double max_nmse() const override { return 1e-12; }
  double bytes() const override { return 12.0 * n_; }
  double flops() const override { return n_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto a = rng.normal_vec(n_), b = rng.normal_vec(n_);
    a_ = GuardedBuffer(context, n_ * 4ull, "a");
    b_ = GuardedBuffer(context, n_ * 4ull, "b");
    output_ = GuardedBuffer(context, n_ * 4ull, "y");
    a_.upload(a);
    b_.upload(b);
    expected_.resize(n_);
    ref::add(a, b, expected_);
    inputs_ = {&a_, &b_};
  }
  void record(gpu::CommandList& cmd) override { ops::add(cmd, a_.in(), b_.in(), output_.out(), n_); }

 private:
  uint32_t n_;
  GuardedBuffer a_, b_;
};

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  if (set == CaseSet::test) {
    for (uint32_t n : {1u, 255u, 4097u, 70001u}) cases.push_back(std::make_unique<AddCase>(n));
  } else {
    cases.push_back(std::make_unique<AddCase>(16u << 20));
  }
});

}  // namespace
}  // namespace mach::test
