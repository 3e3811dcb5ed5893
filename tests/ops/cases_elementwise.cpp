// Op cases for elementwise ops: residual add and the MoE weighted combine.
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

class MoeCombineCase : public SimpleOpCase {
 public:
  MoeCombineCase(uint32_t tokens, uint32_t top_k, uint32_t hidden) : t_(tokens), k_(top_k), h_(hidden) {}
  std::string op() const override { return "moe_combine"; }
  std::string params() const override { return fmt::format("t={} k={} h={}", t_, k_, h_); }
  double max_nmse() const override { return 1e-12; }
  double bytes() const override { return 4.0 * (uint64_t{t_} * k_ * h_ + t_ * k_ + 2ull * t_ * h_); }
  double flops() const override { return 2.0 * t_ * k_ * h_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto y = rng.normal_vec(uint64_t{t_} * k_ * h_), x = rng.normal_vec(uint64_t{t_} * h_);
    const auto w = rng.uniform_vec(uint64_t{t_} * k_, 0.05f, 1.0f);
    y_ = GuardedBuffer(context, y.size() * 4, "y");
    w_ = GuardedBuffer(context, w.size() * 4, "w");
    output_ = GuardedBuffer(context, x.size() * 4, "x");
    y_.upload(y);
    w_.upload(w);
    output_.upload(x);
    in_place_input_ = x;
    expected_ = x;
    ref::moe_combine(y, w, expected_, t_, k_, h_);
    inputs_ = {&y_, &w_};
  }
  void record(gpu::CommandList& cmd) override { ops::moe_combine(cmd, y_.in(), w_.in(), output_.inout(), t_, k_, h_); }

 private:
  uint32_t t_, k_, h_;
  GuardedBuffer y_, w_;
};

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  if (set == CaseSet::test) {
    for (uint32_t n : {1u, 255u, 4097u, 70001u}) cases.push_back(std::make_unique<AddCase>(n));
    cases.push_back(std::make_unique<MoeCombineCase>(1, 8, 2048));
    cases.push_back(std::make_unique<MoeCombineCase>(3, 2, 65));
    cases.push_back(std::make_unique<MoeCombineCase>(37, 4, 257));
  } else {
    cases.push_back(std::make_unique<AddCase>(16u << 20));
    cases.push_back(std::make_unique<MoeCombineCase>(1, 8, 2048));
    cases.push_back(std::make_unique<MoeCombineCase>(512, 8, 2048));
  }
});

}  // namespace
}  // namespace mach::test
