// CPU reference for the gated activations (double arithmetic): the oracle for tests.
#pragma once

#include <span>

#include "ops/activation.hpp"

namespace mach::ref {

// gate, up: laid out per params.layout (for fused and interleaved, the same [T, 2I] span twice);
// out: [T, I].
void glu(std::span<const float> gate, std::span<const float> up, std::span<float> out, const ops::GluParams& params);

}  // namespace mach::ref
