// MoE routers on the GPU: logits [T, E] -> the K experts of every token and their weights.
//
// Contract for every mode: ids [T, K] u32 and weights [T, K] f32, listed in descending order of the
// selection value; equal selection values go to the lower expert index (torch.topk leaves ties unspecified).
// E <= kRouterMaxExperts, K <= kRouterMaxK, K <= E.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/weight_format.hpp"

namespace mach::ops {

inline constexpr uint32_t kRouterMaxExperts = 512;
inline constexpr uint32_t kRouterMaxK = 16;

enum class RouterMode : uint32_t {
  // qwen3_moe, qwen3_5_moe, gemma4: p = softmax(logits) over all E; select the top K (ranked by logit, which
  // orders like p); weight = p, divided by the sum of the K when `normalize` (norm_topk_prob; gemma4 always).
  softmax_topk = 0,
  // gpt_oss: v = logits + bias (bias optional); select the top K of v; weight = softmax over the K selected v.
  topk_softmax = 1,
  // deepseek: s = score(logits); select the top K of s + bias (e_score_correction_bias, optional);
  // weight = s (without bias), divided by (sum of the K + 1e-20) when `normalize`.
  biased_scores = 2,
};

enum class RouterScore : uint32_t {
  sigmoid = 0,         // DeepSeek-V3
  sqrt_softplus = 1,   // DeepSeek-V4 ("sqrtsoftplus")
};

struct RouterParams {
  RouterMode mode = RouterMode::softmax_topk;
  uint32_t tokens = 0;
  uint32_t experts = 0;
  uint32_t k = 0;
  bool normalize = true;       // ignored by topk_softmax (its softmax already sums to 1)
  RouterScore score = RouterScore::sigmoid;  // biased_scores only
  float scale = 1.0f;          // routed_scaling_factor (deepseek); 1 elsewhere
  bool has_bias = false;            // bias: [E] f32
  bool has_expert_scale = false;    // expert_scale: [E] f32, multiplies the final weight (gemma4 per_expert_scale)
};

// logits: [T, E] f32; bias, expert_scale: [E] f32 (bind any buffer when unused); ids: [T, K] u32;
// weights: [T, K] f32. Weights end up multiplied by `scale` and, when given, expert_scale[id].
void route(gpu::CommandList& cmd, gpu::Binding logits, gpu::Binding bias, gpu::Binding expert_scale,
           gpu::Binding ids, gpu::Binding weights, const RouterParams& params);

// The largest T of route_logits' fused kernel.
inline constexpr uint32_t kRouterFusedMaxTokens = 8;

// logits = x w^T (w: [E, H] router weights, x: [T, H] f32, logits: [T, E] f32), then route(). Where w is bf16,
// H a multiple of 8 and T <= kRouterFusedMaxTokens, both run in one dispatch (router.comp's FUSED); else
// mul_mat and route. `finished`: 4 bytes holding 0 (Context::fill) used by no other op; the fused kernel
// leaves it 0 again.
void route_logits(gpu::CommandList& cmd, const WeightRef& w, gpu::Binding x, gpu::Binding logits,
                  gpu::Binding finished, gpu::Binding bias, gpu::Binding expert_scale, gpu::Binding ids,
                  gpu::Binding weights, const RouterParams& params);

// The MoE block's RMSNorm and route_logits together: h = rms_norm(x) [T, H] f32 for the expert products, its
// q4h form into *h_q4h when given (PreparedX of rows T, k H: the scratch the caller made), and the routing of
// the logits of h (H % 64 == 0 with h_q4h). Where route_logits fuses, one dispatch: router.comp's NORM
// computes the logits from x with the norm folded in and then writes h; else rms_norm(_q4h), then
// route_logits.
void route_logits(gpu::CommandList& cmd, const WeightRef& w, const NormedX& x, gpu::Binding h, const PreparedX* h_q4h,
                  gpu::Binding logits, gpu::Binding finished, gpu::Binding bias, gpu::Binding expert_scale,
                  gpu::Binding ids, gpu::Binding weights, const RouterParams& params);

}  // namespace mach::ops
