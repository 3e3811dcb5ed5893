#include "ops/router.hpp"

#include <cassert>
#include <cstddef>

#include "gpu/context.hpp"
#include "ops/matmul.hpp"

namespace mach::ops {

namespace {

constexpr const char* kNames[] = {"router_softmax_topk", "router_topk_softmax", "router_biased_scores"};
constexpr const char* kFusedNames[] = {"router_fused_softmax_topk", "router_fused_topk_softmax",
                                       "router_fused_biased_scores"};
constexpr uint32_t kFusedRows = 4;  // router.comp's kFusedRows

// Mirrors router.comp's push constants (the last two only with FUSED).
struct RouterPush {
  uint32_t tokens, experts, k, has_bias, has_expert_scale, normalize, score_fn;
  float scale;
  uint32_t h = 0, w_base = 0;
};

RouterPush router_push(const RouterParams& params) {
  assert(params.experts > 0 && params.experts <= kRouterMaxExperts);
  assert(params.k > 0 && params.k <= kRouterMaxK && params.k <= params.experts);
  return {params.tokens,           params.experts,   params.k, params.has_bias, params.has_expert_scale,
          params.normalize,        static_cast<uint32_t>(params.score), params.scale};
}

}  // namespace

void route(gpu::CommandList& cmd, gpu::Binding logits, gpu::Binding bias, gpu::Binding expert_scale,
           gpu::Binding ids, gpu::Binding weights, const RouterParams& params) {
  const RouterPush push = router_push(params);
  if (params.tokens == 0) return;
  const auto& pipeline = cmd.context().pipeline(kNames[static_cast<uint32_t>(params.mode)]);
  // Without FUSED the shader's block ends before h.
  cmd.dispatch(pipeline, {logits, bias, expert_scale, ids, weights}, &push, offsetof(RouterPush, h),
               gpu::flat_groups(params.tokens));
}

void route_logits(gpu::CommandList& cmd, const WeightRef& w, gpu::Binding x, gpu::Binding logits,
                  gpu::Binding finished, gpu::Binding bias, gpu::Binding expert_scale, gpu::Binding ids,
                  gpu::Binding weights, const RouterParams& params) {
  assert(w.rows == params.experts);
  if (w.type != WeightType::bf16 || w.cols % 8 != 0 || params.tokens > kRouterFusedMaxTokens) {
    logits.access = gpu::Access::write;
    mul_mat(cmd, w, x, logits, params.tokens);
    logits.access = gpu::Access::read;
    route(cmd, logits, bias, expert_scale, ids, weights, params);
    return;
  }
  RouterPush push = router_push(params);
  if (params.tokens == 0) return;
  const WeightBinding wb = bind_weights(cmd.context(), *w.buffer, w.offset, weight_bytes(w.type, w.rows, w.cols));
  push.h = w.cols;
  push.w_base = wb.base_units;
  logits.access = finished.access = gpu::Access::read_write;
  const auto& pipeline = cmd.context().pipeline(kFusedNames[static_cast<uint32_t>(params.mode)]);
  cmd.dispatch(pipeline, {logits, bias, expert_scale, ids, weights, wb.binding, x, finished}, push,
               gpu::flat_groups(gpu::div_up(params.experts, kFusedRows)));
}

}  // namespace mach::ops
