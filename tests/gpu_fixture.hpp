// One Vulkan context shared by every test in a binary (device creation costs ~100 ms on lavapipe).
#pragma once

#include <gtest/gtest.h>

#include "gpu/context.hpp"

namespace mach::test {

// The shared context; created on first use with the default device choice ($MACH_DEVICE honoured).
gpu::Context& gpu_context();

}  // namespace mach::test
