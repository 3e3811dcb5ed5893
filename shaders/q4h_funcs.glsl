// The q4h activation format of mul_mat_vec_q4h.comp (described in q4h_prep.comp's header), written one
// 64-column group at a time. Shared by q4h_prep.comp and rms_norm.comp's Q4H variants so both write the
// same bits for the same input.
// The including shader declares the xh (uvec4) and xg (vec2) buffers and defines Q4H_X(src, j): column j
// (0..63) of the group whose first column is at `src`, as f32.
#ifndef MACH_Q4H_FUNCS_GLSL
#define MACH_Q4H_FUNCS_GLSL

// Group g of row r of a [R, k] input: xh[r, 8g .. 8g + 7] and xg[r, 2g .. 2g + 1].
void q4h_store_group(uint src, uint r, uint g, uint k) {
  float m = 0.0;
  for (uint j = 0; j < 64; ++j) m = max(m, abs(Q4H_X(src, j)));
  const float inv = m > 0.0 ? 1.0 / m : 0.0;
  for (uint h = 0; h < 2; ++h) {
    float sum = 0.0;
    for (uint i = 0; i < 4; ++i) {
      const uint b = 16 * h + 4 * i;
      xh[r * (k / 8) + (2 * g + h) * 4 + i] =
          uvec4(packHalf2x16(vec2(Q4H_X(src, b), Q4H_X(src, b + 2)) * inv),
                packHalf2x16(vec2(Q4H_X(src, b + 32), Q4H_X(src, b + 34)) * inv),
                packHalf2x16(vec2(Q4H_X(src, b + 1), Q4H_X(src, b + 3)) * inv),
                packHalf2x16(vec2(Q4H_X(src, b + 33), Q4H_X(src, b + 35)) * inv));
      for (uint j = 0; j < 4; ++j) sum += Q4H_X(src, b + j) + Q4H_X(src, b + 32 + j);
    }
    xg[r * (k / 32) + 2 * g + h] = vec2(m, sum);
  }
}

#endif
