// Turns VkResult failures into mach::Exception with a message a user can act on.
#pragma once

#include <vulkan/vulkan.h>

#include <string_view>

#include "mach/error.hpp"

namespace mach::gpu {

const char* vk_result_name(VkResult result);

// Throws mach::Exception (device_lost, out_of_device_memory or gpu) when result is not VK_SUCCESS.
// `what` names the operation, e.g. "vkQueueSubmit".
void vk_check(VkResult result, std::string_view what);

Error vk_error(VkResult result, std::string_view what);

}  // namespace mach::gpu
