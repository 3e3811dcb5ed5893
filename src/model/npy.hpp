// NumPy .npy files of float32 arrays: `mach generate --dump-logits` writes the logits [T, vocab] this way,
// and the golden tests read transformers' reference logits (tests/fixtures/*/logits.npy) back.
//
// Written files are format version 1.0, little-endian '<f4', C order, header padded to a 64-byte boundary
// as numpy pads it. The reader accepts versions 1.0-3.0, '<f4' and '<f8' (converted to f32), C order only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <vector>

#include "mach/error.hpp"

namespace mach::model {

struct NpyArray {
  std::vector<uint64_t> shape;  // () for a scalar
  std::vector<float> data;      // row-major, product(shape) values
};

// The bytes of a .npy file holding `data` with `shape` (product(shape) == data.size(), asserted).
std::vector<std::byte> encode_npy_f32(std::span<const float> data, std::span<const uint64_t> shape);
Result<void> write_npy_f32(const std::filesystem::path& path, std::span<const float> data,
                           std::span<const uint64_t> shape);

// `source` names the file in errors.
Result<NpyArray> decode_npy_f32(std::span<const std::byte> bytes, std::string_view source = "array.npy");
Result<NpyArray> read_npy_f32(const std::filesystem::path& path);

}  // namespace mach::model
