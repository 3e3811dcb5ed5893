// Op cases for matrix products: mul_mat (dense weights) and mul_mat_id (MoE expert stacks), every weight
// type, matrix-vector (T <= 32, in chunks of at most 8 tokens) and tiled (T > 32) kernels.
// Shapes: T tokens, K cols, N rows, E experts.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>

#include "op_case.hpp"
#include "ops/matmul.hpp"
#include "ops/reference/activation.hpp"
#include "ops/reference/matmul.hpp"
#include "ops/reference/norm.hpp"

namespace mach::test {
namespace {

using ops::WeightType;

constexpr WeightType kAllTypes[] = {WeightType::f32, WeightType::f16, WeightType::bf16, WeightType::q8_0,
                                    WeightType::q4};

// Fewest bytes per f32 activation vector element, for bytes(): x and y of T rows.
double io_bytes(uint64_t x_elems, uint64_t y_elems) { return 4.0 * (x_elems + y_elems); }

// Accumulation-order error of f32 sums only: the reference sums the same dequantized values in double.
// Observed on lavapipe: <= 2.2e-13 for every type at K <= 4096 (q4 highest: it subtracts its min term from
// large partial sums). 1e-10 leaves room for longer rows and other summation orders on other devices while
// still failing on any wrong element (one wrong row in a few hundred gives ~1e-3).
constexpr double kMaxNmse = 1e-10;
// q4 with T <= 32 on a device with f16 arithmetic runs mul_mat_vec_q4h.comp: activations are rounded to f16
// (11 bits) after scaling by their group maximum, and units are summed in f16. Observed ~1e-6 on lavapipe
// (a relative error of ~1e-3, far below q4's own quantization error); one wrong row still gives ~1e-3.
constexpr double kMaxNmseQ4h = 1e-5;

// q4 products of T > 32 tokens or non-f32 weights on a device with NVIDIA cooperative matrices run
// mul_mat_cm.comp: x and the weights rounded to f16 (x scaled per row by a power of two), f32 sums. Expected
// ~1e-7 (two f16 roundings per product); one wrong row in a few hundred still gives ~1e-3.
constexpr double kMaxNmseCoopmat = 1e-5;

// Which kernel a case runs: the default choice; the f32 q4 matrix-vector kernel forced through $MACH_Q4_F32
// (the kernel of devices without f16 arithmetic); or, for T > 32, the plain-arithmetic twin of the
// tensor-core kernel through $MACH_COOPMAT=emu (what lavapipe can run of it); or the f32 kernel's int8-x
// variants for q4 (Q4_DOT, the default where the device accelerates them) through $MACH_Q4_DOT=1.
enum class KernelPath { automatic, f32, emu, dot };

const char* path_suffix(KernelPath path) {
  switch (path) {
    case KernelPath::f32: return " kernel=f32";
    case KernelPath::emu: return " kernel=coopmat_emu";
    case KernelPath::dot: return " kernel=q4_dot";
    case KernelPath::automatic: break;
  }
  return "";
}

bool runs_q4h(const gpu::Context& context, WeightType type, uint32_t tokens, KernelPath path) {
  return path == KernelPath::automatic && type == WeightType::q4 && tokens <= ops::kVerifyMaxTokens &&
         context.info().fp16;
}

// A forced path runs only where its kernel does: the Q4_DOT variants need shaderIntegerDotProduct.
bool path_supported(const gpu::Context& context, KernelPath path) {
  return path != KernelPath::dot || (context.info().int_dot && gpu::Context::has_shader("mul_mat_vec_q4_dot"));
}

// Sets $MACH_Q4_F32, $MACH_Q4_DOT and $MACH_COOPMAT for the duration of one recording as the case's path asks:
// f32 is the float decode of mul_mat_vec.comp, dot its Q4_DOT variants (both instead of the packed-f16 kernels).
class ForcePath {
 public:
  explicit ForcePath(KernelPath path)
      : q4_f32_("MACH_Q4_F32", path == KernelPath::f32 || path == KernelPath::dot ? "1" : nullptr),
        q4_dot_("MACH_Q4_DOT", path == KernelPath::f32 ? "0" : path == KernelPath::dot ? "1" : nullptr),
        coopmat_("MACH_COOPMAT", path == KernelPath::emu ? "emu" : nullptr) {}

 private:
  ScopedEnv q4_f32_, q4_dot_, coopmat_;
};

// The case's error bound: the int8-x kernels', the packed-f16 q4 kernel's, the tensor-core kernel's, or f32
// summation's.
double max_nmse_for(const gpu::Context& context, WeightType type, uint32_t tokens, KernelPath path) {
  const ForcePath force(path);
  if (type == WeightType::q4 && tokens <= ops::kVerifyMaxTokens && ops::uses_q4_dot(context, type))
    return kMaxNmseQ4Dot;
  if (runs_q4h(context, type, tokens, path)) return kMaxNmseQ4h;
  return ops::uses_coopmat(context, type, tokens) ? kMaxNmseCoopmat : kMaxNmse;
}

// Sets $MACH_MUL_MAT_ID (the MoE product's tile shape, read at every call) for a scope; empty: leaves it.
class MoeTiles {
 public:
  explicit MoeTiles(const std::string& tiles) : on_(!tiles.empty()) {
    if (on_) setenv("MACH_MUL_MAT_ID", tiles.c_str(), 1);
  }
  ~MoeTiles() {
    if (on_) unsetenv("MACH_MUL_MAT_ID");
  }

 private:
  bool on_;
};

// Weights are bound as one storage-buffer range: larger perf cases are skipped where the device's range is
// smaller (lavapipe: 128 MiB).
bool fits_binding(const gpu::Context& context, uint64_t bytes) {
  return bytes + GuardedBuffer::kGuardBytes <= context.info().max_storage_buffer_range;
}

class MulMatCase : public SimpleOpCase {
 public:
  MulMatCase(WeightType type, uint32_t n, uint32_t k, uint32_t tokens, KernelPath path = KernelPath::automatic)
      : type_(type), n_(n), k_(k), t_(tokens), path_(path) {}
  std::string op() const override { return "mul_mat"; }
  std::string params() const override {
    return fmt::format("type={} n={} k={} t={}{}", ops::weight_type_name(type_), n_, k_, t_,
                       path_suffix(path_));
  }
  double max_nmse() const override { return max_nmse_; }
  double bytes() const override {
    return static_cast<double>(ops::weight_bytes(type_, n_, k_)) + io_bytes(uint64_t{t_} * k_, uint64_t{t_} * n_);
  }
  double flops() const override { return 2.0 * n_ * k_ * t_; }
  bool supported(const gpu::Context& context) const override {
    return path_supported(context, path_) && fits_binding(context, ops::weight_bytes(type_, n_, k_));
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto w = random_weights(type_, n_, k_, rng);
    const auto x = rng.normal_vec(uint64_t{t_} * k_);
    w_ = GuardedBuffer(context, w.size(), "w");
    x_ = GuardedBuffer(context, x.size() * 4, "x");
    output_ = GuardedBuffer(context, uint64_t{t_} * n_ * 4, "y");
    w_.upload(w);
    x_.upload(x);
    expected_.resize(uint64_t{t_} * n_);
    ref::mul_mat(type_, w, n_, k_, x, expected_, t_);
    inputs_ = {&w_, &x_};
    max_nmse_ = max_nmse_for(context, type_, t_, path_);
  }
  void record(gpu::CommandList& cmd) override {
    const ForcePath force(path_);
    const ops::WeightRef w{w_.in().buffer, w_.in().offset, type_, n_, k_};
    ops::mul_mat(cmd, w, x_.in(), output_.out(), t_);
  }

 private:
  WeightType type_;
  uint32_t n_, k_, t_;
  KernelPath path_;
  double max_nmse_ = kMaxNmse;
  GuardedBuffer w_, x_;
};

// y += W1 x; y += W2 x (Output::accumulate) on a y that holds random values, with one prepare_q4h serving
// both products where the q4h kernels run: the reuse the model's q/k/v projections make of one prep.
class MulMatAccumulateCase : public SimpleOpCase {
 public:
  MulMatAccumulateCase(WeightType type, uint32_t n, uint32_t k, uint32_t tokens, KernelPath path = KernelPath::automatic)
      : type_(type), n_(n), k_(k), t_(tokens), path_(path) {}
  std::string op() const override { return "mul_mat_accumulate"; }
  std::string params() const override {
    return fmt::format("type={} n={} k={} t={}{}", ops::weight_type_name(type_), n_, k_, t_,
                       path_suffix(path_));
  }
  double max_nmse() const override { return max_nmse_; }
  double bytes() const override {
    return 2.0 * static_cast<double>(ops::weight_bytes(type_, n_, k_)) +
           io_bytes(uint64_t{t_} * k_, 4ull * t_ * n_);
  }
  double flops() const override { return 4.0 * n_ * k_ * t_; }
  bool supported(const gpu::Context& context) const override { return path_supported(context, path_); }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto w1 = random_weights(type_, n_, k_, rng);
    const auto w2 = random_weights(type_, n_, k_, rng);
    const auto x = rng.normal_vec(uint64_t{t_} * k_);
    before_ = rng.uniform_vec(uint64_t{t_} * n_, -4.0f, 4.0f);
    w1_ = GuardedBuffer(context, w1.size(), "w1");
    w2_ = GuardedBuffer(context, w2.size(), "w2");
    x_ = GuardedBuffer(context, x.size() * 4, "x");
    output_ = GuardedBuffer(context, uint64_t{t_} * n_ * 4, "y");
    w1_.upload(w1);
    w2_.upload(w2);
    x_.upload(x);
    output_.upload(before_);
    std::vector<float> y1(before_.size()), y2(before_.size());
    ref::mul_mat(type_, w1, n_, k_, x, y1, t_);
    ref::mul_mat(type_, w2, n_, k_, x, y2, t_);
    expected_.resize(before_.size());
    for (size_t i = 0; i < expected_.size(); ++i) expected_[i] = (before_[i] + y1[i]) + y2[i];
    inputs_ = {&w1_, &w2_, &x_};
    max_nmse_ = max_nmse_for(context, type_, t_, path_);
  }
  void poison() override { output_.upload(before_); }
  void record(gpu::CommandList& cmd) override {
    const ForcePath force(path_);
    const ops::WeightRef w1{w1_.in().buffer, w1_.in().offset, type_, n_, k_};
    const ops::WeightRef w2{w2_.in().buffer, w2_.in().offset, type_, n_, k_};
    constexpr auto accumulate = ops::Output::accumulate;
    if (ops::uses_q4h(cmd.context(), type_, t_)) {
      const ops::PreparedX px = ops::prepare_q4h(cmd, x_.in(), t_, k_);
      ops::mul_mat(cmd, w1, px, output_.out(), t_, accumulate);
      ops::mul_mat(cmd, w2, px, output_.out(), t_, accumulate);
    } else {
      ops::mul_mat(cmd, w1, x_.in(), output_.out(), t_, accumulate);
      ops::mul_mat(cmd, w2, x_.in(), output_.out(), t_, accumulate);
    }
  }

 private:
  WeightType type_;
  uint32_t n_, k_, t_;
  KernelPath path_;
  double max_nmse_ = kMaxNmse;
  std::vector<float> before_;
  GuardedBuffer w1_, w2_, x_;
};

// mul_mat_multi: two or three matrices of different heights at gapped offsets of one buffer, times one
// prepared x, each into its own y (the model's q, k and v); every y checked against its own reference.
// With `norm`: any weight type, times x's RMSNorm applied by the product (ops::NormedX): the reference is the
// product of the reference norm's output.
class MulMatMultiCase : public SimpleOpCase {
 public:
  MulMatMultiCase(std::vector<uint32_t> ns, uint32_t k, uint32_t tokens,
                  std::optional<ops::NormWeight> norm = std::nullopt, WeightType type = WeightType::q4,
                  KernelPath path = KernelPath::automatic)
      : ns_(std::move(ns)), k_(k), t_(tokens), norm_(norm), type_(type), path_(path) {}
  std::string op() const override { return norm_ ? "mul_mat_multi_normed" : "mul_mat_multi"; }
  std::string params() const override {
    std::string n;
    for (uint32_t v : ns_) n += (n.empty() ? "" : ",") + std::to_string(v);
    return fmt::format("type={} n={} k={} t={}{}{}", ops::weight_type_name(type_), n, k_, t_,
                       norm_ ? fmt::format(" norm={}", static_cast<uint32_t>(*norm_)) : "", path_suffix(path_));
  }
  double max_nmse() const override { return max_nmse_; }
  double bytes() const override {
    double b = io_bytes(uint64_t{t_} * k_, 0);
    for (uint32_t n : ns_)
      b += static_cast<double>(ops::weight_bytes(WeightType::q4, n, k_)) + io_bytes(0, uint64_t{t_} * n);
    return b;
  }
  double flops() const override {
    double f = 0;
    for (uint32_t n : ns_) f += 2.0 * n * k_ * t_;
    return f;
  }
  bool supported(const gpu::Context& context) const override {
    return path_supported(context, path_) && (norm_ || ops::uses_q4h(context, WeightType::q4, t_));
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto x_in = rng.normal_vec(uint64_t{t_} * k_, norm_ ? 3.0f : 1.0f);
    std::vector<float> x = x_in;  // what the products multiply: the norm's output with `norm`
    if (norm_) {
      const auto nw = rng.normal_vec(k_, 0.5f);
      ref::rms_norm(x_in, nw, x, t_, k_, kEps, *norm_);
      norm_w_ = GuardedBuffer(context, k_ * 4ull, "norm w");
      norm_w_.upload(nw);
    }
    GappedMatrices m = gapped_matrices(type_, ns_, k_, x, t_, rng);
    offsets_ = m.offsets;
    const auto& expected = m.products;
    w_ = GuardedBuffer(context, m.bytes.size(), "w");
    w_.upload(m.bytes);
    x_ = GuardedBuffer(context, x_in.size() * 4, "x");
    x_.upload(x_in);
    output_ = GuardedBuffer(context, expected[0].size() * 4, "y0");
    expected_ = expected[0];
    for (size_t i = 1; i < ns_.size(); ++i) {
      extra_.emplace_back(context, expected[i].size() * 4, fmt::format("y{}", i));
      extra_expected_.push_back(expected[i]);
    }
    inputs_ = {&w_, &x_};
    // With the norm the products run mul_mat_vec.comp (f32 sums, or int8 x for q4 where Q4_DOT is in use).
    const ForcePath force(path_);
    max_nmse_ = !norm_ ? kMaxNmseQ4h
                : type_ == WeightType::q4 && t_ <= ops::kVerifyMaxTokens && ops::uses_q4_dot(context, type_)
                    ? kMaxNmseQ4Dot
                    : kMaxNmse;
  }
  void poison() override {
    output_.poison();
    for (auto& y : extra_) y.poison();
  }
  void record(gpu::CommandList& cmd) override {
    const ForcePath force(path_);
    std::vector<ops::WeightRef> w;
    for (size_t i = 0; i < ns_.size(); ++i)
      w.push_back({w_.in().buffer, w_.in().offset + offsets_[i], type_, ns_[i], k_});
    std::vector<gpu::Binding> y = {output_.out()};
    for (auto& extra : extra_) y.push_back(extra.out());
    if (norm_)
      ops::mul_mat_multi(cmd, w, ops::NormedX{x_.in(), norm_w_.in(), kEps, *norm_}, y, t_);
    else
      ops::mul_mat_multi(cmd, w, ops::prepare_q4h(cmd, x_.in(), t_, k_), y, t_);
  }
  CheckResult check(gpu::Context& context) override {
    CheckResult r = SimpleOpCase::check(context);
    for (size_t i = 0; i < extra_.size(); ++i) {
      r.nmse = std::max(r.nmse, nmse(extra_[i].download<float>(), extra_expected_[i]));
      std::string why;
      if (!extra_[i].guards_intact(&why)) r.guards_ok = false, r.detail = why;
    }
    return r;
  }

 private:
  static constexpr float kEps = 1e-6f;
  std::vector<uint32_t> ns_;
  uint32_t k_, t_;
  std::optional<ops::NormWeight> norm_;
  WeightType type_;
  KernelPath path_;
  double max_nmse_ = kMaxNmse;
  std::vector<uint64_t> offsets_;
  GuardedBuffer w_, x_, norm_w_;
  std::vector<GuardedBuffer> extra_;
  std::vector<std::vector<float>> extra_expected_;
};

struct MoeShape {
  uint32_t n, k;
  uint32_t experts, top_k;
  uint32_t slots;       // matrices in the stack; > experts or with `permuted` the slot table is no identity
  bool permuted;
  bool padded_stride;   // experts 4096-aligned like sidecar slabs instead of packed
  bool x_per_slot;
  uint32_t tokens;
  // A streaming bank: `slots` < experts, only `slots` experts have a slot and the rest map to kNoSlot, ids
  // route to all experts; the pairs of experts without a slot must leave their y rows untouched.
  bool bank = false;
};

// A stack of `s.slots` random matrices, the slot table (identity, permuted, or a bank with kNoSlot entries)
// and distinct top-k ids per token.
struct MoeInputs {
  std::vector<std::byte> stack;
  std::vector<uint32_t> table, ids;
};

MoeInputs random_moe_inputs(WeightType type, const MoeShape& s, uint64_t stride, Rng& rng) {
  std::vector<std::byte> stack(stride * s.slots);
  for (uint32_t e = 0; e < s.slots; ++e) {
    const auto w = random_weights(type, s.n, s.k, rng);
    std::memcpy(stack.data() + e * stride, w.data(), w.size());
  }
  std::vector<uint32_t> slots(s.slots);
  std::iota(slots.begin(), slots.end(), 0u);
  if (s.permuted) std::shuffle(slots.begin(), slots.end(), rng.engine());
  std::vector<uint32_t> table(s.experts, ops::kNoSlot);
  if (s.bank) {
    // Which experts have a slot: a random subset of `slots` of them.
    std::vector<uint32_t> in_bank(s.experts);
    std::iota(in_bank.begin(), in_bank.end(), 0u);
    std::shuffle(in_bank.begin(), in_bank.end(), rng.engine());
    for (uint32_t i = 0; i < s.slots; ++i) table[in_bank[i]] = slots[i];
  } else {
    std::copy_n(slots.begin(), s.experts, table.begin());
  }
  std::vector<uint32_t> ids;
  std::vector<uint32_t> order(s.experts);
  std::iota(order.begin(), order.end(), 0u);
  for (uint32_t t = 0; t < s.tokens; ++t) {
    // Distinct ids per token, as top-k produces: the first top_k of a partial shuffle.
    for (uint32_t j = 0; j < s.top_k; ++j) std::swap(order[j], order[j + rng.below(s.experts - j)]);
    ids.insert(ids.end(), order.begin(), order.begin() + s.top_k);
  }
  return {std::move(stack), std::move(table), std::move(ids)};
}

// Bytes between slots: packed, or 4096-aligned like sidecar slabs.
uint64_t moe_stride(WeightType type, const MoeShape& s) {
  const uint64_t matrix = ops::weight_bytes(type, s.n, s.k);
  return s.padded_stride ? (matrix + 4095) / 4096 * 4096 : matrix;
}

// What the MoE cases share: the shape, the random stack / slot table / ids on the device, and the weights
// view and routing their ops take.
class MoeCase : public SimpleOpCase {
 public:
  MoeCase(WeightType type, MoeShape s, KernelPath path) : type_(type), s_(s), path_(path) {}
  double max_nmse() const override { return max_nmse_; }
  double flops() const override { return 2.0 * s_.n * s_.k * s_.tokens * s_.top_k; }
  bool supported(const gpu::Context& context) const override {
    return path_supported(context, path_) &&
           fits_binding(context, (s_.slots - 1) * moe_stride(type_, s_) + ops::weight_bytes(type_, s_.n, s_.k));
  }

 protected:
  uint64_t pairs() const { return uint64_t{s_.tokens} * s_.top_k; }
  // Bytes of the experts the ids use (each read once) and of the ids.
  double expert_bytes() const {
    return static_cast<double>(used_experts_ * ops::weight_bytes(type_, s_.n, s_.k)) + 4.0 * pairs();
  }
  // Makes the stack, slot table and ids and uploads them (w_, table_, ids_); the host copies are returned.
  MoeInputs upload_moe_inputs(gpu::Context& context, Rng& rng) {
    stride_ = moe_stride(type_, s_);
    MoeInputs in = random_moe_inputs(type_, s_, stride_, rng);
    used_experts_ = std::set<uint32_t>(in.ids.begin(), in.ids.end()).size();
    w_ = GuardedBuffer(context, in.stack.size(), "w");
    ids_ = GuardedBuffer(context, in.ids.size() * 4, "ids");
    table_ = GuardedBuffer(context, in.table.size() * 4, "slot_table");
    w_.upload(in.stack);
    ids_.upload(in.ids);
    table_.upload(in.table);
    max_nmse_ = max_nmse_for(context, type_, s_.tokens, path_);
    return in;
  }
  ops::ExpertWeightsRef weights() const {
    return {w_.in().buffer, w_.in().offset, stride_, s_.slots, type_, s_.n, s_.k};
  }
  ops::MoeRouting routing() const { return {ids_.in(), table_.in(), s_.experts, s_.top_k}; }

  WeightType type_;
  MoeShape s_;
  KernelPath path_;
  double max_nmse_ = kMaxNmse;
  uint64_t stride_ = 0;
  uint64_t used_experts_ = 0;
  GuardedBuffer w_, ids_, table_;
};

class MulMatIdCase : public MoeCase {
 public:
  // With `prepared`, x goes through ops::prepare_q4h and the PreparedX overload where the q4h kernels run.
  // `tiles`: the tiled kernel's shape for T > 32 ($MACH_MUL_MAT_ID's form); empty: the default choice.
  MulMatIdCase(WeightType type, MoeShape s, KernelPath path = KernelPath::automatic, bool prepared = false,
               std::string tiles = "")
      : MoeCase(type, s, path), prepared_(prepared), tiles_(std::move(tiles)) {}
  std::string op() const override { return prepared_ ? "mul_mat_id_prepared" : "mul_mat_id"; }
  std::string params() const override {
    return fmt::format("type={} n={} k={} e={} top_k={} slots={}{}{}{} x={} t={}{}", ops::weight_type_name(type_), s_.n,
                       s_.k, s_.experts, s_.top_k, s_.slots, s_.permuted ? " permuted" : "",
                       s_.padded_stride ? " padded" : "", s_.bank ? " bank" : "", s_.x_per_slot ? "per_slot" : "shared", s_.tokens,
                       path_suffix(path_)) +
           (tiles_.empty() ? "" : " tiles=" + tiles_);
  }
  double bytes() const override {
    return expert_bytes() + io_bytes((s_.x_per_slot ? pairs() : s_.tokens) * s_.k, pairs() * s_.n);
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto [stack, table, ids] = upload_moe_inputs(context, rng);
    const uint64_t pairs = this->pairs();
    const auto x = rng.normal_vec((s_.x_per_slot ? pairs : s_.tokens) * s_.k);
    x_ = GuardedBuffer(context, x.size() * 4, "x");
    output_ = GuardedBuffer(context, pairs * s_.n * 4, "y");
    // Rows of skipped pairs must keep what was there before the op.
    before_ = rng.uniform_vec(pairs * s_.n, -1.0f, 1.0f);
    if (s_.bank) output_.upload(before_);
    x_.upload(x);
    expected_ = before_;
    ref::mul_mat_id(type_, stack, stride_, s_.n, s_.k, ids, table, x, s_.x_per_slot, expected_, s_.tokens,
                    s_.top_k);
    inputs_ = {&w_, &ids_, &table_, &x_};
  }
  void poison() override {
    if (s_.bank)
      output_.upload(before_);
    else
      output_.poison();
  }
  void record(gpu::CommandList& cmd) override {
    const ForcePath force(path_);
    const MoeTiles tiles(tiles_);
    if (prepared_ && ops::uses_q4h(cmd.context(), type_, s_.tokens)) {
      const uint32_t rows = s_.x_per_slot ? s_.tokens * s_.top_k : s_.tokens;
      const ops::PreparedX px = ops::prepare_q4h(cmd, x_.in(), rows, s_.k);
      ops::mul_mat_id(cmd, weights(), routing(), px, s_.x_per_slot, output_.out(), s_.tokens);
    } else {
      ops::mul_mat_id(cmd, weights(), routing(), x_.in(), s_.x_per_slot, output_.out(), s_.tokens);
    }
  }

 private:
  bool prepared_;
  std::string tiles_;
  std::vector<float> before_;
  GuardedBuffer x_;
};

// ops::mul_mat_id_combine: the experts' down projection (x per pair) weighted and added to a residual that
// holds random values. With a bank, the pairs of experts without a slot must add nothing.
class MulMatIdCombineCase : public MoeCase {
 public:
  MulMatIdCombineCase(WeightType type, MoeShape s, KernelPath path = KernelPath::automatic) : MoeCase(type, s, path) {
    s_.x_per_slot = true;
  }
  std::string op() const override { return "mul_mat_id_combine"; }
  std::string params() const override {
    return fmt::format("type={} n={} k={} e={} top_k={} slots={}{}{} t={}{}", ops::weight_type_name(type_), s_.n, s_.k,
                       s_.experts, s_.top_k, s_.slots, s_.permuted ? " permuted" : "", s_.bank ? " bank" : "",
                       s_.tokens, path_suffix(path_));
  }
  double bytes() const override {
    return expert_bytes() + 4.0 * pairs() + io_bytes(pairs() * s_.k, 2ull * s_.tokens * s_.n);
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto [stack, table, ids] = upload_moe_inputs(context, rng);
    const uint64_t pairs = this->pairs();
    const auto x = rng.normal_vec(pairs * s_.k);
    const auto route_w = rng.uniform_vec(pairs, 0.05f, 1.0f);
    before_ = rng.uniform_vec(uint64_t{s_.tokens} * s_.n, -4.0f, 4.0f);

    route_w_ = GuardedBuffer(context, route_w.size() * 4, "route_w");
    x_ = GuardedBuffer(context, x.size() * 4, "x");
    output_ = GuardedBuffer(context, before_.size() * 4, "residual");
    route_w_.upload(route_w);
    x_.upload(x);
    output_.upload(before_);
    expected_ = before_;
    ref::mul_mat_id_combine(type_, stack, stride_, s_.n, s_.k, ids, table, route_w, x, expected_, s_.tokens,
                            s_.top_k);
    inputs_ = {&w_, &ids_, &table_, &route_w_, &x_};
  }
  void poison() override { output_.upload(before_); }
  void record(gpu::CommandList& cmd) override {
    const ForcePath force(path_);
    ops::mul_mat_id_combine(cmd, weights(), routing(), route_w_.in(), x_.in(), output_.inout(), s_.tokens);
  }

 private:
  std::vector<float> before_;
  GuardedBuffer route_w_, x_;
};

// mul_mat_id_swiglu: the fused gate/up stack [2I, K] (n = 2I) and SwiGLU, against mul_mat_id and glu's
// references. Banks are left out: which rows of skipped pairs change is unspecified (the streaming tests cover
// the fused kernel's skipping end to end).
class MulMatIdSwigluCase : public MoeCase {
 public:
  MulMatIdSwigluCase(WeightType type, MoeShape s, KernelPath path = KernelPath::automatic, bool prepared = false)
      : MoeCase(type, s, path), prepared_(prepared) {
    s_.x_per_slot = false;
  }
  std::string op() const override { return prepared_ ? "mul_mat_id_swiglu_prepared" : "mul_mat_id_swiglu"; }
  std::string params() const override {
    return fmt::format("type={} n={} k={} e={} top_k={} slots={}{}{} t={}{}", ops::weight_type_name(type_), s_.n, s_.k,
                       s_.experts, s_.top_k, s_.slots, s_.permuted ? " permuted" : "",
                       s_.padded_stride ? " padded" : "", s_.tokens, path_suffix(path_));
  }
  double bytes() const override { return expert_bytes() + io_bytes(uint64_t{s_.tokens} * s_.k, pairs() * s_.n / 2); }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto [stack, table, ids] = upload_moe_inputs(context, rng);
    const uint64_t pairs = this->pairs();
    const auto x = rng.normal_vec(uint64_t{s_.tokens} * s_.k);
    x_ = GuardedBuffer(context, x.size() * 4, "x");
    output_ = GuardedBuffer(context, pairs * (s_.n / 2) * 4, "act");
    x_.upload(x);
    std::vector<float> gate_up(pairs * s_.n);
    ref::mul_mat_id(type_, stack, stride_, s_.n, s_.k, ids, table, x, false, gate_up, s_.tokens, s_.top_k);
    ops::GluParams glu;
    glu.kind = ops::GluKind::swiglu;
    glu.layout = ops::GluLayout::fused;
    glu.tokens = static_cast<uint32_t>(pairs);
    glu.width = s_.n / 2;
    expected_.resize(pairs * (s_.n / 2));
    ref::glu(gate_up, gate_up, expected_, glu);
    inputs_ = {&w_, &ids_, &table_, &x_};
  }
  void record(gpu::CommandList& cmd) override {
    const ForcePath force(path_);
    if (prepared_ && ops::swiglu_takes_q4h(cmd.context(), type_, s_.tokens))
      ops::mul_mat_id_swiglu(cmd, weights(), routing(), ops::prepare_q4h(cmd, x_.in(), s_.tokens, s_.k),
                             output_.out(), s_.tokens);
    else
      ops::mul_mat_id_swiglu(cmd, weights(), routing(), x_.in(), output_.out(), s_.tokens);
  }

 private:
  bool prepared_;
  GuardedBuffer x_;
};

void add_test_cases(CaseList& cases) {
  struct Shape {
    uint32_t n, k;
  };
  for (WeightType type : kAllTypes) {
    // Odd N (no multiple of any workgroup or tile size), K not a power of two; the per-type extra shape
    // has K off the 64-column tile (where the type allows).
    std::vector<Shape> shapes = {{67, 192}, {131, 320}, {17, 576}};
    if (type == WeightType::f32) shapes.push_back({33, 100});
    if (type == WeightType::f16 || type == WeightType::bf16) shapes.push_back({45, 136});
    if (type == WeightType::q8_0) shapes.push_back({29, 96});
    // T = 8 (the largest matrix-vector block) and T = 70 (two token tiles) on the first shape only: every
    // (workgroup size, T) pair is a pipeline that lavapipe compiles for up to a second.
    for (const Shape& s : shapes)
      for (uint32_t t : {1u, 3u, 37u}) cases.push_back(std::make_unique<MulMatCase>(type, s.n, s.k, t));
    for (uint32_t t : {8u, 70u}) cases.push_back(std::make_unique<MulMatCase>(type, shapes[0].n, shapes[0].k, t));
    // Verify blocks on the matrix-vector kernels in chunks: 2 x 6, 2 x 8, 7 + 7 + 6 (a short last chunk) and
    // 4 x 8 tokens.
    for (uint32_t t : {12u, 16u, 20u, 32u})
      cases.push_back(std::make_unique<MulMatCase>(type, shapes[0].n, shapes[0].k, t));

    // MoE: E = 8, top-2 with identity slots; E = 16, top-4 through a permuted table into a 20-slot stack;
    // E = 4, top-2 with 150 tokens, so that experts get more than one 64-token tile.
    const MoeShape moe[] = {
        {67, 192, 8, 2, 8, false, false, false, 1},   {67, 192, 8, 2, 8, false, false, true, 3},
        {45, 320, 16, 4, 20, true, true, false, 37},  {45, 320, 16, 4, 20, true, true, true, 1},
        {45, 320, 16, 4, 20, true, false, true, 70},  {33, 128, 4, 2, 4, false, false, false, 150},
        // A bank of 5 slots for 16 experts: decode, verify and prefill kernels skip the experts without one.
        {45, 320, 16, 4, 5, true, true, false, 1, true},  {45, 320, 16, 4, 5, true, true, true, 6, true},
        {45, 320, 16, 4, 5, true, true, false, 70, true},
        // Verify blocks (T <= 32 stays on the per-pair matrix-vector kernels), with and without a bank.
        {45, 320, 16, 4, 20, true, true, false, 16},  {45, 320, 16, 4, 20, true, false, true, 32},
        {45, 320, 16, 4, 5, true, true, true, 16, true},  {45, 320, 16, 4, 5, true, true, false, 32, true},
    };
    for (const MoeShape& s : moe) cases.push_back(std::make_unique<MulMatIdCase>(type, s));
  }
  // Every token count of the packed-f16 q4 kernel (one variant per T <= 8).
  for (uint32_t t : {2u, 4u, 5u, 6u, 7u}) cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 67, 192, t));
  // The f32 q4 kernel (devices without f16 arithmetic) where the default is the packed-f16 one.
  for (uint32_t t : {1u, 3u, 8u, 12u, 20u, 32u})
    cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 131, 320, t, KernelPath::f32));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, MoeShape{45, 320, 16, 4, 20, true, true, true, 1},
                                                 KernelPath::f32));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, MoeShape{67, 192, 8, 2, 8, false, false, false, 1},
                                                 KernelPath::f32));
  cases.push_back(std::make_unique<MulMatIdCase>(
      WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, true, 3, true}, KernelPath::f32));
  cases.push_back(std::make_unique<MulMatIdCase>(
      WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, true, 16, true}, KernelPath::f32));
  cases.push_back(std::make_unique<MulMatIdCase>(
      WeightType::q4, MoeShape{45, 320, 16, 4, 20, true, false, false, 32}, KernelPath::f32));
  using W = ops::NormWeight;
  // The f32 kernel's int8-x variants (Q4_DOT; the default on devices that accelerate them): dense products at
  // every chunk size, K = 320 (5 units per row: a partial last unit group), MoE products with shared and
  // per-slot x and a bank, the fused down projection + combine, accumulation and the normed q/k/v product.
  for (uint32_t t : {1u, 3u, 8u, 12u, 32u})
    cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 131, 320, t, KernelPath::dot));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 67, 4096, 1, KernelPath::dot));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, MoeShape{45, 320, 16, 4, 20, true, true, true, 1},
                                                 KernelPath::dot));
  cases.push_back(std::make_unique<MulMatIdCase>(
      WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, false, 3, true}, KernelPath::dot));
  for (uint32_t t : {1u, 16u}) {
    cases.push_back(std::make_unique<MulMatIdCombineCase>(
        WeightType::q4, MoeShape{40, 1088, 16, 8, 16, true, true, true, t}, KernelPath::dot));
    cases.push_back(std::make_unique<MulMatIdCombineCase>(
        WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, true, t, true}, KernelPath::dot));
  }
  cases.push_back(std::make_unique<MulMatAccumulateCase>(WeightType::q4, 67, 192, 5, KernelPath::dot));
  // The fused gate/up + SwiGLU (odd I: a partial last tile; a permuted padded stack) at 1, 3 and 32 tokens,
  // and at 37, where it runs mul_mat_id + glu.
  for (const MoeShape& s : {MoeShape{90, 192, 8, 2, 8, false, false, false, 1},
                            MoeShape{134, 320, 16, 4, 20, true, true, false, 1},
                            MoeShape{90, 192, 8, 2, 8, false, false, false, 3},
                            MoeShape{134, 320, 16, 4, 20, true, true, false, 32},
                            MoeShape{90, 192, 8, 2, 8, false, false, false, 37}})
    cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, s, KernelPath::dot));
  for (uint32_t t : {1u, 3u})
    cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{131, 67, 67}, 320, t,
                                                      t == 1 ? W::w : W::one_plus_w, WeightType::q4, KernelPath::dot));
  // Accumulating products (matrix-vector, chunked verify, tiled), each type; q4 also on its f32 kernel.
  for (WeightType type : kAllTypes)
    for (uint32_t t : {1u, 5u, 16u, 64u}) cases.push_back(std::make_unique<MulMatAccumulateCase>(type, 67, 192, t));
  for (uint32_t t : {5u, 16u}) cases.push_back(std::make_unique<MulMatAccumulateCase>(WeightType::q4, 67, 192, t, KernelPath::f32));
  // Other tile shapes of the tiled MoE kernel ($MACH_MUL_MAT_ID) within lavapipe's 32 KiB of shared memory (the
  // 128 x 32 tiles larger devices pick need 40 KiB): 8 x 4 per thread, and 16-token tiles.
  for (const char* tiles : {"bm=64,bn=32,tm=8,tn=4", "bm=32,bn=16,tm=4,tn=2"})
    for (bool x_per_slot : {false, true})
      cases.push_back(std::make_unique<MulMatIdCase>(
          WeightType::q4, MoeShape{45, 320, 16, 4, 20, true, true, x_per_slot, 70}, KernelPath::automatic, false, tiles));
  // mul_mat_multi: q/k/v-like triples (odd heights; 1 to 32 tokens, every chunk size that occurs) and a pair.
  for (uint32_t t : {1u, 2u, 3u, 4u, 7u, 8u, 12u, 32u})
    cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{131, 67, 67}, 320, t));
  cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{64, 17}, 192, 5));
  // mul_mat_multi on x's RMSNorm applied by the product: every type at decode, q4 in token chunks, each norm
  // weighting, a pair, and T = 40 (norm into scratch, then the tiled products; f32, which stays off tensor cores).
  for (WeightType type : kAllTypes)
    cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{131, 67, 67}, 320, 1, W::w, type));
  for (uint32_t t : {3u, 12u})
    cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{131, 67, 67}, 320, t, W::one_plus_w));
  cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{64, 17}, 192, 2, W::none, WeightType::bf16));
  cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{64, 17, 33}, 256, 40, W::w, WeightType::f32));
  // mul_mat_id_swiglu (n = 2I): the fused q4h kernel for T <= 32 (odd I, a permuted padded stack, an input
  // prepared by the caller), mul_mat_id + glu beyond and for the other types and the f32 q4 kernel.
  const auto small = [](uint32_t t) { return MoeShape{90, 192, 8, 2, 8, false, false, false, t}; };
  const auto permuted = [](uint32_t t) { return MoeShape{134, 320, 16, 4, 20, true, true, false, t}; };
  for (uint32_t t : {1u, 3u, 16u, 32u, 37u})
    cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, small(t)));
  cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, permuted(5)));
  cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, permuted(6), KernelPath::automatic, true));
  cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, small(3), KernelPath::f32));
  for (WeightType type : {WeightType::bf16, WeightType::q8_0})
    cases.push_back(std::make_unique<MulMatIdSwigluCase>(type, small(3)));
  // mul_mat_id on an input prepared by the caller: x shared (gate/up) and per slot (down), with a bank.
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, MoeShape{45, 320, 16, 4, 20, true, true, false, 3},
                                                 KernelPath::automatic, true));
  cases.push_back(std::make_unique<MulMatIdCase>(
      WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, true, 16, true}, KernelPath::automatic, true));
  // The fused down projection + combine: fused kernels for T <= 32, mul_mat_id + combine beyond; all experts
  // slotted (a permuted 20-slot stack for 16 experts) and a bank of 5 slots (the rest kNoSlot).
  for (WeightType type : {WeightType::q4, WeightType::q8_0, WeightType::bf16})
    for (uint32_t t : {1u, 3u, 16u, 32u, 64u}) {
      cases.push_back(std::make_unique<MulMatIdCombineCase>(type, MoeShape{45, 320, 16, 4, 20, true, true, true, t}));
      cases.push_back(
          std::make_unique<MulMatIdCombineCase>(type, MoeShape{45, 320, 16, 4, 5, true, true, true, t, true}));
    }
  // Top-8 and 34 units per row: the q4h combine kernel's pair groups (64 invocations each, four groups of a
  // 256-invocation decode workgroup) each take two pairs.
  for (uint32_t t : {1u, 5u})
    cases.push_back(
        std::make_unique<MulMatIdCombineCase>(WeightType::q4, MoeShape{40, 1088, 16, 8, 16, true, true, true, t}));
  for (uint32_t t : {1u, 16u, 64u}) {
    cases.push_back(std::make_unique<MulMatIdCombineCase>(WeightType::q4, MoeShape{67, 192, 8, 2, 8, false, false, true, t},
                                                          KernelPath::f32));
    cases.push_back(std::make_unique<MulMatIdCombineCase>(
        WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, true, t, true}, KernelPath::f32));
  }
  for (WeightType type : {WeightType::f32, WeightType::f16})
    cases.push_back(std::make_unique<MulMatIdCombineCase>(type, MoeShape{45, 320, 16, 4, 5, true, true, true, 3, true}));
  // The tensor-core kernel's plain-arithmetic twin (T > 32): every type it takes, K off the 64-column tile,
  // several token tiles, MoE with shared and per-slot x, a bank, an expert with several token tiles, and
  // accumulating outputs. Devices with cooperative matrices run the native kernel in the T > 32 cases above.
  for (WeightType type : {WeightType::f16, WeightType::bf16, WeightType::q8_0, WeightType::q4}) {
    cases.push_back(std::make_unique<MulMatCase>(type, 67, 192, 37, KernelPath::emu));
    cases.push_back(std::make_unique<MulMatCase>(type, 131, 320, 70, KernelPath::emu));
    cases.push_back(std::make_unique<MulMatIdCase>(type, MoeShape{45, 320, 16, 4, 20, true, true, false, 37},
                                                   KernelPath::emu));
    cases.push_back(std::make_unique<MulMatIdCase>(type, MoeShape{45, 320, 16, 4, 5, true, true, true, 70, true},
                                                   KernelPath::emu));
  }
  cases.push_back(std::make_unique<MulMatCase>(WeightType::f16, 45, 136, 40, KernelPath::emu));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q8_0, 29, 96, 40, KernelPath::emu));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, MoeShape{33, 128, 4, 2, 4, false, false, false, 150},
                                                 KernelPath::emu));
  cases.push_back(std::make_unique<MulMatAccumulateCase>(WeightType::q4, 67, 192, 64, KernelPath::emu));
  cases.push_back(std::make_unique<MulMatIdCombineCase>(
      WeightType::q4, MoeShape{45, 320, 16, 4, 5, true, true, true, 64, true}, KernelPath::emu));
  // One matrix-vector product whose weights (68 MiB) exceed 64 MiB, against lavapipe's 128 MiB range.
  cases.push_back(std::make_unique<MulMatCase>(WeightType::f32, 4352, 4096, 1));
}

// Qwen3-30B-A3B's experts (128, top-8, all resident) for T tokens: the fused gate/up and the down product.
MoeShape qwen3_gate_up(uint32_t t) { return {1536, 2048, 128, 8, 128, false, false, false, t}; }
MoeShape qwen3_down(uint32_t t) { return {2048, 768, 128, 8, 128, false, false, true, t}; }

void add_perf_cases(CaseList& cases) {
  // Decode over >= 1 GiB of weights (each buffer <= 2 GiB): the bandwidth targets.
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 262144, 8192, 1));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 262144, 8192, 1, KernelPath::f32));
  // The same bytes with Qwen3-30B-A3B's row length (K = 2048, no power-of-two row stride across rows).
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 1048576, 2048, 1));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::bf16, 262144, 2048, 1));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::bf16, 65536, 8192, 1));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q8_0, 131072, 8192, 1));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::f16, 65536, 8192, 1));
  // Qwen3-30B-A3B: attention-sized 2048 x 2048, the 151936 x 2048 lm_head, and speculative verify (T = 8).
  for (WeightType type : {WeightType::bf16, WeightType::q8_0, WeightType::q4}) {
    cases.push_back(std::make_unique<MulMatCase>(type, 2048, 2048, 1));
    cases.push_back(std::make_unique<MulMatCase>(type, 151936, 2048, 1));
    cases.push_back(std::make_unique<MulMatCase>(type, 151936, 2048, 8));
  }
  // Speculative verify of 16 and 32 tokens on the q projection of a 32-head model (the H100 profile's shape).
  for (uint32_t t : {16u, 32u}) cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 4096, 2048, t));
  // Qwen3-30B-A3B experts, 128 resident, top-8: gate/up [768, 2048] share x; down [2048, 768] has x per slot.
  for (WeightType type : {WeightType::bf16, WeightType::q4}) {
    cases.push_back(std::make_unique<MulMatIdCase>(type, MoeShape{768, 2048, 128, 8, 128, false, false, false, 1}));
    cases.push_back(std::make_unique<MulMatIdCase>(type, MoeShape{2048, 768, 128, 8, 128, false, false, true, 1}));
  }
  // The fused down projection + combine against the mul_mat_id above (plus moe_combine): decode and verify.
  for (WeightType type : {WeightType::bf16, WeightType::q4})
    for (uint32_t t : {1u, 16u})
      cases.push_back(
          std::make_unique<MulMatIdCombineCase>(type, MoeShape{2048, 768, 128, 8, 128, false, false, true, t}));
  // Prefill, T = 512.
  for (WeightType type : {WeightType::bf16, WeightType::q4}) {
    cases.push_back(std::make_unique<MulMatCase>(type, 2048, 2048, 512));
    cases.push_back(std::make_unique<MulMatCase>(type, 6144, 2048, 512));
  }
  // Decode's o projection and expert down projection + combine: the device's default, the f32 kernel's float
  // decode and its int8-x (Q4_DOT) variant, both reading the activations directly.
  for (KernelPath path : {KernelPath::automatic, KernelPath::f32, KernelPath::dot}) {
    cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 2048, 4096, 1, path));
    cases.push_back(std::make_unique<MulMatIdCombineCase>(WeightType::q4, qwen3_down(1), path));
  }
  // Decode's q, k and v of Qwen3-30B-A3B in one dispatch, and its fused gate/up + SwiGLU.
  cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{4096, 512, 512}, 2048, 1));
  // The same with the attention norm applied inside (the f32 kernel on x as it is): decode's q/k/v now.
  cases.push_back(
      std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{4096, 512, 512}, 2048, 1, ops::NormWeight::w));
  cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, qwen3_gate_up(1)));
  // A 16-token verify block's products (`--filter t=16` with `--sweep MACH_Q4H=...` or MACH_MUL_MAT_VEC tunes
  // them): q/k/v on a prepared x, o, the fused gate/up + SwiGLU and the down projection + combine (above).
  cases.push_back(std::make_unique<MulMatMultiCase>(std::vector<uint32_t>{4096, 512, 512}, 2048, 16));
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 2048, 4096, 16));
  for (uint32_t t : {16u, 32u}) cases.push_back(std::make_unique<MulMatIdSwigluCase>(WeightType::q4, qwen3_gate_up(t)));
  cases.push_back(std::make_unique<MulMatIdCombineCase>(WeightType::q4, qwen3_down(32)));
  // The MoE of a 512-token prefill chunk: the fused gate/up [1536, 2048] and the down [2048, 768] (x per pair).
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, qwen3_gate_up(512)));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, qwen3_down(512)));
  // The rest of a prefill chunk's products: the o projection, and the MoE of 4096 tokens (64 pairs per expert).
  // `--sweep MACH_COOPMAT=0|1` compares the tensor-core kernel with mul_mat.comp on all of them.
  cases.push_back(std::make_unique<MulMatCase>(WeightType::q4, 2048, 4096, 512));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, qwen3_gate_up(4096)));
  cases.push_back(std::make_unique<MulMatIdCase>(WeightType::q4, qwen3_down(4096)));
}

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  if (set == CaseSet::test)
    add_test_cases(cases);
  else
    add_perf_cases(cases);
});

}  // namespace
}  // namespace mach::test
