// An owning, move-only host buffer aligned to 4096 bytes, the alignment O_DIRECT asks of buffers on every
// Linux filesystem we target (logical block size <= 4096). Expert reads land in these: a UringRing read
// operation owns its IoBuffer until the kernel's completion arrives, then hands it back to the caller.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <span>
#include <utility>

namespace mach::runtime {

class IoBuffer {
 public:
  static constexpr size_t kAlignment = 4096;

  IoBuffer() = default;
  // `bytes` of uninitialised memory; the allocation is rounded up to a multiple of kAlignment so that an
  // O_DIRECT read of a whole block never overruns it. size() is `bytes`. Throws std::bad_alloc.
  explicit IoBuffer(size_t bytes) : size_(bytes) {
    if (bytes == 0) return;
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    data_ = static_cast<std::byte*>(std::aligned_alloc(kAlignment, rounded));
    if (!data_) throw std::bad_alloc();
    live_.fetch_add(1, std::memory_order_relaxed);
  }
  IoBuffer(IoBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  IoBuffer& operator=(IoBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  IoBuffer(const IoBuffer&) = delete;
  IoBuffer& operator=(const IoBuffer&) = delete;
  ~IoBuffer() { release(); }

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return data_ == nullptr; }
  std::span<std::byte> span() { return {data_, size_}; }
  std::span<const std::byte> span() const { return {data_, size_}; }

  // Buffers currently allocated in this process, from any thread. Leak tests check that it returns to its
  // starting value once every read (cancelled ones included) has been reaped.
  static int64_t live_count() { return live_.load(std::memory_order_relaxed); }

 private:
  void release() {
    if (!data_) return;
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    live_.fetch_sub(1, std::memory_order_relaxed);
  }

  std::byte* data_ = nullptr;
  size_t size_ = 0;
  static inline std::atomic<int64_t> live_{0};
};

}  // namespace mach::runtime
