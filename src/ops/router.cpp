#include "ops/router.hpp"

#include <cassert>
#include <cstddef>
#include <cstdio>
#include <cstdlib>

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
// Experts per logit workgroup of the fused kernels (router.comp's kFusedRows): $MACH_ROUTER_ROWS (1..16)
// overrides, read at every call for ops_bench --sweep. One row per workgroup of 128 invocations, split over
// its subgroups: Qwen3-30B-A3B's decode router (normed, q4h pack) on an H200 (2026-12-04,
// docs/perf/2026-12-04-h200-ops-router-rows.jsonl) took 9.06 us against 10.43 with 4 rows of one subgroup each
// (2 rows: 9.47, 8: 11.74, 16: 14.98); decode went from 375.6 to 388.5 tok/s.
uint32_t fused_rows() {
  uint32_t rows = 1;
  if (const char* env = std::getenv("MACH_ROUTER_ROWS"); env && *env) {
    const unsigned long v = std::strtoul(env, nullptr, 10);
    if (v >= 1 && v <= 16)
      rows = static_cast<uint32_t>(v);
    else
      std::fprintf(stderr, "mach: ignoring MACH_ROUTER_ROWS='%s' (want 1..16)\n", env);
  }
  return rows;
}

// Mirrors router.comp's push constants (h and w_base only with FUSED, the rest only with NORM).
struct RouterPush {
  uint32_t tokens, experts, k, has_bias, has_expert_scale, normalize, score_fn;
  float scale;
  uint32_t h = 0, w_base = 0;
  float eps = 0, norm_mul = 0, norm_add = 0;
  uint32_t pack = 0;
};

bool fusable(const WeightRef& w, uint32_t tokens) {
  return w.type == WeightType::bf16 && w.cols % 8 == 0 && tokens <= kRouterFusedMaxTokens;
}

RouterPush router_push(const RouterParams& params) {
  assert(params.experts > 0 && params.experts <= kRouterMaxExperts);
  assert(params.k > 0 && params.k <= kRouterMaxK && params.k <= params.experts);
  return {params.tokens,           params.experts,   params.k, params.has_bias, params.has_expert_scale,
          params.normalize,        static_cast<uint32_t>(params.score), params.scale};
}

// The fused kernels' push constants and weight binding; marks logits and finished read-write.
RouterPush fused_push(gpu::CommandList& cmd, const WeightRef& w, const RouterParams& params, WeightBinding& wb,
                      gpu::Binding& logits, gpu::Binding& finished) {
  RouterPush push = router_push(params);
  wb = bind_weights(cmd.context(), *w.buffer, w.offset, weight_bytes(w.type, w.rows, w.cols));
  push.h = w.cols;
  push.w_base = wb.base_units;
  logits.access = finished.access = gpu::Access::read_write;
  return push;
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
  if (!fusable(w, params.tokens)) {
    logits.access = gpu::Access::write;
    mul_mat(cmd, w, x, logits, params.tokens);
    logits.access = gpu::Access::read;
    route(cmd, logits, bias, expert_scale, ids, weights, params);
    return;
  }
  if (params.tokens == 0) return;
  WeightBinding wb;
  const RouterPush push = fused_push(cmd, w, params, wb, logits, finished);
  const uint32_t rows = fused_rows();
  const auto& pipeline = cmd.context().pipeline(kFusedNames[static_cast<uint32_t>(params.mode)], {rows});
  // Only the fused kernel's block is pushed (the NORM fields follow it).
  cmd.dispatch(pipeline, {logits, bias, expert_scale, ids, weights, wb.binding, x, finished}, &push,
               offsetof(RouterPush, eps), gpu::flat_groups(gpu::div_up(params.experts, rows)));
}

void route_logits(gpu::CommandList& cmd, const WeightRef& w, const NormedX& x, gpu::Binding h, const PreparedX* h_q4h,
                  gpu::Binding logits, gpu::Binding finished, gpu::Binding bias, gpu::Binding expert_scale,
                  gpu::Binding ids, gpu::Binding weights, const RouterParams& params) {
  assert(w.rows == params.experts && (!h_q4h || (h_q4h->rows == params.tokens && h_q4h->k == w.cols)));
  h.access = gpu::Access::write;
  const bool pack = h_q4h != nullptr;
  assert(!pack || w.cols % 64 == 0);  // the q4h form's groups
  if (!fusable(w, params.tokens)) {
    const RmsNormShape shape{params.tokens, w.cols};
    if (pack)
      rms_norm_q4h(cmd, x.x, x.weight, h, h_q4h->xh, h_q4h->xg, shape, x.eps, x.mode);
    else
      rms_norm(cmd, x.x, x.weight, h, shape, x.eps, x.mode);
    h.access = gpu::Access::read;
    route_logits(cmd, w, h, logits, finished, bias, expert_scale, ids, weights, params);
    return;
  }
  if (params.tokens == 0) return;
  WeightBinding wb;
  RouterPush push = fused_push(cmd, w, params, wb, logits, finished);
  push.eps = x.eps;
  push.norm_mul = x.scale_mul();
  push.norm_add = x.scale_add();
  push.pack = pack ? 1 : 0;
  gpu::Binding xh = h, xg = h;  // bound but never written without `pack`
  if (pack) {
    xh = h_q4h->xh, xg = h_q4h->xg;
    xh.access = xg.access = gpu::Access::write;
  }
  const uint32_t rows = fused_rows();
  const auto& pipeline = cmd.context().pipeline(kFusedNormNames[static_cast<uint32_t>(params.mode)], {rows});
  // The logit workgroups, then those that write h (two 64-column groups each).
  const uint32_t packers = gpu::div_up(params.tokens * gpu::div_up(w.cols, 64), 2);
  cmd.dispatch(pipeline, {logits, bias, expert_scale, ids, weights, wb.binding, x.x, finished, x.weight, h, xh, xg},
               push, gpu::flat_groups(gpu::div_up(params.experts, rows) + packers));
}

}  // namespace mach::ops
