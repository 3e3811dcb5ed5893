// A Vulkan buffer with its own memory allocation (RAII, move-only).
#pragma once

#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace mach::gpu {

class Context;

enum class MemoryKind {
  device,       // device-local: weights, activations, KV cache
  host_upload,  // host-visible, coherent: staging for uploads, written by the CPU
  host_readback,  // host-visible, cached where possible: results read by the CPU
};

class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  VkBuffer handle() const { return buffer_; }
  uint64_t size() const { return size_; }
  // Host pointer when the memory is host-visible (always for host_* kinds; for `device` on unified-memory
  // devices such as lavapipe), else nullptr.
  std::byte* mapped() const { return mapped_; }
  const std::string& label() const { return label_; }
  explicit operator bool() const { return buffer_ != VK_NULL_HANDLE; }

 private:
  friend class Context;
  void reset();

  VkDevice device_ = VK_NULL_HANDLE;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  uint64_t size_ = 0;
  std::byte* mapped_ = nullptr;
  std::string label_;
};

}  // namespace mach::gpu
