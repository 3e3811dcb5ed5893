// CPU reference for elementwise ops: plain loops, the oracle for tests.
#pragma once

#include <span>

namespace mach::ref {

// y = a + b
void add(std::span<const float> a, std::span<const float> b, std::span<float> y);

}  // namespace mach::ref

namespace mach::ref {

// x[t, :] += sum_j w[t, j] * y[t, j, :];  y: [T, k, H], w: [T, k], x: [T, H].
void moe_combine(std::span<const float> y, std::span<const float> w, std::span<float> x, size_t tokens, size_t top_k,
                 size_t hidden);

}  // namespace mach::ref
