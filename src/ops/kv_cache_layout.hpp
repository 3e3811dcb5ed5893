// The paged KV cache layout and the attention parameters, shared by the GPU ops (ops/attention.hpp) and the
// CPU reference (ops/reference/attention.hpp). No GPU types here, so the reference stays GPU-free.
//
// Layout. K and V live in two buffers of fixed-size token blocks, f16, each
//     cache: [num_blocks, kv_heads, B, D]  (B = block_size tokens, D = head_dim; two f16 per 32-bit word,
//                                            element d in the low half of word d/2)
// and a block table maps every sequence's logical block to a physical one:
//     block_table: [S, max_blocks_per_seq] u32, token (s, p) lives in block block_table[s][p / B], slot p % B.
// Why: continuous batching needs sequences that grow and finish independently without copying, and a prefix
// cache that shares blocks between sequences; fixed blocks make allocation a free list. Inside a block the
// kv-head is outer, so one kv head's B keys are B*D contiguous halves: an attention workgroup, which works on
// one kv head, reads a whole block as one contiguous run (B*D*2 bytes, 4 KiB at B=16, D=128).
// f16 halves the bytes of the decode loop, which is bound by reading the cache; values are rounded to nearest
// even by kv_store (the CPU reference does the same, through ops::float_to_half).
// A family whose K is also its V (DeepSeek-V4's 512-d latent) stores one cache and binds it as both.
#pragma once

#include <cstdint>

namespace mach::ops {

struct KvCacheLayout {
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;            // D: 16, 32, 64, 128, 256 or 512 (V has the same width)
  uint32_t block_size = 16;         // B: tokens per block, a power of two
  uint32_t max_blocks_per_seq = 0;  // row length of the block table

  // Bytes of one physical block in one of the two caches.
  uint64_t block_bytes() const { return uint64_t{kv_heads} * block_size * head_dim * 2; }
};

// What a query token attends to and how its logits are shaped, per layer.
struct AttentionParams {
  uint32_t n_heads = 0;  // query heads, a multiple of kv_heads (GQA group G = n_heads / kv_heads)
  float scale = 0;       // logit = scale * q.k (1/sqrt(D) or the family's value)
  uint32_t window = 0;   // sliding window: keys at positions [max(0, pos - window + 1), pos]; 0 = unlimited
  float softcap = 0;     // logit = softcap * tanh(logit / softcap) after the scale (Gemma); 0 = off
  bool sinks = false;    // gpt-oss: a per-head logit [n_heads] f32 joins the softmax denominator, no value
};

}  // namespace mach::ops
