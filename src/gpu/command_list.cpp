#include "gpu/command_list.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "gpu/context.hpp"
#include "gpu/vk_check.hpp"

namespace mach::gpu {

CommandList::CommandList(Context& context, uint32_t max_timestamps, bool transfer)
    : context_(context), max_timestamps_(transfer ? 0 : max_timestamps), transfer_(transfer) {
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = transfer_ ? context_.transfer_command_pool() : context_.command_pool();
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  vk_check(vkAllocateCommandBuffers(context_.device(), &ai, &cmd_), "vkAllocateCommandBuffers");
  if (max_timestamps_ > 0) {
    VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qi.queryCount = max_timestamps_;
    vk_check(vkCreateQueryPool(context_.device(), &qi, nullptr, &queries_), "vkCreateQueryPool");
  }
}

CommandList::~CommandList() {
  if (queries_) vkDestroyQueryPool(context_.device(), queries_, nullptr);
  if (cmd_)
    vkFreeCommandBuffers(context_.device(), transfer_ ? context_.transfer_command_pool() : context_.command_pool(), 1,
                         &cmd_);
}

void CommandList::begin() {
  vk_check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vk_check(vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  recording_ = true;
  labels_.clear();
  written_.clear();
  read_.clear();
  stages_since_barrier_ = 0;
  dispatches_ = 0;
  barriers_ = 0;
  // Keep only the largest scratch buffer: the previous recording's needs fit in it next time.
  if (scratch_buffers_.size() > 1) {
    auto largest = std::move(scratch_buffers_.back());
    scratch_buffers_.clear();
    scratch_buffers_.push_back(std::move(largest));
  }
  scratch_used_ = 0;
  if (queries_) vkCmdResetQueryPool(cmd_, queries_, 0, max_timestamps_);
  timestamp("begin");
}

void CommandList::end() {
  assert(recording_);
  vk_check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
  recording_ = false;
}

bool CommandList::overlaps(const std::vector<Range>& ranges, const Range& r) {
  return std::any_of(ranges.begin(), ranges.end(), [&](const Range& o) {
    return o.buffer == r.buffer && o.begin < r.end && r.begin < o.end;
  });
}

void CommandList::barrier() { barrier_before(kComputeStage | kTransferStage); }

// Waits for the commands recorded since the last barrier (their stages: a dispatch runs in the compute stage,
// a copy or fill in the transfer stage) before commands of the `next` stages. Naming only the stages and
// accesses involved, not all of them, lets a driver skip the work a transfer wait implies between two
// dispatches (most barriers of a decode step sit between two dispatches).
void CommandList::barrier_before(uint32_t next) {
  // A transfer-only queue has no compute stage to name; its lists are not meant to need barriers at all.
  if (transfer_)
    throw Exception(Errc::gpu, "a transfer command list needs a barrier: two of its copies touch the same bytes");
  const uint32_t before = stages_since_barrier_ != 0 ? stages_since_barrier_ : kComputeStage | kTransferStage;
  const auto stages = [](uint32_t s) {
    VkPipelineStageFlags f = 0;
    if (s & kComputeStage) f |= VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
    if (s & kTransferStage) f |= VK_PIPELINE_STAGE_TRANSFER_BIT;
    return f;
  };
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  if (before & kComputeStage) mb.srcAccessMask |= VK_ACCESS_SHADER_WRITE_BIT;
  if (before & kTransferStage) mb.srcAccessMask |= VK_ACCESS_TRANSFER_WRITE_BIT;
  if (next & kComputeStage) mb.dstAccessMask |= VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
  if (next & kTransferStage) mb.dstAccessMask |= VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  vkCmdPipelineBarrier(cmd_, stages(before), stages(next), 0, 1, &mb, 0, nullptr, 0, nullptr);
  written_.clear();
  read_.clear();
  stages_since_barrier_ = 0;
  ++barriers_;
}

CommandList::Range CommandList::range_of(const Buffer& buffer, uint64_t offset, uint64_t size) {
  return {buffer.handle(), offset, size == kWholeBuffer ? buffer.size() : offset + size};
}

bool CommandList::hazard(const Range& r, Access access) const {
  // Read-after-write, write-after-write and write-after-read all need the earlier command finished.
  return overlaps(written_, r) || (access != Access::read && overlaps(read_, r));
}

void CommandList::note(const Range& r, Access access) {
  if (access != Access::read) written_.push_back(r);
  if (access != Access::write) read_.push_back(r);
}

void CommandList::track(const Buffer& buffer, uint64_t offset, uint64_t size, Access access) {
  const Range r = range_of(buffer, offset, size);
  if (hazard(r, access)) barrier_before(kTransferStage);
  note(r, access);
}

void CommandList::dispatch(const Pipeline& pipeline, std::initializer_list<Binding> bindings, const void* push,
                           uint32_t push_bytes, Groups groups) {
  assert(recording_ && !transfer_);
  if (bindings.size() != pipeline.binding_count())
    throw Exception(Errc::invalid_argument, fmt::format("shader '{}' has {} bindings, the dispatch passes {}",
                                                        pipeline.name(), pipeline.binding_count(), bindings.size()));
  assert(push_bytes <= kPushConstantBytes);
  const uint64_t max_range = context_.info().max_storage_buffer_range;
  // Hazards are judged against earlier commands only: bindings of one dispatch may overlap (an in-place op
  // binds the same range as input and output), which needs no barrier.
  bool needs_barrier = false;
  for (const Binding& b : bindings) {
    assert(b.buffer && *b.buffer);
    needs_barrier = needs_barrier || hazard(range_of(*b.buffer, b.offset, b.size), b.access);
  }
  if (needs_barrier) barrier_before(kComputeStage);
  for (const Binding& b : bindings) note(range_of(*b.buffer, b.offset, b.size), b.access);
  stages_since_barrier_ |= kComputeStage;
  std::vector<VkDescriptorBufferInfo> infos(bindings.size());
  std::vector<VkWriteDescriptorSet> writes(bindings.size());
  uint32_t i = 0;
  for (const Binding& b : bindings) {
    const uint64_t range = b.size == kWholeBuffer ? b.buffer->size() - b.offset : b.size;
    if (range > max_range)
      throw Exception(Errc::unsupported,
                      fmt::format("shader '{}' binds {} bytes of '{}', over this device's storage buffer range of {}",
                                  pipeline.name(), range, b.buffer->label(), max_range));
    infos[i] = {b.buffer->handle(), b.offset, range};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    ++i;
  }
  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.handle());
  context_.push_descriptor_fn()(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout(), 0,
                                static_cast<uint32_t>(writes.size()), writes.data());
  if (push_bytes > 0)
    vkCmdPushConstants(cmd_, pipeline.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
  vkCmdDispatch(cmd_, groups.x, groups.y, groups.z);
  ++dispatches_;
  profile_point(pipeline.name());
}

void CommandList::copy(const Buffer& src, uint64_t src_offset, Buffer& dst, uint64_t dst_offset, uint64_t bytes) {
  assert(recording_);
  track(src, src_offset, bytes, Access::read);
  track(dst, dst_offset, bytes, Access::write);
  stages_since_barrier_ |= kTransferStage;
  VkBufferCopy region{src_offset, dst_offset, bytes};
  vkCmdCopyBuffer(cmd_, src.handle(), dst.handle(), 1, &region);
  profile_point("copy");
}

void CommandList::fill(Buffer& dst, uint64_t offset, uint64_t bytes, uint32_t value) {
  assert(recording_ && bytes % 4 == 0);
  track(dst, offset, bytes, Access::write);
  stages_since_barrier_ |= kTransferStage;
  vkCmdFillBuffer(cmd_, dst.handle(), offset, bytes, value);
  profile_point("fill");
}

Binding CommandList::scratch(uint64_t bytes) {
  assert(recording_);
  const uint64_t size = (std::max<uint64_t>(bytes, 4) + 255) / 256 * 256;
  if (scratch_buffers_.empty() || scratch_used_ + size > scratch_buffers_.back()->size()) {
    // Buffers already bound by recorded commands must live until the next begin(): add a new one.
    const uint64_t grown = scratch_buffers_.empty() ? uint64_t{16} << 20 : 2 * scratch_buffers_.back()->size();
    scratch_buffers_.push_back(std::make_unique<Buffer>(
        context_.create_buffer(std::max(size, grown), MemoryKind::device, "command scratch")));
    scratch_used_ = 0;
  }
  const Binding b{scratch_buffers_.back().get(), scratch_used_, size, Access::read_write};
  scratch_used_ += size;
  return b;
}

void CommandList::profile_point(const std::string& label) {
  if (!profile_) return;
  barrier();
  timestamp(label);
}

void CommandList::timestamp(std::string label) {
  if (!queries_ || labels_.size() >= max_timestamps_) return;
  vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_, static_cast<uint32_t>(labels_.size()));
  labels_.push_back(std::move(label));
}

std::vector<TimestampSample> CommandList::read_timestamps() const {
  std::vector<TimestampSample> samples;
  if (!queries_ || labels_.empty()) return samples;
  std::vector<uint64_t> ticks(labels_.size());
  vk_check(vkGetQueryPoolResults(context_.device(), queries_, 0, static_cast<uint32_t>(ticks.size()),
                                 ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
                                 VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
           "vkGetQueryPoolResults");
  const double period = context_.info().timestamp_period_ns;
  for (size_t i = 1; i < ticks.size(); ++i)
    samples.push_back({labels_[i], static_cast<double>(ticks[i] - ticks[i - 1]) * period});
  return samples;
}

double CommandList::elapsed_ns() const {
  double total = 0;
  for (const auto& s : read_timestamps()) total += s.ns;
  return total;
}

}  // namespace mach::gpu
