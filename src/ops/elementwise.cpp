#include "ops/elementwise.hpp"

#include "gpu/context.hpp"

namespace mach::ops {

void add(gpu::CommandList& cmd, gpu::Binding a, gpu::Binding b, gpu::Binding y, uint32_t n) {
  const auto& pipeline = cmd.context().pipeline("add");
  struct {
    uint32_t n;
  } push{n};
  cmd.dispatch(pipeline, {a, b, y}, push, gpu::flat_groups(gpu::div_up(n, 256)));
}

}  // namespace mach::ops

namespace mach::ops {

void moe_combine(gpu::CommandList& cmd, gpu::Binding y, gpu::Binding w, gpu::Binding x, uint32_t tokens,
                 uint32_t top_k, uint32_t hidden) {
  const auto& pipeline = cmd.context().pipeline("moe_combine");
  struct {
    uint32_t tokens, top_k, hidden;
  } push{tokens, top_k, hidden};
  cmd.dispatch(pipeline, {y, w, x}, push, gpu::flat_groups(gpu::div_up(uint64_t{tokens} * hidden, 256)));
}

void moe_combine(gpu::CommandList& cmd, gpu::Binding y, gpu::Binding w, gpu::Binding x, uint32_t tokens,
                 uint32_t top_k, uint32_t hidden, gpu::Binding ids, gpu::Binding slot_table) {
  const auto& pipeline = cmd.context().pipeline("moe_combine_slots");
  struct {
    uint32_t tokens, top_k, hidden;
  } push{tokens, top_k, hidden};
  cmd.dispatch(pipeline, {y, w, x, ids, slot_table}, push,
               gpu::flat_groups(gpu::div_up(uint64_t{tokens} * hidden, 256)));
}

}  // namespace mach::ops
