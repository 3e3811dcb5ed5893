#include "ops/logits.hpp"

#include "gpu/context.hpp"

namespace mach::ops {

void argmax(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding out, uint32_t rows, uint32_t cols) {
  const auto& pipeline = cmd.context().pipeline("argmax");
  struct {
    uint32_t rows, cols;
  } push{rows, cols};
  if (rows == 0) return;
  cmd.dispatch(pipeline, {x, out}, push, gpu::flat_groups(rows));
}

void softcap(gpu::CommandList& cmd, gpu::Binding x, uint32_t n, float cap) {
  const auto& pipeline = cmd.context().pipeline("softcap");
  struct {
    uint32_t n;
    float cap;
  } push{n, cap};
  if (n == 0) return;
  cmd.dispatch(pipeline, {x}, push, gpu::flat_groups(gpu::div_up(n, 256)));
}

}  // namespace mach::ops
