#include "ops/reference/attention.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/weight_format.hpp"

namespace mach::ref {
namespace {

// Index of element d of (kv head h, sequence s, position p) in a cache.
size_t cache_index(const ops::KvCacheLayout& layout, std::span<const uint32_t> block_table, uint32_t s,
                   uint32_t p, uint32_t h, uint32_t d) {
  assert(p / layout.block_size < layout.max_blocks_per_seq);
  const uint64_t block = block_table[size_t{s} * layout.max_blocks_per_seq + p / layout.block_size];
  return ((block * layout.kv_heads + h) * layout.block_size + p % layout.block_size) * layout.head_dim + d;
}

}  // namespace

void kv_store(const ops::KvCacheLayout& layout, std::span<const float> k_new, std::span<const float> v_new,
              std::span<const uint32_t> seq_of_token, std::span<const uint32_t> pos_of_token,
              std::span<const uint32_t> block_table, std::span<uint16_t> k_cache, std::span<uint16_t> v_cache) {
  const uint32_t D = layout.head_dim, H = layout.kv_heads;
  const size_t T = seq_of_token.size();
  assert(k_new.size() == T * H * D && pos_of_token.size() == T);
  for (size_t t = 0; t < T; ++t) {
    for (uint32_t h = 0; h < H; ++h) {
      for (uint32_t d = 0; d < D; ++d) {
        const size_t src = (t * H + h) * D + d;
        const size_t dst = cache_index(layout, block_table, seq_of_token[t], pos_of_token[t], h, d);
        k_cache[dst] = ops::float_to_half(k_new[src]);
        if (!v_cache.empty()) v_cache[dst] = ops::float_to_half(v_new[src]);
      }
    }
  }
}

void attention(const ops::KvCacheLayout& layout, const ops::AttentionParams& params, std::span<const float> q,
               std::span<const uint32_t> seq_of_token, std::span<const uint32_t> pos_of_token,
               std::span<const uint32_t> block_table, std::span<const uint16_t> k_cache,
               std::span<const uint16_t> v_cache, std::span<const float> sinks, std::span<float> out,
               uint32_t token_stride) {
  const uint32_t D = layout.head_dim, Hq = params.n_heads, G = params.n_heads / layout.kv_heads;
  const size_t T = seq_of_token.size();
  assert(q.size() == T * Hq * D && out.size() == q.size() && params.n_heads % layout.kv_heads == 0);
  std::vector<double> logits, acc(D);
  for (size_t t = 0; t < T; ++t) {
    if (t % token_stride != 0 && t + 1 != T) continue;
    const uint32_t s = seq_of_token[t], pos = pos_of_token[t];
    const uint32_t lo = params.window > 0 && pos + 1 > params.window ? pos + 1 - params.window : 0;
    for (uint32_t h = 0; h < Hq; ++h) {
      const uint32_t kvh = h / G;
      const float* qh = &q[(t * Hq + h) * D];
      logits.assign(pos - lo + 1, 0.0);
      double max_logit = sinks.empty() ? -std::numeric_limits<double>::infinity() : sinks[h];
      for (uint32_t p = lo; p <= pos; ++p) {
        double dot = 0;
        for (uint32_t d = 0; d < D; ++d)
          dot += double{qh[d]} * ops::half_to_float(k_cache[cache_index(layout, block_table, s, p, kvh, d)]);
        double logit = dot * params.scale;
        if (params.softcap > 0) logit = params.softcap * std::tanh(logit / params.softcap);
        logits[p - lo] = logit;
        max_logit = std::max(max_logit, logit);
      }
      double denom = sinks.empty() ? 0.0 : std::exp(double{sinks[h]} - max_logit);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (uint32_t p = lo; p <= pos; ++p) {
        const double w = std::exp(logits[p - lo] - max_logit);
        denom += w;
        for (uint32_t d = 0; d < D; ++d)
          acc[d] += w * ops::half_to_float(v_cache[cache_index(layout, block_table, s, p, kvh, d)]);
      }
      for (uint32_t d = 0; d < D; ++d) out[(t * Hq + h) * D + d] = static_cast<float>(acc[d] / denom);
    }
  }
}

}  // namespace mach::ref
