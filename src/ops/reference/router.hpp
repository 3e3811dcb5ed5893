// CPU reference for the MoE routers (double arithmetic): the oracle for tests.
#pragma once

#include <cstdint>
#include <span>

#include "ops/router.hpp"

namespace mach::ref {

// Exactly the contract of ops::route. logits: [T, E]; bias, expert_scale: [E] or empty when unused;
// ids, weights: [T, K].
void route(std::span<const float> logits, std::span<const float> bias, std::span<const float> expert_scale,
           std::span<uint32_t> ids, std::span<float> weights, const ops::RouterParams& params);

}  // namespace mach::ref
