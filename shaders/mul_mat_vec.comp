#version 450
// Matrix-vector product for few tokens (decode, speculative verify): y[t, n] (+)= sum_k W[n, k] * x[t, k].
//   W: [N, K] in any weight format (mul_mat_funcs.glsl), x: [T, K] f32, y: [T, N] f32.
// The T tokens are split into chunks of NT <= 8 (the last may be shorter); a workgroup owns (row tile,
// chunk), with the chunks of a row tile adjacent in the grid so that its weights are re-read from L2.
// With MUL_MAT_ID (MoE experts): one workgroup per (row tile, pair), pair = t * top_k + s;
//   W = stack[slot_table[ids[pair]]], x row = x_per_slot ? pair : t, y: [T, top_k, N] row `pair` (NT = 1);
//   a pair whose expert's slot is NO_SLOT is skipped (its y row keeps its contents).
// With COMBINE as well (ops::mul_mat_id_combine, NT = 1): one workgroup per (row tile, token), its pairs spread
//   over groups of invocations: y is the residual [T, N] and y[t, n] += sum_j route_w[pair] * (W_e x[pair])[n], with
//   x: [T, top_k, K] and each pair's routing weight folded into its x; NO_SLOT pairs add nothing.
// With SWIGLU as well (ops::mul_mat_id_swiglu, NT = 1; as mul_mat_vec_q4h.comp's): W is the fused [2I, K]
//   gate/up stack (gate rows first); a workgroup owns ROWS / 2 outputs i of one pair, computes gate row i and
//   up row I + i, and writes y[pair, i] = silu(g) * u into a [pairs, I] y.
// With MULTI: two or three matrices of one weight binding times the same x, each into its own y (bindings 3, 4,
//   5), their row tiles one after another in the grid (attention's q, k and v; as mul_mat_vec_q4h.comp's).
// With NORM (with MULTI here): x is the input of an RMSNorm that the product applies (ops::NormedX): each
//   chunk of x is scaled by the norm's scale (binding 6) as it is read, its squares are summed in the same
//   pass (a workgroup reads every column of its tokens' rows once), and each output is divided by the row's
//   RMS at the end. No norm dispatch, no prepared x and no barrier between them: at decode those cost more
//   than the products (an H200 took ~6 us for the norm dispatch of one 2048-wide row).
// With QK_TAIL as well (attention's q, k and v; ops::QkvTail): the last workgroup to finish a head's rows of a
//   token chunk (a count per (chunk, head) in binding 16, which that workgroup sets back to 0) applies the
//   head's tail for the chunk's tokens: q and k heads get their RMSNorm and RoPE in place
//   (head_norm_rope.glsl, as qk_norm_rope.comp), k and v rows go into the paged caches (as kv_store.comp).
//   The qk_norm_rope_kv_store dispatch and its barrier are gone; only one workgroup per head does the tail,
//   so the others' critical path does not grow. ROWS divides head_dim (a workgroup's rows are one head's).
//
// With Q4_DOT (q4 weights; ops/matmul.hpp's uses_q4_dot): integer dot products instead of decoding weights to
//   floats. Each invocation quantizes the 32 x values of its unit (per token) to int8 with one scale, the
//   largest |x| / 127 (as llama.cpp's q8_1 activations), and each row's unit is then 8 packed
//   signed-by-unsigned 4 x 8-bit dot products (OpSUDotKHR: dp4a on NVIDIA) on the nibbles masked in place, one
//   int -> float conversion and two FMAs: sum_j w_j x_j ~= scale * dx * sum_j q_j xi_j + min * dx * sum_j xi_j.
//   About 23 instructions per unit and row against about 90 for the float decode, and ~100 per unit for the
//   quantization, shared by the ROWS rows. x's rounding (relative error up to 1/254 per value) is the price.
//
// Shape of the work: a workgroup of WG threads owns ROWS consecutive rows. Thread i reads 16-byte units
// i, i + WG, ... of each of its ROWS rows (coalesced: a subgroup reads 16 * subgroup-size contiguous bytes
// per row), so ROWS independent 16-byte loads are in flight per thread per iteration, and each x chunk it
// loads (from L1/L2: x is small and read by every workgroup) serves all ROWS rows and NT tokens. Partial
// sums are reduced with subgroupAdd and then across subgroups through shared memory, which works for any
// subgroup size (8 on lavapipe, 32 on NVIDIA, 32/64 on AMD).
//
// Spec constants (ops/matmul.cpp picks them; $MACH_MUL_MAT_VEC overrides for tuning):
//   0  WG    threads per workgroup; the host takes the smallest power of two >= units per row, within
//            [32, max] (max 256 by default), so short rows (MoE down projections, K = 768) waste few lanes.
//   1  ROWS  rows per workgroup (default 4): more rows = more loads in flight and more x reuse, fewer
//            workgroups. 2..8 are sensible.
//   2  NT    tokens per chunk: T where T <= 8, else ceil(T / ceil(T / 8)).
//
// Expected on NVIDIA H100/H200 (~3.3/4.8 TB/s peak, ~3.0/4.1 achievable), T = 1, >= 1 GiB weights:
//   bf16, f16, f32: pure streaming, 2-4 integer/FP ops per 4 bytes: 80-90% of achievable bandwidth.
//   q8_0, q4: decoding without int->float conversions (see mul_mat_funcs.glsl). q4 at T = 1 issues ~36
//            integer + ~80 FP lane-ops per 16-byte unit and row (ROWS = 4 amortizing the x work), so the
//            SM issue rate (128 lanes/clk) caps it near 4.5 TB/s on 132 SMs at 1.98 GHz: above the H100's
//            bandwidth, just under the H200's. Expected 65-80%. Q4_DOT (above) cuts the per-row work to
//            about a quarter with int8 dot products on an int8-rounded x (a looser error bound), as
//            llama.cpp does; on an H200 the decode-sized products got 15-25% shorter.
//   Small matrices (2048 x 2048: 2-8 MB) are launch- and tail-bound: 30-60% at best.
//   NT = 8 costs ~NT times the FMAs of NT = 1 on the same bytes; q4 may become ALU-bound near 50%.
// Knobs to try first on a new device: ROWS in {2, 4, 8}, max WG in {64, 128, 256}.
//! variant mul_mat_vec_f32 -DWTYPE_F32
//! variant mul_mat_vec_f16 -DWTYPE_F16
//! variant mul_mat_vec_bf16 -DWTYPE_BF16
//! variant mul_mat_vec_q8_0 -DWTYPE_Q8_0
//! variant mul_mat_vec_q4 -DWTYPE_Q4
//! variant mul_mat_vec_id_f32 -DWTYPE_F32 -DMUL_MAT_ID
//! variant mul_mat_vec_id_f16 -DWTYPE_F16 -DMUL_MAT_ID
//! variant mul_mat_vec_id_bf16 -DWTYPE_BF16 -DMUL_MAT_ID
//! variant mul_mat_vec_id_q8_0 -DWTYPE_Q8_0 -DMUL_MAT_ID
//! variant mul_mat_vec_id_q4 -DWTYPE_Q4 -DMUL_MAT_ID
//! variant mul_mat_vec_id_combine_f32 -DWTYPE_F32 -DMUL_MAT_ID -DCOMBINE
//! variant mul_mat_vec_id_combine_f16 -DWTYPE_F16 -DMUL_MAT_ID -DCOMBINE
//! variant mul_mat_vec_id_combine_bf16 -DWTYPE_BF16 -DMUL_MAT_ID -DCOMBINE
//! variant mul_mat_vec_id_combine_q8_0 -DWTYPE_Q8_0 -DMUL_MAT_ID -DCOMBINE
//! variant mul_mat_vec_id_combine_q4 -DWTYPE_Q4 -DMUL_MAT_ID -DCOMBINE
//! variant mul_mat_vec_multi_norm_f32 -DWTYPE_F32 -DMULTI -DNORM
//! variant mul_mat_vec_multi_norm_f16 -DWTYPE_F16 -DMULTI -DNORM
//! variant mul_mat_vec_multi_norm_bf16 -DWTYPE_BF16 -DMULTI -DNORM
//! variant mul_mat_vec_multi_norm_q8_0 -DWTYPE_Q8_0 -DMULTI -DNORM
//! variant mul_mat_vec_multi_norm_q4 -DWTYPE_Q4 -DMULTI -DNORM
//! variant mul_mat_vec_qkv_f32 -DWTYPE_F32 -DMULTI -DNORM -DQK_TAIL
//! variant mul_mat_vec_qkv_f16 -DWTYPE_F16 -DMULTI -DNORM -DQK_TAIL
//! variant mul_mat_vec_qkv_bf16 -DWTYPE_BF16 -DMULTI -DNORM -DQK_TAIL
//! variant mul_mat_vec_qkv_q8_0 -DWTYPE_Q8_0 -DMULTI -DNORM -DQK_TAIL
//! variant mul_mat_vec_qkv_q4 -DWTYPE_Q4 -DMULTI -DNORM -DQK_TAIL
//! variant mul_mat_vec_q4_dot requires=spirv_intrinsics -DWTYPE_Q4 -DQ4_DOT
//! variant mul_mat_vec_id_q4_dot requires=spirv_intrinsics -DWTYPE_Q4 -DMUL_MAT_ID -DQ4_DOT
//! variant mul_mat_vec_id_combine_q4_dot requires=spirv_intrinsics -DWTYPE_Q4 -DMUL_MAT_ID -DCOMBINE -DQ4_DOT
//! variant mul_mat_vec_id_swiglu_q4_dot requires=spirv_intrinsics -DWTYPE_Q4 -DMUL_MAT_ID -DSWIGLU -DQ4_DOT
//! variant mul_mat_vec_multi_norm_q4_dot requires=spirv_intrinsics -DWTYPE_Q4 -DMULTI -DNORM -DQ4_DOT
//! variant mul_mat_vec_qkv_q4_dot requires=spirv_intrinsics -DWTYPE_Q4 -DMULTI -DNORM -DQK_TAIL -DQ4_DOT
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#if defined(Q4_DOT)
#extension GL_EXT_spirv_intrinsics : require
#endif
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ROWS = 4;
layout(constant_id = 2) const uint NT = 1;

layout(binding = 0) readonly buffer W { uvec4 w_u128[]; };
layout(binding = 1) readonly buffer S { uint scales_u32[]; };  // the same range as binding 0
layout(binding = 2) readonly buffer X { vec4 x4[]; };
#if defined(QK_TAIL)
// The tail reads the outputs other workgroups wrote: coherent, so its loads see them in L2, not a stale L1.
#define Y_ACCESS coherent
#define Y1_ACCESS coherent
#else
#define Y_ACCESS  // read only with p.accumulate
#define Y1_ACCESS writeonly
#endif
layout(binding = 3) Y_ACCESS buffer Y { float y[]; };
#ifdef MUL_MAT_ID
layout(binding = 4) readonly buffer Ids { uint ids[]; };
layout(binding = 5) readonly buffer Slots { uint slot_table[]; };
#endif
#if defined(COMBINE)
layout(binding = 6) readonly buffer RouteW { float route_w[]; };
#endif
#if defined(MULTI)
layout(binding = 4) Y1_ACCESS buffer Y1 { float y1[]; };
layout(binding = 5) Y1_ACCESS buffer Y2 { float y2[]; };
#endif
#if defined(NORM)
layout(binding = 6) readonly buffer NormW { vec4 norm_w4[]; };
const uint SQ = 1;  // one more partial sum per token: x's squares
#else
const uint SQ = 0;
#endif
#if defined(QK_TAIL)
layout(constant_id = 3) const uint WEIGHT_MODE = 1;       // the q/k norms' (rms_norm.comp's WEIGHT_MODE)
layout(constant_id = 4) const uint ROPE_INTERLEAVED = 0;  // rope.comp's layouts
layout(binding = 7) readonly buffer QW { float q_w[]; };
layout(binding = 8) readonly buffer KW { float k_w[]; };
layout(binding = 9) readonly buffer Pos { uint pos[]; };  // rotary positions
layout(binding = 10) readonly buffer Freq { float inv_freq[]; };
layout(binding = 11) readonly buffer Seq { uint seq_of_token[]; };
layout(binding = 12) readonly buffer CachePos { uint pos_of_token[]; };
layout(binding = 13) readonly buffer Table { uint block_table[]; };
layout(binding = 14) writeonly buffer KCache { uint k_cache[]; };
layout(binding = 15) writeonly buffer VCache { uint v_cache[]; };
layout(binding = 16) coherent buffer Counts { uint head_counts[]; };
#endif

#include "mul_mat_funcs.glsl"
#if defined(Q4_DOT)
// OpSUDotKHR with PackedVectorFormat4x8Bit (format 0): the dot product of 4 signed bytes of `x` with 4
// unsigned bytes of `w`, as a 32-bit int.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4452)
int dot_s8_u8(uint x, uint w, spirv_literal int packed_format);
int dot4(uint x, uint w) { return dot_s8_u8(x, w, 0); }

// round(v) of 4 values in [-127, 127] as packed int8 (element 0 in the low byte). Adding 1.5 * 2^23 leaves
// round-to-nearest-even(v) in the low mantissa bits (two's complement in the low byte): no float -> int
// conversion instructions, which are slow on NVIDIA.
uint pack_s8(vec4 v, float inv) {
  const uvec4 b = floatBitsToUint(fma(v, vec4(inv), vec4(12582912.0)));
  return bitfieldInsert(bitfieldInsert(bitfieldInsert(b.x, b.y, 8, 8), b.z, 16, 8), b.w, 24, 8);
}
#endif
#if defined(QK_TAIL) || defined(SWIGLU)
#include "math_funcs.glsl"
#endif
#if defined(QK_TAIL)
#define HNR_SUBGROUP_SUM 1  // the tail is on the kernel's critical path: a subgroup sum, not a barrier tree
float hnr_weight(bool is_k, uint i) {
  if (WEIGHT_MODE == 0) return 1.0;
  const float w = is_k ? k_w[i] : q_w[i];
  return WEIGHT_MODE == 1 ? w : 1.0 + w;
}
#include "head_norm_rope.glsl"
shared uint tail_last;

// The chunk's tokens' tail for one head of matrix m (0 q, 1 k, 2 v): see the header. Every invocation calls it.
void head_tail(uint m, uint head, uint t0, uint ntok, uint n) {
  const uint tid = gl_LocalInvocationID.x, d = p.head_dim, half_d = d / 2;
  for (uint t = t0; t < t0 + ntok; ++t) {
    const uint at = t * n + head * d;
    uint dst = 0;
    if (m != 0) {
      const uint cache_pos = pos_of_token[t];
      const uint block = block_table[seq_of_token[t] * p.max_blocks_per_seq + cache_pos / p.block_size];
      dst = ((block * p.kv_heads + head) * p.block_size + cache_pos % p.block_size) * half_d;
    }
    if (m == 2) {
      for (uint w = tid; w < half_d; w += gl_WorkGroupSize.x)
        v_cache[dst + w] = packHalf2x16(vec2(y2[at + 2 * w], y2[at + 2 * w + 1]));
      continue;
    }
    barrier();  // the previous token's readers of hnr_row are done
    for (uint i = tid; i < d; i += gl_WorkGroupSize.x) hnr_row[i] = m == 0 ? y[at + i] : y1[at + i];
    const HeadRope rope = HeadRope(p.rotary_dim, p.rope_offset, ROPE_INTERLEAVED != 0, p.attention_factor);
    head_norm_rope(m == 1, d, p.head_eps, rope, pos[t]);
    for (uint i = tid; i < d; i += gl_WorkGroupSize.x) {
      if (m == 0) y[at + i] = hnr_row[i];
      else y1[at + i] = hnr_row[i];
    }
    if (m == 1)
      for (uint w = tid; w < half_d; w += gl_WorkGroupSize.x)
        k_cache[dst + w] = packHalf2x16(vec2(hnr_row[2 * w], hnr_row[2 * w + 1]));
  }
}
#endif

// Per-subgroup partial sums; assumes subgroups of at least 4 invocations.
shared float partial[gl_WorkGroupSize.x / 4 * (ROWS + SQ) * NT];

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint tid = gl_LocalInvocationID.x;
  const uint wg = flat_workgroup_id();
  const uint k4 = p.k >> 2;
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
#else
  const uint row_tiles = (p.n + ROWS - 1) / ROWS;
  const uint row0 = (wg % row_tiles) * ROWS;
#endif
  const uint pair = wg / row_tiles;
  const uint slot = slot_table[ids[pair]];
  if (slot == NO_SLOT) return;  // uniform: the expert is not in the bank for this pass (its y row is kept)
  const uint mat = p.w_base + slot * p.w_stride;
  const uint x_base = (p.x_per_slot != 0 ? pair : pair / p.top_k) * k4;
#if defined(SWIGLU)
  const uint y_base = pair * width;
#else
  const uint y_base = pair * p.n;
#endif
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
  const uint x_base = t0 * k4;
  const uint y_base = t0 * N;
  const uint last = p.tokens - 1 - t0;  // the chunk's last token; tokens past it re-read it, store nothing
  const uint pair_count = 1;
#endif
  // Rows past N (the last tile) read row N - 1 and store nothing.
  uint rows[ROWS];
#if defined(SWIGLU)
  // Rows 0 .. OUT - 1 are gate rows row0 + r, the rest the matching up rows I + row0 + r - OUT.
  for (uint r = 0; r < ROWS; ++r) rows[r] = r < OUT ? min(row0 + r, width - 1) : width + min(row0 + r - OUT, width - 1);
#else
  for (uint r = 0; r < ROWS; ++r) rows[r] = min(row0 + r, N - 1);
#endif

  float acc[ROWS * NT];
  for (uint i = 0; i < ROWS * NT; ++i) acc[i] = 0.0;
#if defined(NORM)
  float sq[NT];  // x's sum of squares over this invocation's units, per token
  for (uint t = 0; t < NT; ++t) sq[t] = 0.0;
#endif

  // COMBINE: the token's pairs go to groups of `lanes` invocations side by side, their loads in flight
  // together (as in mul_mat_vec_q4h.comp); every invocation's sums add into the same outputs.
#if defined(COMBINE)
  const uint lanes = pair_lanes(p.units, WG);
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
    const uint x_base = pair * k4;
    const float xw = route_w[pair];  // the pair's routing weight, folded into its x
#else
    const float xw = 1.0;
#endif
    for (uint u = lane; u < p.units; u += lanes) {
      uvec4 d[ROWS];
      for (uint r = 0; r < ROWS; ++r) d[r] = w_u128[mat + rows[r] * p.units + u];
  #ifdef WTYPE_QUANTIZED
      vec2 sm[ROWS];
      for (uint r = 0; r < ROWS; ++r) sm[r] = unit_scale(mat * 4 + SC, p.k, rows[r], u);
  #endif
  #if defined(Q4_DOT)
  #if defined(NORM)
      vec4 ns[8];  // the norm's scale of the unit's columns, shared by the tokens
      for (uint c = 0; c < 8; ++c) ns[c] = norm_w4[chunk_x4(u, c)] * p.norm_mul + p.norm_add;
  #endif
      for (uint t = 0; t < NT; ++t) {
        // The unit's 32 x values (chunks 0-3 meet the low nibbles, 4-7 the high ones) as int8 with scale dx.
        vec4 xv[8];
        float amax = 0.0;
        for (uint c = 0; c < 8; ++c) {
          const vec4 xr = x4[x_base + chunk_x4(u, c) + min(t, last) * k4];
  #if defined(NORM)
          sq[t] += dot(xr, xr);
          xv[c] = xr * ns[c];
  #else
          xv[c] = xr * xw;
  #endif
          const vec4 a = abs(xv[c]);
          amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
        }
        const float inv = amax > 0.0 ? 127.0 / amax : 0.0, dx = amax * (1.0 / 127.0);
        uint xq[8];
        int xs = 0;  // sum of the quantized x: the groups' min term
        for (uint c = 0; c < 8; ++c) {
          xq[c] = pack_s8(xv[c], inv);
          xs += dot4(xq[c], 0x01010101u);
        }
        const float xs_f = float(xs) * dx;
        for (uint r = 0; r < ROWS; ++r) {
          int q = 0;
          for (uint j = 0; j < 4; ++j) {
            q += dot4(xq[j], d[r][j] & 0x0F0F0F0Fu);
            q += dot4(xq[j + 4], (d[r][j] >> 4) & 0x0F0F0F0Fu);
          }
          acc[r * NT + t] += sm[r].x * dx * float(q) + sm[r].y * xs_f;
        }
      }
  #else
  #ifdef WTYPE_QUANTIZED
      float dq[ROWS * NT];  // sum of q * x over this unit
      float xsum[NT];       // sum of x over this unit (for q4's min)
      for (uint i = 0; i < ROWS * NT; ++i) dq[i] = 0.0;
      for (uint t = 0; t < NT; ++t) xsum[t] = 0.0;
  #endif
      for (uint c = 0; c < CHUNKS; ++c) {
        vec4 wc[ROWS];
        for (uint r = 0; r < ROWS; ++r) wc[r] = chunk_raw(d[r], c);
        const uint xi = x_base + chunk_x4(u, c);
  #if defined(NORM)
        const vec4 ns = norm_w4[chunk_x4(u, c)] * p.norm_mul + p.norm_add;
  #endif
        for (uint t = 0; t < NT; ++t) {
  #if defined(NORM)
          const vec4 xr = x4[xi + min(t, last) * k4];
          sq[t] += dot(xr, xr);
          const vec4 xv = xr * ns;
  #else
          const vec4 xv = x4[xi + min(t, last) * k4] * xw;
  #endif
  #ifdef WTYPE_QUANTIZED
          const vec4 xq = xv * chunk_xscale(c);
          xsum[t] += (xv.x + xv.y) + (xv.z + xv.w);
          for (uint r = 0; r < ROWS; ++r) dq[r * NT + t] = dot_add(wc[r], xq, dq[r * NT + t]);
  #else
          for (uint r = 0; r < ROWS; ++r) acc[r * NT + t] = dot_add(wc[r], xv, acc[r * NT + t]);
  #endif
        }
      }
  #ifdef WTYPE_QUANTIZED
      for (uint r = 0; r < ROWS; ++r)
        for (uint t = 0; t < NT; ++t)
  #ifdef WTYPE_Q4
          acc[r * NT + t] += sm[r].x * dq[r * NT + t] + sm[r].y * xsum[t];
  #else
          acc[r * NT + t] += sm[r].x * dq[r * NT + t];
  #endif
  #endif
  #endif  // Q4_DOT
    }
  }

  const uint RN = ROWS * NT, PS = (ROWS + SQ) * NT;  // outputs, and partial sums per subgroup
  for (uint i = 0; i < RN; ++i) {
    const float s = subgroupAdd(acc[i]);
    if (subgroupElect()) partial[gl_SubgroupID * PS + i] = s;
  }
#if defined(NORM)
  for (uint t = 0; t < NT; ++t) {
    const float s = subgroupAdd(sq[t]);
    if (subgroupElect()) partial[gl_SubgroupID * PS + RN + t] = s;
  }
#endif
  barrier();
#if defined(SWIGLU)
  for (uint i = tid; i < OUT; i += WG) {
    float g = 0.0, u = 0.0;
    for (uint sg = 0; sg < gl_NumSubgroups; ++sg) {
      g += partial[sg * PS + i];
      u += partial[sg * PS + OUT + i];
    }
    if (row0 + i < width) y[y_base + row0 + i] = g * sigmoid(g) * u;  // as glu.comp's swiglu
  }
#else
  for (uint i = tid; i < RN; i += WG) {
    float s = 0.0;
    for (uint g = 0; g < gl_NumSubgroups; ++g) s += partial[g * PS + i];
#if defined(NORM)
    float squares = 0.0;
    for (uint g = 0; g < gl_NumSubgroups; ++g) squares += partial[g * PS + RN + i % NT];
    s *= inversesqrt(squares / float(p.k) + p.norm_eps);
#endif
    const uint row = row0 + i / NT;
    if (row >= N || i % NT > last) continue;
    const uint at = y_base + (i % NT) * N + row;
#if defined(MULTI)
    if (m == 0) y[at] = s;
    else if (m == 1) y1[at] = s;
    else y2[at] = s;
#else
    store_y(at, s);
#endif
  }
#endif
#if defined(QK_TAIL)
  const uint heads = p.q_heads + 2 * p.kv_heads, head = row0 / p.head_dim;
  const uint counter = (wg % chunks) * heads + (m == 0 ? 0 : m == 1 ? p.q_heads : p.q_heads + p.kv_heads) + head;
  memoryBarrierBuffer();  // this workgroup's outputs are visible before it counts itself finished
  barrier();
  if (tid == 0) tail_last = atomicAdd(head_counts[counter], 1u) == p.head_dim / ROWS - 1 ? 1u : 0u;
  barrier();
  if (tail_last == 0) return;  // uniform
  memoryBarrierBuffer();
  head_tail(m, head, t0, min(NT, last + 1), N);
  if (tid == 0) head_counts[counter] = 0;  // for the next dispatch
#endif
}
