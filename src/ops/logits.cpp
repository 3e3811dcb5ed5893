#include "ops/logits.hpp"

#include "gpu/context.hpp"

namespace mach::ops {

namespace {
// Columns per workgroup of the first stage: 16 loads per invocation.
constexpr uint32_t kArgmaxChunk = 4096;
}  // namespace

uint64_t argmax_scratch_bytes(uint32_t rows, uint32_t cols) {
  const uint32_t chunks = gpu::div_up(cols, kArgmaxChunk);
  return chunks > 1 ? uint64_t{rows} * chunks * 8 : 0;
}

void argmax(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding scratch, gpu::Binding out, uint32_t rows,
            uint32_t cols) {
  if (rows == 0 || cols == 0) return;
  const uint32_t chunks = gpu::div_up(cols, kArgmaxChunk);
  struct {
    uint32_t rows, cols, chunk_cols, chunks;
  } push{rows, cols, kArgmaxChunk, chunks};
  auto& context = cmd.context();
  if (chunks == 1) {
    cmd.dispatch(context.pipeline("argmax_chunks"), {x, out}, push, gpu::flat_groups(rows));
    return;
  }
  scratch.access = gpu::Access::write;
  cmd.dispatch(context.pipeline("argmax_chunks"), {x, scratch}, push, gpu::flat_groups(rows * chunks));
  scratch.access = gpu::Access::read;
  cmd.dispatch(context.pipeline("argmax_final"), {scratch, out}, push, gpu::flat_groups(rows));
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
