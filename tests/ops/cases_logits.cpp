// Op cases for the logit ops: row argmax (with planted ties that the lower index must win, vocabularies up to
// Gemma's 262144) and soft-capping.
#include <fmt/format.h>

#include <algorithm>

#include "op_case.hpp"
#include "ops/logits.hpp"
#include "ops/reference/logits.hpp"

namespace mach::test {
namespace {

class ArgmaxCase : public OpCase {
 public:
  ArgmaxCase(uint32_t rows, uint32_t cols) : rows_(rows), cols_(cols) {}
  std::string op() const override { return "argmax"; }
  std::string params() const override { return fmt::format("rows={} cols={}", rows_, cols_); }
  double max_nmse() const override { return 0; }
  double bytes() const override { return 4.0 * rows_ * cols_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    auto x = rng.normal_vec(uint64_t{rows_} * cols_, 3.0f);
    for (uint32_t r = 0; r < rows_ && cols_ > 1; ++r) {
      // Plant an exact tie for the maximum at two random columns: the lower one must win.
      const uint32_t a = rng.below(cols_), b = rng.below(cols_);
      x[uint64_t{r} * cols_ + a] = x[uint64_t{r} * cols_ + b] = 100.0f;
    }
    x_ = GuardedBuffer(context, x.size() * 4, "x");
    out_ = GuardedBuffer(context, rows_ * 4ull, "out");
    scratch_ = GuardedBuffer(context, std::max<uint64_t>(ops::argmax_scratch_bytes(rows_, cols_), 4), "scratch");
    x_.upload(x);
    expected_.resize(rows_);
    ref::argmax(x, expected_, rows_, cols_);
  }
  void record(gpu::CommandList& cmd) override {
    ops::argmax(cmd, x_.in(), scratch_.inout(), out_.out(), rows_, cols_);
  }
  CheckResult check(gpu::Context&) override {
    CheckResult r;
    const auto got = out_.download<uint32_t>();
    for (uint32_t i = 0; i < rows_; ++i) {
      if (got[i] != expected_[i]) {
        r.nmse = INFINITY;
        r.detail = fmt::format("row {}: argmax {}, expected {}", i, got[i], expected_[i]);
        break;
      }
    }
    std::string why;
    for (const GuardedBuffer* b : {&x_, &out_, &scratch_}) {
      if (!b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail = why;
      }
    }
    return r;
  }

 private:
  uint32_t rows_, cols_;
  GuardedBuffer x_, out_, scratch_;
  std::vector<uint32_t> expected_;
};

class SoftcapCase : public SimpleOpCase {
 public:
  SoftcapCase(uint32_t n, float cap) : n_(n), cap_(cap) {}
  std::string op() const override { return "softcap"; }
  std::string params() const override { return fmt::format("n={} cap={}", n_, cap_); }
  // GLSL's tanh is allowed a few ulp more than libm's: 1e-10 is ~1e-5 relative on a single value.
  double max_nmse() const override { return 1e-10; }
  double bytes() const override { return 8.0 * n_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    auto x = rng.normal_vec(n_, 40.0f);
    if (n_ > 2) x[1] = 1e30f, x[2] = -5e4f;  // far into saturation
    output_ = GuardedBuffer(context, n_ * 4ull, "x");
    output_.upload(x);
    in_place_input_ = x;
    ref::softcap(x, cap_);
    expected_ = std::move(x);
  }
  void record(gpu::CommandList& cmd) override { ops::softcap(cmd, output_.inout(), n_, cap_); }

 private:
  uint32_t n_;
  float cap_;
};

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<ArgmaxCase>(1, 1));
    cases.push_back(std::make_unique<ArgmaxCase>(3, 1000));
    cases.push_back(std::make_unique<ArgmaxCase>(4, 4097));  // two chunks, the second of one column
    cases.push_back(std::make_unique<ArgmaxCase>(5, 151937));
    cases.push_back(std::make_unique<ArgmaxCase>(2, 262144));
    cases.push_back(std::make_unique<SoftcapCase>(1, 30.0f));
    cases.push_back(std::make_unique<SoftcapCase>(1000, 30.0f));
    cases.push_back(std::make_unique<SoftcapCase>(262151, 30.0f));
  } else {
    cases.push_back(std::make_unique<ArgmaxCase>(1, 262144));
    cases.push_back(std::make_unique<ArgmaxCase>(64, 151936));
    cases.push_back(std::make_unique<SoftcapCase>(64 * 262144, 30.0f));
  }
});

}  // namespace
}  // namespace mach::test
