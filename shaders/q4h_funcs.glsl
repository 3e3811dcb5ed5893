// The q4h activation format of mul_mat_vec_q4h.comp (described in q4h_prep.comp's header), written by a
// workgroup together: each 64 invocations pack one 64-column group, one column each. Shared by q4h_prep.comp
// and rms_norm.comp's Q4H variants so both write the same bits for the same input (the same reduction trees).
// The including shader declares the xh (uvec4) and xg (vec2) buffers and its workgroup size (a multiple of 64)
// before including this file.
// One thread per group looping over its 64 columns (the first version) read back ~200 values serially and
// took 12-23 us per call on an H200 for a 2048-4096 column row: most of a decode step's norm time.
#ifndef MACH_Q4H_FUNCS_GLSL
#define MACH_Q4H_FUNCS_GLSL

shared float q4h_value[gl_WorkGroupSize.x];
shared float q4h_max[gl_WorkGroupSize.x];
shared float q4h_sum[gl_WorkGroupSize.x];

// Every invocation of the workgroup calls this (it holds barriers) with one value: invocations 64s .. 64s + 63
// hold columns 0..63 of group g of row r of a [R, k] input. A segment whose `live` is false writes nothing.
// Writes xh[r, 8g .. 8g + 7] and xg[r, 2g .. 2g + 1].
void q4h_pack(float v, bool live, uint r, uint g, uint k) {
  const uint t = gl_LocalInvocationID.x;
  const uint l = t & 63u;
  const uint base = t - l;
  barrier();  // a previous call's readers are done with the shared arrays
  q4h_value[t] = v;
  q4h_max[t] = abs(v);
  q4h_sum[t] = v;
  barrier();
  // The group's max over all 64 columns; the sum per 32-column unit, whose columns are those with bit 4 of l
  // equal to the unit (h = 0: 0-15 and 32-47, h = 1: 16-31 and 48-63): after the stride-32 step, a tree within
  // each 16-column half leaves unit 0's sum at l = 0 and unit 1's at l = 16.
  for (uint s = 32u; s > 0u; s >>= 1) {
    if (l < s) q4h_max[t] = max(q4h_max[t], q4h_max[t + s]);
    if (s != 16u && l < 32u && (l & 15u) < s) q4h_sum[t] += q4h_sum[t + s];
    barrier();
  }
  if (!live || l >= 32u) return;
  const float m = q4h_max[base];
  const float inv = m > 0.0 ? 1.0 / m : 0.0;
  // Invocation l writes word i, component c of unit h; component c holds the pair (b, b + 2) for c = 0,
  // (b + 32, b + 34) for 1, (b + 1, b + 3) for 2 and (b + 33, b + 35) for 3, with b = 16h + 4i.
  const uint h = l >> 4, i = (l >> 2) & 3u, c = l & 3u;
  const uint col = base + 16u * h + 4u * i + ((c & 1u) != 0u ? 32u : 0u) + (c >= 2u ? 1u : 0u);
  xh[r * (k / 8u) + (2u * g + h) * 4u + i][c] = packHalf2x16(vec2(q4h_value[col], q4h_value[col + 2u]) * inv);
  if ((l & 15u) == 0u) xg[r * (k / 32u) + 2u * g + h] = vec2(m, q4h_sum[base + 16u * h]);
}

#endif
