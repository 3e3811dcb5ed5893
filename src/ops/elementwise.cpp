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
