// The Vulkan core: device choice and errors, buffers, barrier tracking, replay, timestamps, and the op
// harness's own guard check (a harness that cannot fail proves nothing).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "gpu_fixture.hpp"
#include "ops/elementwise.hpp"
#include "ops/op_case.hpp"

namespace mach::test {
namespace {

std::vector<float> iota(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

TEST(GpuCore, ListsDevicesAndPicksAUsableOne) {
  auto devices = gpu::Context::list_devices();
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  ASSERT_FALSE(devices->empty());
  EXPECT_TRUE(gpu_context().info().usable);
  EXPECT_GT(gpu_context().info().subgroup_size, 0u);
}

TEST(GpuCore, UnknownDeviceIndexIsAClearError) {
  auto context = gpu::Context::create({.device_index = 99});
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.error().code, Errc::invalid_argument);
  EXPECT_NE(context.error().message.find("device 99 does not exist"), std::string::npos) << context.error().message;
}

TEST(GpuCore, BadMachDeviceEnvironmentIsAClearError) {
  setenv("MACH_DEVICE", "gpu0", 1);
  auto context = gpu::Context::create();
  unsetenv("MACH_DEVICE");
  ASSERT_FALSE(context.ok());
  EXPECT_NE(context.error().message.find("MACH_DEVICE"), std::string::npos);
}

TEST(GpuCore, ImpossibleAllocationSaysOutOfMemory) {
  auto& context = gpu_context();
  try {
    auto b = context.create_buffer(uint64_t{1} << 50, gpu::MemoryKind::device, "huge");
    FAIL() << "a 1 PiB buffer was allocated";
  } catch (const Exception& e) {
    EXPECT_TRUE(e.code() == Errc::out_of_device_memory || e.code() == Errc::gpu) << e.what();
    EXPECT_NE(std::string(e.what()).find("huge"), std::string::npos) << e.what();
  }
}

TEST(GpuCore, UploadDownloadRoundTripsThroughStaging) {
  auto& context = gpu_context();
  const size_t n = (70u << 20) / 4;  // larger than the 64 MiB staging buffer
  std::vector<float> data = iota(n, 1.0f);
  auto b = context.create_buffer(n * 4, gpu::MemoryKind::device, "roundtrip");
  context.upload(b, 0, std::as_bytes(std::span<const float>(data)));
  std::vector<float> back(n);
  context.download(b, 0, std::as_writable_bytes(std::span<float>(back)));
  EXPECT_EQ(back, data);
}

// y = a + b, then z = y + a, then a = z + b: each reads what the previous wrote (and the last overwrites an
// input of the first), so the recorder must place barriers or the results are wrong on a real GPU.
TEST(GpuCore, DependentDispatchesGetBarriersAndReplay) {
  auto& context = gpu_context();
  const uint32_t n = 100003;
  auto a = context.create_buffer(n * 4, gpu::MemoryKind::device, "a");
  auto b = context.create_buffer(n * 4, gpu::MemoryKind::device, "b");
  auto y = context.create_buffer(n * 4, gpu::MemoryKind::device, "y");
  auto z = context.create_buffer(n * 4, gpu::MemoryKind::device, "z");
  auto up = [&](gpu::Buffer& buf, const std::vector<float>& v) {
    context.upload(buf, 0, std::as_bytes(std::span<const float>(v)));
  };
  up(a, iota(n, 0.0f));
  up(b, iota(n, 0.5f));
  auto cmd = context.begin_commands();
  cmd->begin();
  ops::add(*cmd, gpu::in(a), gpu::in(b), gpu::out(y), n);
  ops::add(*cmd, gpu::in(y), gpu::in(a), gpu::out(z), n);
  ops::add(*cmd, gpu::in(z), gpu::in(b), gpu::out(a), n);
  cmd->timestamp("last");
  cmd->end();
  EXPECT_EQ(cmd->dispatch_count(), 3u);
  EXPECT_EQ(cmd->barrier_count(), 2u);
  context.wait(context.submit(*cmd));
  std::vector<float> got(n);
  context.download(a, 0, std::as_writable_bytes(std::span<float>(got)));
  for (uint32_t i = 0; i < n; i += 9973) EXPECT_EQ(got[i], 4.0f * i + 1.0f) << i;  // 2a + 2b with a=i, b=i+.5
  // Replay the same recording: a now holds 4i+1, so the result is 2(4i+1) + 2(i+.5).
  context.wait(context.submit(*cmd));
  context.download(a, 0, std::as_writable_bytes(std::span<float>(got)));
  for (uint32_t i = 0; i < n; i += 9973) EXPECT_EQ(got[i], 10.0f * i + 3.0f) << i;
  if (context.info().timestamps) {
    const auto samples = cmd->read_timestamps();
    ASSERT_EQ(samples.size(), 1u);
    EXPECT_EQ(samples[0].label, "last");
    EXPECT_GT(samples[0].ns, 0.0);
  }
}

TEST(GpuCore, IndependentDispatchesShareNoBarrier) {
  auto& context = gpu_context();
  const uint32_t n = 1024;
  auto a = context.create_buffer(n * 4, gpu::MemoryKind::device, "a");
  auto y = context.create_buffer(2 * n * 4, gpu::MemoryKind::device, "y");
  auto cmd = context.begin_commands();
  cmd->begin();
  ops::add(*cmd, gpu::in(a), gpu::in(a), gpu::out(y, 0, n * 4), n);
  ops::add(*cmd, gpu::in(a), gpu::in(a), gpu::out(y, n * 4, n * 4), n);  // disjoint range of the same buffer
  cmd->end();
  EXPECT_EQ(cmd->barrier_count(), 0u);
}

// Uploads on the transfer queue: a transfer list's copies into a device buffer, then a compute submission
// that requires them reads what they wrote; a transfer list whose copies overlap is refused (it cannot hold
// a barrier).
TEST(GpuCore, TransferQueueUploadsAreSeenByTheComputeSubmissionsThatRequireThem) {
  auto& context = gpu_context();
  EXPECT_NE(std::string(context.transfer_queue_kind()), "");
  const size_t n = 4096;
  const std::vector<float> data = iota(n, 3.0f);
  auto host = context.create_buffer(n * 4, gpu::MemoryKind::host_upload, "transfer source", true);
  std::memcpy(host.mapped(), data.data(), n * 4);
  auto dst = context.create_buffer(n * 4, gpu::MemoryKind::device, "transfer target", true);
  auto readback = context.create_buffer(n * 4, gpu::MemoryKind::host_readback, "transfer readback");
  auto upload = context.begin_transfer_commands();
  EXPECT_TRUE(upload->transfer());
  upload->begin();
  upload->copy(host, 0, dst, 0, n * 2);  // two halves, in either order
  upload->copy(host, n * 2, dst, n * 2, n * 2);
  const gpu::Ticket ticket = context.submit_transfer(*upload);
  EXPECT_EQ(ticket.value, context.last_transfer());
  context.require_transfer(ticket);
  auto read = context.begin_commands();
  read->begin();
  read->copy(dst, 0, readback, 0, n * 4);
  context.wait(context.submit(*read));
  EXPECT_GE(context.transfers_done(), ticket.value);
  std::vector<float> back(n);
  std::memcpy(back.data(), readback.mapped(), n * 4);
  EXPECT_EQ(back, data);

  context.wait_transfers(ticket);  // done: returns at once
  upload->begin();
  upload->copy(host, 0, dst, 0, n * 4);
  EXPECT_THROW(upload->copy(host, 0, dst, 0, n * 4), Exception) << "a second write of the same bytes needs a barrier";
  upload->end();
}

TEST(OpHarness, GuardsCatchAWriteOutsideTheOutput) {
  auto& context = gpu_context();
  GuardedBuffer g(context, 1000, "victim");
  std::string why;
  EXPECT_TRUE(g.guards_intact(&why)) << why;
  // Write the 4 bytes after the payload, as an off-by-one shader would.
  auto cmd = context.begin_commands();
  cmd->begin();
  const auto binding = g.out();
  cmd->fill(const_cast<gpu::Buffer&>(*binding.buffer), binding.offset + 1000, 4, 0);
  context.wait(context.submit(*cmd));
  EXPECT_FALSE(g.guards_intact(&why));
  EXPECT_NE(why.find("after the output"), std::string::npos) << why;
}

TEST(OpHarness, NmseFlagsNanAndMismatch) {
  const std::vector<float> ref = {1, 2, 3};
  EXPECT_EQ(nmse(ref, ref), 0.0);
  EXPECT_GT(nmse(std::vector<float>{1, 2, 3.1f}, ref), 1e-4);
  EXPECT_TRUE(std::isinf(nmse(std::vector<float>{1, NAN, 3}, ref)));
}

}  // namespace
}  // namespace mach::test

namespace mach::test {
namespace {

TEST(GpuCore, InPlaceDispatchNeedsNoBarrierOfItsOwn) {
  auto& context = gpu_context();
  const uint32_t n = 4096;
  auto a = context.create_buffer(n * 4, gpu::MemoryKind::device, "a");
  auto b = context.create_buffer(n * 4, gpu::MemoryKind::device, "b");
  context.upload(a, 0, std::as_bytes(std::span<const float>(iota(n, 1.0f))));
  context.upload(b, 0, std::as_bytes(std::span<const float>(iota(n, 2.0f))));
  auto cmd = context.begin_commands();
  cmd->begin();
  ops::add(*cmd, gpu::in(a), gpu::in(b), gpu::out(a), n);  // a += b, reading and writing the same range
  EXPECT_EQ(cmd->barrier_count(), 0u);
  ops::add(*cmd, gpu::in(a), gpu::in(b), gpu::out(a), n);  // depends on the first
  EXPECT_EQ(cmd->barrier_count(), 1u);
  context.wait(context.submit(*cmd));
  std::vector<float> got(n);
  context.download(a, 0, std::as_writable_bytes(std::span<float>(got)));
  EXPECT_EQ(got[10], 11.0f + 2 * 12.0f);
}

}  // namespace
}  // namespace mach::test
