// Elementwise GPU ops. Shapes in comments: T tokens, H hidden.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

// y[i] = a[i] + b[i];  a, b, y: [n] f32. The residual add of every layer.
void add(gpu::CommandList& cmd, gpu::Binding a, gpu::Binding b, gpu::Binding y, uint32_t n);

}  // namespace mach::ops
