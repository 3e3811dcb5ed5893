#include "model/weight_arena.hpp"

namespace mach::model {

uint64_t WeightArena::add(std::span<const std::byte> bytes) {
  const uint64_t offset = (size_ + kAlignment - 1) / kAlignment * kAlignment;
  pending_.push_back({offset, std::vector<std::byte>(bytes.begin(), bytes.end())});
  size_ = offset + bytes.size();
  return offset;
}

gpu::Buffer WeightArena::build(gpu::Context& context, std::string label) {
  gpu::Buffer buffer = context.create_buffer(std::max<uint64_t>(size_, 16), gpu::MemoryKind::device, std::move(label));
  for (auto& p : pending_) {
    context.upload(buffer, p.offset, p.bytes);
    std::vector<std::byte>().swap(p.bytes);
  }
  pending_.clear();
  return buffer;
}

}  // namespace mach::model
