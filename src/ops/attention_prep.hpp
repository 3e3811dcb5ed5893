// The attention inputs of a layer in one dispatch: per-head RMSNorm of q and k (Qwen3's q_norm / k_norm),
// rotary embedding of both and, optionally, the paged KV store of the new K and V. Shapes: T tokens, QH query
// heads, KVH kv heads, D head_dim, S sequences, MB = layout.max_blocks_per_seq.
//
// Why: a decode step is a few thousand tiny dispatches, each paying a launch and a barrier (4-8 us on an
// H100); ops::rms_norm twice, ops::rope twice and ops::kv_store become one. The arithmetic is theirs, step for
// step, so the fused op gives the unfused sequence's results (bit for bit on lavapipe, where the op cases
// compare the two).
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"
#include "ops/kv_cache_layout.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"

namespace mach::ops {

struct QkNormRopeShape {
  uint32_t tokens = 0;
  uint32_t q_heads = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;    // D: even, at most 512
  uint32_t rotary_dim = 0;  // as RopeShape: <= head_dim, even (RopeTable::rotary_dim)
  uint32_t offset = 0;      // as RopeShape: first rotated dim (0, or head_dim - rotary_dim for DeepSeek-V4)
};

// The norm (as ops::rms_norm over rows of D, the same eps and weight mode for q and k) and the rope (as
// ops::rope) parameters.
struct QkNormRopeParams {
  float eps = 1e-6f;
  NormWeight weight = NormWeight::w;
  RopeStyle style = RopeStyle::neox;
  float attention_factor = 1.0f;  // RopeTable::attention_factor
};

struct QkNormRopeArgs {
  gpu::Binding q;          // [T, QH, D] f32, contiguous, normed and rotated in place (inout)
  gpu::Binding k;          // [T, KVH, D] f32, contiguous, normed and rotated in place (inout)
  gpu::Binding q_norm;     // [D] f32; NormWeight::none: bind anything
  gpu::Binding k_norm;     // [D] f32; NormWeight::none: bind anything
  gpu::Binding positions;  // [T] u32, the rotary positions
  gpu::Binding inv_freq;   // [rotary_dim / 2] f32 from rope_table()
};

// ops::kv_store's arguments, less k_new (the op's own k after norm and rope).
struct KvStoreArgs {
  KvCacheLayout layout;        // kv_heads and head_dim must equal the shape's
  gpu::Binding v;              // [T, KVH, D] f32, contiguous
  gpu::Binding seq_of_token;   // [T] u32
  gpu::Binding pos_of_token;   // [T] u32, the cache positions (usually the rope positions' binding)
  gpu::Binding block_table;    // [S, MB] u32; the blocks must already be in it
  gpu::Binding k_cache;        // [num_blocks, KVH, B, D] f16
  gpu::Binding v_cache;        // same layout
};

// q[t, h] = rope(rms_norm(q[t, h]) ...), k likewise, in one dispatch: the same results as
//   rms_norm(q as [T*QH, D]); rms_norm(k as [T*KVH, D]); rope(q); rope(k).
void qk_norm_rope(gpu::CommandList& cmd, const QkNormRopeArgs& args, const QkNormRopeShape& shape,
                  const QkNormRopeParams& params);

// The same, and then, in the same dispatch, kv_store(layout, k, store.v, ...) of the normed and rotated k:
// the caches end up as ops::kv_store leaves them. k is still written back in place.
void qk_norm_rope_kv_store(gpu::CommandList& cmd, const QkNormRopeArgs& args, const QkNormRopeShape& shape,
                           const QkNormRopeParams& params, const KvStoreArgs& store);

}  // namespace mach::ops
