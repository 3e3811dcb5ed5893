#include "ops/router.hpp"

#include <cassert>

#include "gpu/context.hpp"

namespace mach::ops {

void route(gpu::CommandList& cmd, gpu::Binding logits, gpu::Binding bias, gpu::Binding expert_scale,
           gpu::Binding ids, gpu::Binding weights, const RouterParams& params) {
  assert(params.experts > 0 && params.experts <= kRouterMaxExperts);
  assert(params.k > 0 && params.k <= kRouterMaxK && params.k <= params.experts);
  static constexpr const char* kNames[] = {"router_softmax_topk", "router_topk_softmax", "router_biased_scores"};
  const auto& pipeline = cmd.context().pipeline(kNames[static_cast<uint32_t>(params.mode)]);
  struct {
    uint32_t tokens, experts, k, has_bias, has_expert_scale, normalize, score_fn;
    float scale;
  } push{params.tokens,
         params.experts,
         params.k,
         params.has_bias,
         params.has_expert_scale,
         params.normalize,
         static_cast<uint32_t>(params.score),
         params.scale};
  if (params.tokens == 0) return;
  cmd.dispatch(pipeline, {logits, bias, expert_scale, ids, weights}, push, gpu::flat_groups(params.tokens));
}

}  // namespace mach::ops
