#include "ops/reference/matmul.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <map>
#include <vector>

namespace mach::ref {
namespace {

using ops::WeightType;

// Rows [r0, r1) of an [n, k] matrix, dequantized to [r1 - r0, k]. The rows are copied into a matrix of
// their own (quants, then scales) so that weight_format's dequantize() defines every value, while large
// matrices never need a full f32 copy.
std::vector<float> dequantize_rows(WeightType type, std::span<const std::byte> w, uint32_t n, uint32_t k,
                                   uint32_t r0, uint32_t r1) {
  const uint32_t rows = r1 - r0;
  const uint64_t elem_bits = type == WeightType::f32 ? 32 : type == WeightType::q8_0 ? 8 : type == WeightType::q4 ? 4 : 16;
  const uint64_t row_bytes = k * elem_bits / 8;
  const uint64_t scale_row_bytes =
      type == WeightType::q8_0 ? k / 32 * 2 : type == WeightType::q4 ? k / 64 * 4 : 0;
  std::vector<std::byte> part(ops::weight_bytes(type, rows, k));
  std::memcpy(part.data(), w.data() + r0 * row_bytes, rows * row_bytes);
  if (scale_row_bytes > 0)
    std::memcpy(part.data() + ops::scales_offset(type, rows, k),
                w.data() + ops::scales_offset(type, n, k) + r0 * scale_row_bytes, rows * scale_row_bytes);
  return ops::dequantize(type, part, rows, k);
}

// y[t * y_stride + r] for rows [r0, r1) of one matrix; x row of token t at x_rows[t].
void rows_times_x(std::span<const float> wf, uint32_t r0, uint32_t r1, uint32_t k, std::span<const float> x,
                  std::span<const uint32_t> x_rows, std::span<float> y, std::span<const uint64_t> y_rows) {
  for (uint32_t r = r0; r < r1; ++r) {
    const float* wr = &wf[uint64_t{r - r0} * k];
    for (size_t t = 0; t < x_rows.size(); ++t) {
      const float* xr = &x[uint64_t{x_rows[t]} * k];
      double s = 0;
      for (uint32_t c = 0; c < k; ++c) s += static_cast<double>(wr[c]) * xr[c];
      y[y_rows[t] + r] = static_cast<float>(s);
    }
  }
}

constexpr uint64_t kBlockElements = 1u << 24;  // dequantize at most 64 MiB of f32 at a time

}  // namespace

void mul_mat(WeightType type, std::span<const std::byte> w, uint32_t n, uint32_t k, std::span<const float> x,
             std::span<float> y, uint32_t tokens) {
  assert(x.size() == uint64_t{tokens} * k && y.size() == uint64_t{tokens} * n);
  std::vector<uint32_t> x_rows(tokens);
  std::vector<uint64_t> y_rows(tokens);
  for (uint32_t t = 0; t < tokens; ++t) x_rows[t] = t, y_rows[t] = uint64_t{t} * n;
  const uint32_t block = static_cast<uint32_t>(std::max<uint64_t>(1, kBlockElements / k));
  for (uint32_t r0 = 0; r0 < n; r0 += block) {
    const uint32_t r1 = std::min(n, r0 + block);
    rows_times_x(dequantize_rows(type, w, n, k, r0, r1), r0, r1, k, x, x_rows, y, y_rows);
  }
}

void mul_mat_id(WeightType type, std::span<const std::byte> stack, uint64_t stride, uint32_t n, uint32_t k,
                std::span<const uint32_t> ids, std::span<const uint32_t> slot_table, std::span<const float> x,
                bool x_per_slot, std::span<float> y, uint32_t tokens, uint32_t top_k) {
  const uint64_t pairs = uint64_t{tokens} * top_k;
  assert(ids.size() == pairs && y.size() == pairs * n);
  assert(x.size() == (x_per_slot ? pairs : tokens) * k);
  // Group pairs by expert so that each expert is dequantized once.
  std::map<uint32_t, std::vector<uint32_t>> by_expert;
  for (uint32_t p = 0; p < pairs; ++p) by_expert[ids[p]].push_back(p);
  const uint64_t bytes = ops::weight_bytes(type, n, k);
  for (const auto& [expert, list] : by_expert) {
    assert(expert < slot_table.size());
    if (slot_table[expert] == ops::kNoSlot) continue;
    const auto w = stack.subspan(slot_table[expert] * stride, bytes);
    std::vector<uint32_t> x_rows;
    std::vector<uint64_t> y_rows;
    for (uint32_t p : list) {
      x_rows.push_back(x_per_slot ? p : p / top_k);
      y_rows.push_back(uint64_t{p} * n);
    }
    rows_times_x(ops::dequantize(type, w, n, k), 0, n, k, x, x_rows, y, y_rows);
  }
}

void mul_mat_id_combine(WeightType type, std::span<const std::byte> stack, uint64_t stride, uint32_t n, uint32_t k,
                        std::span<const uint32_t> ids, std::span<const uint32_t> slot_table,
                        std::span<const float> route_w, std::span<const float> x, std::span<float> residual,
                        uint32_t tokens, uint32_t top_k) {
  const uint64_t pairs = uint64_t{tokens} * top_k;
  assert(route_w.size() == pairs && residual.size() == uint64_t{tokens} * n);
  std::vector<float> y(pairs * n, 0.0f);
  mul_mat_id(type, stack, stride, n, k, ids, slot_table, x, true, y, tokens, top_k);
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t r = 0; r < n; ++r) {
      double sum = 0;
      for (uint32_t j = 0; j < top_k; ++j) {
        const uint64_t pair = uint64_t{t} * top_k + j;
        if (slot_table[ids[pair]] == ops::kNoSlot) continue;
        sum += static_cast<double>(route_w[pair]) * y[pair * n + r];
      }
      float& out = residual[uint64_t{t} * n + r];
      out = static_cast<float>(out + sum);
    }
}

}  // namespace mach::ref
