// A compute pipeline built from an embedded SPIR-V module. Bindings are storage buffers 0..N-1 in set 0,
// written with push descriptors; every pipeline shares one push-constant range of kPushConstantBytes.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mach::gpu {

inline constexpr uint32_t kPushConstantBytes = 128;  // the minimum every Vulkan device guarantees

// Specialization constant values, constant_id i = values[i]. By convention constant_id 0 is the workgroup
// size in x (`layout(local_size_x_id = 0) in;`) where a shader makes it tunable.
using SpecConstants = std::vector<uint32_t>;

class Pipeline {
 public:
  Pipeline() = default;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  ~Pipeline();

  VkPipeline handle() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }
  uint32_t binding_count() const { return binding_count_; }
  const std::string& name() const { return name_; }

 private:
  friend class Context;
  VkDevice device_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  uint32_t binding_count_ = 0;
  std::string name_;
};

// Number of storage-buffer bindings in descriptor set 0 of a SPIR-V module (max Binding decoration + 1).
uint32_t spirv_binding_count(const uint32_t* words, size_t count);

}  // namespace mach::gpu
