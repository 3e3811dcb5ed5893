// CPU reference for elementwise ops: plain loops, the oracle for tests.
#pragma once

#include <span>

namespace mach::ref {

// y = a + b
void add(std::span<const float> a, std::span<const float> b, std::span<float> y);

}  // namespace mach::ref
