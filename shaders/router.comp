#version 450
// MoE router: logits [T, E] f32 -> ids [T, K] u32 and weights [T, K] f32, one workgroup per token.
//   ROUTER_MODE 0 (qwen3_moe, qwen3_5_moe, gemma4): select the top K logits (= top K softmax probabilities);
//     weight = softmax over all E at the selected experts; renormalized over the K when `normalize`.
//   ROUTER_MODE 1 (gpt_oss): select the top K of logit + bias; weight = softmax over the K selected values.
//   ROUTER_MODE 2 (deepseek): score = sigmoid(logit) (score_fn 0) or sqrt(softplus(logit)) (score_fn 1);
//     select the top K of score + bias; weight = selected score / (sum + 1e-20) when `normalize`.
// Every mode then multiplies weight k by `scale` and, when has_expert_scale, by expert_scale[id] (gemma4).
// The K outputs are in descending order of the selection value; ties go to the lower expert index.
// bias and expert_scale are [E] f32; bind any buffer when unused. E <= 512 (kMaxExperts), K <= 16.
// NaN logits leave the selection unspecified.
//
// With FUSED (decode and short verify blocks): the logits are computed here too, from bf16 router weights
// W [E, H] and x [T, H] f32 (T <= kFusedMaxTokens), one workgroup per kFusedRows experts, each row taken
// by one subgroup or split over several (below) for all tokens; the logits go to the logits buffer, and the last workgroup to finish
// (an atomic count of finished workgroups: every workgroup makes its logits visible before counting) routes
// every token as above and resets the count to 0 for the next dispatch. One dispatch and one barrier
// instead of two: on an H200 (2026-12-03) Qwen3-30B-A3B's router went from 5.7 + 8.2 to 11.6 us per layer;
// the routing itself now runs in the last workgroup, after the logits, and is most of what is left.
//
// With NORM as well (FUSED only): x is the MoE block's input before its RMSNorm, which this dispatch applies:
// each subgroup sums x's squares over the row in the same pass as its dot products, so the logits are
// (W (x * s)) / rms(x) with s the norm's scale (w * norm_mul + norm_add). Workgroups after the logit ones
// write the normed row h = x / rms(x) * s that the expert products read, f32 and (with `pack`) in the q4h form
// of mul_mat_vec_q4h.comp (q4h_funcs.glsl; h then a multiple of 64), two 64-column groups each, side by side
// with the logits rather than after them (after them, in the logit workgroups, the router took 0.7 us more
// on an H200: 11.2 against 10.5). The norm's own dispatch and barrier are gone (5.3 us); an earlier version
// that normed x before the logits in every workgroup lengthened the router's critical path by more than it
// saved (docs/performance.md).
//! variant router_softmax_topk -DROUTER_MODE=0
//! variant router_topk_softmax -DROUTER_MODE=1
//! variant router_biased_scores -DROUTER_MODE=2
//! variant router_fused_softmax_topk -DROUTER_MODE=0 -DFUSED
//! variant router_fused_topk_softmax -DROUTER_MODE=1 -DFUSED
//! variant router_fused_biased_scores -DROUTER_MODE=2 -DFUSED
//! variant router_fused_norm_softmax_topk -DROUTER_MODE=0 -DFUSED -DNORM
//! variant router_fused_norm_topk_softmax -DROUTER_MODE=1 -DFUSED -DNORM
//! variant router_fused_norm_biased_scores -DROUTER_MODE=2 -DFUSED -DNORM
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "math_funcs.glsl"
const uint kThreads = 128;
const uint kMaxExperts = 512;
const uint kMaxK = 16;
layout(local_size_x = 128) in;
#ifdef FUSED
// Experts per logit workgroup (ops/router.cpp picks it). Where the workgroup's subgroups divide evenly among
// them, each row is split over gl_NumSubgroups / kFusedRows subgroups (fewer loads in a row per invocation,
// more workgroups), their sums combined through shared memory.
layout(constant_id = 0) const uint kFusedRows = 4;
const uint kFusedMaxTokens = 8;
layout(binding = 0) coherent buffer Logits { float logits[]; };
layout(binding = 5) readonly buffer W { uvec4 w_u128[]; };
layout(binding = 6) readonly buffer X { vec4 x4[]; };
layout(binding = 7) coherent buffer Counter { uint finished[]; };
#ifdef NORM
layout(binding = 8) readonly buffer NormW { vec4 norm_w4[]; };
layout(binding = 9) writeonly buffer H { float h_out[]; };
layout(binding = 10) writeonly buffer XH { uvec4 xh[]; };
layout(binding = 11) writeonly buffer XG { vec2 xg[]; };
#endif
#else
layout(binding = 0) readonly buffer Logits { float logits[]; };
#endif
layout(binding = 1) readonly buffer Bias { float bias[]; };
layout(binding = 2) readonly buffer ExpertScale { float expert_scale[]; };
layout(binding = 3) writeonly buffer Ids { uint ids[]; };
layout(binding = 4) writeonly buffer Weights { float weights[]; };
layout(push_constant) uniform Push {
  uint tokens;
  uint experts;
  uint k;
  uint has_bias;
  uint has_expert_scale;
  uint normalize;
  uint score_fn;
  float scale;
#ifdef FUSED
  uint h;       // W's columns (a multiple of 8)
  uint w_base;  // W's first row, in 16-byte units from the start of binding 5
#endif
#ifdef NORM
  float eps;
  float norm_mul;  // the norm's scale is w * norm_mul + norm_add (ops::NormWeight)
  float norm_add;
  uint pack;       // 1: also write h's q4h form (h a multiple of 64)
#endif
} p;

shared float select_value[kMaxExperts];  // what ranks the experts
shared float logit_sh[kMaxExperts];
shared float red_value[kThreads];  // one per subgroup
shared float chosen_value[kMaxK];
shared uint chosen_index[kMaxK];

// True when (va, ia) ranks before (vb, ib): larger value first, lower index on ties.
bool before(float va, uint ia, float vb, uint ib) { return va > vb || (va == vb && ia < ib); }

float score_of(float logit) { return p.score_fn == 0 ? sigmoid(logit) : sqrt(softplus(logit)); }

// Routes token t: one workgroup, every invocation (it holds barriers).
void route_token(uint t) {
  const uint tid = gl_LocalInvocationID.x;
  barrier();  // a previous token's readers are done with the shared arrays
  const uint row = t * p.experts;

  for (uint e = tid; e < p.experts; e += kThreads) {
    const float l = logits[row + e];
    logit_sh[e] = l;  // read once: the fused kernel's logits buffer is coherent (every read goes to L2)
#if ROUTER_MODE == 0
    select_value[e] = l;
#elif ROUTER_MODE == 1
    select_value[e] = l + (p.has_bias != 0 ? bias[e] : 0.0);
#else
    select_value[e] = score_of(l) + (p.has_bias != 0 ? bias[e] : 0.0);
#endif
  }
  barrier();

  // Selection by rank: an expert's rank is the number of experts ordered before it, which is unique under
  // the (value desc, index asc) order, so ranks 0..K-1 fill the output slots with one barrier and no rounds.
  // Every comparison is made (no early exit once rank >= K): a subgroup waits for its slowest invocation
  // anyway, and straight-line groups of four independent reads keep the loads in flight.
  for (uint e = tid; e < p.experts; e += kThreads) {
    const float v = select_value[e];
    uint rank = 0;
    uint j = 0;
    for (; j + 4 <= p.experts; j += 4) {
      rank += (before(select_value[j], j, v, e) ? 1u : 0u) + (before(select_value[j + 1], j + 1, v, e) ? 1u : 0u);
      rank += (before(select_value[j + 2], j + 2, v, e) ? 1u : 0u) +
              (before(select_value[j + 3], j + 3, v, e) ? 1u : 0u);
    }
    for (; j < p.experts; ++j) rank += before(select_value[j], j, v, e) ? 1u : 0u;
    if (rank < p.k) {
      chosen_index[rank] = e;
      chosen_value[rank] = v;
    }
  }
  barrier();

#if ROUTER_MODE == 0
  // Softmax denominator over all E (the max logit is the first selected one).
  const float m = chosen_value[0];
  float sum = 0.0;
  for (uint e = tid; e < p.experts; e += kThreads) sum += exp(logit_sh[e] - m);
  sum = subgroupAdd(sum);
  if (subgroupElect()) red_value[gl_SubgroupID] = sum;
  barrier();
  float total = 0.0;
  for (uint s = 0; s < gl_NumSubgroups; ++s) total += red_value[s];
#endif

  if (tid == 0) {
    float w[kMaxK];
    float wsum = 0.0;
    for (uint r = 0; r < p.k; ++r) {
      const uint e = chosen_index[r];
#if ROUTER_MODE == 0
      w[r] = exp(logit_sh[e] - m) / total;
#elif ROUTER_MODE == 1
      w[r] = exp(chosen_value[r] - chosen_value[0]);
#else
      w[r] = score_of(logit_sh[e]);
#endif
      wsum += w[r];
    }
#if ROUTER_MODE == 1
    const float norm = 1.0 / wsum;
#elif ROUTER_MODE == 2
    const float norm = p.normalize != 0 ? 1.0 / (wsum + 1e-20) : 1.0;
#else
    const float norm = p.normalize != 0 ? 1.0 / wsum : 1.0;
#endif
    for (uint r = 0; r < p.k; ++r) {
      const uint e = chosen_index[r];
      float v = w[r] * norm * p.scale;
      if (p.has_expert_scale != 0) v *= expert_scale[e];
      ids[t * p.k + r] = e;
      weights[t * p.k + r] = v;
    }
  }
}

#ifdef FUSED
shared uint is_last;
#ifdef NORM
shared float half_sums[128];  // write_normed's sums of squares, one tree per 64-invocation half
#include "q4h_funcs.glsl"
#endif

shared float part_acc[kThreads * kFusedMaxTokens / 4];  // split rows: one sum per (subgroup, token)
#ifdef NORM
shared float part_ss[kThreads * kFusedMaxTokens / 4];
#endif

// logits[t, e] for the workgroup's experts and every token: `spr` subgroups per row, units (8 bf16 columns)
// strided over their invocations, four loads in flight. Every invocation calls it (a barrier when spr > 1).
void compute_logits() {
  const uint units = p.h / 8;
  const uint spr = gl_NumSubgroups % kFusedRows == 0 ? max(gl_NumSubgroups / kFusedRows, 1u) : 1u;
  const uint part = gl_SubgroupID % spr;
  const uint lane = part * gl_SubgroupSize + gl_SubgroupInvocationID, step = spr * gl_SubgroupSize;
  for (uint rr = gl_SubgroupID / spr; rr < kFusedRows; rr += gl_NumSubgroups / spr) {
    const uint e = flat_workgroup_id() * kFusedRows + rr;
    if (e >= p.experts) break;  // uniform in the subgroup
    const uint base = p.w_base + e * units;
    float acc[kFusedMaxTokens];
    [[unroll]] for (uint t = 0; t < kFusedMaxTokens; ++t) acc[t] = 0.0;
#ifdef NORM
    float ss[kFusedMaxTokens];  // x's sum of squares (every subgroup sums the whole row, in the same order)
    [[unroll]] for (uint t = 0; t < kFusedMaxTokens; ++t) ss[t] = 0.0;
#endif
    for (uint u0 = lane; u0 < units; u0 += 4 * step) {
      uvec4 d[4];
      [[unroll]] for (uint j = 0; j < 4; ++j) d[j] = u0 + j * step < units ? w_u128[base + u0 + j * step] : uvec4(0);
      [[unroll]] for (uint j = 0; j < 4; ++j) {
        const uint u = min(u0 + j * step, units - 1);  // past the row: d is zero
        const vec4 w0 = vec4(unpack_bf16x2(d[j].x), unpack_bf16x2(d[j].y));
        const vec4 w1 = vec4(unpack_bf16x2(d[j].z), unpack_bf16x2(d[j].w));
#ifdef NORM
        const bool counted = u0 + j * step < units;  // the clamped repeat of the last unit adds no squares
        const vec4 s0 = norm_w4[2 * u] * p.norm_mul + p.norm_add, s1 = norm_w4[2 * u + 1] * p.norm_mul + p.norm_add;
#endif
        [[unroll]] for (uint t = 0; t < kFusedMaxTokens; ++t) {
          if (t >= p.tokens) break;
          const uint xi = (t * p.h) / 4 + 2 * u;
#ifdef NORM
          const vec4 x0 = x4[xi], x1 = x4[xi + 1];
          if (counted) ss[t] += dot(x0, x0) + dot(x1, x1);
          acc[t] += dot(w0, x0 * s0) + dot(w1, x1 * s1);
#else
          acc[t] += dot(w0, x4[xi]) + dot(w1, x4[xi + 1]);
#endif
        }
      }
    }
    [[unroll]] for (uint t = 0; t < kFusedMaxTokens; ++t) {
      if (t >= p.tokens) break;
      const float a = subgroupAdd(acc[t]);
#ifdef NORM
      const float sq = subgroupAdd(ss[t]);
#endif
      if (spr > 1) {
        if (subgroupElect()) {
          part_acc[gl_SubgroupID * kFusedMaxTokens + t] = a;
#ifdef NORM
          part_ss[gl_SubgroupID * kFusedMaxTokens + t] = sq;
#endif
        }
        continue;
      }
#ifdef NORM
      const float sum = a * inversesqrt(sq / float(p.h) + p.eps);
#else
      const float sum = a;
#endif
      if (subgroupElect()) logits[t * p.experts + e] = sum;
    }
  }
  if (spr == 1) return;  // uniform
  barrier();
  // One invocation per (row, token) adds the row's parts in subgroup order.
  const uint tid = gl_LocalInvocationID.x, rr = tid / kFusedMaxTokens, t = tid % kFusedMaxTokens;
  const uint e = flat_workgroup_id() * kFusedRows + rr;
  if (rr >= kFusedRows || t >= p.tokens || e >= p.experts) return;
  float a = 0.0;
#ifdef NORM
  float sq = 0.0;
#endif
  for (uint s = rr * spr; s < rr * spr + spr; ++s) {
    a += part_acc[s * kFusedMaxTokens + t];
#ifdef NORM
    sq += part_ss[s * kFusedMaxTokens + t];
#endif
  }
#ifdef NORM
  a *= inversesqrt(sq / float(p.h) + p.eps);
#endif
  logits[t * p.experts + e] = a;
}

#ifdef NORM
// Packing workgroup `pw` (after the logit workgroups): h = x / rms(x) * s for column groups 2 pw and 2 pw + 1
// of the T x ceil(h / 64) groups, one per 64 invocations, each half summing its token's squares itself; f32,
// and with `pack` in q4h form. Every invocation calls it (barriers).
void write_normed(uint pw) {
  const uint tid = gl_LocalInvocationID.x, l = tid & 63u, half_base = tid - l;
  const uint groups = (p.h + 63) / 64, group = pw * 2 + tid / 64, t = min(group / groups, p.tokens - 1);
  const uint g = group % groups, c = g * 64 + l;
  const bool live = group < p.tokens * groups && c < p.h;  // (a partial last group only without `pack`)
  float ss = 0.0;
  for (uint i = l; i < p.h / 4; i += 64) {  // h % 8 == 0 here
    const vec4 xv = x4[t * (p.h / 4) + i];
    ss += dot(xv, xv);
  }
  half_sums[tid] = ss;
  barrier();
  for (uint s = 32; s > 0; s >>= 1) {
    if (l < s) half_sums[tid] += half_sums[tid + s];
    barrier();
  }
  float v = 0.0;
  if (live) {
    const uint i = t * p.h + c;
    v = x4[i / 4][i % 4] * inversesqrt(half_sums[half_base] / float(p.h) + p.eps) *
        (norm_w4[c / 4][c % 4] * p.norm_mul + p.norm_add);
    h_out[i] = v;
  }
  if (p.pack != 0) q4h_pack(v, live, t, g, p.h);
}
#endif

void main() {
  const uint groups = (p.experts + kFusedRows - 1) / kFusedRows;
#ifdef NORM
  if (flat_workgroup_id() >= groups) {
    write_normed(flat_workgroup_id() - groups);
    return;
  }
#endif
  compute_logits();
  memoryBarrierBuffer();  // this invocation's logits are visible before the workgroup counts itself finished
  barrier();
  if (gl_LocalInvocationID.x == 0) is_last = atomicAdd(finished[0], 1u) == groups - 1 ? 1u : 0u;
  barrier();
  if (is_last == 0) return;  // uniform
  memoryBarrierBuffer();
  for (uint t = 0; t < p.tokens; ++t) route_token(t);
  if (gl_LocalInvocationID.x == 0) finished[0] = 0;  // for the next dispatch (after a barrier)
}
#else
void main() {
  const uint t = flat_workgroup_id();
  if (t >= p.tokens) return;  // the whole workgroup
  route_token(t);
}
#endif
