// CPU reference for the embedding gather: the oracle for tests.
#pragma once

#include <cstdint>
#include <span>

namespace mach::ref {

// table: [V, H] f32 (already dequantized with ops::dequantize); ids: [T]; out: [T, H].
// An id >= V gives a zero row.
void embedding(std::span<const float> table, uint32_t rows, uint32_t cols, std::span<const uint32_t> ids,
               std::span<float> out, float multiplier);

}  // namespace mach::ref
