#include "ops/chain.hpp"

#include <cassert>
#include <cstdlib>
#include <cstring>

namespace mach::ops {

namespace {
constexpr uint32_t kPciVendorNvidia = 0x10de;
}

uint64_t chain_buffer_bytes(uint32_t links) { return (1 + uint64_t{links}) * 4; }

void chain_reset(gpu::CommandList& cmd, gpu::Buffer& words) { cmd.fill(words, 4, words.size() - 4, 0); }

bool chaining_supported(const gpu::Context& context) {
  if (const char* env = std::getenv("MACH_CHAIN"); env && std::strcmp(env, "0") == 0) return false;
  const gpu::DeviceInfo& info = context.info();
  return info.vendor_id == kPciVendorNvidia || info.type == "cpu";
}

ChainCall chain_call(gpu::CommandList& cmd, const Chain& chain, bool can_wait, bool can_signal,
                     gpu::Binding unused) {
  ChainCall call;
  call.words = unused;
  if (chain.wait && chain.wait->producer_groups != 0) {
    ChainLink& link = *chain.wait;
    if (link.producer_dispatch != cmd.dispatch_count())
      throw Exception(Errc::invalid_argument, "a chained op was not recorded right after its producer");
    if (can_wait) {
      call.spec |= 1;
      call.links |= link.index;
      call.expect = link.producer_groups;
      call.words = link.words;
      cmd.chain_next();
    }
    link.producer_groups = 0;
  }
  if (chain.signal && can_signal) {
    assert(chain.signal->index < kMaxChainLinks);
    call.spec |= 2;
    call.links |= chain.signal->index << 16;
    call.words = chain.signal->words;
  }
  call.words.access = gpu::Access::read_write;
  call.words.tracked = false;
  return call;
}

void chain_signalled(gpu::CommandList& cmd, const Chain& chain, const ChainCall& call, uint32_t groups) {
  if (!chain.signal) return;
  chain.signal->producer_groups = (call.spec & 2) != 0 ? groups : 0;
  chain.signal->producer_dispatch = cmd.dispatch_count();
}

}  // namespace mach::ops
