#version 450
// Embedding gather: out[t, c] = table[ids[t], c] * multiplier, table: [V, H] in one weight format of
// src/ops/weight_format.hpp (read as 32-bit words and unpacked here), ids: [T] u32, out: [T, H] f32.
// An id >= V gives a zero row. One invocation per output element.
//! variant get_rows_f32 -DWTYPE=0
//! variant get_rows_f16 -DWTYPE=1
//! variant get_rows_bf16 -DWTYPE=2
//! variant get_rows_q8_0 -DWTYPE=3
//! variant get_rows_q4 -DWTYPE=4
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Table { uint table[]; };
layout(binding = 1) readonly buffer Ids { uint ids[]; };
layout(binding = 2) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform Push {
  uint tokens;
  uint rows;           // V
  uint cols;           // H
  uint scales_word;    // scales_offset / 4 (quantized formats)
  float multiplier;
} p;

// Byte b of the table as an unsigned value.
uint table_byte(uint b) { return (table[b >> 2] >> ((b & 3u) * 8u)) & 0xffu; }
// 16-bit half h (element index) of the table.
uint table_half(uint h) { return (table[h >> 1] >> ((h & 1u) * 16u)) & 0xffffu; }

float load(uint r, uint c) {
  const uint e = r * p.cols + c;
#if WTYPE == 0
  return uintBitsToFloat(table[e]);
#elif WTYPE == 1
  return unpackHalf2x16(table_half(e)).x;
#elif WTYPE == 2
  return bf16_to_float(table_half(e));
#elif WTYPE == 3
  const int q = int(table_byte(e) << 24) >> 24;
  const float d = unpackHalf2x16(table_half(p.scales_word * 2 + e / 32)).x;
  return d * float(q);
#else
  const uint group = e / 64, j = e % 64;
  const uint packed = table_byte(group * 32 + (j & 31u));
  const uint q = j < 32 ? (packed & 15u) : (packed >> 4);
  const vec2 scale_min = unpackHalf2x16(table[p.scales_word + group]);
  return scale_min.x * float(q) + scale_min.y;
#endif
}

void main() {
  const uint idx = flat_workgroup_id() * 256 + gl_LocalInvocationID.x;
  if (idx >= p.tokens * p.cols) return;
  const uint t = idx / p.cols, c = idx % p.cols;
  const uint r = ids[t];
  outv[idx] = r < p.rows ? load(r, c) * p.multiplier : 0.0;
}
