// Attention for one kv head's group of q heads, run by the last workgroup of mul_mat_vec.comp's QK_TAIL to
// finish a tail of that group (ATTN: one decode token, a short context): the q heads' outputs without an
// attention dispatch. out[(g * G + h) * D + i] = sum_j softmax_j(q_h . k_j * scale) v_j[i] over the keys
// 0 .. pos of the token's sequence, k and v read from the paged caches (kv_cache_layout.hpp) where the
// group's tails just stored this token's row. As attention.comp for one token: no window, softcap or sinks.
//
// Three phases, every invocation of the workgroup in each: scores with an invocation per key (its whole K
// row loaded before use, 16-byte loads), the softmax with WG / G invocations per head, then P.V with four
// invocations per 8 output dims, each over every fourth key (their V loads in flight 8 at a time), summed
// with subgroup shuffles. Before including: the bindings y (q, coherent), k_cache4 / v_cache4 (the caches as
// uvec4, coherent), attn_out, block_table, seq_of_token, pos_of_token, and push constants as QK_TAIL's plus
// attn_scale. The host keeps G <= ATTN_MAX_G, G * D <= ATTN_MAX_QD, keys <= ATTN_MAX_KEYS, D % 8 == 0.
#ifndef MACH_TAIL_ATTENTION_GLSL
#define MACH_TAIL_ATTENTION_GLSL

const uint ATTN_MAX_G = 8, ATTN_MAX_QD = 1024, ATTN_MAX_KEYS = 128;  // ops/matmul.cpp's kTailAttention*
shared vec4 attn_q4[ATTN_MAX_QD / 4];             // the group's q rows, scaled
shared float attn_p[ATTN_MAX_G * ATTN_MAX_KEYS];  // scores, then probabilities (unnormalized)
shared float attn_red[gl_WorkGroupSize.x];
shared float attn_stat[ATTN_MAX_G];               // per head: the maximum, then 1 / the sum

// The cache index, in uvec4 units, of key j's row of kv head g.
uint attn_row(uint table, uint g, uint j) {
  const uint block = block_table[table + j / p.block_size];
  return ((block * p.kv_heads + g) * p.block_size + j % p.block_size) * (p.head_dim / 8);
}

void group_attention(uint g) {
  const uint tid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
  const uint G = p.q_heads / p.kv_heads, D = p.head_dim, D4 = D / 4, units = D / 8;
  const uint n = pos_of_token[0] + 1, table = seq_of_token[0] * p.max_blocks_per_seq;
  for (uint i = tid; i < G * D4; i += WG) {
    const uint at = g * G * D + 4 * i;
    attn_q4[i] = vec4(y[at], y[at + 1], y[at + 2], y[at + 3]) * p.attn_scale;
  }
  barrier();

  for (uint j = tid; j < n; j += WG) {
    const uint base = attn_row(table, g, j);
    float s[ATTN_MAX_G];
    [[unroll]] for (uint h = 0; h < ATTN_MAX_G; ++h) s[h] = 0.0;
    for (uint c0 = 0; c0 < units; c0 += 16) {
      uvec4 kr[16];
      [[unroll]] for (uint c = 0; c < 16; ++c) kr[c] = k_cache4[base + min(c0 + c, units - 1)];
      [[unroll]] for (uint c = 0; c < 16; ++c) {
        if (c0 + c >= units) break;
        const vec4 ka = vec4(unpackHalf2x16(kr[c].x), unpackHalf2x16(kr[c].y));
        const vec4 kb = vec4(unpackHalf2x16(kr[c].z), unpackHalf2x16(kr[c].w));
        [[unroll]] for (uint h = 0; h < ATTN_MAX_G; ++h) {
          if (h >= G) break;
          const uint q = h * D4 + 2 * (c0 + c);
          s[h] += dot(attn_q4[q], ka) + dot(attn_q4[q + 1], kb);
        }
      }
    }
    [[unroll]] for (uint h = 0; h < ATTN_MAX_G; ++h) {
      if (h >= G) break;
      attn_p[h * ATTN_MAX_KEYS + j] = s[h];
    }
  }
  barrier();

  // Softmax: head h = tid / L takes invocations h * L .. h * L + L - 1.
  const uint L = WG / G, h = tid / L, l = tid % L;
  float m = uintBitsToFloat(0xff800000u);  // -inf
  if (h < G)
    for (uint j = l; j < n; j += L) m = max(m, attn_p[h * ATTN_MAX_KEYS + j]);
  attn_red[tid] = m;
  barrier();
  if (h < G && l == 0) {
    for (uint i = 1; i < L; ++i) m = max(m, attn_red[tid + i]);
    attn_stat[h] = m;
  }
  barrier();
  float sum = 0.0;
  if (h < G) {
    const float mh = attn_stat[h];
    for (uint j = l; j < n; j += L) {
      const float e = exp(attn_p[h * ATTN_MAX_KEYS + j] - mh);
      attn_p[h * ATTN_MAX_KEYS + j] = e;
      sum += e;
    }
  }
  attn_red[tid] = sum;
  barrier();
  if (h < G && l == 0) {
    for (uint i = 1; i < L; ++i) sum += attn_red[tid + i];
    attn_stat[h] = 1.0 / sum;
  }
  barrier();

  // P.V: invocations 4u .. 4u + 3 own dims 8u .. 8u + 7, invocation 4u + kl the keys j = kl mod 4.
  const uint kl = tid & 3u;
  for (uint u = tid >> 2; u < units; u += WG / 4) {  // the same trip count for the four invocations of a unit
    vec4 acc[2 * ATTN_MAX_G];
    [[unroll]] for (uint i = 0; i < 2 * ATTN_MAX_G; ++i) acc[i] = vec4(0.0);
    for (uint j0 = kl; j0 < n; j0 += 32) {
      uvec4 vr[8];
      [[unroll]] for (uint c = 0; c < 8; ++c) vr[c] = v_cache4[attn_row(table, g, min(j0 + 4 * c, n - 1)) + u];
      [[unroll]] for (uint c = 0; c < 8; ++c) {
        const uint j = j0 + 4 * c;
        if (j >= n) break;
        const vec4 va = vec4(unpackHalf2x16(vr[c].x), unpackHalf2x16(vr[c].y));
        const vec4 vb = vec4(unpackHalf2x16(vr[c].z), unpackHalf2x16(vr[c].w));
        [[unroll]] for (uint hh = 0; hh < ATTN_MAX_G; ++hh) {
          if (hh >= G) break;
          const float pj = attn_p[hh * ATTN_MAX_KEYS + j];
          acc[2 * hh] = fma(vec4(pj), va, acc[2 * hh]);
          acc[2 * hh + 1] = fma(vec4(pj), vb, acc[2 * hh + 1]);
        }
      }
    }
    [[unroll]] for (uint i = 0; i < 2 * ATTN_MAX_G; ++i) {
      acc[i] += subgroupShuffleXor(acc[i], 1u);
      acc[i] += subgroupShuffleXor(acc[i], 2u);
    }
    if (kl == 0) {
      [[unroll]] for (uint hh = 0; hh < ATTN_MAX_G; ++hh) {
        if (hh >= G) break;
        const uint at = (g * G + hh) * D + 8 * u;
        const vec4 a = acc[2 * hh] * attn_stat[hh], b = acc[2 * hh + 1] * attn_stat[hh];
        attn_out[at] = a.x, attn_out[at + 1] = a.y, attn_out[at + 2] = a.z, attn_out[at + 3] = a.w;
        attn_out[at + 4] = b.x, attn_out[at + 5] = b.y, attn_out[at + 6] = b.z, attn_out[at + 7] = b.w;
      }
    }
  }
}

#endif
