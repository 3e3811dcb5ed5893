#include "gpu/context.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <utility>

#include "gpu/command_list.hpp"
#include "gpu/embedded_shaders.hpp"
#include "gpu/vk_check.hpp"

namespace mach::gpu {
namespace {

constexpr uint64_t kStagingBytes = 64ull << 20;

bool has_extension(const std::vector<VkExtensionProperties>& exts, const char* name) {
  return std::any_of(exts.begin(), exts.end(),
                     [&](const VkExtensionProperties& e) { return std::strcmp(e.extensionName, name) == 0; });
}

std::vector<VkExtensionProperties> device_extensions(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data());
  return exts;
}

const char* type_name(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

int type_rank(const std::string& type) {
  if (type == "discrete") return 4;
  if (type == "integrated") return 3;
  if (type == "virtual") return 2;
  if (type == "cpu") return 1;
  return 0;
}

int compute_queue_family(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families.data());
  int best = -1;
  for (uint32_t i = 0; i < n; ++i) {
    if (!(families[i].queueFlags & VK_QUEUE_COMPUTE_BIT)) continue;
    // Prefer a family with graphics too: on NVIDIA it is the one with the most compute throughput.
    if (best < 0 || (families[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) best = static_cast<int>(i);
    if (families[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) break;
  }
  return best;
}

// The queue for uploads that overlap compute (Context::submit_transfer): a family with transfer but neither
// compute nor graphics (a DMA engine of its own; NVIDIA's copy engines), else a second queue of the compute
// family; {family, index}, or {-1, 0} for none (the compute queue then takes the uploads too).
// $MACH_TRANSFER_QUEUE=0 forces none.
std::pair<int, uint32_t> transfer_queue_family(VkPhysicalDevice pd, uint32_t compute_family) {
  if (const char* env = std::getenv("MACH_TRANSFER_QUEUE"); env && std::string_view(env) == "0") return {-1, 0};
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families.data());
  for (uint32_t i = 0; i < n; ++i) {
    const VkQueueFlags f = families[i].queueFlags;
    if ((f & VK_QUEUE_TRANSFER_BIT) && !(f & (VK_QUEUE_COMPUTE_BIT | VK_QUEUE_GRAPHICS_BIT)) && families[i].queueCount > 0)
      return {static_cast<int>(i), 0};
  }
  if (families[compute_family].queueCount >= 2) return {static_cast<int>(compute_family), 1};
  return {-1, 0};
}

DeviceInfo describe(VkPhysicalDevice pd, uint32_t index) {
  DeviceInfo info;
  info.index = index;
  const auto exts = device_extensions(pd);
  const bool has_int_dot = has_extension(exts, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  VkPhysicalDeviceShaderIntegerDotProductProperties int_dot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES,
                                          has_int_dot ? &int_dot : nullptr};
  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, &driver};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &subgroup};
  vkGetPhysicalDeviceProperties2(pd, &props);
  const auto& p = props.properties;
  info.name = p.deviceName;
  info.type = type_name(p.deviceType);
  info.driver = fmt::format("{} {}", driver.driverName, driver.driverInfo);
  info.vendor_id = p.vendorID;
  info.api_version = p.apiVersion;
  info.max_storage_buffer_range = p.limits.maxStorageBufferRange;
  info.min_storage_buffer_offset_alignment = p.limits.minStorageBufferOffsetAlignment;
  info.max_compute_workgroup_invocations = p.limits.maxComputeWorkGroupInvocations;
  info.max_compute_shared_memory = p.limits.maxComputeSharedMemorySize;
  info.subgroup_size = subgroup.subgroupSize;
  info.subgroup_arithmetic = (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                             (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
  info.timestamp_period_ns = p.limits.timestampPeriod;

  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i)
    if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) info.device_local_bytes += mem.memoryHeaps[i].size;

  VkPhysicalDeviceShaderIntegerDotProductFeatures int_dot_features{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                       has_int_dot ? &int_dot_features : nullptr};
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, &f12};
  VkPhysicalDeviceFeatures2 f{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f11};
  if (p.apiVersion >= VK_API_VERSION_1_2) vkGetPhysicalDeviceFeatures2(pd, &f);
  info.fp16 = f12.shaderFloat16 && f11.storageBuffer16BitAccess;
  info.int8 = f12.shaderInt8 && f12.storageBuffer8BitAccess;
  info.int_dot = has_int_dot && int_dot_features.shaderIntegerDotProduct;
  info.int_dot_accelerated = info.int_dot && int_dot.integerDotProduct4x8BitPackedMixedSignednessAccelerated;

  info.nv_cooperative_matrix = has_extension(exts, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
  info.khr_cooperative_matrix = has_extension(exts, "VK_KHR_cooperative_matrix");

  const int family = compute_queue_family(pd);
  if (family >= 0) {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
    std::vector<VkQueueFamilyProperties> families(n);
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families.data());
    info.timestamps = families[family].timestampValidBits > 0 && p.limits.timestampComputeAndGraphics;
  }

  if (p.apiVersion < VK_API_VERSION_1_2) {
    info.unusable_reason = "Vulkan 1.2 is required";
  } else if (!f12.timelineSemaphore) {
    info.unusable_reason = "timeline semaphores are not supported";
  } else if (!has_extension(exts, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME)) {
    info.unusable_reason = "VK_KHR_push_descriptor is not supported";
  } else if (family < 0) {
    info.unusable_reason = "no compute queue";
  } else if (!info.subgroup_arithmetic) {
    info.unusable_reason = "subgroup arithmetic in compute shaders is not supported";
  } else {
    info.usable = true;
  }
  return info;
}

Result<VkInstance> create_instance(bool validation) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "mach";
  app.pEngineName = "mach";
  app.apiVersion = VK_API_VERSION_1_3;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  const char* layer = "VK_LAYER_KHRONOS_validation";
  if (validation) {
    ci.enabledLayerCount = 1;
    ci.ppEnabledLayerNames = &layer;
  }
  VkInstance instance = VK_NULL_HANDLE;
  VkResult r = vkCreateInstance(&ci, nullptr, &instance);
  if (r == VK_ERROR_LAYER_NOT_PRESENT) {
    ci.enabledLayerCount = 0;
    r = vkCreateInstance(&ci, nullptr, &instance);
  }
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED) {
    return Error{Errc::no_device,
                 "no Vulkan driver could be loaded: install your GPU's Vulkan driver, or mesa-vulkan-drivers to run "
                 "on the CPU (lavapipe)"};
  }
  if (r != VK_SUCCESS) return vk_error(r, "vkCreateInstance");
  return instance;
}

std::vector<VkPhysicalDevice> physical_devices(VkInstance instance) {
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(instance, &n, nullptr);
  std::vector<VkPhysicalDevice> devices(n);
  vkEnumeratePhysicalDevices(instance, &n, devices.data());
  return devices;
}

Result<uint32_t> pick_device(const std::vector<DeviceInfo>& infos, int requested) {
  if (requested < 0) {
    if (const char* env = std::getenv("MACH_DEVICE"); env && *env) {
      char* end = nullptr;
      const long v = std::strtol(env, &end, 10);
      if (*end != '\0' || v < 0)
        return Error{Errc::invalid_argument, fmt::format("MACH_DEVICE='{}' is not a device index", env)};
      requested = static_cast<int>(v);
    }
  }
  auto list = [&] {
    std::string s;
    for (const auto& d : infos)
      s += fmt::format("\n  {}: {} ({}){}", d.index, d.name, d.type, d.usable ? "" : " unusable: " + d.unusable_reason);
    return s;
  };
  if (infos.empty())
    return Error{Errc::no_device,
                 "no Vulkan device found: install your GPU's Vulkan driver, or mesa-vulkan-drivers to run on the "
                 "CPU (lavapipe)"};
  if (requested >= 0) {
    if (static_cast<size_t>(requested) >= infos.size())
      return Error{Errc::invalid_argument,
                   fmt::format("device {} does not exist; the devices are:{}", requested, list())};
    if (!infos[requested].usable)
      return Error{Errc::unsupported, fmt::format("device {} ({}) cannot run mach: {}", requested,
                                                  infos[requested].name, infos[requested].unusable_reason)};
    return static_cast<uint32_t>(requested);
  }
  int best = -1;
  for (const auto& d : infos) {
    if (!d.usable) continue;
    if (best < 0 || type_rank(d.type) > type_rank(infos[best].type) ||
        (type_rank(d.type) == type_rank(infos[best].type) && d.device_local_bytes > infos[best].device_local_bytes))
      best = static_cast<int>(d.index);
  }
  if (best < 0) return Error{Errc::no_device, fmt::format("no Vulkan device can run mach:{}", list())};
  return static_cast<uint32_t>(best);
}

}  // namespace

Result<std::vector<DeviceInfo>> Context::list_devices() {
  auto instance = create_instance(false);
  if (!instance) return instance.error();
  std::vector<DeviceInfo> infos;
  const auto devices = physical_devices(*instance);
  for (uint32_t i = 0; i < devices.size(); ++i) infos.push_back(describe(devices[i], i));
  vkDestroyInstance(*instance, nullptr);
  return infos;
}

Result<std::unique_ptr<Context>> Context::create(const ContextOptions& options) {
  std::unique_ptr<Context> context(new Context());
  try {
    if (auto r = context->init(options); !r) return r.error();
  } catch (const Exception& e) {
    return e.error();
  }
  return context;
}

Result<void> Context::init(const ContextOptions& options) {
  const char* validation_env = std::getenv("MACH_VULKAN_VALIDATION");
  auto instance = create_instance(options.enable_validation || (validation_env && *validation_env == '1'));
  if (!instance) return instance.error();
  instance_ = *instance;

  const auto devices = physical_devices(instance_);
  std::vector<DeviceInfo> infos;
  for (uint32_t i = 0; i < devices.size(); ++i) infos.push_back(describe(devices[i], i));
  auto picked = pick_device(infos, options.device_index);
  if (!picked) return picked.error();
  physical_ = devices[*picked];
  info_ = infos[*picked];
  queue_family_ = static_cast<uint32_t>(compute_queue_family(physical_));

  // Enable what the device offers of what the shaders may use.
  VkPhysicalDeviceVulkan12Features avail12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceVulkan11Features avail11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, &avail12};
  VkPhysicalDeviceFeatures2 avail{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &avail11};
  vkGetPhysicalDeviceFeatures2(physical_, &avail);

  VkPhysicalDeviceCooperativeMatrixFeaturesNV coop_nv{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  coop_nv.cooperativeMatrix = VK_TRUE;
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  f12.timelineSemaphore = VK_TRUE;
  f12.shaderFloat16 = avail12.shaderFloat16;
  f12.shaderInt8 = avail12.shaderInt8;
  f12.storageBuffer8BitAccess = avail12.storageBuffer8BitAccess;
  f12.uniformAndStorageBuffer8BitAccess = avail12.uniformAndStorageBuffer8BitAccess;
  f12.bufferDeviceAddress = VK_FALSE;
  f12.vulkanMemoryModel = avail12.vulkanMemoryModel;
  f12.vulkanMemoryModelDeviceScope = avail12.vulkanMemoryModelDeviceScope;
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, &f12};
  f11.storageBuffer16BitAccess = avail11.storageBuffer16BitAccess;
  f11.uniformAndStorageBuffer16BitAccess = avail11.uniformAndStorageBuffer16BitAccess;
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f11};
  features.features.shaderInt16 = avail.features.shaderInt16;
  features.features.shaderInt64 = avail.features.shaderInt64;
  if (info_.nv_cooperative_matrix) f12.pNext = &coop_nv;
  VkPhysicalDeviceShaderIntegerDotProductFeatures int_dot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  int_dot.shaderIntegerDotProduct = VK_TRUE;
  if (info_.int_dot) {
    int_dot.pNext = f12.pNext;
    f12.pNext = &int_dot;
  }

  std::vector<const char*> extensions = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  if (info_.nv_cooperative_matrix) extensions.push_back(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
  if (info_.int_dot) extensions.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);

  const auto [transfer_family, transfer_index] = transfer_queue_family(physical_, queue_family_);
  const float priorities[2] = {1.0f, 1.0f};
  VkDeviceQueueCreateInfo qcis[2] = {{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO}, {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO}};
  uint32_t queue_infos = 1;
  qcis[0].queueFamilyIndex = queue_family_;
  qcis[0].queueCount = transfer_family == static_cast<int>(queue_family_) ? 2 : 1;
  qcis[0].pQueuePriorities = priorities;
  if (transfer_family >= 0 && transfer_family != static_cast<int>(queue_family_)) {
    qcis[1].queueFamilyIndex = static_cast<uint32_t>(transfer_family);
    qcis[1].queueCount = 1;
    qcis[1].pQueuePriorities = priorities;
    queue_infos = 2;
  }
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &features};
  dci.queueCreateInfoCount = queue_infos;
  dci.pQueueCreateInfos = qcis;
  dci.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  dci.ppEnabledExtensionNames = extensions.data();
  if (VkResult r = vkCreateDevice(physical_, &dci, nullptr, &device_); r != VK_SUCCESS)
    return vk_error(r, fmt::format("vkCreateDevice({})", info_.name));
  vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
  if (transfer_family >= 0) {
    transfer_family_ = static_cast<uint32_t>(transfer_family);
    vkGetDeviceQueue(device_, transfer_family_, transfer_index, &transfer_queue_);
    transfer_kind_ = transfer_family_ == queue_family_ ? "second compute queue" : "transfer-only queue family";
  } else {
    transfer_family_ = queue_family_;
    transfer_queue_ = queue_;
    transfer_kind_ = "none (the compute queue)";
  }
  push_descriptor_ =
      reinterpret_cast<PFN_vkCmdPushDescriptorSetKHR>(vkGetDeviceProcAddr(device_, "vkCmdPushDescriptorSetKHR"));
  if (!push_descriptor_) return Error{Errc::unsupported, "vkCmdPushDescriptorSetKHR is missing"};

  VkSemaphoreTypeCreateInfo type{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  type.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  type.initialValue = 0;
  VkSemaphoreCreateInfo sci{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &type};
  vk_check(vkCreateSemaphore(device_, &sci, nullptr, &timeline_), "vkCreateSemaphore");
  vk_check(vkCreateSemaphore(device_, &sci, nullptr, &transfer_timeline_), "vkCreateSemaphore");

  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = queue_family_;
  vk_check(vkCreateCommandPool(device_, &pci, nullptr, &pool_), "vkCreateCommandPool");
  pci.queueFamilyIndex = transfer_family_;
  vk_check(vkCreateCommandPool(device_, &pci, nullptr, &transfer_pool_), "vkCreateCommandPool");
  return {};
}

Context::~Context() {
  if (device_) {
    vkDeviceWaitIdle(device_);
    pipelines_.clear();
    transfer_.reset();
    staging_ = Buffer();
    if (pool_) vkDestroyCommandPool(device_, pool_, nullptr);
    if (transfer_pool_) vkDestroyCommandPool(device_, transfer_pool_, nullptr);
    if (timeline_) vkDestroySemaphore(device_, timeline_, nullptr);
    if (transfer_timeline_) vkDestroySemaphore(device_, transfer_timeline_, nullptr);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

Buffer Context::create_buffer(uint64_t bytes, MemoryKind kind, std::string label, bool with_transfer_queue) {
  Buffer b;
  b.device_ = device_;
  b.size_ = bytes;
  b.label_ = std::move(label);
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = std::max<uint64_t>(bytes, 4);
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  // Buffers that the transfer queue's uploads touch need no ownership transfers when its family differs.
  const uint32_t families[2] = {queue_family_, transfer_family_};
  if (with_transfer_queue && transfer_family_ != queue_family_) {
    bci.sharingMode = VK_SHARING_MODE_CONCURRENT;
    bci.queueFamilyIndexCount = 2;
    bci.pQueueFamilyIndices = families;
  } else {
    bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  }
  vk_check(vkCreateBuffer(device_, &bci, nullptr, &b.buffer_), fmt::format("vkCreateBuffer({})", b.label_));

  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device_, b.buffer_, &req);
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(physical_, &mem);
  VkMemoryPropertyFlags want = 0, prefer = 0;
  switch (kind) {
    case MemoryKind::device: want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT; break;
    case MemoryKind::host_upload:
      want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      break;
    case MemoryKind::host_readback:
      want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      prefer = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
      break;
  }
  int type = -1;
  for (int pass = 0; pass < 2 && type < 0; ++pass) {
    const VkMemoryPropertyFlags need = pass == 0 ? (want | prefer) : want;
    for (uint32_t i = 0; i < mem.memoryTypeCount; ++i) {
      if ((req.memoryTypeBits & (1u << i)) && (mem.memoryTypes[i].propertyFlags & need) == need) {
        type = static_cast<int>(i);
        break;
      }
    }
  }
  if (type < 0) {
    b.reset();
    throw Exception(Errc::gpu, fmt::format("no memory type fits buffer '{}'", b.label_));
  }
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = static_cast<uint32_t>(type);
  if (VkResult r = vkAllocateMemory(device_, &mai, nullptr, &b.memory_); r != VK_SUCCESS) {
    const std::string label = b.label_;
    b.reset();
    throw Exception(vk_error(r, fmt::format("allocating {:.1f} MiB for '{}'", bytes / 1048576.0, label)));
  }
  vk_check(vkBindBufferMemory(device_, b.buffer_, b.memory_, 0), "vkBindBufferMemory");
  if (mem.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
    void* p = nullptr;
    vk_check(vkMapMemory(device_, b.memory_, 0, VK_WHOLE_SIZE, 0, &p), "vkMapMemory");
    b.mapped_ = static_cast<std::byte*>(p);
  }
  return b;
}

void Context::upload(Buffer& dst, uint64_t offset, std::span<const std::byte> data) {
  assert(offset + data.size() <= dst.size());
  if (dst.mapped()) {
    std::memcpy(dst.mapped() + offset, data.data(), data.size());
    return;
  }
  if (!staging_) staging_ = create_buffer(kStagingBytes, MemoryKind::host_upload, "staging");
  if (!transfer_) transfer_ = begin_commands();
  for (uint64_t done = 0; done < data.size();) {
    const uint64_t n = std::min<uint64_t>(kStagingBytes, data.size() - done);
    std::memcpy(staging_.mapped(), data.data() + done, n);
    transfer_->begin();
    transfer_->copy(staging_, 0, dst, offset + done, n);
    transfer_->end();
    wait(submit(*transfer_));
    done += n;
  }
}

void Context::download(const Buffer& src, uint64_t offset, std::span<std::byte> out) {
  assert(offset + out.size() <= src.size());
  if (src.mapped()) {
    std::memcpy(out.data(), src.mapped() + offset, out.size());
    return;
  }
  if (!staging_) staging_ = create_buffer(kStagingBytes, MemoryKind::host_upload, "staging");
  if (!transfer_) transfer_ = begin_commands();
  for (uint64_t done = 0; done < out.size();) {
    const uint64_t n = std::min<uint64_t>(kStagingBytes, out.size() - done);
    transfer_->begin();
    transfer_->copy(src, offset + done, staging_, 0, n);
    transfer_->end();
    wait(submit(*transfer_));
    std::memcpy(out.data() + done, staging_.mapped(), n);
    done += n;
  }
}

void Context::fill(Buffer& dst, uint64_t offset, uint64_t bytes, uint32_t value) {
  if (!transfer_) transfer_ = begin_commands();
  transfer_->begin();
  transfer_->fill(dst, offset, bytes, value);
  transfer_->end();
  wait(submit(*transfer_));
}

bool Context::has_shader(const std::string& shader) {
  for (const auto& s : embedded_shaders())
    if (s.name == shader) return true;
  return false;
}

bool Context::has_pipeline_for(const std::string& shader) const {
  for (const auto& [key, p] : pipelines_)
    if (key.first == shader) return true;
  return false;
}

const Pipeline& Context::pipeline(const std::string& shader, const SpecConstants& constants) {
  auto key = std::make_pair(shader, constants);
  if (auto it = pipelines_.find(key); it != pipelines_.end()) return *it->second;

  const EmbeddedShader* found = nullptr;
  for (const auto& s : embedded_shaders())
    if (s.name == shader) found = &s;
  if (!found)
    throw Exception(Errc::not_found,
                    fmt::format("shader '{}' is not in this build (its glslc lacked a feature it needs?)", shader));

  auto p = std::make_unique<Pipeline>();
  p->device_ = device_;
  p->name_ = shader;
  p->binding_count_ = spirv_binding_count(found->spirv.data(), found->spirv.size());

  std::vector<VkDescriptorSetLayoutBinding> bindings(p->binding_count_);
  for (uint32_t i = 0; i < p->binding_count_; ++i) {
    bindings[i] = {};
    bindings[i].binding = i;
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo dsl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dsl.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
  dsl.bindingCount = p->binding_count_;
  dsl.pBindings = bindings.data();
  vk_check(vkCreateDescriptorSetLayout(device_, &dsl, nullptr, &p->set_layout_), "vkCreateDescriptorSetLayout");

  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushConstantBytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &p->set_layout_;
  pl.pushConstantRangeCount = 1;
  pl.pPushConstantRanges = &range;
  vk_check(vkCreatePipelineLayout(device_, &pl, nullptr, &p->layout_), "vkCreatePipelineLayout");

  VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smci.codeSize = found->spirv.size() * sizeof(uint32_t);
  smci.pCode = found->spirv.data();
  VkShaderModule module = VK_NULL_HANDLE;
  vk_check(vkCreateShaderModule(device_, &smci, nullptr, &module), fmt::format("vkCreateShaderModule({})", shader));

  std::vector<VkSpecializationMapEntry> entries(constants.size());
  for (uint32_t i = 0; i < constants.size(); ++i) entries[i] = {i, i * 4u, 4};
  VkSpecializationInfo spec{static_cast<uint32_t>(entries.size()), entries.data(), constants.size() * 4,
                            constants.data()};
  VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cpci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpci.stage.module = module;
  cpci.stage.pName = "main";
  cpci.stage.pSpecializationInfo = constants.empty() ? nullptr : &spec;
  cpci.layout = p->layout_;
  VkResult r = vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &cpci, nullptr, &p->pipeline_);
  vkDestroyShaderModule(device_, module, nullptr);
  vk_check(r, fmt::format("vkCreateComputePipelines({})", shader));
  return *pipelines_.emplace(std::move(key), std::move(p)).first->second;
}

std::unique_ptr<CommandList> Context::begin_commands() {
  return std::make_unique<CommandList>(*this, info_.timestamps ? 512 : 0);
}

std::unique_ptr<CommandList> Context::begin_transfer_commands() {
  return std::make_unique<CommandList>(*this, 0, true);
}

namespace {

// One command buffer to `queue`, signalling `signal` at `value`, and waiting (before its compute and transfer
// stages) for `wait` to reach `wait_value` when that is not 0.
void submit_one(VkQueue queue, VkCommandBuffer cmd, VkSemaphore signal, uint64_t value, VkSemaphore wait,
                uint64_t wait_value, const char* what) {
  const VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  VkTimelineSemaphoreSubmitInfo timeline{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  timeline.signalSemaphoreValueCount = 1;
  timeline.pSignalSemaphoreValues = &value;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO, &timeline};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  si.signalSemaphoreCount = 1;
  si.pSignalSemaphores = &signal;
  if (wait_value > 0) {
    timeline.waitSemaphoreValueCount = 1;
    timeline.pWaitSemaphoreValues = &wait_value;
    si.waitSemaphoreCount = 1;
    si.pWaitSemaphores = &wait;
    si.pWaitDstStageMask = &wait_stage;
  }
  vk_check(vkQueueSubmit(queue, 1, &si, VK_NULL_HANDLE), what);
}

// Blocks the calling thread until the timeline semaphore reaches `value`.
void block_until(VkDevice device, VkSemaphore timeline, uint64_t value, const char* what) {
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.semaphoreCount = 1;
  wi.pSemaphores = &timeline;
  wi.pValues = &value;
  vk_check(vkWaitSemaphores(device, &wi, UINT64_MAX), what);
}

}  // namespace

Ticket Context::submit(CommandList& commands) {
  assert(!commands.transfer());
  if (commands.recording()) commands.end();
  const uint64_t value = next_value_++;
  // Every compute submission waits for the uploads required so far (a wait on a value already reached costs
  // nothing), so its commands see their bytes.
  submit_one(queue_, commands.handle(), timeline_, value, transfer_timeline_, transfer_required_, "vkQueueSubmit");
  return Ticket{value};
}

Ticket Context::submit_transfer(CommandList& commands) {
  assert(commands.transfer());
  if (commands.recording()) commands.end();
  const uint64_t value = transfer_next_++;
  submit_one(transfer_queue_, commands.handle(), transfer_timeline_, value, VK_NULL_HANDLE, 0,
             "vkQueueSubmit(transfer)");
  return Ticket{value};
}

uint64_t Context::transfers_done() const {
  uint64_t value = 0;
  vk_check(vkGetSemaphoreCounterValue(device_, transfer_timeline_, &value), "vkGetSemaphoreCounterValue");
  return value;
}

void Context::wait_transfers(Ticket ticket) {
  if (transfers_done() >= ticket.value) return;
  block_until(device_, transfer_timeline_, ticket.value, "vkWaitSemaphores(transfer)");
}

void Context::wait(Ticket ticket) {
  // Poll for a while first (kWaitPollWindow). The yields leave the core to others (lavapipe's worker threads
  // on a small CI machine).
  const auto poll_until = std::chrono::steady_clock::now() + kWaitPollWindow;
  do {
    if (is_done(ticket)) return;
    std::this_thread::yield();
  } while (std::chrono::steady_clock::now() < poll_until);
  block_until(device_, timeline_, ticket.value, "vkWaitSemaphores");
}

bool Context::is_done(Ticket ticket) const {
  uint64_t value = 0;
  vk_check(vkGetSemaphoreCounterValue(device_, timeline_, &value), "vkGetSemaphoreCounterValue");
  return value >= ticket.value;
}

}  // namespace mach::gpu
