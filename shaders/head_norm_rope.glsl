// One attention head's q or k row: RMSNorm over its D values, then rotary embedding, in place in shared memory,
// by a whole workgroup (every invocation calls it: it holds barriers). Shared by qk_norm_rope.comp (a workgroup
// per row) and mul_mat_vec.comp's QK_TAIL (the last workgroup of a head's q/k/v product). Arithmetic as
// rms_norm.comp (a shared-memory tree over the workgroup, a power of two; QK_TAIL sums with subgroups instead,
// see hnr_sum_squares) and rope.comp (NeoX halves or interleaved pairs, Cody-Waite reduced angles).
// The including shader includes common.glsl and math_funcs.glsl, declares inv_freq[] (the rotary inverse
// frequencies) and defines float hnr_weight(bool is_k, uint i), the norm's scale of column i, before this file.
#ifndef MACH_HEAD_NORM_ROPE_GLSL
#define MACH_HEAD_NORM_ROPE_GLSL

const uint kHnrMaxDim = 512;
shared float hnr_row[kHnrMaxDim];  // the row: the caller fills [0, d) and reads the result back
shared float hnr_partial[gl_WorkGroupSize.x];

struct HeadRope {
  uint rotary_dim;  // rotated dims (even), from `offset`
  uint offset;
  bool interleaved;  // pairs (2j, 2j + 1) instead of (j, j + rotary_dim / 2)
  float factor;      // attention_factor, multiplies cos and sin
};

// The row's sum of squares. HNR_SUBGROUP_SUM (the includer enables GL_KHR_shader_subgroup_arithmetic): one
// subgroupAdd and a sum over the subgroups, two barriers; else rms_norm.comp's shared-memory tree, log2(WG)
// barriers and the same bits as rms_norm for the same workgroup size.
float hnr_sum_squares(uint d) {
  const uint tid = gl_LocalInvocationID.x;
  barrier();  // the caller's writes of hnr_row (and a previous call's readers) are done
  float sum = 0.0;
  for (uint i = tid; i < d; i += gl_WorkGroupSize.x) sum += hnr_row[i] * hnr_row[i];
#ifdef HNR_SUBGROUP_SUM
  sum = subgroupAdd(sum);
  if (subgroupElect()) hnr_partial[gl_SubgroupID] = sum;
  barrier();
  float total = 0.0;
  for (uint g = 0; g < gl_NumSubgroups; ++g) total += hnr_partial[g];
  barrier();  // every invocation has read hnr_partial
  return total;
#else
  hnr_partial[tid] = sum;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (tid < s) hnr_partial[tid] += hnr_partial[tid + s];
    barrier();
  }
  return hnr_partial[0];
#endif
}

void head_norm_rope(bool is_k, uint d, float eps, HeadRope rope, uint position) {
  const uint tid = gl_LocalInvocationID.x;
  const float inv = inversesqrt(hnr_sum_squares(d) / float(d) + eps);
  for (uint i = tid; i < d; i += gl_WorkGroupSize.x) hnr_row[i] = hnr_row[i] * inv * hnr_weight(is_k, i);
  barrier();
  const uint half_rot = rope.rotary_dim / 2;
  for (uint j = tid; j < half_rot; j += gl_WorkGroupSize.x) {
    const float angle = reduce_angle(float(position) * inv_freq[j]);
    const float c = cos(angle) * rope.factor, s = sin(angle) * rope.factor;
    const uint a = rope.interleaved ? rope.offset + 2 * j : rope.offset + j;
    const uint b = rope.interleaved ? a + 1 : a + half_rot;
    const float x0 = hnr_row[a], x1 = hnr_row[b];
    hnr_row[a] = x0 * c - x1 * s;
    hnr_row[b] = x1 * c + x0 * s;
  }
  barrier();
}

#endif
