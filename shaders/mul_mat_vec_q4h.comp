#version 450
// q4 matrix-vector product in packed f16 arithmetic, for devices with shaderFloat16:
//   y[t, n] (+)= sum_k W[n, k] * x[t, k],  W: [N, K] q4 (weight_format.hpp), T tokens in chunks of NT <= 8
//   (as in mul_mat_vec.comp: a workgroup per (row tile, chunk), the last chunk may be shorter).
// x arrives prepared by q4h_prep.comp (xh: f16 pairs scaled to [-1, 1] per 64-column group, xg: the group
// scale and per-unit sums). Per 32-bit weight word, each nibble pair becomes an f16vec2 with one AND and one
// OR (bits placed in the mantissa of 1024.0), one subtraction and one packed fused multiply-add: about 2.4
// instructions per weight, against about 4 for the f32 decode of mul_mat_vec.comp, which made that kernel
// ALU-bound on q4. A unit (16 bytes, 32 weights) is summed in f16 (at most 32 products of |q| <= 15 and
// |xq| <= 1) and then scaled in f32: sum_j w_j x_j = scale * s_g * sum_j q_j xq_j + min * sum_j x_j.
// With MUL_MAT_ID (MoE): one workgroup per (row tile, pair) as in mul_mat_vec.comp, NT = 1; with COMBINE as
// well, one per (row tile, token) summing the token's pairs into the residual, as mul_mat_vec.comp's COMBINE
// (the routing weight scales the pair's xg, which scales both terms of the unit sum).
// With SWIGLU (MoE gate/up, NT = 1): W is the fused [2I, K] gate/up stack (gate rows first); a workgroup owns
// ROWS / 2 outputs i of one pair, computes gate row i and up row I + i, and writes y[pair, i] = silu(g) * u
// into a [pairs, I] y: the glu dispatch and its barrier are gone, and gate/up never go through memory.
// With MULTI: two or three matrices of one weight binding (attention's q, k and v) times the same x, each
// into its own y (bindings 4, 5, 6); the row tiles of the matrices follow each other in the grid.
//
// Launch shape: WG threads (spec constant 0) stride over the units of ROWS rows, UNR units per iteration
// with all their loads issued before any use (memory-level parallelism is what decode lacks most).
//! variant mul_mat_vec_q4h_1 -DNT=1
//! variant mul_mat_vec_q4h_2 -DNT=2
//! variant mul_mat_vec_q4h_3 -DNT=3
//! variant mul_mat_vec_q4h_4 -DNT=4
//! variant mul_mat_vec_q4h_5 -DNT=5
//! variant mul_mat_vec_q4h_6 -DNT=6
//! variant mul_mat_vec_q4h_7 -DNT=7
//! variant mul_mat_vec_q4h_8 -DNT=8
//! variant mul_mat_vec_multi_q4h_1 -DNT=1 -DMULTI
//! variant mul_mat_vec_multi_q4h_2 -DNT=2 -DMULTI
//! variant mul_mat_vec_multi_q4h_3 -DNT=3 -DMULTI
//! variant mul_mat_vec_multi_q4h_4 -DNT=4 -DMULTI
//! variant mul_mat_vec_multi_q4h_5 -DNT=5 -DMULTI
//! variant mul_mat_vec_multi_q4h_6 -DNT=6 -DMULTI
//! variant mul_mat_vec_multi_q4h_7 -DNT=7 -DMULTI
//! variant mul_mat_vec_multi_q4h_8 -DNT=8 -DMULTI
//! variant mul_mat_vec_id_q4h -DNT=1 -DMUL_MAT_ID
//! variant mul_mat_vec_id_combine_q4h -DNT=1 -DMUL_MAT_ID -DCOMBINE
//! variant mul_mat_vec_id_swiglu_q4h -DNT=1 -DMUL_MAT_ID -DSWIGLU
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#define WTYPE_Q4 1
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ROWS = 2;
layout(constant_id = 2) const uint UNR = 2;

layout(binding = 0) readonly buffer W { uvec4 w_u128[]; };
layout(binding = 1) readonly buffer S { uint scales_u32[]; };  // the same range as binding 0
layout(binding = 2) readonly buffer XH { uvec4 xh[]; };
layout(binding = 3) readonly buffer XG { vec2 xg[]; };
layout(binding = 4) buffer Y { float y[]; };  // read only with p.accumulate
#ifdef MUL_MAT_ID
layout(binding = 5) readonly buffer Ids { uint ids[]; };
layout(binding = 6) readonly buffer Slots { uint slot_table[]; };
#endif
#if defined(COMBINE)
layout(binding = 7) readonly buffer RouteW { float route_w[]; };
#endif
#if defined(MULTI)
layout(binding = 5) writeonly buffer Y1 { float y1[]; };
layout(binding = 6) writeonly buffer Y2 { float y2[]; };
#endif

#include "mul_mat_funcs.glsl"
#if defined(SWIGLU)
#include "math_funcs.glsl"
#endif

const uint MAX_ROWS = 4;  // ROWS <= MAX_ROWS, UNR <= MAX_UNR (register arrays need a compile-time size)
const uint MAX_UNR = 4;
shared float partial[gl_WorkGroupSize.x / 4 * MAX_ROWS * NT];

const uint NIBBLES = 0x000F000Fu;
const uint F16_1024 = 0x64006400u;  // 1024.0 in both halves: nibble bits land in the low mantissa

f16vec2 nibbles(uint w) { return unpackFloat2x16((w & NIBBLES) | F16_1024) - f16vec2(1024.0); }

// sum over one unit of q * xq, from its 4 weight words and the matching 4 words of prepared x.
float unit_dot(uvec4 d, uvec4 x0, uvec4 x1, uvec4 x2, uvec4 x3) {
  f16vec2 acc = nibbles(d.x) * unpackFloat2x16(x0.x);
  acc = fma(nibbles(d.x >> 4), unpackFloat2x16(x0.y), acc);
  acc = fma(nibbles(d.x >> 8), unpackFloat2x16(x0.z), acc);
  acc = fma(nibbles(d.x >> 12), unpackFloat2x16(x0.w), acc);
  acc = fma(nibbles(d.y), unpackFloat2x16(x1.x), acc);
  acc = fma(nibbles(d.y >> 4), unpackFloat2x16(x1.y), acc);
  acc = fma(nibbles(d.y >> 8), unpackFloat2x16(x1.z), acc);
  acc = fma(nibbles(d.y >> 12), unpackFloat2x16(x1.w), acc);
  f16vec2 acc2 = nibbles(d.z) * unpackFloat2x16(x2.x);
  acc2 = fma(nibbles(d.z >> 4), unpackFloat2x16(x2.y), acc2);
  acc2 = fma(nibbles(d.z >> 8), unpackFloat2x16(x2.z), acc2);
  acc2 = fma(nibbles(d.z >> 12), unpackFloat2x16(x2.w), acc2);
  acc2 = fma(nibbles(d.w), unpackFloat2x16(x3.x), acc2);
  acc2 = fma(nibbles(d.w >> 4), unpackFloat2x16(x3.y), acc2);
  acc2 = fma(nibbles(d.w >> 8), unpackFloat2x16(x3.z), acc2);
  acc2 = fma(nibbles(d.w >> 12), unpackFloat2x16(x3.w), acc2);
  const vec2 s = vec2(acc) + vec2(acc2);
  return s.x + s.y;
}

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint tid = gl_LocalInvocationID.x;
  const uint wg = flat_workgroup_id();
  const uint units = p.units;
#if defined(COMBINE)
  const uint N = p.n, SC = p.scales;
  const uint row_tiles = (p.n + ROWS - 1) / ROWS;
  const uint token = wg / row_tiles;
  const uint row0 = (wg % row_tiles) * ROWS;
  const uint y_base = token * p.n;
  const uint last = 0;
  const uint pair_count = p.top_k;
#elif defined(MUL_MAT_ID)
  const uint N = p.n, SC = p.scales;
#if defined(SWIGLU)
  const uint OUT = ROWS / 2;  // outputs per workgroup (ROWS is even here)
  const uint width = p.n / 2;  // y is [pairs, I]
  const uint row_tiles = (width + OUT - 1) / OUT;
  const uint row0 = (wg % row_tiles) * OUT;  // the first output
  const uint y_row = width;
#else
  const uint row_tiles = (p.n + ROWS - 1) / ROWS;
  const uint row0 = (wg % row_tiles) * ROWS;
  const uint y_row = p.n;
#endif
  const uint pair = wg / row_tiles;
  const uint slot = slot_table[ids[pair]];
  if (slot == NO_SLOT) return;  // uniform: the expert is not in the bank for this pass (its y row is kept)
  const uint mat = p.w_base + slot * p.w_stride;
  const uint x_row = p.x_per_slot != 0 ? pair : pair / p.top_k;
  const uint y_base = pair * y_row;
  const uint last = 0;
  const uint pair_count = 1;
#else
  const uint chunks = (p.tokens + NT - 1) / NT;
#if defined(MULTI)
  uint tile = wg / chunks, m, N, mat, SC;
  multi_matrix(tile, ROWS, m, N, mat, SC);
  const uint row0 = tile * ROWS;
#else
  const uint N = p.n, SC = p.scales;
  const uint row0 = (wg / chunks) * ROWS;
  const uint mat = p.w_base;
#endif
  const uint t0 = (wg % chunks) * NT;
  const uint x_row = t0;
  const uint y_base = t0 * N;
  const uint last = p.tokens - 1 - t0;  // the chunk's last token; tokens past it re-read it, store nothing
  const uint pair_count = 1;
#endif
  uint rows[MAX_ROWS];
#if defined(SWIGLU)
  // Rows 0 .. OUT - 1 are gate rows row0 + r, the rest the matching up rows I + row0 + r - OUT.
  [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
    const uint rr = min(r, ROWS - 1);
    rows[r] = rr < OUT ? min(row0 + rr, width - 1) : width + min(row0 + rr - OUT, width - 1);
  }
#else
  [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) rows[r] = min(row0 + min(r, ROWS - 1), N - 1);
#endif
  float acc[MAX_ROWS * NT];
  [[unroll]] for (uint i = 0; i < MAX_ROWS * NT; ++i) acc[i] = 0.0;

  // COMBINE: the token's pairs go to groups of `lanes` invocations side by side (each group loops over the
  // units of its pairs), so their loads are in flight together: one pair after another, the chain of id,
  // slot and weight loads per pair made the kernel latency-bound (13.4 us per layer on an H200 for 7 MB).
  // Every invocation's sums add into the same outputs below, so how pairs map to invocations is free.
#if defined(COMBINE)
  const uint lanes = pair_lanes((units + UNR - 1) / UNR, WG);
  const uint lane = tid % lanes, groups = WG / lanes;
  for (uint pi = tid / lanes; pi < pair_count; pi += groups) {
#else
  const uint lane = tid, lanes = WG;
  for (uint pi = 0; pi < pair_count; ++pi) {
#endif
#if defined(COMBINE)
    const uint pair = token * p.top_k + pi;
    const uint slot = slot_table[ids[pair]];
    if (slot == NO_SLOT) continue;  // uniform: the expert is not in the bank for this pass
    const uint mat = p.w_base + slot * p.w_stride;
    const uint x_row = pair;
    const float xw = route_w[pair];  // the pair's routing weight, folded into its x
#else
    const float xw = 1.0;
#endif
    for (uint u0 = lane; u0 < units; u0 += lanes * UNR) {
      uvec4 d[MAX_UNR * MAX_ROWS];
      uint sm[MAX_UNR * MAX_ROWS];
      [[unroll]] for (uint j = 0; j < MAX_UNR; ++j) {
        if (j >= UNR) break;
        const uint u = min(u0 + j * lanes, units - 1);
        [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
          if (r >= ROWS) break;
          d[j * MAX_ROWS + r] = w_u128[mat + rows[r] * units + u];
          sm[j * MAX_ROWS + r] = scales_u32[mat * 4 + SC + rows[r] * (p.k >> 6) + (u >> 1)];
        }
      }
      [[unroll]] for (uint j = 0; j < MAX_UNR; ++j) {
        const uint u = u0 + j * lanes;
        if (j >= UNR || u >= units) break;
        [[unroll]] for (uint t = 0; t < NT; ++t) {
          const uint xr = x_row + min(t, last);
          const uint xi = (xr * units + u) * 4;
          const uvec4 x0 = xh[xi], x1 = xh[xi + 1], x2 = xh[xi + 2], x3 = xh[xi + 3];
          const vec2 g = xg[xr * units + u] * xw;
          [[unroll]] for (uint r = 0; r < MAX_ROWS; ++r) {
            if (r >= ROWS) break;
            const vec2 sc = unpackHalf2x16(sm[j * MAX_ROWS + r]);
            const float dq = unit_dot(d[j * MAX_ROWS + r], x0, x1, x2, x3);
            acc[r * NT + t] = fma(sc.x * g.x, dq, fma(sc.y, g.y, acc[r * NT + t]));
          }
        }
      }
    }
  }

  const uint RN = ROWS * NT;
  [[unroll]] for (uint i = 0; i < MAX_ROWS * NT; ++i) {
    if (i >= RN) break;
    const uint r = i / NT, t = i % NT;
    const float s = subgroupAdd(acc[r * NT + t]);
    if (subgroupElect()) partial[gl_SubgroupID * RN + i] = s;
  }
  barrier();
#if defined(SWIGLU)
  for (uint i = tid; i < OUT; i += WG) {
    float g = 0.0, u = 0.0;
    for (uint sg = 0; sg < gl_NumSubgroups; ++sg) {
      g += partial[sg * RN + i];
      u += partial[sg * RN + OUT + i];
    }
    if (row0 + i < width) y[y_base + row0 + i] = g * sigmoid(g) * u;  // as glu.comp's swiglu
  }
#else
  for (uint i = tid; i < RN; i += WG) {
    float s = 0.0;
    for (uint sg = 0; sg < gl_NumSubgroups; ++sg) s += partial[sg * RN + i];
    const uint row = row0 + i / NT;
#if defined(MULTI)
    if (row < N && i % NT <= last) {
      const uint at = y_base + (i % NT) * N + row;
      if (m == 0) y[at] = s;
      else if (m == 1) y1[at] = s;
      else y2[at] = s;
    }
#else
    if (row < N && i % NT <= last) store_y(y_base + (i % NT) * N + row, s);
#endif
  }
#endif
}
