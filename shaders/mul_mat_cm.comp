#version 450
// Tiled matrix-matrix product on tensor cores (prefill): y[t, n] (+)= sum_k W[n, k] * x[t, k], as mul_mat.comp,
// with f16 x f16 -> f32 cooperative-matrix products (GL_NV_cooperative_matrix, 16 x 16 x 16 per subgroup).
//   W: [N, K] f16 / bf16 / q8_0 / q4 (mul_mat_funcs.glsl), decoded to f16 in shared memory;
//   x: prepared by x_f16_rows.comp: xs [rows, K] f16 = x / s_r, with s_r a power of two >= max|x_r| (so no
//      f16 overflow for large activations, and the division is exact); y gets s_r * (W xs) in f32.
// A workgroup of 256 invocations (8 subgroups of 32) computes a BM x BN tile of (rows, tokens): BM = 128, BN =
// 32 or 64 (spec constant 0); the subgroups are 4 (rows) x 2 (tokens), each owning 32 rows x BN / 2 tokens as
// 2 x (BN / 32) accumulators of 16 x 16. Per BK = 64 step: the weight tile is decoded into a_sh [BM][BK + 8]
// (row-major) and the x tile copied into b_sh [BN][BK + 8] (token-major, i.e. B = x^T column-major); the
// 8-element pad keeps each row 16-byte aligned and staggers shared-memory banks. Results leave through a
// per-subgroup 16 x 16 f32 staging block, scaled by s_r and stored (or added, p.accumulate) with bounds checks.
//
// With MUL_MAT_ID (MoE, grouped by expert): the grid of mul_mat.comp's MUL_MAT_ID, (row tile, expert e,
// token tile j), with expert e's pairs listed by moe_pairs.comp (in pair order, the same tiles as
// mul_mat.comp's gather) instead of each workgroup scanning all T * top_k ids: at T = 4096 those scans took
// longer than the products. x rows are the pairs' tokens, or the pairs with p.x_per_slot; experts without a
// slot (NO_SLOT) are skipped and their y rows keep their contents.
//
// Without COOPMAT (the *_cm_emu_* variants), each 16 x 16 product is computed by plain f32 arithmetic from the
// same shared-memory tiles (each invocation of a 32-invocation group owning 8 accumulator elements), and the
// staging goes through the same layout. Devices without cooperative matrices (lavapipe in CI) run these twins,
// which check everything but the tensor-core instructions themselves: tiling, decoding, gathering, scaling,
// bounds and stores; ops_test compares the native variants with the CPU reference on devices that have them.
//! variant mul_mat_cm_f16 requires=nv_coopmat -DWTYPE_F16 -DCOOPMAT
//! variant mul_mat_cm_bf16 requires=nv_coopmat -DWTYPE_BF16 -DCOOPMAT
//! variant mul_mat_cm_q8_0 requires=nv_coopmat -DWTYPE_Q8_0 -DCOOPMAT
//! variant mul_mat_cm_q4 requires=nv_coopmat -DWTYPE_Q4 -DCOOPMAT
//! variant mul_mat_id_cm_f16 requires=nv_coopmat -DWTYPE_F16 -DMUL_MAT_ID -DCOOPMAT
//! variant mul_mat_id_cm_bf16 requires=nv_coopmat -DWTYPE_BF16 -DMUL_MAT_ID -DCOOPMAT
//! variant mul_mat_id_cm_q8_0 requires=nv_coopmat -DWTYPE_Q8_0 -DMUL_MAT_ID -DCOOPMAT
//! variant mul_mat_id_cm_q4 requires=nv_coopmat -DWTYPE_Q4 -DMUL_MAT_ID -DCOOPMAT
//! variant mul_mat_cm_emu_f16 -DWTYPE_F16
//! variant mul_mat_cm_emu_bf16 -DWTYPE_BF16
//! variant mul_mat_cm_emu_q8_0 -DWTYPE_Q8_0
//! variant mul_mat_cm_emu_q4 -DWTYPE_Q4
//! variant mul_mat_id_cm_emu_f16 -DWTYPE_F16 -DMUL_MAT_ID
//! variant mul_mat_id_cm_emu_bf16 -DWTYPE_BF16 -DMUL_MAT_ID
//! variant mul_mat_id_cm_emu_q8_0 -DWTYPE_Q8_0 -DMUL_MAT_ID
//! variant mul_mat_id_cm_emu_q4 -DWTYPE_Q4 -DMUL_MAT_ID
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#ifdef COOPMAT
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#endif
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BN = 64;  // tile tokens: 32 or 64
const uint WG = 256;
const uint BM = 128;
const uint BK = 64;
const uint AS = BK + 8;  // a_sh / b_sh row stride (f16 elements)
const uint NTILES = BN / 32;  // 16-token accumulator columns per subgroup

layout(binding = 0) readonly buffer W { uvec4 w_u128[]; };
layout(binding = 1) readonly buffer S { uint scales_u32[]; };  // the same range as binding 0
layout(binding = 2) readonly buffer XS { uvec4 xs[]; };        // [rows, K] f16, 8 per uvec4
layout(binding = 3) readonly buffer XScale { float x_scale[]; };
layout(binding = 4) buffer Y { float y[]; };  // read only with p.accumulate
#ifdef MUL_MAT_ID
layout(binding = 5) readonly buffer Ids { uint ids[]; };
layout(binding = 6) readonly buffer Slots { uint slot_table[]; };
layout(binding = 7) readonly buffer PairCount { uint pair_count[]; };  // [E]
layout(binding = 8) readonly buffer PairList { uint pair_list[]; };    // [E, T]
#endif

#include "mul_mat_funcs.glsl"
#ifdef MUL_MAT_ID
shared uint pair_of[BN];  // the tile's pairs (t * top_k + s), from moe_pairs.comp's per-expert lists
#endif

shared float16_t a_sh[BM * AS];
shared float16_t b_sh[BN * AS];
shared float c_sh[8 * 256];  // a 16 x 16 staging block per subgroup, row-major (row n, token t)

#ifdef COOPMAT
#define ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define FRAG fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#else
// The emulated accumulator: invocation l of a 32-invocation group holds elements 8l .. 8l + 7 of the 16 x 16
// block (row (8l + i) / 16, column (8l + i) % 16).
struct Acc {
  float v[8];
};
#define ACC Acc
// sum over 16 k of A[r][k] * B[k][c]: A row-major at a_sh[a + r * AS + k], B column-major at b_sh[b + c * AS + k].
// Loops kept rolled: unrolled, lavapipe took ~45 s to compile each variant.
void emu_mma(inout Acc acc, uint lane, uint a, uint b) {
  [[dont_unroll]] for (uint i = 0; i < 8; ++i) {
    const uint e = lane * 8 + i, r = e / 16, c = e % 16;
    float s = acc.v[i];
    [[dont_unroll]] for (uint k = 0; k < 16; ++k) s = fma(float(a_sh[a + r * AS + k]), float(b_sh[b + c * AS + k]), s);
    acc.v[i] = s;
  }
}
void emu_store(Acc acc, uint lane, uint at) {
  [[unroll]] for (uint i = 0; i < 8; ++i) c_sh[at + lane * 8 + i] = acc.v[i];
}
#endif

// Weight tile: element i = (row r = i % BM, unit column ul = i / BM), consecutive invocations on
// consecutive rows; unit columns past K are zero. x tile: (token t = i / (BK / 8), uvec4 c8 = i % (BK / 8));
// token slots past `count` are zero. Invocation tid holds elements tid + j * WG.
void load_tiles(uint k0, uint row0, uint mat, uint scales, uint first, uint count, uint k8, out uvec4 wreg[4],
                out vec2 sreg[4], out uvec4 xreg[2]) {
  const uint tid = gl_LocalInvocationID.x;
  const uint UPR = BK / (4 * CHUNKS);
  [[unroll]] for (uint j = 0; j < 4; ++j) {
    const uint i = tid + j * WG;
    wreg[j] = uvec4(0);
    sreg[j] = vec2(0.0);
    if (i >= BM * UPR) break;
    const uint r = i % BM, ul = i / BM;
    const uint u = k0 / (4 * CHUNKS) + ul;
    const uint row = min(row0 + r, p.n - 1);
    if (u < p.units) {
      wreg[j] = w_u128[mat + row * p.units + u];
#ifdef WTYPE_QUANTIZED
      sreg[j] = unit_scale(scales, p.k, row, u);
#endif
    }
  }
  [[unroll]] for (uint j = 0; j < 2; ++j) {
    const uint i = tid + j * WG;
    xreg[j] = uvec4(0);
    if (i >= BN * (BK / 8)) break;
    const uint t = i / (BK / 8), c8 = i % (BK / 8);
    if (t < count && k0 / 8 + c8 < k8) {
#ifdef MUL_MAT_ID
      const uint pair = pair_of[t];
      const uint x_row = p.x_per_slot != 0 ? pair : pair / p.top_k;
#else
      const uint x_row = first + t;
#endif
      xreg[j] = xs[x_row * k8 + k0 / 8 + c8];
    }
  }
}

// Decodes the registers of load_tiles into a_sh and b_sh.
void store_tiles(uint k0, uvec4 wreg[4], vec2 sreg[4], uvec4 xreg[2]) {
  const uint tid = gl_LocalInvocationID.x;
  const uint UPR = BK / (4 * CHUNKS);
  [[unroll]] for (uint j = 0; j < 4; ++j) {
    const uint i = tid + j * WG;
    if (i >= BM * UPR) break;
    const uint r = i % BM, ul = i / BM;
    [[unroll]] for (uint c = 0; c < CHUNKS; ++c) {
#ifdef WTYPE_QUANTIZED
      const vec4 v = sreg[j].x * (chunk_raw(wreg[j], c) * chunk_xscale(c)) + sreg[j].y;
#else
      const vec4 v = chunk_raw(wreg[j], c);
#endif
      const uint at = r * AS + chunk_x4(ul, c) * 4;
      [[unroll]] for (uint e = 0; e < 4; ++e) a_sh[at + e] = float16_t(v[e]);
    }
  }
  [[unroll]] for (uint j = 0; j < 2; ++j) {
    const uint i = tid + j * WG;
    if (i >= BN * (BK / 8)) break;
    const uint t = i / (BK / 8), c8 = i % (BK / 8);
    const uint at = t * AS + c8 * 8;
    [[unroll]] for (uint e = 0; e < 4; ++e) {
      const f16vec2 h = unpackFloat2x16(xreg[j][e]);
      b_sh[at + 2 * e] = h.x;
      b_sh[at + 2 * e + 1] = h.y;
    }
  }
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint wg = flat_workgroup_id();
  const uint row_tiles = (p.n + BM - 1) / BM;
  const uint row0 = (wg % row_tiles) * BM;
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
  const uint UPR = BK / (4 * CHUNKS);  // 16-byte weight units per tile row
  const uint k8 = p.k / 8;             // uvec4s per xs row (K is a multiple of 8 for these types)

#ifdef COOPMAT
  const uint sg = gl_SubgroupID;  // the host runs this only where subgroups have 32 invocations
  const uint lane = gl_SubgroupInvocationID;
#else
  const uint sg = tid / 32;
  const uint lane = tid % 32;
#endif
  const uint sm = sg % 4, sn = sg / 4;  // the subgroup's 32 rows and BN / 2 tokens
  const uint a_row = sm * 32, b_tok = sn * (BN / 2);

#ifdef COOPMAT
  ACC acc00 = ACC(0.0), acc01 = ACC(0.0), acc10 = ACC(0.0), acc11 = ACC(0.0);
#else
  ACC acc00, acc01, acc10, acc11;
  [[unroll]] for (uint i = 0; i < 8; ++i) acc00.v[i] = acc01.v[i] = acc10.v[i] = acc11.v[i] = 0.0;
#endif

  // Global loads of the next step's tiles go to registers before this step's products, so that their latency
  // overlaps the math (one step of software pipelining); the step after stores them to shared memory.
  // An invocation holds BM * UPR / WG weight units (1 for q4, 4 for f16) and BN * BK / 8 / WG x words (1-2).
  uvec4 wreg[4];
  vec2 sreg[4];
  uvec4 xreg[2];
  load_tiles(0, row0, mat, scales, first, count, k8, wreg, sreg, xreg);
  for (uint k0 = 0; k0 < p.k; k0 += BK) {
    store_tiles(k0, wreg, sreg, xreg);
    barrier();
    if (k0 + BK < p.k) load_tiles(k0 + BK, row0, mat, scales, first, count, k8, wreg, sreg, xreg);
#ifdef COOPMAT
    [[unroll]]
#else
    [[dont_unroll]]
#endif
    for (uint kk = 0; kk < BK; kk += 16) {
      const uint a0 = a_row * AS + kk, a1 = (a_row + 16) * AS + kk;
      const uint b0 = b_tok * AS + kk, b1 = (b_tok + 16) * AS + kk;
#ifdef COOPMAT
      FRAG fa0, fa1, fb0, fb1;
      coopMatLoadNV(fa0, a_sh, a0, AS, false);
      coopMatLoadNV(fa1, a_sh, a1, AS, false);
      coopMatLoadNV(fb0, b_sh, b0, AS, true);
      acc00 = coopMatMulAddNV(fa0, fb0, acc00);
      acc10 = coopMatMulAddNV(fa1, fb0, acc10);
      if (NTILES == 2) {
        coopMatLoadNV(fb1, b_sh, b1, AS, true);
        acc01 = coopMatMulAddNV(fa0, fb1, acc01);
        acc11 = coopMatMulAddNV(fa1, fb1, acc11);
      }
#else
      emu_mma(acc00, lane, a0, b0);
      emu_mma(acc10, lane, a1, b0);
      if (NTILES == 2) {
        emu_mma(acc01, lane, a0, b1);
        emu_mma(acc11, lane, a1, b1);
      }
#endif
    }
    barrier();
  }

  // Each accumulator through the subgroup's staging block: element e (row e % 16, token e / 16) per invocation
  // step, so that 16 consecutive invocations store 16 consecutive outputs of one token.
  const uint stage = sg * 256;
  [[unroll]] for (uint b = 0; b < 4; ++b) {
    const uint mi = b & 1, ni = b >> 1;
    if (ni >= NTILES) break;
#ifdef COOPMAT
    if (b == 0) coopMatStoreNV(acc00, c_sh, stage, 16, false);
    if (b == 1) coopMatStoreNV(acc10, c_sh, stage, 16, false);
    if (b == 2) coopMatStoreNV(acc01, c_sh, stage, 16, false);
    if (b == 3) coopMatStoreNV(acc11, c_sh, stage, 16, false);
#else
    emu_store(b == 0 ? acc00 : b == 1 ? acc10 : b == 2 ? acc01 : acc11, lane, stage);
#endif
    barrier();
    for (uint e = lane; e < 256; e += 32) {
      const uint r = e % 16, t = e / 16;
      const uint row = row0 + a_row + mi * 16 + r, tt = b_tok + ni * 16 + t;
      if (row >= p.n || tt >= count) continue;
#ifdef MUL_MAT_ID
      const uint pair = pair_of[tt];
      const uint x_row = p.x_per_slot != 0 ? pair : pair / p.top_k;
      const uint y_base = pair * p.n;
#else
      const uint x_row = first + tt;
      const uint y_base = x_row * p.n;
#endif
      store_y(y_base + row, c_sh[stage + r * 16 + t] * x_scale[x_row]);
    }
    barrier();
  }
}
