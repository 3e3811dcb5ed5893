// Records a sequence of compute dispatches and copies into one command buffer, inserting a memory barrier
// only where a command touches a buffer range that an earlier, unbarriered command wrote (or writes one
// that it read). Optional GPU timestamps label each dispatch for profiling.
#pragma once

#include <vulkan/vulkan.h>

#include <array>
#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu/buffer.hpp"
#include "gpu/pipeline.hpp"

namespace mach::gpu {

class Context;

enum class Access { read, write, read_write };

inline constexpr uint64_t kWholeBuffer = VK_WHOLE_SIZE;

// One storage-buffer binding of a dispatch: a byte range of a buffer and how the shader uses it.
struct Binding {
  const Buffer* buffer = nullptr;
  uint64_t offset = 0;
  uint64_t size = kWholeBuffer;
  Access access = Access::read;
};

inline Binding in(const Buffer& b, uint64_t offset = 0, uint64_t size = kWholeBuffer) {
  return {&b, offset, size, Access::read};
}
inline Binding out(const Buffer& b, uint64_t offset = 0, uint64_t size = kWholeBuffer) {
  return {&b, offset, size, Access::write};
}
inline Binding inout(const Buffer& b, uint64_t offset = 0, uint64_t size = kWholeBuffer) {
  return {&b, offset, size, Access::read_write};
}

struct Groups {
  uint32_t x = 1, y = 1, z = 1;
};

// ceil(n / d): the number of workgroups of size d that cover n items.
constexpr uint32_t div_up(uint64_t n, uint64_t d) { return static_cast<uint32_t>((n + d - 1) / d); }

// A grid of `count` workgroups laid out as x * y with x <= 65535 (the smallest maxComputeWorkGroupCount a
// device may report); shaders recover the flat index with common.glsl's flat_workgroup_id().
inline Groups flat_groups(uint32_t count) {
  if (count <= 65535) return {count, 1, 1};
  return {65535, div_up(count, 65535), 1};
}

struct TimestampSample {
  std::string label;
  double ns = 0;  // time from the previous sample's end to this label's end
};

class CommandList {
 public:
  // `transfer`: a list for the context's transfer queue (Context::begin_transfer_commands): copies and fills
  // only, and no two of them may touch the same bytes (no barriers are recorded there).
  CommandList(Context& context, uint32_t max_timestamps, bool transfer = false);
  CommandList(const CommandList&) = delete;
  CommandList& operator=(const CommandList&) = delete;
  ~CommandList();

  // Starts (or restarts) recording; previous commands are discarded. The list must not be in flight.
  void begin();
  void end();

  // Dispatches `pipeline` over `groups` workgroups. `push` (at most kPushConstantBytes) is copied.
  void dispatch(const Pipeline& pipeline, std::initializer_list<Binding> bindings, const void* push,
                uint32_t push_bytes, Groups groups);
  template <class Push>
  void dispatch(const Pipeline& pipeline, std::initializer_list<Binding> bindings, const Push& push,
                Groups groups) {
    static_assert(sizeof(Push) <= kPushConstantBytes, "push constants exceed the guaranteed 128 bytes");
    dispatch(pipeline, bindings, &push, sizeof(Push), groups);
  }

  void copy(const Buffer& src, uint64_t src_offset, Buffer& dst, uint64_t dst_offset, uint64_t bytes);
  // Fills `bytes` (a multiple of 4) with a repeated 32-bit value.
  void fill(Buffer& dst, uint64_t offset, uint64_t bytes, uint32_t value);
  // A full compute/transfer memory barrier, for hand-managed hazards (e.g. host writes between replays).
  void barrier();

  // A device range of `bytes` (256-byte aligned) for intermediate results of ops recorded in this list, valid
  // until the next begin(). Ranges never overlap within one recording, so scratch of independent ops adds no
  // barriers; the memory is kept across recordings and grows on demand.
  Binding scratch(uint64_t bytes);

  // Writes a GPU timestamp after all previous commands; a no-op when the device lacks timestamps or
  // more than max_timestamps were asked for.
  void timestamp(std::string label);
  // Profiling: every later dispatch, copy and fill is followed by a barrier and a timestamp labelled with its
  // shader's name ("copy", "fill"), so read_timestamps() gives each op's own time. The barriers serialize the
  // ops: a profiled step takes longer than an unprofiled one. Needs max_timestamps for every op.
  void set_profile(bool on) { profile_ = on; }
  // After the submission completed: each label with the time since the previous timestamp.
  std::vector<TimestampSample> read_timestamps() const;
  // Total GPU time between the first and last timestamp, in ns (0 without timestamps).
  double elapsed_ns() const;

  Context& context() const { return context_; }
  VkCommandBuffer handle() const { return cmd_; }
  bool recording() const { return recording_; }
  bool transfer() const { return transfer_; }
  uint32_t dispatch_count() const { return dispatches_; }
  uint32_t barrier_count() const { return barriers_; }

 private:
  struct Range {
    VkBuffer buffer;
    uint64_t begin, end;
  };
  static Range range_of(const Buffer& buffer, uint64_t offset, uint64_t size);
  static constexpr uint32_t kComputeStage = 1, kTransferStage = 2;
  void barrier_before(uint32_t next_stages);
  bool hazard(const Range& r, Access access) const;
  void note(const Range& r, Access access);
  void track(const Buffer& buffer, uint64_t offset, uint64_t size, Access access);
  static bool overlaps(const std::vector<Range>& ranges, const Range& r);

  Context& context_;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  uint32_t max_timestamps_ = 0;
  bool profile_ = false;
  void profile_point(const std::string& label);
  std::vector<std::string> labels_;
  std::vector<Range> written_, read_;  // since the last barrier
  uint32_t stages_since_barrier_ = 0;  // kComputeStage / kTransferStage of the commands since the last barrier
  std::vector<std::unique_ptr<Buffer>> scratch_buffers_;  // the last one is filled from scratch_used_
  uint64_t scratch_used_ = 0;
  bool recording_ = false;
  bool transfer_ = false;
  uint32_t dispatches_ = 0;
  uint32_t barriers_ = 0;
};

}  // namespace mach::gpu
