// Packs many weight tensors into one device buffer: add() each tensor (converted to its GPU format on the
// CPU), then build() allocates the buffer once and uploads everything. One buffer per layer keeps the
// allocation count far below Vulkan's maxMemoryAllocationCount and each binding well inside
// maxStorageBufferRange.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "gpu/context.hpp"
#include "ops/weight_format.hpp"

namespace mach::model {

class WeightArena {
 public:
  // Every tensor starts at a multiple of this (>= any device's minStorageBufferOffsetAlignment we accept).
  static constexpr uint64_t kAlignment = 256;

  // Reserves space and keeps a copy of `bytes`; returns the tensor's offset in the future buffer.
  uint64_t add(std::span<const std::byte> bytes);
  uint64_t add_f32(std::span<const float> values) { return add(std::as_bytes(values)); }
  uint64_t size() const { return size_; }

  // Allocates the device buffer and uploads every tensor; the host copies are released.
  gpu::Buffer build(gpu::Context& context, std::string label);

 private:
  struct Pending {
    uint64_t offset;
    std::vector<std::byte> bytes;
  };
  std::vector<Pending> pending_;
  uint64_t size_ = 0;
};

}  // namespace mach::model
