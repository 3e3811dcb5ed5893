#include "ops/norm.hpp"

#include <cassert>

#include "gpu/context.hpp"

namespace mach::ops {

void rms_norm(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding w, gpu::Binding y, const RmsNormShape& shape,
              float eps, NormWeight weight) {
  assert(shape.h > 0);
  static constexpr const char* kNames[] = {"rms_norm_unit", "rms_norm", "rms_norm_1p"};
  // Short rows (per-head norms, H = 64..256) waste fewer idle invocations with a smaller workgroup.
  const uint32_t threads = shape.h <= 256 ? 64 : 256;
  const auto& pipeline = cmd.context().pipeline(kNames[static_cast<uint32_t>(weight)], {threads});
  struct {
    uint32_t rows, h, x_stride, y_stride;
    float eps;
  } push{shape.rows, shape.h, shape.x_stride ? shape.x_stride : shape.h, shape.y_stride ? shape.y_stride : shape.h,
         eps};
  if (shape.rows == 0) return;
  cmd.dispatch(pipeline, {x, w, y}, push, gpu::flat_groups(shape.rows));
}

}  // namespace mach::ops
