#version 450
// Tiled matrix-matrix product for many tokens (prefill): y[t, n] (+)= sum_k W[n, k] * x[t, k].
//   W: [N, K] in any weight format (mul_mat_funcs.glsl), x: [T, K] f32, y: [T, N] f32.
// A workgroup computes a BM x BN tile of (rows, tokens), each thread a TM x TN block. Per BK-column step it
// dequantizes a BM x BK weight tile (16-byte loads) and a BN x BK x tile into shared memory, both stored
// k-major so the inner loop reads TM + TN floats per TM * TN FMAs. Columns past K and rows/tokens past N/T
// are zero-filled or clamped and never stored.
//
// Spec constants (ops/matmul.cpp picks them within the device's shared memory; $MACH_MUL_MAT overrides):
//   0 WG = (BM / TM) * (BN / TN), a multiple of BN;  1 BM;  2 BN;  3 BK, a multiple of 64 for q4 (one group
//   per 64 columns) and of 16 otherwise;  4 TM;  5 TN.  Shared memory: 4 * BK * (BM + BN) bytes (+ WG + 4 * BN
//   for MoE). Defaults: 64 x 64 x 64, 4 x 4 (32 KiB, 256 threads), or BN = 32 where only 32 KiB exist
//   (lavapipe).
//
// With MUL_MAT_ID (MoE prefill, grouped by expert): the grid is (row tile, expert e, token tile j). Each
// workgroup takes the j-th group of BN of e's pairs from moe_pairs.comp's lists (in pair order), and exits
// when there are fewer; its weights are stack[slot_table[e]], x rows
// come from the pairs' tokens (or the pairs themselves when x is per slot), outputs go to y[pair, n].
// Contract: the top_k ids of a token are distinct (each expert sees at most T pairs). An expert whose slot is
// NO_SLOT (mul_mat_funcs.glsl) is skipped: its pairs' y rows keep their contents.
//
// Expected on NVIDIA H100/H200 with the 64 x 64, 4 x 4 default: plain FP32 FMAs from shared memory, bound
// by shared-memory bandwidth (2 LDS.128 per 16 FMA): ~10-20 TFLOP/s for T >= 256, i.e. a 2048 x 2048 x 512 product in ~0.3-0.4 ms.
// Weights are re-read once per 64-token tile (from L2 when they fit). The MoE version launches
// E * ceil(T / 64) * N / 64 workgroups, most of which exit at once (after reading their expert's count) for
// small T; with E = 128, T = 512 that is ~12k workgroups, cheap next to the math.
// Knobs to try: TM = 8 (more FMAs per shared load), BN = 32 with BM = 128. Next steps for speed: cooperative
// matrices (f16 tiles) and an indirect dispatch for MoE built from per-expert counts.
//! variant mul_mat_f32 -DWTYPE_F32
//! variant mul_mat_f16 -DWTYPE_F16
//! variant mul_mat_bf16 -DWTYPE_BF16
//! variant mul_mat_q8_0 -DWTYPE_Q8_0
//! variant mul_mat_q4 -DWTYPE_Q4
//! variant mul_mat_id_f32 -DWTYPE_F32 -DMUL_MAT_ID
//! variant mul_mat_id_f16 -DWTYPE_F16 -DMUL_MAT_ID
//! variant mul_mat_id_bf16 -DWTYPE_BF16 -DMUL_MAT_ID
//! variant mul_mat_id_q8_0 -DWTYPE_Q8_0 -DMUL_MAT_ID
//! variant mul_mat_id_q4 -DWTYPE_Q4 -DMUL_MAT_ID
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;  // tile rows
layout(constant_id = 2) const uint BN = 64;  // tile tokens
layout(constant_id = 3) const uint BK = 64;  // tile columns
layout(constant_id = 4) const uint TM = 4;   // rows per thread
layout(constant_id = 5) const uint TN = 4;   // tokens per thread
const uint WG = gl_WorkGroupSize.x;

layout(binding = 0) readonly buffer W { uvec4 w_u128[]; };
layout(binding = 1) readonly buffer S { uint scales_u32[]; };  // the same range as binding 0
layout(binding = 2) readonly buffer X { vec4 x4[]; };
layout(binding = 3) buffer Y { float y[]; };  // read only with p.accumulate
#ifdef MUL_MAT_ID
layout(binding = 4) readonly buffer Ids { uint ids[]; };
layout(binding = 5) readonly buffer Slots { uint slot_table[]; };
layout(binding = 6) readonly buffer PairCount { uint pair_count[]; };  // [E], moe_pairs.comp
layout(binding = 7) readonly buffer PairList { uint pair_list[]; };    // [E, T]
#endif

#include "mul_mat_funcs.glsl"

shared float a_tile[BK * BM];  // [k][row]
shared float b_tile[BK * BN];  // [k][token]

#ifdef MUL_MAT_ID
shared uint pair_of[BN];  // the tile's pairs, as t * top_k + s
#endif

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint wg = flat_workgroup_id();
  const uint row_tiles = (p.n + BM - 1) / BM;
  const uint row0 = (wg % row_tiles) * BM;
  const uint k4 = p.k >> 2;
#ifdef MUL_MAT_ID
  const uint expert = (wg / row_tiles) % p.experts;
  const uint first = (wg / row_tiles / p.experts) * BN;
  if (slot_table[expert] == NO_SLOT) return;  // uniform: the expert is not in the bank for this pass
  const uint matches = pair_count[expert];
  if (first >= matches) return;  // uniform
  const uint count = min(matches - first, BN);
  for (uint i = tid; i < count; i += WG) pair_of[i] = pair_list[expert * p.tokens + first + i];
  barrier();
  const uint mat = p.w_base + slot_table[expert] * p.w_stride;
#else
  const uint first = (wg / row_tiles) * BN;
  const uint count = min(p.tokens - first, BN);
  const uint mat = p.w_base;
#endif
  const uint scales = mat * 4 + p.scales;
  const uint UPR = BK / (4 * CHUNKS);  // 16-byte units per tile row

  // Where this thread's x-tile loads come from: token slot `bt` of the tile (fixed for the thread since WG
  // is a multiple of BN); slots past `count` repeat the tile's last token and are never stored.
  const uint bt = tid % BN;
#ifdef MUL_MAT_ID
  const uint pair = pair_of[min(bt, count - 1)];
  const uint x_row = p.x_per_slot != 0 ? pair : pair / p.top_k;
#else
  const uint x_row = first + min(bt, count - 1);
#endif

  const uint tm = tid / (BN / TN), tn = tid % (BN / TN);
  float acc[TM * TN];
  for (uint i = 0; i < TM * TN; ++i) acc[i] = 0.0;

  for (uint k0 = 0; k0 < p.k; k0 += BK) {
    // Weight tile: unit (ul) of tile row (r); consecutive threads take consecutive rows.
    for (uint i = tid; i < BM * UPR; i += WG) {
      const uint r = i % BM, ul = i / BM;
      const uint u = k0 / (4 * CHUNKS) + ul;
      const uint row = min(row0 + r, p.n - 1);
      const bool valid = u < p.units;
      const uvec4 d = valid ? w_u128[mat + row * p.units + u] : uvec4(0);
#ifdef WTYPE_QUANTIZED
      const vec2 sm = valid ? unit_scale(scales, p.k, row, u) : vec2(0.0);
#endif
      for (uint c = 0; c < CHUNKS; ++c) {
#ifdef WTYPE_QUANTIZED
        const vec4 v = sm.x * (chunk_raw(d, c) * chunk_xscale(c)) + sm.y;
#else
        const vec4 v = chunk_raw(d, c);
#endif
        const uint col = chunk_x4(ul, c) * 4;
        for (uint j = 0; j < 4; ++j) a_tile[(col + j) * BM + r] = valid ? v[j] : 0.0;
      }
    }
    // x tile: BK / 4 vec4s per token.
    for (uint i = tid; i < BN * (BK / 4); i += WG) {
      const uint c4 = i / BN;
      const bool valid = k0 / 4 + c4 < k4;
      const vec4 v = valid ? x4[x_row * k4 + k0 / 4 + c4] : vec4(0.0);
      for (uint j = 0; j < 4; ++j) b_tile[(c4 * 4 + j) * BN + bt] = v[j];
    }
    barrier();
    for (uint kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
      for (uint i = 0; i < TM; ++i) a[i] = a_tile[kk * BM + tm * TM + i];
      for (uint j = 0; j < TN; ++j) b[j] = b_tile[kk * BN + tn * TN + j];
      for (uint i = 0; i < TM; ++i)
        for (uint j = 0; j < TN; ++j) acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]);
    }
    barrier();
  }

  for (uint j = 0; j < TN; ++j) {
    const uint tt = tn * TN + j;
    if (tt >= count) continue;
#ifdef MUL_MAT_ID
    const uint y_base = pair_of[tt] * p.n;
#else
    const uint y_base = (first + tt) * p.n;
#endif
    for (uint i = 0; i < TM; ++i) {
      const uint row = row0 + tm * TM + i;
      if (row < p.n) store_y(y_base + row, acc[i * TN + j]);
    }
  }
}
