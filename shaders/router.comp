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
//! variant router_softmax_topk -DROUTER_MODE=0
//! variant router_topk_softmax -DROUTER_MODE=1
//! variant router_biased_scores -DROUTER_MODE=2
#include "common.glsl"
#include "math_funcs.glsl"
const uint kThreads = 128;
const uint kMaxExperts = 512;
const uint kMaxK = 16;
layout(local_size_x = 128) in;
layout(binding = 0) readonly buffer Logits { float logits[]; };
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
} p;

shared float select_value[kMaxExperts];  // what ranks the experts
shared float red_value[kThreads];
shared float chosen_value[kMaxK];
shared uint chosen_index[kMaxK];

// True when (va, ia) ranks before (vb, ib): larger value first, lower index on ties.
bool before(float va, uint ia, float vb, uint ib) { return va > vb || (va == vb && ia < ib); }

float score_of(float logit) { return p.score_fn == 0 ? sigmoid(logit) : sqrt(softplus(logit)); }

void main() {
  const uint t = flat_workgroup_id();
  if (t >= p.tokens) return;
  const uint tid = gl_LocalInvocationID.x;
  const uint row = t * p.experts;

  for (uint e = tid; e < p.experts; e += kThreads) {
    const float l = logits[row + e];
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
  for (uint e = tid; e < p.experts; e += kThreads) sum += exp(logits[row + e] - m);
  red_value[tid] = sum;
  barrier();
  for (uint s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) red_value[tid] += red_value[tid + s];
    barrier();
  }
  const float total = red_value[0];
#endif

  if (tid != 0) return;
  float w[kMaxK];
  float wsum = 0.0;
  for (uint r = 0; r < p.k; ++r) {
    const uint e = chosen_index[r];
#if ROUTER_MODE == 0
    w[r] = exp(logits[row + e] - m) / total;
#elif ROUTER_MODE == 1
    w[r] = exp(chosen_value[r] - chosen_value[0]);
#else
    w[r] = score_of(logits[row + e]);
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
