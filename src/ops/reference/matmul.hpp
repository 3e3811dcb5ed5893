// CPU reference for matrix products: dequantize with weight_format's dequantize(), then accumulate in double.
// Shapes: T tokens, K input features, N output features, E experts, k slots per token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "ops/weight_format.hpp"

namespace mach::ref {

// y[t, n] = sum_k W[n, k] * x[t, k].  w: one [N, K] matrix in `type`'s layout; x: [T, K]; y: [T, N].
void mul_mat(ops::WeightType type, std::span<const std::byte> w, uint32_t n, uint32_t k,
             std::span<const float> x, std::span<float> y, uint32_t tokens);

// y[t, s, n] = sum_k W_e[n, k] * x[t, (s,) k], e = ids[t, s], W_e at stack[slot_table[e] * stride].
// ids: [T, top_k]; slot_table: [E] (ops::kNoSlot: the expert's pairs are skipped, their y rows untouched); x: [T, K] or, with x_per_slot, [T, top_k, K]; y: [T, top_k, N].
void mul_mat_id(ops::WeightType type, std::span<const std::byte> stack, uint64_t stride, uint32_t n, uint32_t k,
                std::span<const uint32_t> ids, std::span<const uint32_t> slot_table, std::span<const float> x,
                bool x_per_slot, std::span<float> y, uint32_t tokens, uint32_t top_k);

// residual[t, n] += sum_j route_w[t, j] * (W_e x[t, j, :])[n] over the pairs (t, j) whose expert e = ids[t, j]
// has a slot; x: [T, top_k, K]; route_w: [T, top_k]; residual: [T, N]. The sum is taken in double.
void mul_mat_id_combine(ops::WeightType type, std::span<const std::byte> stack, uint64_t stride, uint32_t n,
                        uint32_t k, std::span<const uint32_t> ids, std::span<const uint32_t> slot_table,
                        std::span<const float> route_w, std::span<const float> x, std::span<float> residual,
                        uint32_t tokens, uint32_t top_k);

}  // namespace mach::ref
