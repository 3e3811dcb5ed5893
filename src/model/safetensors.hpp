// Safetensors weight files: memory-mapped, header validated strictly, tensors looked up by name across the
// shards of a checkpoint.
//
// File layout: u64 little-endian N, then N bytes of JSON header, then the data region. The header maps each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data region) plus an
// optional "__metadata__" string map. parse_safetensors checks, before any tensor is read: N within the file
// and under kMaxHeaderBytes, valid JSON, known dtypes, shape × element size == end - begin without overflow,
// every range inside the data region, and the ranges tiling the region without overlap or holes (as the
// reference implementation requires). Every failure is an Error naming the file and the tensor; no input
// crashes it (tests/safetensors_test.cpp replays random mutations; fuzz/safetensors_fuzz.cpp fuzzes it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mach/error.hpp"

namespace mach::model {

// The dtypes of safetensors 0.6. Packed FP4 weights (DeepSeek-V4 experts, MXFP4 blocks) usually arrive as
// I8/U8 with F8_E8M0 or U8 scales; F4 and F6 are the sub-byte spellings.
enum class DType {
  boolean, u8, i8, u16, i16, u32, i32, u64, i64,
  f16, bf16, f32, f64, c64,
  f8_e4m3, f8_e5m2, f8_e8m0, f8_e4m3fnuz, f8_e5m2fnuz,
  f4, f6_e2m3, f6_e3m2,
};

std::optional<DType> parse_dtype(std::string_view name);  // "BF16", "F8_E4M3", "U8", ...
std::string_view dtype_name(DType dtype);
uint32_t dtype_bits(DType dtype);  // bits per element (4 and 6 for the sub-byte types)
bool is_float_convertible(DType dtype);  // to_f32 reads it: F64, F32, F16, BF16

// Upper bound on the JSON header: the reference implementation's limit (100 MB).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<uint64_t> shape;
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t nbytes = 0;
  uint64_t numel() const;
};

// A read-only memory map of a whole file; unmapped on destruction.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(addr_), size_}; }

 private:
  MappedFile(void* addr, size_t size) : addr_(addr), size_(size) {}
  void* addr_ = nullptr;
  size_t size_ = 0;
};

// One .safetensors file. Tensor data stay in the file image (mmap'd or borrowed); nothing is copied.
class SafetensorsFile {
 public:
  // Maps and validates `path`.
  static Result<SafetensorsFile> open(const std::filesystem::path& path);
  // Validates a whole file image that the caller keeps alive; `source` names it in errors.
  static Result<SafetensorsFile> parse(std::span<const std::byte> file, std::string source);

  const std::string& source() const { return source_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by offset
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  // The tensor's bytes: [nbytes], inside the file image.
  std::span<const std::byte> data(const TensorInfo& tensor) const;
  // F64/F32/F16/BF16 tensor as f32, row-major in its shape.
  Result<std::vector<float>> to_f32(const TensorInfo& tensor) const;

 private:
  static Result<SafetensorsFile> parse_image(std::span<const std::byte> file, std::string source);

  std::shared_ptr<MappedFile> map_;  // null when the image is borrowed
  std::span<const std::byte> file_;
  std::string source_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint's weights: one model.safetensors, or shards listed by model.safetensors.index.json
// (its "weight_map": tensor name -> shard file name, resolved next to the index).
class Checkpoint {
 public:
  // `path` is a model directory, an index .json or a single .safetensors file.
  static Result<Checkpoint> open(const std::filesystem::path& path);

  struct TensorRef {
    const SafetensorsFile* file = nullptr;
    const TensorInfo* info = nullptr;
  };
  // not_found names the checkpoint and the tensor.
  Result<TensorRef> find(std::string_view name) const;
  bool contains(std::string_view name) const;
  Result<std::vector<float>> read_f32(std::string_view name) const;
  std::vector<std::string> tensor_names() const;  // sorted
  const std::vector<SafetensorsFile>& files() const { return files_; }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> index_;  // name -> (file, tensor)
};

}  // namespace mach::model
