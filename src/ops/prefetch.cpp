#include "ops/prefetch.hpp"

#include <cassert>

#include "gpu/context.hpp"

namespace mach::ops {
namespace {

struct PrefetchPush {
  uint32_t base, units, stride, ranges;
};

void record(gpu::CommandList& cmd, const char* kernel, gpu::Binding weights, gpu::Binding ids, gpu::Binding slots,
            const PrefetchPush& push, gpu::Binding sink) {
  const uint32_t groups = gpu::div_up(push.units, kPrefetchUnitsPerWorkgroup) * push.ranges;
  if (!sink.buffer) sink = cmd.scratch(uint64_t{groups} * 4);
  sink.access = gpu::Access::write;
  cmd.dispatch(cmd.context().pipeline(kernel), {weights, ids, slots, sink}, push, gpu::flat_groups(groups));
}

}  // namespace

uint32_t prefetch_sink_words(WeightType type, uint32_t rows, uint32_t cols, uint32_t ranges) {
  return gpu::div_up(weight_bytes(type, rows, cols) / 16, kPrefetchUnitsPerWorkgroup) * ranges;
}

void prefetch_weights(gpu::CommandList& cmd, const WeightRef& w, gpu::Binding sink) {
  assert(w.buffer && w.rows > 0 && w.cols > 0);
  const uint64_t bytes = weight_bytes(w.type, w.rows, w.cols);
  const WeightBinding wb = bind_weights(cmd.context(), *w.buffer, w.offset, bytes);
  // The id and slot bindings take any valid range: the dense variant never reads them.
  record(cmd, "l2_prefetch", wb.binding, wb.binding, wb.binding, {wb.base_units, static_cast<uint32_t>(bytes / 16), 0, 1},
         sink);
}

void prefetch_experts(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, uint32_t pairs,
                      gpu::Binding sink) {
  assert(w.buffer && w.count > 0 && pairs > 0 && w.expert_stride % 16 == 0);
  const uint64_t bytes = weight_bytes(w.type, w.rows, w.cols);
  const WeightBinding wb =
      bind_weights(cmd.context(), *w.buffer, w.offset, (w.count - 1) * w.expert_stride + bytes);
  record(cmd, "l2_prefetch_experts", wb.binding, routing.ids, routing.slot_table,
         {wb.base_units, static_cast<uint32_t>(bytes / 16), static_cast<uint32_t>(w.expert_stride / 16), pairs},
         sink);
}

}  // namespace mach::ops
