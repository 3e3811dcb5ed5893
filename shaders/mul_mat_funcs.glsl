// Weight decoding shared by mul_mat_vec.comp and mul_mat.comp. Exactly one WTYPE_* is defined.
//
// A weight row is read as 16-byte "units" (uvec4), so every load is one aligned 128-bit access. A unit holds
// CHUNKS vec4 "chunks" of 4 consecutive columns each; chunk c of unit u starts at column 4 * chunk_x4(u, c).
// Layouts are those of src/ops/weight_format.hpp:
//   f32   1 chunk   cols 4u..4u+3
//   f16   2 chunks  cols 8u..8u+7            (unpackHalf2x16)
//   bf16  2 chunks  cols 8u..8u+7            (shifts)
//   q8_0  4 chunks  cols 16u..16u+15         group g = u / 2 of 32 cols, w = d * q
//   q4    8 chunks  group g = u / 2 of 64 cols, half h = u % 2 holds bytes 16h..16h+15 of the group:
//                   low nibbles are cols 64g+16h+0..15 (chunks 0-3), high nibbles cols 64g+32+16h+0..15
//                   (chunks 4-7); w = scale * q + min
//
// Quantized chunks are decoded without int->float conversion instructions (slow on NVIDIA: 16/clk/SM):
// the integer bits are ORed into the mantissa of 2^23 (0x4B000000) where they already sit, and 2^23 is
// subtracted, giving q * 2^b exactly, with b the bit position of the field (b <= 16 keeps the field inside
// the mantissa). chunk_raw() returns those q * 2^b values and chunk_xscale() the matching 2^-b factors,
// which the kernels fold into x (shared by every row of a workgroup, so it costs nothing per weight):
//   sum_j w_j x_j = scale * sum_j (q_j 2^b_j) (x_j 2^-b_j) + min * sum_j x_j
#ifndef MACH_MUL_MAT_FUNCS_GLSL
#define MACH_MUL_MAT_FUNCS_GLSL

#if defined(WTYPE_F32)
const uint CHUNKS = 1;
#elif defined(WTYPE_F16) || defined(WTYPE_BF16)
const uint CHUNKS = 2;
#elif defined(WTYPE_Q8_0)
const uint CHUNKS = 4;
#define WTYPE_QUANTIZED 1
#elif defined(WTYPE_Q4)
const uint CHUNKS = 8;
#define WTYPE_QUANTIZED 1
#else
#error "define one WTYPE_*"
#endif

// Push constants of both kernels; ops/matmul.cpp's MulMatPush mirrors this block.
layout(push_constant) uniform Push {
  uint n;           // rows of W: output features N
  uint k;           // cols of W: input features K
  uint units;       // 16-byte units per weight row (the quants of a row for quantized types)
  uint w_base;      // first matrix, in 16-byte units from the start of binding 0
  uint w_stride;    // between experts (slots) of a stack, in 16-byte units
  uint scales;      // a matrix's scales region from its start, in 32-bit words
  uint tokens;      // T
  uint top_k;       // mul_mat_id: slots per token
  uint x_per_slot;  // mul_mat_id: 1 when x is [T, top_k, K], 0 when it is [T, K]
  uint experts;     // mul_mat_id: entries of the slot table
  uint accumulate;  // 1: y += W x (y bound read-write), 0: y = W x
#ifdef MULTI
  uint n1, w_base1, scales1;  // MULTI: the second matrix (as n, w_base, scales)
  uint n2, w_base2, scales2;  // the third (n2 = 0: none)
#endif
#ifdef NORM
  float norm_eps;  // mul_mat_vec.comp's NORM: x's RMSNorm, scale = w * norm_mul + norm_add (ops::NormWeight)
  float norm_mul;
  float norm_add;
#endif
#ifdef QK_TAIL
  uint q_heads, kv_heads, head_dim;  // mul_mat_vec.comp's QK_TAIL (ops::QkvTail): n = q_heads * head_dim, ...
  uint rotary_dim, rope_offset;
  float head_eps, attention_factor;
  uint block_size, max_blocks_per_seq;
#endif
} p;

#ifdef MULTI
// MULTI (two or three matrices of one weight binding times the same x, each into its own y): the row tiles of
// matrix 0, then 1, then 2 follow each other in the grid. Turns the grid's row tile into the matrix m and the
// tile within it, with that matrix's n, w_base and scales.
void multi_matrix(inout uint tile, uint rows_per_tile, out uint m, out uint n, out uint w_base, out uint scales) {
  const uint tiles0 = (p.n + rows_per_tile - 1) / rows_per_tile, tiles1 = (p.n1 + rows_per_tile - 1) / rows_per_tile;
  m = 0, n = p.n, w_base = p.w_base, scales = p.scales;
  if (tile >= tiles0) {
    tile -= tiles0, m = 1, n = p.n1, w_base = p.w_base1, scales = p.scales1;
    if (tile >= tiles1) tile -= tiles1, m = 2, n = p.n2, w_base = p.w_base2, scales = p.scales2;
  }
}
#endif

// Stores one output: overwrites y[i], or adds to it with p.accumulate (the host then binds y read-write).
// `y` is the kernel's output buffer, declared before this file is included.
void store_y(uint i, float v) { y[i] = p.accumulate != 0 ? y[i] + v : v; }

// A slot-table entry for an expert with no slot in the stack (ops::kNoSlot): mul_mat_id skips its pairs and
// leaves their y rows as they were, so a streaming step can run a layer's experts in passes over a small bank.
const uint NO_SLOT = 0xFFFFFFFFu;

const float MAGIC_F = 8388608.0;  // 2^23
const uint MAGIC_U = 0x4B000000u;

// Column / 4 (an index into x read as vec4) of chunk c of unit u, relative to the row start.
uint chunk_x4(uint u, uint c) {
#if defined(WTYPE_Q4)
  return (u >> 1) * 16 + (c >> 2) * 8 + (u & 1) * 4 + (c & 3);
#else
  return u * CHUNKS + c;
#endif
}

// The 4 values of chunk c (weights for float types; q * 2^b for quantized ones, see above).
vec4 chunk_raw(uvec4 d, uint c) {
#if defined(WTYPE_F32)
  return uintBitsToFloat(d);
#elif defined(WTYPE_F16)
  return c == 0 ? vec4(unpackHalf2x16(d.x), unpackHalf2x16(d.y)) : vec4(unpackHalf2x16(d.z), unpackHalf2x16(d.w));
#elif defined(WTYPE_BF16)
  const uvec2 p = c == 0 ? d.xy : d.zw;
  return uintBitsToFloat(uvec4(p.x << 16, p.x & 0xffff0000u, p.y << 16, p.y & 0xffff0000u));
#elif defined(WTYPE_Q8_0)
  // Bytes 0 and 1 stay in place (b = 0, 8); bytes 2 and 3 are shifted down by 16 first. Flipping the sign bit
  // makes each byte q + 128, so subtracting 2^23 + 128 * 2^b leaves q * 2^b (exact: Sterbenz).
  const uint w = d[c] ^ 0x80808080u;
  const uint h = w >> 16;
  const vec4 f = uintBitsToFloat(uvec4(w & 0xffu, w & 0xff00u, h & 0xffu, h & 0xff00u) | MAGIC_U);
  return f - vec4(MAGIC_F + 128.0, MAGIC_F + 32768.0, MAGIC_F + 128.0, MAGIC_F + 32768.0);
#elif defined(WTYPE_Q4)
  // Low nibbles sit at bits 0, 8, 16, 24 and high ones at 4, 12, 20, 28 of word d[c & 3]; the word is also
  // shifted down by 12 so that bits 20, 24, 28 land at 8, 12, 16.
  const uint w = d[c & 3];
  const uint s = w >> 12;
  const uvec4 bits = c < 4 ? uvec4(w & 0xfu, w & 0xf00u, w & 0xf0000u, s & 0xf000u)
                           : uvec4(w & 0xf0u, w & 0xf000u, s & 0xf00u, s & 0xf0000u);
  return uintBitsToFloat(bits | MAGIC_U) - MAGIC_F;
#endif
}

// The factors that undo chunk_raw()'s 2^b, applied to x.
vec4 chunk_xscale(uint c) {
#if defined(WTYPE_Q8_0)
  return vec4(1.0, 1.0 / 256.0, 1.0, 1.0 / 256.0);
#elif defined(WTYPE_Q4)
  return c < 4 ? vec4(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 4096.0)
               : vec4(1.0 / 16.0, 1.0 / 4096.0, 1.0 / 256.0, 1.0 / 65536.0);
#else
  return vec4(1.0);
#endif
}

// acc + dot(a, b) as one chain of fused multiply-adds (dot() then += costs an extra add).
float dot_add(vec4 a, vec4 b, float acc) { return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, acc)))); }

#if defined(WTYPE_QUANTIZED)
// (scale, min) of the group that unit u of `row` belongs to. `scales` is the word index of the matrix's
// scales region in `scales_u32`, a uint view of the weight buffer the kernel declares before including this
// file; `k` is the row length in columns.
#if defined(WTYPE_Q8_0)
vec2 unit_scale(uint scales, uint k, uint row, uint u) {
  const uint g = row * (k >> 5) + (u >> 1);
  const uint word = scales_u32[scales + (g >> 1)];
  return vec2(unpackHalf2x16(word >> ((g & 1) * 16)).x, 0.0);
}
#else
vec2 unit_scale(uint scales, uint k, uint row, uint u) {
  return unpackHalf2x16(scales_u32[scales + row * (k >> 6) + (u >> 1)]);
}
#endif
#endif

#endif
