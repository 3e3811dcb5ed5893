#include "ops/activation.hpp"

#include "gpu/context.hpp"

namespace mach::ops {

void glu(gpu::CommandList& cmd, gpu::Binding gate, gpu::Binding up, gpu::Binding out, const GluParams& params) {
  static constexpr const char* kNames[] = {"glu_swiglu", "glu_swiglu_oai", "glu_geglu"};
  const auto& pipeline = cmd.context().pipeline(kNames[static_cast<uint32_t>(params.kind)]);
  const uint32_t I = params.width;
  struct {
    uint32_t tokens, width, gate_offset, up_offset, row_stride, elem_stride;
    float limit, alpha;
  } push{params.tokens, I, 0, 0, I, 1, params.limit, params.alpha};
  if (params.layout == GluLayout::fused) {
    push.up_offset = I;
    push.row_stride = 2 * I;
  } else if (params.layout == GluLayout::interleaved) {
    push.up_offset = 1;
    push.row_stride = 2 * I;
    push.elem_stride = 2;
  }
  const uint64_t n = uint64_t{params.tokens} * I;
  if (n == 0) return;
  cmd.dispatch(pipeline, {gate, up, out}, push, gpu::flat_groups(gpu::div_up(n, 256)));
}

}  // namespace mach::ops
