#version 450
//! variant kv_store
//! variant kv_store_k_only -DK_ONLY=1
// Writes T new tokens' K and V into the paged caches (layout: src/ops/kv_cache_layout.hpp).
// k_new, v_new: [T, KVH, D] f32; seq_of_token, pos_of_token: [T] u32; block_table: [S, MB] u32;
// k_cache, v_cache: [num_blocks, KVH, B, D] f16, two per word. One invocation per output word (2 halves).
// K_ONLY: the family shares K as V (DeepSeek-V4), so there is one cache and no V input.
// Bandwidth bound and tiny next to the layer's matmuls: 12 bytes read and 4 written per word.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer KNew { vec2 k_new[]; };
#ifdef K_ONLY
layout(binding = 1) readonly buffer Seq { uint seq_of_token[]; };
layout(binding = 2) readonly buffer Pos { uint pos_of_token[]; };
layout(binding = 3) readonly buffer Table { uint block_table[]; };
layout(binding = 4) writeonly buffer KCache { uint k_cache[]; };
#else
layout(binding = 1) readonly buffer VNew { vec2 v_new[]; };
layout(binding = 2) readonly buffer Seq { uint seq_of_token[]; };
layout(binding = 3) readonly buffer Pos { uint pos_of_token[]; };
layout(binding = 4) readonly buffer Table { uint block_table[]; };
layout(binding = 5) writeonly buffer KCache { uint k_cache[]; };
layout(binding = 6) writeonly buffer VCache { uint v_cache[]; };
#endif
layout(push_constant) uniform Push {
  uint tokens;
  uint kv_heads;
  uint half_dim;  // D / 2: words per head row
  uint block_size;
  uint max_blocks_per_seq;
} p;

void main() {
  const uint i = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  const uint words_per_token = p.kv_heads * p.half_dim;
  if (i >= p.tokens * words_per_token) return;
  const uint t = i / words_per_token;
  const uint h = (i % words_per_token) / p.half_dim;
  const uint w = i % p.half_dim;
  const uint pos = pos_of_token[t];
  const uint block = block_table[seq_of_token[t] * p.max_blocks_per_seq + pos / p.block_size];
  const uint dst = ((block * p.kv_heads + h) * p.block_size + pos % p.block_size) * p.half_dim + w;
  k_cache[dst] = packHalf2x16(k_new[i]);
#ifndef K_ONLY
  v_cache[dst] = packHalf2x16(v_new[i]);
#endif
}
