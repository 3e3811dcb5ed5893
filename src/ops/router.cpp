#include "ops/router.hpp"

#include <cassert>
#include <cstddef>
#include <utility>

#include "gpu/context.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"

namespace mach::ops {

namespace {

constexpr const char* kNames[] = {"router_softmax_topk", "router_topk_softmax", "router_biased_scores"};
constexpr const char* kFusedNames[] = {"router_fused_softmax_topk", "router_fused_topk_softmax",
                                       "router_fused_biased_scores"};
constexpr const char* kFusedNormNames[] = {"router_fused_norm_softmax_topk", "router_fused_norm_topk_softmax",
                                           "router_fused_norm_biased_scores"};
constexpr uint32_t kFusedRows = 4;  // router.comp's kFusedRows

// Mirrors router.comp's push constants (h and w_base only with FUSED, eps and norm_mode only with NORM).
struct RouterPush {
  uint32_t tokens, experts, k, has_bias, has_expert_scale, normalize, score_fn;
  float scale;
  uint32_t h = 0, w_base = 0;
  float eps = 0;
  uint32_t norm_mode = 0;
};

bool fused(const WeightRef& w, const RouterParams& params) {
  return w.type == WeightType::bf16 && w.cols % 8 == 0 && params.tokens <= kRouterFusedMaxTokens;
}

RouterPush router_push(const RouterParams& params) {
  assert(params.experts > 0 && params.experts <= kRouterMaxExperts);
  assert(params.k > 0 && params.k <= kRouterMaxK && params.k <= params.experts);
  return {params.tokens,           params.experts,   params.k, params.has_bias, params.has_expert_scale,
          params.normalize,        static_cast<uint32_t>(params.score), params.scale};
}

// The fused kernel's push constants and router weights binding.
std::pair<RouterPush, WeightBinding> fused_call(gpu::Context& context, const WeightRef& w, const RouterParams& params) {
  RouterPush push = router_push(params);
  const WeightBinding wb = bind_weights(context, *w.buffer, w.offset, weight_bytes(w.type, w.rows, w.cols));
  push.h = w.cols;
  push.w_base = wb.base_units;
  return {push, wb};
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
  if (!fused(w, params)) {
    logits.access = gpu::Access::write;
    mul_mat(cmd, w, x, logits, params.tokens);
    logits.access = gpu::Access::read;
    route(cmd, logits, bias, expert_scale, ids, weights, params);
    return;
  }
  if (params.tokens == 0) return;
  const auto [push, wb] = fused_call(cmd.context(), w, params);
  logits.access = finished.access = gpu::Access::read_write;
  const auto& pipeline = cmd.context().pipeline(kFusedNames[static_cast<uint32_t>(params.mode)]);
  cmd.dispatch(pipeline, {logits, bias, expert_scale, ids, weights, wb.binding, x, finished}, &push,
               offsetof(RouterPush, eps), gpu::flat_groups(gpu::div_up(params.experts, kFusedRows)));
}

void norm_route_logits(gpu::CommandList& cmd, const RouterNorm& norm, const WeightRef& w, gpu::Binding logits,
                       gpu::Binding finished, gpu::Binding bias, gpu::Binding expert_scale, gpu::Binding ids,
                       gpu::Binding weights, const RouterParams& params) {
  assert(w.rows == params.experts && w.cols % 64 == 0);
  gpu::Binding y = norm.y, xh = norm.xh, xg = norm.xg;
  y.access = xh.access = xg.access = gpu::Access::write;
  if (!fused(w, params)) {
    rms_norm_q4h(cmd, norm.x, norm.weight, y, xh, xg, {params.tokens, w.cols}, norm.eps, norm.mode);
    y.access = gpu::Access::read;
    route_logits(cmd, w, y, logits, finished, bias, expert_scale, ids, weights, params);
    return;
  }
  if (params.tokens == 0) return;
  auto [push, wb] = fused_call(cmd.context(), w, params);
  push.eps = norm.eps;
  push.norm_mode = static_cast<uint32_t>(norm.mode);
  logits.access = finished.access = gpu::Access::read_write;
  const auto& pipeline = cmd.context().pipeline(kFusedNormNames[static_cast<uint32_t>(params.mode)]);
  cmd.dispatch(pipeline,
               {logits, bias, expert_scale, ids, weights, wb.binding, norm.x, finished, norm.weight, y, xh, xg},
               push, gpu::flat_groups(gpu::div_up(params.experts, kFusedRows)));
}

}  // namespace mach::ops
