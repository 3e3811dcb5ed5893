#include "gpu/vk_check.hpp"

#include <fmt/format.h>

namespace mach::gpu {

const char* vk_result_name(VkResult result) {
  switch (result) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV: return "VK_ERROR_INVALID_SHADER_NV";
    default: return "VK_ERROR_UNKNOWN";
  }
}

Error vk_error(VkResult result, std::string_view what) {
  switch (result) {
    case VK_ERROR_DEVICE_LOST:
      return {Errc::device_lost,
              fmt::format("{}: the GPU device was lost (driver reset, hang or crash); mach must be restarted", what)};
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return {Errc::out_of_device_memory,
              fmt::format("{}: out of GPU memory; use a smaller --quant, --kv-cache-gb or --expert-cache-gb", what)};
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return {Errc::out_of_device_memory, fmt::format("{}: out of host memory for the Vulkan driver", what)};
    default:
      return {Errc::gpu, fmt::format("{} failed: {} ({})", what, vk_result_name(result), static_cast<int>(result))};
  }
}

void vk_check(VkResult result, std::string_view what) {
  if (result != VK_SUCCESS) throw Exception(vk_error(result, what));
}

}  // namespace mach::gpu
