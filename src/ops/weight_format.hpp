// How weight matrices are laid out in GPU buffers, and the CPU quantizers and dequantizers that define
// each format. One [rows, cols] matrix (rows = output features N, cols = input features K) occupies
// weight_bytes(type, rows, cols) bytes from its start offset, which must be a multiple of 16:
//
//   f32, f16, bf16  row-major elements; row r starts at r * cols * element size.
//   q8_0            symmetric, groups of 32 along cols:  w = d * q,  q in [-127, 127].
//                   quants int8 [rows, cols] row-major at 0, then d f16 [rows, cols/32] at scales_offset().
//   q4              affine, groups of 64 along cols:     w = scale * q + min,  q in [0, 15].
//                   quants [rows, cols/64, 32 bytes] at 0: byte j of a group holds q[j] in its low nibble and
//                   q[j + 32] in its high nibble; then (scale, min) f16 pairs [rows, cols/64] at
//                   scales_offset(), scale in the low half of each 32-bit word.
//
// Quantized types need cols to be a multiple of their group size. Keeping quants and scales apart lets a
// shader read both with aligned 16-byte loads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mach::gpu {
class Buffer;
}

namespace mach::ops {

enum class WeightType : uint32_t { f32 = 0, f16 = 1, bf16 = 2, q8_0 = 3, q4 = 4 };

std::string_view weight_type_name(WeightType type);
std::optional<WeightType> parse_weight_type(std::string_view name);  // "f32", "f16", "bf16", "q8_0", "q4"

// Elements per scale group along cols (1 for float types).
uint32_t group_size(WeightType type);
bool is_quantized(WeightType type);
// True when a [rows, cols] matrix can be stored as `type`.
bool shape_fits(WeightType type, uint64_t rows, uint64_t cols);

// Bytes of one [rows, cols] matrix, a multiple of 16 so that matrices can be packed back to back.
uint64_t weight_bytes(WeightType type, uint64_t rows, uint64_t cols);
// Byte offset of the scales region from the matrix start (quantized types; 0 for float types).
uint64_t scales_offset(WeightType type, uint64_t rows, uint64_t cols);

// src: [rows, cols] f32 row-major. Returns weight_bytes() bytes in the layout above.
std::vector<std::byte> quantize(WeightType type, std::span<const float> src, uint64_t rows, uint64_t cols);
// The exact values a shader must reconstruct: [rows, cols] f32.
std::vector<float> dequantize(WeightType type, std::span<const std::byte> data, uint64_t rows, uint64_t cols);

// Where one weight matrix lives on the GPU. Shape [rows, cols]: rows = output features, cols = input features.
// `offset` is a multiple of 16 (see the layout above).
struct WeightRef {
  const gpu::Buffer* buffer = nullptr;
  uint64_t offset = 0;
  WeightType type = WeightType::f32;
  uint32_t rows = 0;
  uint32_t cols = 0;
};

// A stack of expert matrices of one shape, expert e at offset + e * expert_stride. With streaming the
// "experts" are slots of the GPU expert bank and a slot table maps expert ids to slots.
struct ExpertWeightsRef {
  const gpu::Buffer* buffer = nullptr;
  uint64_t offset = 0;
  uint64_t expert_stride = 0;  // bytes between consecutive experts (or slots), a multiple of 16
  uint32_t count = 0;          // experts (or slots) in the stack
  WeightType type = WeightType::f32;
  uint32_t rows = 0;
  uint32_t cols = 0;
};

// A slot-table entry for an expert that has no slot in the stack: mul_mat_id skips the pairs routed to it
// (shaders/mul_mat_funcs.glsl's NO_SLOT).
inline constexpr uint32_t kNoSlot = 0xFFFFFFFFu;

// IEEE half and bfloat16 conversions (round to nearest even).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

}  // namespace mach::ops
