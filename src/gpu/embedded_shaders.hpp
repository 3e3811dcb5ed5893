// SPIR-V modules compiled from shaders/*.comp at build time (cmake/shaders.cmake) and linked into the binary.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace mach::gpu {

struct EmbeddedShader {
  std::string_view name;            // variant name, e.g. "mul_mat_vec_q4"
  std::span<const uint32_t> spirv;  // SPIR-V words
};

std::span<const EmbeddedShader> embedded_shaders();

}  // namespace mach::gpu
