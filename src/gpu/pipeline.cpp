#include "gpu/pipeline.hpp"

namespace mach::gpu {

Pipeline::~Pipeline() {
  if (pipeline_) vkDestroyPipeline(device_, pipeline_, nullptr);
  if (layout_) vkDestroyPipelineLayout(device_, layout_, nullptr);
  if (set_layout_) vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
}

uint32_t spirv_binding_count(const uint32_t* words, size_t count) {
  constexpr uint32_t kOpDecorate = 71;
  constexpr uint32_t kDecorationBinding = 33;
  uint32_t bindings = 0;
  // Header is 5 words; then each instruction starts with (word count << 16) | opcode.
  for (size_t i = 5; i < count;) {
    const uint32_t opcode = words[i] & 0xffffu;
    const uint32_t length = words[i] >> 16;
    if (length == 0) break;
    if (opcode == kOpDecorate && length >= 4 && words[i + 2] == kDecorationBinding)
      bindings = std::max(bindings, words[i + 3] + 1);
    i += length;
  }
  return bindings;
}

}  // namespace mach::gpu
