// CPU reference for the paged KV cache store and attention: plain loops in double, the oracle for tests.
// Caches are host arrays of f16 bits in the GPU layout (ops/kv_cache_layout.hpp), read through the same block
// table, so a wrong table walk in a shader shows up as a mismatch.
#pragma once

#include <cstdint>
#include <span>

#include "ops/kv_cache_layout.hpp"

namespace mach::ref {

// Writes T tokens into the caches, rounding to f16 (nearest even).
// k_new, v_new: [T, kv_heads, D]; seq_of_token, pos_of_token: [T]; block_table: [S, max_blocks_per_seq];
// k_cache, v_cache: [num_blocks, kv_heads, B, D] f16 bits. v_new and v_cache may be empty (K shared as V).
void kv_store(const ops::KvCacheLayout& layout, std::span<const float> k_new, std::span<const float> v_new,
              std::span<const uint32_t> seq_of_token, std::span<const uint32_t> pos_of_token,
              std::span<const uint32_t> block_table, std::span<uint16_t> k_cache, std::span<uint16_t> v_cache);

// out[t] = softmax(scale * q[t] . K^T over the token's key range [, sinks]) . V, per query head.
// q, out: [T, n_heads, D]; sinks: [n_heads] or empty. Only tokens t with t % token_stride == 0 or t == T-1
// are computed (others are left untouched), so perf cases with long prompts stay cheap to check.
void attention(const ops::KvCacheLayout& layout, const ops::AttentionParams& params, std::span<const float> q,
               std::span<const uint32_t> seq_of_token, std::span<const uint32_t> pos_of_token,
               std::span<const uint32_t> block_table, std::span<const uint16_t> k_cache,
               std::span<const uint16_t> v_cache, std::span<const float> sinks, std::span<float> out,
               uint32_t token_stride = 1);

}  // namespace mach::ref
