// Op cases for the fused attention inputs (ops/attention_prep.hpp): per-head RMSNorm + RoPE of q and k, with
// and without the paged KV store, against the CPU reference and against the unfused GPU sequence
// (rms_norm, rms_norm, rope, rope, kv_store) run on the same inputs. Qwen3-30B-A3B heads at several token
// counts, small heads, partial and trailing rotary slices, interleaved pairs, YaRN, all three weight modes.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>
#include <utility>

#include "op_case.hpp"
#include "ops/attention.hpp"
#include "ops/attention_prep.hpp"
#include "ops/matmul.hpp"
#include "ops/reference/attention.hpp"
#include "ops/reference/attention_prep.hpp"
#include "ops/reference/norm.hpp"
#include "ops/rope_freq.hpp"
#include "ops/weight_format.hpp"

namespace mach::test {
namespace {

struct QkSpec {
  std::string label;
  uint32_t tokens = 1, q_heads = 4, kv_heads = 2;
  ops::RopeConfig rope;  // its head_dim is the op's
  ops::RopeStyle style = ops::RopeStyle::neox;
  bool trailing = false;  // rotate the last rotary_dim dims (DeepSeek-V4) instead of the first
  ops::NormWeight weight = ops::NormWeight::w;
  bool store = false;
  uint32_t block_size = 16;
};

template <class T>
GuardedBuffer guarded(gpu::Context& context, const std::vector<T>& v, std::string label) {
  GuardedBuffer b(context, std::max<size_t>(v.size(), 1) * sizeof(T), std::move(label));
  if (!v.empty()) b.upload(v);
  return b;
}

std::vector<float> halves_to_floats(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = ops::half_to_float(h[i]);
  return f;
}

template <class T>
std::vector<T> concat(std::vector<T> a, const std::vector<T>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The step's tokens spread over up to three sequences at random start positions, in a shuffled block table.
struct CacheStep {
  ops::KvCacheLayout layout;
  std::vector<uint32_t> seq_of_token, pos_of_token, block_table;
  std::vector<uint16_t> k_cache, v_cache;  // before the step: random f16, so stray writes show

  CacheStep(const QkSpec& spec, Rng& rng) {
    const uint32_t seqs = std::min(spec.tokens, 3u), B = spec.block_size;
    std::vector<uint32_t> next(seqs);
    for (auto& p : next) p = rng.below(1000);
    for (uint32_t t = 0; t < spec.tokens; ++t) {
      seq_of_token.push_back(t % seqs);
      pos_of_token.push_back(next[t % seqs]++);
    }
    layout = {spec.kv_heads, spec.rope.head_dim, B, 0};
    uint32_t blocks = 0;
    for (uint32_t p : next) {
      layout.max_blocks_per_seq = std::max(layout.max_blocks_per_seq, (p + B - 1) / B);
      blocks += (p + B - 1) / B;
    }
    std::vector<uint32_t> physical(blocks);
    std::iota(physical.begin(), physical.end(), 0u);
    std::shuffle(physical.begin(), physical.end(), rng.engine());
    block_table.assign(size_t{seqs} * layout.max_blocks_per_seq, 0xffffffffu);
    uint32_t used = 0;
    for (uint32_t s = 0; s < seqs; ++s)
      for (uint32_t b = 0; b < (next[s] + B - 1) / B; ++b)
        block_table[s * layout.max_blocks_per_seq + b] = physical[used++];
    const size_t halves = size_t{blocks} * layout.block_bytes() / 2;
    for (auto* c : {&k_cache, &v_cache}) {
      c->resize(halves);
      for (auto& h : *c) h = ops::float_to_half(rng.normal());
    }
  }
};

// The op's shape and parameters for a spec (its tokens, heads and rope; eps 1e-6).
std::pair<ops::QkNormRopeShape, ops::QkNormRopeParams> op_shape(const QkSpec& s, const ops::RopeTable& table) {
  const uint32_t D = s.rope.head_dim;
  return {{s.tokens, s.q_heads, s.kv_heads, D, table.rotary_dim, s.trailing ? D - table.rotary_dim : 0},
          {1e-6f, s.weight, s.style, table.attention_factor}};
}

class QkNormRopeCase : public OpCase {
 public:
  explicit QkNormRopeCase(QkSpec spec) : s_(std::move(spec)) {}
  std::string op() const override { return s_.store ? "qk_norm_rope_kv_store" : "qk_norm_rope"; }
  std::string params() const override {
    return fmt::format("{} t={} qh={} kvh={} d={} weight={}", s_.label, s_.tokens, s_.q_heads, s_.kv_heads,
                       s_.rope.head_dim, static_cast<uint32_t>(s_.weight));
  }
  // As rope's bound; the KV caches are checked apart (f16 rounding, see check()).
  double max_nmse() const override { return 1e-10; }
  double bytes() const override {
    const double d = s_.rope.head_dim;
    return 8.0 * s_.tokens * (s_.q_heads + s_.kv_heads) * d + (s_.store ? 8.0 * s_.tokens * s_.kv_heads * d : 0);
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint32_t D = s_.rope.head_dim, T = s_.tokens;
    const ops::RopeTable table = ops::rope_table(s_.rope);
    std::tie(shape_, params_) = op_shape(s_, table);
    step_ = std::make_unique<CacheStep>(s_, rng);
    const auto q = rng.normal_vec(size_t{T} * s_.q_heads * D, 2.0f);
    const auto k = rng.normal_vec(size_t{T} * s_.kv_heads * D, 2.0f);
    const auto v = rng.normal_vec(k.size());
    const auto q_w = rng.normal_vec(D, 0.5f), k_w = rng.normal_vec(D, 0.5f);

    q_ = guarded(context, q, "q");
    k_ = guarded(context, k, "k");
    q_w_ = guarded(context, q_w, "q_norm");
    k_w_ = guarded(context, k_w, "k_norm");
    pos_ = guarded(context, step_->pos_of_token, "positions");
    freq_ = guarded(context, table.inv_freq, "inv_freq");
    v_ = guarded(context, v, "v");
    seq_ = guarded(context, step_->seq_of_token, "seq_of_token");
    table_ = guarded(context, step_->block_table, "block_table");
    k_cache_ = guarded(context, step_->k_cache, "k_cache");
    v_cache_ = guarded(context, step_->v_cache, "v_cache");

    want_q_ = q;
    want_k_ = k;
    ref::qk_norm_rope(want_q_, want_k_, q_w, k_w, step_->pos_of_token, table.inv_freq, shape_, params_);
    want_k_cache_ = step_->k_cache;
    want_v_cache_ = step_->v_cache;
    if (s_.store)
      ref::kv_store(step_->layout, want_k_, v, step_->seq_of_token, step_->pos_of_token, step_->block_table,
                    want_k_cache_, want_v_cache_);
    run_unfused(context, q, k);
  }

  void record(gpu::CommandList& cmd) override {
    const ops::QkNormRopeArgs args{q_.inout(), k_.inout(), q_w_.in(), k_w_.in(), pos_.in(), freq_.in()};
    if (s_.store)
      ops::qk_norm_rope_kv_store(cmd, args, shape_, params_, store_args(k_cache_, v_cache_));
    else
      ops::qk_norm_rope(cmd, args, shape_, params_);
  }

  CheckResult check(gpu::Context&) override {
    CheckResult r;
    const auto got_qk = concat(q_.download<float>(), k_.download<float>());
    const double vs_ref = nmse(got_qk, concat(want_q_, want_k_));
    auto got_caches = concat(k_cache_.download<uint16_t>(), v_cache_.download<uint16_t>());
    const auto unfused_caches = concat(unfused_k_cache_, unfused_v_cache_);
    // The fused op does the unfused ops' arithmetic in their order: expect the same bits on one device.
    const double vs_unfused = std::max(nmse(got_qk, unfused_qk_),
                                       nmse(halves_to_floats(got_caches), halves_to_floats(unfused_caches)));
    size_t differing = 0;
    for (size_t i = 0; i < got_qk.size(); ++i)
      differing += std::memcmp(&got_qk[i], &unfused_qk_[i], 4) != 0;
    for (size_t i = 0; i < got_caches.size(); ++i) differing += got_caches[i] != unfused_caches[i];
    // Caches against the reference: exact but for packHalf2x16's rounding mode (as the kv_store cases).
    const double cache_vs_ref =
        nmse(halves_to_floats(got_caches), halves_to_floats(concat(want_k_cache_, want_v_cache_)));
    r.nmse = std::max(vs_ref, vs_unfused);
    r.detail = fmt::format("nmse vs reference {:.3g}, vs unfused GPU ops {:.3g} ({} values differ), caches vs "
                           "reference {:.3g}",
                           vs_ref, vs_unfused, differing, cache_vs_ref);
    if (cache_vs_ref > 1e-7) r.nmse = INFINITY;
    std::string why;
    for (const GuardedBuffer* b : {&q_, &k_, &q_w_, &k_w_, &pos_, &freq_, &v_, &seq_, &table_, &k_cache_, &v_cache_})
      if (!b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail += "; " + why;
      }
    return r;
  }

 private:
  ops::KvStoreArgs store_args(const GuardedBuffer& k_cache, const GuardedBuffer& v_cache) const {
    return {step_->layout, v_.in(), seq_.in(), pos_.in(), table_.in(), k_cache.inout(), v_cache.inout()};
  }

  // rms_norm, rms_norm, rope, rope (and kv_store) on copies of the inputs: what the fused op replaces.
  void run_unfused(gpu::Context& context, const std::vector<float>& q, const std::vector<float>& k) {
    const GuardedBuffer q2 = guarded(context, q, "q unfused"), k2 = guarded(context, k, "k unfused");
    const GuardedBuffer kc2 = guarded(context, step_->k_cache, "k_cache unfused");
    const GuardedBuffer vc2 = guarded(context, step_->v_cache, "v_cache unfused");
    const uint32_t T = shape_.tokens, D = shape_.head_dim;
    auto cmd = context.begin_commands();
    cmd->begin();
    ops::rms_norm(*cmd, q2.inout(), q_w_.in(), q2.inout(), {T * shape_.q_heads, D}, params_.eps, params_.weight);
    ops::rms_norm(*cmd, k2.inout(), k_w_.in(), k2.inout(), {T * shape_.kv_heads, D}, params_.eps, params_.weight);
    for (auto [x, heads] : {std::pair{&q2, shape_.q_heads}, std::pair{&k2, shape_.kv_heads}})
      ops::rope(*cmd, x->inout(), pos_.in(), freq_.in(), {T, heads, D, shape_.rotary_dim, shape_.offset, 0},
                params_.style, params_.attention_factor);
    if (s_.store)
      ops::kv_store(*cmd, step_->layout, k2.in(), v_.in(), seq_.in(), pos_.in(), table_.in(), kc2.inout(),
                    vc2.inout(), T);
    context.wait(context.submit(*cmd));
    unfused_qk_ = concat(q2.download<float>(), k2.download<float>());
    unfused_k_cache_ = kc2.download<uint16_t>();
    unfused_v_cache_ = vc2.download<uint16_t>();
  }

  QkSpec s_;
  ops::QkNormRopeShape shape_;
  ops::QkNormRopeParams params_;
  std::unique_ptr<CacheStep> step_;
  GuardedBuffer q_, k_, q_w_, k_w_, pos_, freq_, v_, seq_, table_, k_cache_, v_cache_;
  std::vector<float> want_q_, want_k_, unfused_qk_;
  std::vector<uint16_t> want_k_cache_, want_v_cache_, unfused_k_cache_, unfused_v_cache_;
};

// ops::qkv_norm_rope_kv_store: q, k and v from the layer's input row (its RMSNorm applied by the products),
// then the heads' norms, RoPE and the KV store in the products' last workgroup per head. Against the CPU
// reference of the whole sequence (rms_norm, the three products, qk_norm_rope, kv_store); the per-head counts
// must be back at 0.
class QkvTailCase : public OpCase {
 public:
  // `dot`: q4 on the products' int8-x variants ($MACH_Q4_DOT=1) where the device has them.
  QkvTailCase(QkSpec spec, uint32_t hidden, ops::WeightType type, bool dot = false)
      : s_(std::move(spec)), k_(hidden), type_(type), dot_(dot) {}
  std::string op() const override { return "qkv_norm_rope_kv_store"; }
  std::string params() const override {
    return fmt::format("{} type={} t={} hidden={} qh={} kvh={} d={} weight={}{}", s_.label, ops::weight_type_name(type_),
                       s_.tokens, k_, s_.q_heads, s_.kv_heads, s_.rope.head_dim, static_cast<uint32_t>(s_.weight),
                       dot_ ? " kernel=q4_dot" : "");
  }
  // f32 sums; with q4 on the int8-x variants their rounding, and beyond 32 tokens on tensor cores the f16
  // rounding of x and the weights (the caches' f16 values carry either).
  double max_nmse() const override { return int8_x_ ? kMaxNmseQ4Dot : coopmat_ ? 1e-5 : 1e-10; }
  bool supported(const gpu::Context& context) const override {
    return !dot_ || (context.info().int_dot && gpu::Context::has_shader("mul_mat_vec_qkv_q4_dot"));
  }
  double bytes() const override {
    double b = 4.0 * s_.tokens * k_;
    for (uint32_t n : rows()) b += static_cast<double>(ops::weight_bytes(type_, n, k_)) + 4.0 * s_.tokens * n;
    return b;
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint32_t D = s_.rope.head_dim, T = s_.tokens;
    const ops::RopeTable table = ops::rope_table(s_.rope);
    std::tie(shape_, params_) = op_shape(s_, table);
    step_ = std::make_unique<CacheStep>(s_, rng);
    const auto x = rng.normal_vec(size_t{T} * k_, 3.0f);
    const auto x_w = rng.normal_vec(k_, 0.5f), q_w = rng.normal_vec(D, 0.5f), k_w = rng.normal_vec(D, 0.5f);
    std::vector<float> h(x.size());
    ref::rms_norm(x, x_w, h, T, k_, kEps, ops::NormWeight::w);
    const auto n = rows();
    GappedMatrices m = gapped_matrices(type_, n, k_, h, T, rng);
    offsets_ = m.offsets;
    want_q_ = m.products[0], want_k_ = m.products[1], want_v_ = m.products[2];
    ref::qk_norm_rope(want_q_, want_k_, q_w, k_w, step_->pos_of_token, table.inv_freq, shape_, params_);
    want_k_cache_ = step_->k_cache;
    want_v_cache_ = step_->v_cache;
    ref::kv_store(step_->layout, want_k_, want_v_, step_->seq_of_token, step_->pos_of_token, step_->block_table,
                  want_k_cache_, want_v_cache_);

    w_ = guarded(context, m.bytes, "w");
    x_ = guarded(context, x, "x");
    x_w_ = guarded(context, x_w, "input norm");
    q_ = GuardedBuffer(context, want_q_.size() * 4, "q");
    k_out_ = GuardedBuffer(context, want_k_.size() * 4, "k");
    v_ = GuardedBuffer(context, want_v_.size() * 4, "v");
    q_w_ = guarded(context, q_w, "q_norm");
    k_w_ = guarded(context, k_w, "k_norm");
    pos_ = guarded(context, step_->pos_of_token, "positions");
    freq_ = guarded(context, table.inv_freq, "inv_freq");
    seq_ = guarded(context, step_->seq_of_token, "seq_of_token");
    table_ = guarded(context, step_->block_table, "block_table");
    k_cache_ = guarded(context, step_->k_cache, "k_cache");
    v_cache_ = guarded(context, step_->v_cache, "v_cache");
    counts_ = guarded(context, std::vector<uint32_t>(4 * (s_.q_heads + 2 * s_.kv_heads), 0u), "counts");
    const ScopedEnv force("MACH_Q4_DOT", dot_ ? "1" : nullptr);
    int8_x_ = ops::uses_q4_dot(context, type_) && s_.tokens <= ops::kVerifyMaxTokens;
    coopmat_ = ops::uses_coopmat(context, type_, s_.tokens);
  }
  void poison() override {
    for (GuardedBuffer* b : {&q_, &k_out_, &v_}) b->poison();
    k_cache_.upload(step_->k_cache);
    v_cache_.upload(step_->v_cache);
  }

  void record(gpu::CommandList& cmd) override {
    const ScopedEnv force("MACH_Q4_DOT", dot_ ? "1" : nullptr);
    std::vector<ops::WeightRef> w;
    const auto n = rows();
    for (size_t i = 0; i < 3; ++i) w.push_back({w_.in().buffer, w_.in().offset + offsets_[i], type_, n[i], k_});
    const ops::QkvTail tail{{q_.inout(), k_out_.inout(), q_w_.in(), k_w_.in(), pos_.in(), freq_.in()},
                            shape_,
                            params_,
                            {step_->layout, v_.inout(), seq_.in(), pos_.in(), table_.in(), k_cache_.inout(),
                             v_cache_.inout()},
                            counts_.inout()};
    ops::qkv_norm_rope_kv_store(cmd, w, {x_.in(), x_w_.in(), kEps, ops::NormWeight::w}, tail);
  }

  CheckResult check(gpu::Context&) override {
    CheckResult r;
    const auto got = concat(concat(q_.download<float>(), k_out_.download<float>()), v_.download<float>());
    r.nmse = nmse(got, concat(concat(want_q_, want_k_), want_v_));
    const auto caches = concat(k_cache_.download<uint16_t>(), v_cache_.download<uint16_t>());
    // The caches within f16 rounding of the reference's (the f32 values come in another summation order).
    const double cache_nmse =
        nmse(halves_to_floats(caches), halves_to_floats(concat(want_k_cache_, want_v_cache_)));
    r.detail = fmt::format("q/k/v nmse {:.3g}, caches {:.3g}", r.nmse, cache_nmse);
    if (!(cache_nmse <= (int8_x_ ? kMaxNmseQ4Dot : coopmat_ ? 1e-5 : 1e-7))) r.nmse = INFINITY;
    const auto counts = counts_.download<uint32_t>();
    if (std::any_of(counts.begin(), counts.end(), [](uint32_t c) { return c != 0; })) {
      r.nmse = INFINITY;
      r.detail += "; a head count is not back at 0";
    }
    std::string why;
    for (const GuardedBuffer* b : {&w_, &x_, &x_w_, &q_, &k_out_, &v_, &q_w_, &k_w_, &pos_, &freq_, &seq_, &table_,
                                   &k_cache_, &v_cache_, &counts_})
      if (!b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail += "; " + why;
      }
    return r;
  }

 private:
  static constexpr float kEps = 1e-6f;
  std::array<uint32_t, 3> rows() const {
    const uint32_t D = s_.rope.head_dim;
    return {s_.q_heads * D, s_.kv_heads * D, s_.kv_heads * D};
  }

  QkSpec s_;
  uint32_t k_;
  ops::WeightType type_;
  bool dot_ = false;
  bool int8_x_ = false;  // the products run the int8-x variants (forced, or the device's default)
  bool coopmat_ = false;  // the products run on tensor cores (T > 32 where the device has them)
  ops::QkNormRopeShape shape_;
  ops::QkNormRopeParams params_;
  std::unique_ptr<CacheStep> step_;
  std::vector<uint64_t> offsets_;
  GuardedBuffer w_, x_, x_w_, q_, k_out_, v_, q_w_, k_w_, pos_, freq_, seq_, table_, k_cache_, v_cache_, counts_;
  std::vector<float> want_q_, want_k_, want_v_;
  std::vector<uint16_t> want_k_cache_, want_v_cache_;
};

ops::RopeConfig qwen3_rope() { return {.theta = 1e6, .head_dim = 128}; }

std::vector<QkSpec> test_specs() {
  using W = ops::NormWeight;
  std::vector<QkSpec> v;
  // Qwen3-30B-A3B: 32 q heads, 4 kv heads, D 128; decode, a verify block, prefill chunks.
  for (bool store : {false, true})
    for (uint32_t t : {1u, 3u, 16u, 100u})
      v.push_back({.label = "qwen3_30b", .tokens = t, .q_heads = 32, .kv_heads = 4, .rope = qwen3_rope(),
                   .store = store});
  // Small heads, Qwen3.5-style partial rotary with (1 + w) weights.
  for (bool store : {false, true})
    v.push_back({.label = "partial", .tokens = 5, .q_heads = 4, .kv_heads = 2,
                 .rope = {.theta = 1e7, .head_dim = 64, .partial_rotary_factor = 0.25}, .weight = W::one_plus_w,
                 .store = store, .block_size = 8});
  // DeepSeek-V4-style interleaved pairs over the trailing half, no weight, an odd head count.
  for (bool store : {false, true})
    v.push_back({.label = "interleaved_trailing", .tokens = 3, .q_heads = 5, .kv_heads = 1,
                 .rope = {.theta = 10000, .head_dim = 80, .partial_rotary_factor = 0.5},
                 .style = ops::RopeStyle::interleaved, .trailing = true, .weight = W::none, .store = store});
  // gpt-oss YaRN (attention_factor != 1), D 64.
  ops::RopeConfig yarn{.theta = 150000, .head_dim = 64, .scaling = ops::RopeScaling::yarn, .factor = 32,
                       .max_position_embeddings = 131072, .original_max_position_embeddings = 4096};
  yarn.truncate = false;
  v.push_back({.label = "yarn", .tokens = 7, .q_heads = 8, .kv_heads = 2, .rope = yarn, .store = true});
  // D 256 and D 512 (the 256-thread workgroup), Gemma 4's proportional frequencies.
  v.push_back({.label = "d256", .tokens = 4, .q_heads = 8, .kv_heads = 2, .rope = {.theta = 1e6, .head_dim = 256},
               .weight = W::one_plus_w, .store = true, .block_size = 32});
  v.push_back({.label = "gemma4_d512", .tokens = 3, .q_heads = 4, .kv_heads = 2,
               .rope = {.theta = 1e6, .head_dim = 512, .partial_rotary_factor = 0.25,
                        .scaling = ops::RopeScaling::proportional},
               .store = true});
  // The tiny golden checkpoints' head dim.
  v.push_back({.label = "tiny", .tokens = 6, .q_heads = 4, .kv_heads = 2, .rope = {.theta = 1e4, .head_dim = 16},
               .store = true, .block_size = 4});
  return v;
}

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using ops::WeightType;
  if (set == CaseSet::test) {
    for (auto& s : test_specs()) cases.push_back(std::make_unique<QkNormRopeCase>(s));
    // q/k/v products with the head tail: Qwen3-30B-A3B's decode (q4), a verify block in two token chunks, the
    // tiny fixtures' heads, partial rotary with (1 + w) weights, interleaved trailing pairs without weights
    // (D 80), other weight types; T = 40 and D 130 (not a multiple of the 4 rows per workgroup) on the two
    // dispatches instead.
    for (QkSpec s : test_specs()) {
      if (!s.store || s.label == "yarn" || s.label == "d256" || s.label == "gemma4_d512") continue;
      if (s.label == "qwen3_30b" && s.tokens > 16) s.tokens = 40;
      const uint32_t hidden = s.label == "qwen3_30b" ? (s.tokens == 1 ? 2048 : 512) : 192;
      cases.push_back(std::make_unique<QkvTailCase>(s, hidden, WeightType::q4));
      // The same on the int8-x variants of the products (the default where the device accelerates them).
      if (s.tokens <= 16) cases.push_back(std::make_unique<QkvTailCase>(s, hidden, WeightType::q4, true));
    }
    for (WeightType type : {WeightType::f32, WeightType::f16, WeightType::bf16, WeightType::q8_0})
      cases.push_back(std::make_unique<QkvTailCase>(
          QkSpec{.label = "tiny", .tokens = 2, .q_heads = 4, .kv_heads = 2, .rope = {.theta = 1e4, .head_dim = 16},
                 .store = true, .block_size = 4},
          64, type));
    cases.push_back(std::make_unique<QkvTailCase>(
        QkSpec{.label = "d130", .tokens = 1, .q_heads = 2, .kv_heads = 1, .rope = {.theta = 1e4, .head_dim = 130},
               .store = true},
        128, WeightType::bf16));
  } else {
    // Decode's q/k/v now: the products, norms, RoPE and KV store in one dispatch.
    cases.push_back(std::make_unique<QkvTailCase>(QkSpec{.label = "qwen3_30b", .tokens = 1, .q_heads = 32,
                                                         .kv_heads = 4, .rope = qwen3_rope(), .store = true},
                                                  2048, WeightType::q4));
    for (uint32_t t : {1u, 16u, 512u})
      cases.push_back(std::make_unique<QkNormRopeCase>(QkSpec{.label = "qwen3_30b", .tokens = t, .q_heads = 32,
                                                              .kv_heads = 4, .rope = qwen3_rope(), .store = true}));
  }
});

}  // namespace
}  // namespace mach::test
