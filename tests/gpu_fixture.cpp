#include "gpu_fixture.hpp"

#include <cstdio>
#include <cstdlib>

namespace mach::test {

gpu::Context& gpu_context() {
  static std::unique_ptr<gpu::Context> context = [] {
    auto c = gpu::Context::create();
    if (!c) {
      std::fprintf(stderr, "no GPU context: %s\n", c.error().message.c_str());
      std::abort();
    }
    std::fprintf(stderr, "device: %s (%s), subgroup %u\n", (*c)->info().name.c_str(), (*c)->info().type.c_str(),
                 (*c)->info().subgroup_size);
    return std::move(c).value();
  }();
  return *context;
}

}  // namespace mach::test
