// CPU reference for RMSNorm (double accumulation): the oracle for tests.
#pragma once

#include <cstdint>
#include <span>

#include "ops/norm.hpp"

namespace mach::ref {

// x, y: [rows, h] contiguous (y may alias x); w: [h] (unused for NormWeight::none).
void rms_norm(std::span<const float> x, std::span<const float> w, std::span<float> y, uint32_t rows, uint32_t h,
              float eps, ops::NormWeight weight);

}  // namespace mach::ref
