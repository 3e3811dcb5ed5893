// Op cases for the MoE routers: qwen3 (softmax -> top-k -> renorm), gemma4 (plus per-expert scales), gpt-oss
// (biased top-k -> softmax), DeepSeek (sigmoid or sqrt-softplus scores, correction bias, scaling factor).
// Logits are built so that selection values are well apart: ids must match exactly.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>

#include "op_case.hpp"
#include "ops/reference/norm.hpp"
#include "ops/reference/router.hpp"
#include "ops/router.hpp"

namespace mach::test {
namespace {

class RouterCase : public OpCase {
 public:
  // With `ties`, logits take only 8 distinct values, so exact ties decide ids (the lower index must win).
  // With h > 0, ops::route_logits: the logits come from random bf16 router weights [E, h] and x [T, h] (fused
  // into one dispatch for T <= kRouterFusedMaxTokens), and are checked too.
  // With `norm` as well, the route_logits that applies the MoE block's RMSNorm to x itself and writes the
  // normed h (checked against the reference norm), and with `pack` its q4h form (checked against q4h_prep's
  // for the op's own h): the logits are those of the normed x.
  explicit RouterCase(ops::RouterParams p, bool ties = false, uint32_t h = 0,
                      std::optional<ops::NormWeight> norm = std::nullopt, bool pack = false)
      : p_(p), ties_(ties), h_(h), norm_(norm), pack_(pack) {}
  // The fused kernel with `rows` experts per logit workgroup ($MACH_ROUTER_ROWS) instead of the default.
  RouterCase& with_rows(uint32_t rows) {
    rows_ = std::to_string(rows);
    return *this;
  }
  std::string op() const override { return h_ ? (norm_ ? "route_logits_normed" : "route_logits") : "router"; }
  std::string params() const override {
    return fmt::format("mode={} score={} t={} e={} k={} norm={} bias={} expert_scale={} scale={} ties={}{}",
                       static_cast<uint32_t>(p_.mode), static_cast<uint32_t>(p_.score), p_.tokens, p_.experts, p_.k,
                       p_.normalize, p_.has_bias, p_.has_expert_scale, p_.scale, ties_,
                       h_ ? fmt::format(" h={}", h_) : "",
                       norm_ ? fmt::format(" norm={} pack={}", static_cast<uint32_t>(*norm_), pack_) : "") +
           (rows_.empty() ? "" : " rows=" + rows_);
  }
  double max_nmse() const override { return 1e-10; }
  double bytes() const override {
    return 4.0 * p_.tokens * (p_.experts + 2 * p_.k) + (2.0 * p_.experts + 4.0 * p_.tokens) * h_;
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint32_t T = p_.tokens, E = p_.experts, K = p_.k;
    std::vector<float> bias(E), expert_scale(E), logits(uint64_t{T} * E);
    for (auto& b : bias) b = p_.has_bias ? rng.uniform(-0.1f, 0.1f) : 0.0f;
    for (auto& s : expert_scale) s = rng.uniform(0.5f, 2.0f);
    std::vector<uint32_t> rank(E);
    for (uint32_t t = 0; t < T; ++t) {
      // Selection values are a random permutation of evenly spaced levels; logits are solved from them.
      std::iota(rank.begin(), rank.end(), 0u);
      std::shuffle(rank.begin(), rank.end(), rng.engine());
      for (uint32_t e = 0; e < E; ++e) {
        const double level = ties_ ? double(rank[e] % 8) / 8 : double(rank[e]) / E;  // [0, 1)
        double logit = 0;
        switch (p_.mode) {
          case ops::RouterMode::softmax_topk: logit = 8.0 * level - 4.0; break;
          case ops::RouterMode::topk_softmax: logit = 8.0 * level - 4.0 - bias[e]; break;
          case ops::RouterMode::biased_scores: {
            const double s = 0.2 + 0.6 * level - bias[e];  // the score, in (0.1, 0.9)
            logit = p_.score == ops::RouterScore::sigmoid ? std::log(s / (1 - s)) : std::log(std::expm1(s * s));
            break;
          }
        }
        logits[uint64_t{t} * E + e] = static_cast<float>(logit);
      }
    }
    if (h_ > 0) {
      // Random weights and inputs instead: logits of unit scale whose gaps dwarf f32 summation-order error.
      std::vector<uint16_t> w(uint64_t{E} * h_);
      const auto x = rng.normal_vec(uint64_t{T} * h_, norm_ ? 3.0f : 1.0f);
      for (auto& v : w) v = ops::float_to_bf16(rng.normal(1.0f / std::sqrt(float(h_))));
      // With the norm, the logits are those of h = rms_norm(x) (f32, as the reference op computes it).
      std::vector<float> h = x;
      if (norm_) {
        const auto nw = rng.normal_vec(h_, 0.5f);
        ref::rms_norm(x, nw, h, T, h_, kEps, *norm_);
        norm_w_ = GuardedBuffer(context, h_ * 4ull, "norm w");
        norm_w_.upload(nw);
        h_out_ = GuardedBuffer(context, h.size() * 4, "h");
        if (pack_) {
          xh_ = GuardedBuffer(context, h.size() * 2, "xh");
          xg_ = GuardedBuffer(context, h.size() / 8 * 2, "xg");
        }
        expected_h_ = h;
      }
      for (uint32_t t = 0; t < T; ++t)
        for (uint32_t e = 0; e < E; ++e) {
          double sum = 0;
          for (uint32_t j = 0; j < h_; ++j) {
            const uint32_t bits = uint32_t{w[uint64_t{e} * h_ + j]} << 16;
            float wf;
            std::memcpy(&wf, &bits, 4);
            sum += double(wf) * h[uint64_t{t} * h_ + j];
          }
          logits[uint64_t{t} * E + e] = static_cast<float>(sum);
        }
      w_ = GuardedBuffer(context, w.size() * 2, "w");
      x_ = GuardedBuffer(context, x.size() * 4, "x");
      finished_ = GuardedBuffer(context, 4, "finished");
      w_.upload(w);
      x_.upload(x);
      finished_.upload(std::vector<uint32_t>{0});
      expected_logits_ = logits;
    }
    logits_ = GuardedBuffer(context, logits.size() * 4, "logits");
    bias_ = GuardedBuffer(context, E * 4ull, "bias");
    scale_ = GuardedBuffer(context, E * 4ull, "expert_scale");
    ids_ = GuardedBuffer(context, uint64_t{T} * K * 4, "ids");
    weights_ = GuardedBuffer(context, uint64_t{T} * K * 4, "weights");
    logits_.upload(logits);
    bias_.upload(bias);
    scale_.upload(expert_scale);
    expected_ids_.resize(uint64_t{T} * K);
    expected_weights_.resize(uint64_t{T} * K);
    ref::route(logits, bias, expert_scale, expected_ids_, expected_weights_, p_);
  }
  void record(gpu::CommandList& cmd) override {
    const testing::ScopedEnv rows("MACH_ROUTER_ROWS", rows_.empty() ? nullptr : rows_.c_str());
    if (h_ > 0) {
      const ops::WeightRef w{w_.in().buffer, w_.in().offset, ops::WeightType::bf16, p_.experts, h_};
      if (norm_) {
        const ops::NormedX x{x_.in(), norm_w_.in(), kEps, *norm_};
        const ops::PreparedX px{xh_.out(), xg_.out(), p_.tokens, h_};
        ops::route_logits(cmd, w, x, h_out_.out(), pack_ ? &px : nullptr, logits_.inout(), finished_.inout(),
                          bias_.in(), scale_.in(), ids_.out(), weights_.out(), p_);
      } else {
        ops::route_logits(cmd, w, x_.in(), logits_.inout(), finished_.inout(), bias_.in(), scale_.in(), ids_.out(),
                          weights_.out(), p_);
      }
    } else {
      ops::route(cmd, logits_.in(), bias_.in(), scale_.in(), ids_.out(), weights_.out(), p_);
    }
  }
  CheckResult check(gpu::Context& context) override {
    CheckResult r;
    const auto ids = ids_.download<uint32_t>();
    r.nmse = nmse(weights_.download<float>(), expected_weights_);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] != expected_ids_[i]) {
        r.nmse = INFINITY;
        r.detail = fmt::format("id {} (token {}, rank {}) is {}, expected {}", i, i / p_.k, i % p_.k, ids[i],
                               expected_ids_[i]);
        break;
      }
    }
    if (h_ > 0) {
      // The logits (f32 sums in another order: ~1e-14), and the finished count back at 0 for the next run.
      const double logit_nmse = nmse(logits_.download<float>(), expected_logits_);
      if (!(logit_nmse <= 1e-10)) {
        r.nmse = INFINITY;
        r.detail = fmt::format("logits nmse {}", logit_nmse);
      }
      if (const uint32_t left = finished_.download<uint32_t>()[0]; left != 0) {
        r.nmse = INFINITY;
        r.detail = fmt::format("the finished count is {}, not 0, after the run", left);
      }
    }
    if (norm_) {
      // h within f32 rounding of the reference norm (the sums of squares in another order), its q4h form
      // the bits q4h_prep writes for it.
      if (const double h_nmse = nmse(h_out_.download<float>(), expected_h_); !(h_nmse <= 1e-11)) {
        r.nmse = INFINITY;
        r.detail = fmt::format("h nmse {}", h_nmse);
      }
      if (pack_) {
        if (const size_t words = q4h_words_unlike_prep(context, h_out_, xh_, xg_, p_.tokens, h_); words != 0) {
          r.nmse = INFINITY;
          r.detail = fmt::format("xh/xg differ from q4h_prep's in {} words", words);
        }
      }
    }
    std::string why;
    for (const GuardedBuffer* b :
         {&logits_, &bias_, &scale_, &ids_, &weights_, &w_, &x_, &finished_, &norm_w_, &h_out_, &xh_, &xg_}) {
      if (b->bytes() == 0) continue;
      if (!b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail = why;
      }
    }
    return r;
  }

 private:
  static constexpr float kEps = 1e-6f;
  ops::RouterParams p_;
  bool ties_;
  uint32_t h_;
  std::optional<ops::NormWeight> norm_;
  bool pack_;
  std::string rows_;
  GuardedBuffer logits_, bias_, scale_, ids_, weights_, w_, x_, finished_, norm_w_, h_out_, xh_, xg_;
  std::vector<float> expected_logits_, expected_h_;
  std::vector<uint32_t> expected_ids_;
  std::vector<float> expected_weights_;
};

ops::RouterParams qwen3(uint32_t t, uint32_t e, uint32_t k, bool normalize) {
  return {.mode = ops::RouterMode::softmax_topk, .tokens = t, .experts = e, .k = k, .normalize = normalize};
}
ops::RouterParams gemma4(uint32_t t, uint32_t e, uint32_t k) {
  auto p = qwen3(t, e, k, true);
  p.has_expert_scale = true;
  return p;
}
ops::RouterParams gpt_oss(uint32_t t, uint32_t e, uint32_t k, bool bias) {
  return {.mode = ops::RouterMode::topk_softmax, .tokens = t, .experts = e, .k = k, .has_bias = bias};
}
ops::RouterParams deepseek(uint32_t t, uint32_t e, uint32_t k, ops::RouterScore score, float scale, bool normalize) {
  return {.mode = ops::RouterMode::biased_scores, .tokens = t, .experts = e, .k = k, .normalize = normalize,
          .score = score, .scale = scale, .has_bias = true};
}

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using S = ops::RouterScore;
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<RouterCase>(qwen3(5, 128, 8, true)));
    cases.push_back(std::make_unique<RouterCase>(qwen3(3, 61, 4, false)));
    cases.push_back(std::make_unique<RouterCase>(qwen3(2, 512, 10, true)));
    cases.push_back(std::make_unique<RouterCase>(qwen3(3, 100, 16, true), true));
    cases.push_back(std::make_unique<RouterCase>(gemma4(4, 128, 8)));
    cases.push_back(std::make_unique<RouterCase>(gpt_oss(7, 32, 4, true)));
    cases.push_back(std::make_unique<RouterCase>(gpt_oss(3, 129, 4, false)));
    cases.push_back(std::make_unique<RouterCase>(gpt_oss(2, 64, 8, false), true));
    cases.push_back(std::make_unique<RouterCase>(deepseek(6, 256, 8, S::sigmoid, 2.5f, true)));
    cases.push_back(std::make_unique<RouterCase>(deepseek(5, 256, 6, S::sqrt_softplus, 1.5f, true)));
    cases.push_back(std::make_unique<RouterCase>(deepseek(3, 72, 16, S::sigmoid, 1.0f, false)));
    // Logits and routing in one dispatch (T <= 8; E not a multiple of 4 rows per workgroup; H of 8 to
    // 512 columns), and T = 9 on mul_mat + route.
    cases.push_back(std::make_unique<RouterCase>(qwen3(1, 128, 8, true), false, 256));
    cases.push_back(std::make_unique<RouterCase>(qwen3(3, 61, 4, false), false, 136));
    cases.push_back(std::make_unique<RouterCase>(qwen3(8, 128, 8, true), false, 512));
    cases.push_back(std::make_unique<RouterCase>(qwen3(9, 128, 8, true), false, 64));
    cases.push_back(std::make_unique<RouterCase>(gpt_oss(2, 32, 4, true), false, 8));
    cases.push_back(std::make_unique<RouterCase>(deepseek(4, 72, 8, S::sigmoid, 2.5f, true), false, 200));
    // With the MoE block's norm applied by the router: h and its q4h form written by the workgroups (more
    // groups than workgroups; fewer), each norm weighting, every mode, a partial last group without the q4h
    // form; T = 9 on rms_norm_q4h + the unfused path.
    using W = ops::NormWeight;
    cases.push_back(std::make_unique<RouterCase>(qwen3(1, 128, 8, true), false, 2048, W::w, true));
    cases.push_back(std::make_unique<RouterCase>(qwen3(3, 61, 4, false), false, 320, W::one_plus_w, true));
    cases.push_back(std::make_unique<RouterCase>(qwen3(8, 20, 8, true), false, 512, W::w, true));
    cases.push_back(std::make_unique<RouterCase>(gemma4(2, 128, 8), false, 256, W::none, false));
    cases.push_back(std::make_unique<RouterCase>(gpt_oss(2, 32, 4, true), false, 136, W::w, false));
    cases.push_back(std::make_unique<RouterCase>(deepseek(4, 72, 8, S::sigmoid, 2.5f, true), false, 192, W::w, true));
    cases.push_back(std::make_unique<RouterCase>(qwen3(9, 128, 8, true), false, 128, W::w, true));
    cases.push_back(std::make_unique<RouterCase>(qwen3(2, 64, 4, true), false, 200, W::w, false));
    // Other experts per logit workgroup than the default (one, its row split over every subgroup): 3 and 16
    // rows (each row one subgroup's on lavapipe's 16 subgroups of 8) and 4 (each row split over four).
    for (uint32_t rows : {3u, 4u, 16u}) {
      auto plain = std::make_unique<RouterCase>(qwen3(3, 61, 4, false), false, 136);
      plain->with_rows(rows);
      cases.push_back(std::move(plain));
      auto normed = std::make_unique<RouterCase>(qwen3(8, 20, 8, true), false, 512, W::w, true);
      normed->with_rows(rows);
      cases.push_back(std::move(normed));
    }
  } else {
    cases.push_back(std::make_unique<RouterCase>(qwen3(512, 128, 8, true)));
    // Decode's router of Qwen3-30B-A3B: logits of 128 experts over H = 2048, and routing, in one dispatch.
    cases.push_back(std::make_unique<RouterCase>(qwen3(1, 128, 8, true), false, 2048));
    // The same with the MoE block's RMSNorm applied inside, h and its q4h form written (decode's router now).
    cases.push_back(std::make_unique<RouterCase>(qwen3(1, 128, 8, true), false, 2048, ops::NormWeight::w, true));
    cases.push_back(std::make_unique<RouterCase>(gpt_oss(512, 32, 4, true)));
    cases.push_back(std::make_unique<RouterCase>(deepseek(512, 256, 8, S::sqrt_softplus, 1.5f, true)));
  }
});

}  // namespace
}  // namespace mach::test
