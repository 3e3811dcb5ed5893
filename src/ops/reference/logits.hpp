// CPU reference for the logit ops: the oracle for tests.
#pragma once

#include <cstdint>
#include <span>

namespace mach::ref {

// x: [rows, cols]; out: [rows]; the lowest index among equal maxima, NaN skipped, 0 for a row without one.
void argmax(std::span<const float> x, std::span<uint32_t> out, uint32_t rows, uint32_t cols);

// x = cap * tanh(x / cap), in double.
void softcap(std::span<float> x, float cap);

}  // namespace mach::ref
