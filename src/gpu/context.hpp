// The Vulkan instance, the chosen device, its compute queue and the queue's timeline semaphore.
//
// Thread-safety: a Context is used from one thread (the event loop) except `timeline()` and the semaphore
// waits done by runtime::GpuBridge's waiter thread, which Vulkan allows on any thread.
#pragma once

#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gpu/buffer.hpp"
#include "gpu/pipeline.hpp"
#include "mach/error.hpp"

namespace mach::gpu {

class CommandList;

struct DeviceInfo {
  uint32_t index = 0;  // position in vkEnumeratePhysicalDevices order, what --device takes
  std::string name;
  std::string type;  // "discrete", "integrated", "virtual", "cpu", "other"
  std::string driver;
  uint32_t vendor_id = 0;
  uint32_t api_version = 0;
  uint64_t device_local_bytes = 0;
  uint64_t max_storage_buffer_range = 0;
  uint64_t min_storage_buffer_offset_alignment = 0;
  uint32_t max_compute_workgroup_invocations = 0;
  uint32_t max_compute_shared_memory = 0;
  uint32_t subgroup_size = 0;
  bool fp16 = false;             // shaderFloat16 + 16-bit storage buffers
  bool int8 = false;             // shaderInt8 + 8-bit storage buffers
  bool subgroup_arithmetic = false;
  bool nv_cooperative_matrix = false;
  bool khr_cooperative_matrix = false;
  // VK_KHR_shader_integer_dot_product's shaderIntegerDotProduct (packed int8 dot products in shaders), and
  // whether the device says its signed x unsigned packed form runs on dedicated instructions (NVIDIA: dp4a).
  bool int_dot = false;
  bool int_dot_accelerated = false;
  bool timestamps = false;
  double timestamp_period_ns = 1.0;
  bool usable = false;           // meets mach's minimum: Vulkan 1.2, push descriptors, timeline semaphores
  std::string unusable_reason;
};

struct ContextOptions {
  int device_index = -1;  // -1: $MACH_DEVICE if set, else the best device (discrete > integrated > cpu)
  bool enable_validation = false;  // VK_LAYER_KHRONOS_validation when installed ($MACH_VULKAN_VALIDATION=1)
};

// A point on the compute queue's timeline: the work submitted with it is done once the timeline semaphore
// reaches `value`.
struct Ticket {
  uint64_t value = 0;
};

// How long a waiter for a ticket polls the timeline before it blocks (Context::wait, runtime::GpuBridge): a
// streaming model's segments take tens of microseconds, and waking from a blocking wait can cost as much
// again, once per layer.
inline constexpr std::chrono::microseconds kWaitPollWindow{200};

class Context {
 public:
  // Lists every Vulkan device with its facts, usable or not.
  static Result<std::vector<DeviceInfo>> list_devices();
  static Result<std::unique_ptr<Context>> create(const ContextOptions& options = {});

  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  const DeviceInfo& info() const { return info_; }
  VkDevice device() const { return device_; }
  VkPhysicalDevice physical_device() const { return physical_; }
  VkQueue queue() const { return queue_; }
  VkSemaphore timeline() const { return timeline_; }
  VkCommandPool command_pool() const { return pool_; }
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_fn() const { return push_descriptor_; }

  // Throws mach::Exception(out_of_device_memory) when the allocation fails; `label` names it in errors.
  // `with_transfer_queue`: the transfer queue's uploads read or write it (shared by both queue families where
  // they differ; other buffers belong to the compute queue's family alone).
  Buffer create_buffer(uint64_t bytes, MemoryKind kind, std::string label, bool with_transfer_queue = false);

  // Blocking copies between host memory and a buffer, staged through a reusable host buffer when the
  // destination is not host-visible. For set-up work (weights, tests), not for the decode loop.
  void upload(Buffer& dst, uint64_t offset, std::span<const std::byte> data);
  void download(const Buffer& src, uint64_t offset, std::span<std::byte> out);
  void fill(Buffer& dst, uint64_t offset, uint64_t bytes, uint32_t value);

  // The pipeline for an embedded shader variant and specialization constants, created on first use.
  // Throws mach::Exception(not_found) for an unknown name (e.g. a variant glslc could not build).
  const Pipeline& pipeline(const std::string& shader, const SpecConstants& constants = {});
  static bool has_shader(const std::string& shader);
  // True once pipeline() built this shader with any constants (the op harness's coverage mode).
  bool has_pipeline_for(const std::string& shader) const;

  std::unique_ptr<CommandList> begin_commands();
  // Submits recorded work; it signals the timeline at the returned ticket. A CommandList may be submitted
  // again once its previous submission is done (record once, replay). It waits on the GPU for the uploads
  // required so far (require_transfer).
  Ticket submit(CommandList& commands);

  // Uploads that run beside the compute queue's work (expert streaming's uploads of predicted experts): a
  // list of copies only (no dispatches, no barriers) for the transfer queue, submitted there. Its tickets are
  // on a timeline of their own; once require_transfer(t) was called, every later submit() waits for t on
  // the GPU (compute submitted before that runs beside the upload, so it must not touch what it writes). The
  // queue is a transfer-only family's where the device has one, else a second queue of the compute family,
  // else the compute queue itself (in order with the compute work: no overlap, same results):
  // transfer_queue_kind() says which.
  std::unique_ptr<CommandList> begin_transfer_commands();
  Ticket submit_transfer(CommandList& commands);
  void require_transfer(Ticket ticket) { transfer_required_ = std::max(transfer_required_, ticket.value); }
  uint64_t transfers_done() const;  // the transfer timeline's value: tickets up to it are done
  void wait_transfers(Ticket ticket);  // blocks until the upload ticket is done
  uint64_t last_transfer() const { return transfer_next_ - 1; }
  const char* transfer_queue_kind() const { return transfer_kind_; }
  VkCommandPool transfer_command_pool() const { return transfer_pool_; }
  // Blocks the calling thread until the ticket is reached. Tools and tests only: the event loop uses
  // runtime::GpuBridge instead.
  void wait(Ticket ticket);
  bool is_done(Ticket ticket) const;
  uint64_t last_submitted() const { return next_value_ - 1; }

 private:
  Context() = default;
  Result<void> init(const ContextOptions& options);

  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkSemaphore timeline_ = VK_NULL_HANDLE;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkQueue transfer_queue_ = VK_NULL_HANDLE;
  uint32_t transfer_family_ = 0;
  const char* transfer_kind_ = "";
  VkSemaphore transfer_timeline_ = VK_NULL_HANDLE;
  VkCommandPool transfer_pool_ = VK_NULL_HANDLE;
  uint64_t transfer_next_ = 1;
  uint64_t transfer_required_ = 0;  // submit() waits for the transfer timeline to reach it
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_ = nullptr;
  uint64_t next_value_ = 1;
  DeviceInfo info_;
  Buffer staging_;
  std::unique_ptr<CommandList> transfer_;
  std::map<std::pair<std::string, SpecConstants>, std::unique_ptr<Pipeline>> pipelines_;
};

}  // namespace mach::gpu
