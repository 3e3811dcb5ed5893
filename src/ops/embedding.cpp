#include "ops/embedding.hpp"

#include <cassert>
#include <string>

#include "gpu/context.hpp"

namespace mach::ops {

void embedding(gpu::CommandList& cmd, const WeightRef& table, gpu::Binding ids, gpu::Binding out, uint32_t tokens,
               float multiplier) {
  assert(table.buffer && shape_fits(table.type, table.rows, table.cols) && table.offset % 16 == 0);
  const auto& pipeline = cmd.context().pipeline("get_rows_" + std::string(weight_type_name(table.type)));
  struct {
    uint32_t tokens, rows, cols, scales_word;
    float multiplier;
  } push{tokens, table.rows, table.cols,
         static_cast<uint32_t>(scales_offset(table.type, table.rows, table.cols) / 4), multiplier};
  const uint64_t n = uint64_t{tokens} * table.cols;
  if (n == 0) return;
  const gpu::Binding weights =
      gpu::in(*table.buffer, table.offset, weight_bytes(table.type, table.rows, table.cols));
  cmd.dispatch(pipeline, {weights, ids, out}, push, gpu::flat_groups(gpu::div_up(n, 256)));
}

}  // namespace mach::ops
