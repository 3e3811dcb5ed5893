// Chained dispatches: a dependent op recorded right after the op it depends on, with no barrier between
// them, waits inside its shader for the producer's workgroups to finish (shaders/chain.glsl). It loads its
// weights first, so its launch, its first loads and the barrier's drain overlap the producer's last
// workgroups. A decode step on an H200 is bound by such dependent dispatches (~3 us each for launch and
// drain whatever they do), not by bytes: docs/performance.md.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"

namespace mach::ops {

// A link between a producer op and the consumer op recorded right after it. Each link owns a word of
// `words`, used once per recording: chain_reset zeroes the links before them (word 0 of the buffer is an
// error flag that a wait which gave up sets; chain_reset keeps it).
struct ChainLink {
  gpu::Binding words;  // the owner's chain buffer: chain_buffer_bytes() bytes, zeroed once
  uint32_t index = 0;  // this link's pair of words; < kMaxChainLinks
  // Set by the producer op: its workgroups, and the list's dispatch count after it (0 when it did not
  // signal: the consumer then takes a barrier as usual).
  uint32_t producer_groups = 0;
  uint32_t producer_dispatch = 0;
};

inline constexpr uint32_t kMaxChainLinks = 0xffff;

// The optional chain arguments of the ops that take part: a consumer waits for `wait` (whose producer must
// be the dispatch recorded just before), a producer signals `signal`.
struct Chain {
  ChainLink* wait = nullptr;
  ChainLink* signal = nullptr;
};

uint64_t chain_buffer_bytes(uint32_t links);
// Zeroes every link of `words` (a transfer command: the dispatches after it take a barrier).
void chain_reset(gpu::CommandList& cmd, gpu::Buffer& words);

// Whether ops may chain on this device: it must start a dispatch's workgroups in order and a later
// dispatch's after all of an earlier one's (chain.glsl's forward-progress assumption), which NVIDIA's GPUs
// and lavapipe do. $MACH_CHAIN=0 turns chaining off anywhere (for A/B measurements).
bool chaining_supported(const gpu::Context& context);

// What one op's dispatch needs (the ops' own business).
struct ChainCall {
  uint32_t spec = 0;    // chain.glsl's CHAIN: bit 0 waits, bit 1 signals
  uint32_t links = 0;   // push word chain_links
  uint32_t expect = 0;  // push word chain_expect
  gpu::Binding words;   // the chain buffer, or `unused` where the op neither waits nor signals
};

// Before an op's dispatch: marks the dispatch chained when it waits (`can_wait`: the op's kernel for this
// call supports it; else the dispatch takes a barrier as usual), and what it signals when `can_signal`.
ChainCall chain_call(gpu::CommandList& cmd, const Chain& chain, bool can_wait, bool can_signal,
                     gpu::Binding unused);
// After it: records the producer's workgroups in chain.signal when the call signalled.
void chain_signalled(gpu::CommandList& cmd, const Chain& chain, const ChainCall& call, uint32_t groups);

}  // namespace mach::ops
