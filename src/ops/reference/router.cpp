#include "ops/reference/router.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <vector>

namespace mach::ref {
namespace {

double score_of(double logit, ops::RouterScore score) {
  if (score == ops::RouterScore::sigmoid) return 1.0 / (1.0 + std::exp(-logit));
  const double softplus = logit > 20 ? logit : std::log1p(std::exp(logit));
  return std::sqrt(softplus);
}

}  // namespace

void route(std::span<const float> logits, std::span<const float> bias, std::span<const float> expert_scale,
           std::span<uint32_t> ids, std::span<float> weights, const ops::RouterParams& p) {
  using ops::RouterMode;
  const uint32_t E = p.experts, K = p.k;
  for (uint32_t t = 0; t < p.tokens; ++t) {
    const float* row = &logits[uint64_t{t} * E];
    std::vector<double> select(E);
    for (uint32_t e = 0; e < E; ++e) {
      const double b = p.has_bias ? bias[e] : 0.0;
      switch (p.mode) {
        case RouterMode::softmax_topk: select[e] = row[e]; break;
        case RouterMode::topk_softmax: select[e] = double(row[e]) + b; break;
        case RouterMode::biased_scores: select[e] = score_of(row[e], p.score) + b; break;
      }
    }
    std::vector<uint32_t> order(E);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return select[a] > select[b]; });

    std::vector<double> w(K);
    for (uint32_t r = 0; r < K; ++r) {
      const uint32_t e = order[r];
      switch (p.mode) {
        case RouterMode::softmax_topk: {
          const double m = *std::max_element(row, row + E);
          double total = 0;
          for (uint32_t i = 0; i < E; ++i) total += std::exp(double(row[i]) - m);
          w[r] = std::exp(double(row[e]) - m) / total;
          break;
        }
        case RouterMode::topk_softmax: w[r] = std::exp(select[e] - select[order[0]]); break;
        case RouterMode::biased_scores: w[r] = score_of(row[e], p.score); break;
      }
    }
    const double sum = std::accumulate(w.begin(), w.end(), 0.0);
    double norm = 1.0;
    if (p.mode == RouterMode::topk_softmax) norm = 1.0 / sum;
    if (p.mode == RouterMode::softmax_topk && p.normalize) norm = 1.0 / sum;
    if (p.mode == RouterMode::biased_scores && p.normalize) norm = 1.0 / (sum + 1e-20);
    for (uint32_t r = 0; r < K; ++r) {
      const uint32_t e = order[r];
      double v = w[r] * norm * p.scale;
      if (p.has_expert_scale) v *= expert_scale[e];
      ids[uint64_t{t} * K + r] = e;
      weights[uint64_t{t} * K + r] = static_cast<float>(v);
    }
  }
}

}  // namespace mach::ref
