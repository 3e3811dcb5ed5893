#include "engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace mach::engine {

uint32_t argmax(std::span<const float> logits) {
  uint32_t best = 0;
  for (uint32_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

void Sampler::apply_penalties(std::span<float> logits, std::span<const uint32_t> generated) const {
  if (params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f) return;
  std::unordered_map<uint32_t, uint32_t> counts;
  for (uint32_t t : generated) ++counts[t];
  for (const auto& [token, n] : counts) {
    if (token >= logits.size()) continue;
    logits[token] -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(n);
  }
}

std::vector<std::pair<uint32_t, float>> Sampler::distribution(std::span<float> logits,
                                                              std::span<const uint32_t> generated) {
  apply_penalties(logits, generated);
  std::vector<std::pair<uint32_t, float>> cand;
  if (greedy()) {
    cand.emplace_back(argmax(logits), 1.0f);
    return cand;
  }
  cand.reserve(logits.size());
  for (uint32_t i = 0; i < logits.size(); ++i) cand.emplace_back(i, logits[i] / params_.temperature);
  auto by_logit = [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); };
  if (params_.top_k > 0 && params_.top_k < cand.size()) {
    std::partial_sort(cand.begin(), cand.begin() + params_.top_k, cand.end(), by_logit);
    cand.resize(params_.top_k);
  } else {
    std::sort(cand.begin(), cand.end(), by_logit);
  }
  // Softmax over the survivors, in double for stability.
  const double max_logit = cand.front().second;
  std::vector<double> p(cand.size());
  double sum = 0;
  for (size_t i = 0; i < cand.size(); ++i) sum += p[i] = std::exp(static_cast<double>(cand[i].second) - max_logit);
  for (auto& x : p) x /= sum;
  size_t keep = cand.size();
  if (params_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double mass = 0;
    for (size_t i = 0; i < cand.size(); ++i) {
      mass += p[i];
      if (mass >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * p[0];
    size_t n = 1;
    while (n < keep && p[n] >= floor) ++n;
    keep = n;
  }
  cand.resize(keep);
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += p[i];
  for (size_t i = 0; i < keep; ++i) cand[i].second = static_cast<float>(p[i] / kept);
  return cand;
}

uint32_t Sampler::sample(std::span<float> logits, std::span<const uint32_t> generated) {
  return draw(distribution(logits, generated));
}

uint32_t Sampler::draw(const std::vector<std::pair<uint32_t, float>>& dist) {
  if (dist.size() == 1) return dist[0].first;
  double total = 0;
  for (const auto& [token, prob] : dist) total += prob;
  const double u = uniform() * total;
  double acc = 0;
  for (const auto& [token, prob] : dist) {
    acc += prob;
    if (u < acc) return token;
  }
  return dist.back().first;
}

}  // namespace mach::engine
