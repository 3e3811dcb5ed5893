// The op test harness, in the spirit of llama.cpp's test-backend-ops: every op case draws random inputs,
// runs the op on the GPU and its CPU reference (src/ops/reference), and compares them by normalized mean
// squared error against a per-op bound. Every GPU output sits between guard zones that must stay untouched.
// The same cases, with larger shapes, are timed by bench/ops_bench (GB/s, GFLOP/s as JSON lines).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gpu/command_list.hpp"
#include "gpu/context.hpp"
#include "ops/weight_format.hpp"
#include "scoped_env.hpp"

namespace mach::test {

// Deterministic random inputs. Never all zeros: values are drawn from distributions with no mass at 0.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
  float normal(float stddev = 1.0f) { return std::normal_distribution<float>(0.0f, stddev)(gen_); }
  uint32_t below(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(gen_); }
  std::vector<float> normal_vec(size_t n, float stddev = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(stddev);
    return v;
  }
  std::vector<float> uniform_vec(size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// A device buffer whose payload sits between two guard zones filled with a known pattern. Bind it with
// in()/out()/inout(); check guards_intact() after the op ran.
class GuardedBuffer {
 public:
  static constexpr uint64_t kGuardBytes = 256;
  static constexpr uint32_t kGuardWord = 0xDEADBEEFu;

  GuardedBuffer() = default;
  GuardedBuffer(gpu::Context& context, uint64_t bytes, std::string label);

  gpu::Binding in() const { return gpu::in(buffer_, kGuardBytes, padded()); }
  gpu::Binding out() const { return gpu::out(buffer_, kGuardBytes, padded()); }
  gpu::Binding inout() const { return gpu::inout(buffer_, kGuardBytes, padded()); }
  uint64_t bytes() const { return bytes_; }

  void upload_bytes(std::span<const std::byte> data);
  template <class T>
  void upload(const std::vector<T>& v) {
    upload_bytes(std::as_bytes(std::span<const T>(v)));
  }
  std::vector<std::byte> download_bytes() const;
  template <class T>
  std::vector<T> download() const {
    const auto raw = download_bytes();
    std::vector<T> v(raw.size() / sizeof(T));
    std::memcpy(v.data(), raw.data(), v.size() * sizeof(T));
    return v;
  }
  // Overwrites the payload with NaN, so that a check after the next run sees only what that run wrote.
  void poison();
  // False (with `why` filled) when a byte outside the payload changed.
  bool guards_intact(std::string* why) const;

 private:
  uint64_t padded() const { return (bytes_ + 3) & ~uint64_t{3}; }
  gpu::Context* context_ = nullptr;
  gpu::Buffer buffer_;
  uint64_t bytes_ = 0;
};

// sum((out - ref)^2) / sum(ref^2); NaN or Inf anywhere gives +Inf.
double nmse(std::span<const float> out, std::span<const float> ref);

// A valid [rows, cols] matrix of `type` with O(1) weights, drawn directly in the layout: drawing and
// quantizing floats would take minutes for the GiB-sized perf weights. (Quantizer round trips are covered by
// weight_format_test; here every quant value and a spread of scales occur.)
std::vector<std::byte> random_weights(ops::WeightType type, uint32_t rows, uint32_t cols, Rng& rng);

// Matrices [n_i, k] of `type` in one weight buffer at gapped offsets (not back to back: a layer's q, k and
// v), each from random_weights, with the reference products of each with x ([tokens, k]).
struct GappedMatrices {
  std::vector<std::byte> bytes;
  std::vector<uint64_t> offsets;
  std::vector<std::vector<float>> products;  // [tokens, n_i] each
};
GappedMatrices gapped_matrices(ops::WeightType type, std::span<const uint32_t> ns, uint32_t k,
                               std::span<const float> x, uint32_t tokens, Rng& rng);

// The 32-bit words in which xh / xg (a q4h form: rows x k columns) differ from what q4h_prep.comp writes for
// y, dispatched as ops::mul_mat prepares its x: ops that pack their own y must give the same bits.
size_t q4h_words_unlike_prep(gpu::Context& context, const GuardedBuffer& y, const GuardedBuffer& xh,
                             const GuardedBuffer& xg, uint32_t rows, uint32_t k);

struct CheckResult {
  double nmse = 0;
  bool guards_ok = true;
  std::string detail;  // what went wrong, for the test log
};

class OpCase {
 public:
  virtual ~OpCase() = default;
  virtual std::string op() const = 0;       // e.g. "mul_mat"
  virtual std::string params() const = 0;   // e.g. "type=q4 n=4096 k=4096 t=1"
  virtual double max_nmse() const = 0;
  // Allocates and uploads random inputs and computes the CPU reference.
  virtual void prepare(gpu::Context& context, Rng& rng) = 0;
  // Records the op under test (called once for a test, repeatedly for a benchmark).
  virtual void record(gpu::CommandList& cmd) = 0;
  virtual CheckResult check(gpu::Context& context) = 0;
  // Fills the outputs with NaN (the perf mode's sweeps check every variant on fresh output).
  virtual void poison() {}
  // The fewest bytes the op must move through device memory, and its arithmetic, for the perf mode.
  virtual double bytes() const = 0;
  virtual double flops() const { return 0; }
  // False when the device cannot run this case (e.g. a cooperative-matrix variant); it is then skipped.
  virtual bool supported(const gpu::Context&) const { return true; }
};

// A case with one f32 output compared against a CPU reference; most ops derive from this.
class SimpleOpCase : public OpCase {
 public:
  CheckResult check(gpu::Context& context) override;
  // NaN, or for an op that works in place the output's input again (poisoning it would poison the input).
  void poison() override {
    if (in_place_input_.empty())
      output_.poison();
    else
      output_.upload(in_place_input_);
  }

 protected:
  GuardedBuffer output_;
  std::vector<float> in_place_input_;  // set by in-place cases: what output_ holds before the op
  std::vector<float> expected_;
  std::vector<const GuardedBuffer*> inputs_;  // their guards are checked too
};

// Error bound of q4 products on mul_mat_vec.comp's Q4_DOT variants (ops::uses_q4_dot): x rounded to int8
// per 32 values (a relative error up to 1/254 per value). Observed 2.4e-5 to 8.8e-5 on lavapipe (the most
// for normed x, whose products of two normals have heavier tails); one wrong row in a few hundred still gives
// ~5e-3.
inline constexpr double kMaxNmseQ4Dot = 5e-4;

using mach::testing::ScopedEnv;

enum class CaseSet { test, perf };
using CaseList = std::vector<std::unique_ptr<OpCase>>;
using CaseFactory = std::function<void(CaseSet, CaseList&)>;

// Each cases_*.cpp registers its factory at static-initialization time (the cases are an OBJECT library,
// so no registration is dropped by the linker).
bool register_cases(CaseFactory factory);
CaseList all_cases(CaseSet set);

}  // namespace mach::test
