// Physical KV-cache blocks: a free list with reference counts, so that sequences sharing a cached prefix
// share its blocks (the prefix cache holds a reference too). CPU-side bookkeeping only; the blocks' memory
// is the KV cache's GPU buffers.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace mach::engine {

class BlockAllocator {
 public:
  explicit BlockAllocator(uint32_t blocks);

  uint32_t capacity() const { return static_cast<uint32_t>(refs_.size()); }
  uint32_t free_blocks() const { return static_cast<uint32_t>(free_.size()); }

  // `n` fresh blocks with one reference each, or nullopt (and nothing taken) when fewer are free: the
  // scheduler then queues the request instead of failing it.
  std::optional<std::vector<uint32_t>> allocate(uint32_t n);
  // Another holder of an allocated block (a sequence reusing a cached prefix).
  void retain(uint32_t block);
  // Drops one reference; the block is free again when none remain.
  void release(uint32_t block);
  uint32_t references(uint32_t block) const { return refs_.at(block); }

 private:
  std::vector<uint32_t> refs_;
  std::vector<uint32_t> free_;  // a stack: recently freed blocks are reused first (warm in caches)
};

}  // namespace mach::engine
