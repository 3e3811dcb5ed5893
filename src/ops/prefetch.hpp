// L2 prefetch of weights (shaders/l2_prefetch.comp): a dispatch that reads the weights of an op recorded
// later, recorded right after the op before that one with no barrier between them (it writes only a scratch
// sink), so that the reads overlap that op and the later op finds its weights in the GPU's L2 cache.
// Decode's products are bound by latency, and a cold load from DRAM is the largest part of their critical
// path. Only worth it where the ranges fit in L2 with room to spare (a layer's weights at one token); on a
// device whose "L2" is the host's caches (lavapipe) it is wasted work.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"
#include "ops/matmul.hpp"
#include "ops/weight_format.hpp"

namespace mach::ops {

// Units (16 bytes) one prefetch workgroup reads (l2_prefetch.comp's PER_WG).
inline constexpr uint32_t kPrefetchUnitsPerWorkgroup = 256 * 8;

// Reads the whole of the matrix (quants and scales). `sink` gets one 32-bit word per workgroup, the XOR of the
// words that workgroup read (what the op's test checks; prefetch_sink_words() of them); without one the op
// takes it from the list's scratch.
void prefetch_weights(gpu::CommandList& cmd, const WeightRef& w, gpu::Binding sink = {});
// Reads the matrices of the experts that the first `pairs` entries of routing.ids name (through the slot
// table; experts without a slot are skipped, their sink words are 0). The ids must be complete before this is
// recorded (a barrier after their writer: any op that already read them has had one).
void prefetch_experts(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, uint32_t pairs,
                      gpu::Binding sink = {});
// The sink's words: the workgroups of `ranges` ranges of a [rows, cols] matrix of `type`.
uint32_t prefetch_sink_words(WeightType type, uint32_t rows, uint32_t cols, uint32_t ranges);

}  // namespace mach::ops
