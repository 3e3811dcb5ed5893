#include "engine/block_allocator.hpp"

#include <cassert>

namespace mach::engine {

BlockAllocator::BlockAllocator(uint32_t blocks) : refs_(blocks, 0) {
  free_.reserve(blocks);
  for (uint32_t b = blocks; b-- > 0;) free_.push_back(b);  // block 0 is handed out first
}

std::optional<std::vector<uint32_t>> BlockAllocator::allocate(uint32_t n) {
  if (n > free_.size()) return std::nullopt;
  std::vector<uint32_t> out(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  for (uint32_t b : out) refs_[b] = 1;
  return out;
}

void BlockAllocator::retain(uint32_t block) {
  assert(refs_.at(block) > 0);
  ++refs_[block];
}

void BlockAllocator::release(uint32_t block) {
  assert(refs_.at(block) > 0);
  if (--refs_[block] == 0) free_.push_back(block);
}

}  // namespace mach::engine
