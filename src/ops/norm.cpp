#include "ops/norm.hpp"

#include <cassert>

#include "gpu/context.hpp"

namespace mach::ops {

namespace {

struct Push {
  uint32_t rows, h, x_stride, y_stride;
  float eps;
};

Push push_of(const RmsNormShape& shape, float eps) {
  return {shape.rows, shape.h, shape.x_stride ? shape.x_stride : shape.h, shape.y_stride ? shape.y_stride : shape.h,
          eps};
}

// Short rows (per-head norms, H = 64..256) waste fewer idle invocations with a smaller workgroup.
uint32_t threads_for(const RmsNormShape& shape) { return shape.h <= 256 ? 64 : 256; }

}  // namespace

void rms_norm(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding w, gpu::Binding y, const RmsNormShape& shape,
              float eps, NormWeight weight) {
  assert(shape.h > 0);
  static constexpr const char* kNames[] = {"rms_norm_unit", "rms_norm", "rms_norm_1p"};
  const auto& pipeline = cmd.context().pipeline(kNames[static_cast<uint32_t>(weight)], {threads_for(shape)});
  if (shape.rows == 0) return;
  cmd.dispatch(pipeline, {x, w, y}, push_of(shape, eps), gpu::flat_groups(shape.rows));
}

void rms_norm_q4h(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding w, gpu::Binding y, gpu::Binding xh,
                  gpu::Binding xg, const RmsNormShape& shape, float eps, NormWeight weight) {
  assert(shape.h > 0 && shape.h % 64 == 0);
  // A row is split over several workgroups that all read the whole of x: y must be another buffer.
  assert(x.buffer != y.buffer);
  static constexpr const char* kNames[] = {"rms_norm_q4h_unit", "rms_norm_q4h", "rms_norm_q4h_1p"};
  // The same workgroup size as rms_norm: the same reduction tree, so y matches rms_norm's to the bit.
  const uint32_t threads = threads_for(shape);
  const auto& pipeline = cmd.context().pipeline(kNames[static_cast<uint32_t>(weight)], {threads});
  if (shape.rows == 0) return;
  const uint32_t chunks = gpu::div_up(shape.h, threads);
  cmd.dispatch(pipeline, {x, w, y, xh, xg}, push_of(shape, eps), gpu::flat_groups(uint64_t{shape.rows} * chunks));
}

}  // namespace mach::ops
