// Paged-KV-cache attention on the GPU: kv_store writes new tokens' K/V into the cache, attention reads it.
// Cache layout, the block table and the parameters: ops/kv_cache_layout.hpp.
//
// Shapes: T query tokens (one step's decode tokens, prefill chunks and verify blocks, in any mix),
// H query heads, KVH kv heads, D head dim, S sequences, MB = layout.max_blocks_per_seq.
// Every token carries its sequence and position (seq_of_token, pos_of_token: [T] u32), so a step batches
// sequences at different positions; to run decode tokens and prefill chunks with different kernels, bind
// sub-ranges of the token arrays (q, seq_of_token, pos_of_token, out) and call attention twice.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"
#include "ops/kv_cache_layout.hpp"

namespace mach::ops {

// Stores T tokens: k_new, v_new: [T, KVH, D] f32 -> k_cache, v_cache: [num_blocks, KVH, B, D] f16 at each
// token's (sequence, position). The blocks must already be in the block table.
void kv_store(gpu::CommandList& cmd, const KvCacheLayout& layout, gpu::Binding k_new, gpu::Binding v_new,
              gpu::Binding seq_of_token, gpu::Binding pos_of_token, gpu::Binding block_table,
              gpu::Binding k_cache, gpu::Binding v_cache, uint32_t tokens);
// The same for a family whose K is also its V (DeepSeek-V4): one input, one cache.
void kv_store_shared(gpu::CommandList& cmd, const KvCacheLayout& layout, gpu::Binding kv_new,
                     gpu::Binding seq_of_token, gpu::Binding pos_of_token, gpu::Binding block_table,
                     gpu::Binding kv_cache, uint32_t tokens);

// decode: one token per workgroup tile, the key range split over workgroups (flash-decoding); for a few
// query tokens per sequence. narrow: decode with fewer heads of a GQA group per workgroup (2 for head_dim
// 128 and 256, 4 for 64; decode's shape for other head dims), so that a short context, whose one or two key
// tiles cannot be split, still spreads over more workgroups. block: several tokens of a sequence per tile
// sharing each K/V tile; for prefill chunks and verify blocks. automatic picks block from 16 tokens on, and
// narrow below that where every token attends at most 512 keys ($MACH_ATTENTION_NARROW_KEYS overrides).
enum class AttentionKernel { automatic, decode, block, narrow };
// "decode", "block", "narrow" (attention.comp's variant names) or "auto".
const char* attention_kernel_name(AttentionKernel kernel);

// How a dispatch is cut; made by plan_attention, plain data so a caller may record it with the step.
struct AttentionPlan {
  AttentionKernel kernel = AttentionKernel::decode;  // never automatic
  uint32_t heads_per_tile = 0;   // query heads of one GQA group per workgroup
  uint32_t tokens_per_tile = 0;  // query tokens per workgroup
  uint32_t head_chunks = 0;      // workgroups across one GQA group
  uint32_t token_tiles = 0;
  uint32_t splits = 1;           // slices of each key range; > 1 adds a combine pass
  uint64_t scratch_bytes = 0;    // the scratch binding's size when splits > 1, else 0
};

// max_keys: an upper bound of the keys any token attends (its position + 1, or the window); it only guides
// the number of splits. splits = 0 chooses them (enough workgroups to fill a large GPU), else forces them
// (at most 256).
AttentionPlan plan_attention(const KvCacheLayout& layout, const AttentionParams& params, uint32_t tokens,
                             uint32_t max_keys, AttentionKernel kernel = AttentionKernel::automatic,
                             uint32_t splits = 0);

struct AttentionArgs {
  gpu::Binding q;             // [T, H, D] f32
  gpu::Binding seq_of_token;  // [T] u32
  gpu::Binding pos_of_token;  // [T] u32
  gpu::Binding block_table;   // [S, MB] u32
  gpu::Binding k_cache;       // [num_blocks, KVH, B, D] f16
  gpu::Binding v_cache;       // same layout; may be the k_cache binding (K shared as V)
  gpu::Binding sinks;         // [H] f32, read when params.sinks
  gpu::Binding scratch;       // plan.scratch_bytes, offset aligned to 256, when plan.splits > 1
  gpu::Binding out;           // [T, H, D] f32
};

// out[t, h] = softmax over the token's keys of (softcapped) scale * q[t, h] . k, times v; see
// AttentionParams. One dispatch, plus a combine dispatch when plan.splits > 1.
void attention(gpu::CommandList& cmd, const KvCacheLayout& layout, const AttentionParams& params,
               const AttentionPlan& plan, const AttentionArgs& args, uint32_t tokens);

}  // namespace mach::ops
