// Writes a .safetensors file that SafetensorsFile::open accepts: u64 header length, a JSON header padded
// with spaces to a multiple of 8 (so the data region starts 8-aligned), then the tensors back to back in
// the order given, tiling the data region without holes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "mach/error.hpp"
#include "model/safetensors.hpp"

namespace mach::model {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<uint64_t> shape;
  std::span<const std::byte> data;  // exactly shape × element size bytes; borrowed until the call returns
};

// One tensor's entry in the header: its bytes follow from shape and dtype.
struct TensorHeader {
  std::string name;
  DType dtype = DType::f32;
  std::vector<uint64_t> shape;
};

// The bytes before the data region (u64 length, padded JSON header) for `tensors` laid out back to back in
// this order, so that a writer can stream the data after it; tensor i's data starts at the returned size
// plus the bytes of tensors 0..i-1. invalid_argument for a repeated or reserved name or a shape whose bits
// are not whole bytes.
Result<std::string> safetensors_header(const std::vector<TensorHeader>& tensors,
                                       const std::map<std::string, std::string>& metadata = {});
// Bytes of one tensor's data (shape × element bits / 8, rounded up).
uint64_t tensor_data_bytes(const TensorHeader& tensor);

// Writes `path` (replacing it). Errors: invalid_argument for a size mismatch or a repeated name, io when
// writing fails (the message names the path and errno's text).
Result<void> write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace mach::model
