#include "ops/rope.hpp"

#include <cassert>

#include "gpu/context.hpp"

namespace mach::ops {

void rope(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding positions, gpu::Binding inv_freq,
          const RopeShape& shape, RopeStyle style, float attention_factor) {
  assert(shape.rotary_dim % 2 == 0 && shape.offset + shape.rotary_dim <= shape.head_dim);
  const auto& pipeline = cmd.context().pipeline(style == RopeStyle::neox ? "rope_neox" : "rope_interleaved");
  struct {
    uint32_t tokens, heads, head_dim, rotary_dim, offset, token_stride;
    float attention_factor;
  } push{shape.tokens,
         shape.heads,
         shape.head_dim,
         shape.rotary_dim,
         shape.offset,
         shape.token_stride ? shape.token_stride : shape.heads * shape.head_dim,
         attention_factor};
  const uint64_t pairs = uint64_t{shape.tokens} * shape.heads * (shape.rotary_dim / 2);
  if (pairs == 0) return;
  cmd.dispatch(pipeline, {x, positions, inv_freq}, push, gpu::flat_groups(gpu::div_up(pairs, 256)));
}

}  // namespace mach::ops
