#version 450
// The attention inputs of one layer in one dispatch: per-head RMSNorm of q and k with their own weight
// vectors, then rotary embedding of both, in place; the KV_STORE variant also writes the new K (after norm and
// rope) and V into the paged caches. It replaces rms_norm.comp twice, rope.comp twice and kv_store.comp, whose
// arithmetic it repeats operation for operation (same reduction tree for the same workgroup size, same angle
// reduction), so the fused and the unfused sequence agree to the bit on a device whose compiler treats both
// alike (tests/ops/cases_attention_prep.cpp checks it).
//   q: [T, QH, D] f32, k: [T, KVH, D] f32; q_w, k_w: [D] f32; pos: [T] u32; inv_freq: [rotary_dim / 2] f32.
//   KV_STORE: v: [T, KVH, D] f32; seq_of_token, pos_of_token: [T] u32; block_table: [S, MB] u32;
//             k_cache, v_cache: [num_blocks, KVH, B, D] f16, two per word (src/ops/kv_cache_layout.hpp).
// One workgroup per (token, head) row, q heads first then k heads of each token; the row is held in shared
// memory between the steps (head_norm_rope.glsl), so D <= kHnrMaxDim. Specialization constants: 0 workgroup
// size (a power of two), 1 weight mode (rms_norm.comp's WEIGHT_MODE), 2 rope layout (0 NeoX, 1 interleaved,
// as rope.comp).
//! variant qk_norm_rope
//! variant qk_norm_rope_kv_store -DKV_STORE=1
#include "common.glsl"
#include "math_funcs.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WEIGHT_MODE = 1;
layout(constant_id = 2) const uint ROPE_INTERLEAVED = 0;
layout(binding = 0) buffer Q { float q[]; };
layout(binding = 1) buffer K { float k[]; };
layout(binding = 2) readonly buffer QW { float q_w[]; };
layout(binding = 3) readonly buffer KW { float k_w[]; };
layout(binding = 4) readonly buffer Pos { uint pos[]; };
layout(binding = 5) readonly buffer Freq { float inv_freq[]; };
#ifdef KV_STORE
layout(binding = 6) readonly buffer V { vec2 v[]; };
layout(binding = 7) readonly buffer Seq { uint seq_of_token[]; };
layout(binding = 8) readonly buffer CachePos { uint pos_of_token[]; };
layout(binding = 9) readonly buffer Table { uint block_table[]; };
layout(binding = 10) writeonly buffer KCache { uint k_cache[]; };
layout(binding = 11) writeonly buffer VCache { uint v_cache[]; };
#endif
layout(push_constant) uniform Push {
  uint tokens;
  uint q_heads;
  uint kv_heads;
  uint head_dim;
  uint rotary_dim;
  uint offset;  // first rotated dim
  float eps;
  float attention_factor;
  uint block_size;          // KV_STORE only
  uint max_blocks_per_seq;  // KV_STORE only
} p;

float hnr_weight(bool is_k, uint i) {
  if (WEIGHT_MODE == 0) return 1.0;
  const float w = is_k ? k_w[i] : q_w[i];
  return WEIGHT_MODE == 1 ? w : 1.0 + w;
}
#include "head_norm_rope.glsl"

void main() {
  const uint heads = p.q_heads + p.kv_heads;
  const uint id = flat_workgroup_id();
  if (id >= p.tokens * heads) return;
  const uint t = id / heads;
  const uint head = id - t * heads;
  const bool is_k = head >= p.q_heads;
  const uint kv_head = head - p.q_heads;  // meaningful when is_k
  const uint base = is_k ? (t * p.kv_heads + kv_head) * p.head_dim : (t * p.q_heads + head) * p.head_dim;
  const uint tid = gl_LocalInvocationID.x;

  for (uint i = tid; i < p.head_dim; i += gl_WorkGroupSize.x) hnr_row[i] = is_k ? k[base + i] : q[base + i];
  head_norm_rope(is_k, p.head_dim, p.eps, HeadRope(p.rotary_dim, p.offset, ROPE_INTERLEAVED != 0, p.attention_factor),
                 pos[t]);
  for (uint i = tid; i < p.head_dim; i += gl_WorkGroupSize.x) {
    if (is_k)
      k[base + i] = hnr_row[i];
    else
      q[base + i] = hnr_row[i];
  }
#ifdef KV_STORE
  if (!is_k) return;
  const uint half_dim = p.head_dim / 2;
  const uint cache_pos = pos_of_token[t];
  const uint block = block_table[seq_of_token[t] * p.max_blocks_per_seq + cache_pos / p.block_size];
  const uint dst = ((block * p.kv_heads + kv_head) * p.block_size + cache_pos % p.block_size) * half_dim;
  const uint src = (t * p.kv_heads + kv_head) * half_dim;
  for (uint w = tid; w < half_dim; w += gl_WorkGroupSize.x) {
    k_cache[dst + w] = packHalf2x16(vec2(hnr_row[2 * w], hnr_row[2 * w + 1]));
    v_cache[dst + w] = packHalf2x16(v[src + w]);
  }
#endif
}
