// Ops on the final logits on the GPU: greedy argmax and Gemma's soft-capping. Shapes: T tokens, V vocabulary.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

// Bytes of the scratch buffer argmax() needs for [rows, cols] (0: none; bind any buffer then). Long rows are
// split over many workgroups (a decode step's single row would otherwise run on one compute unit), and the
// per-chunk maxima meet in this scratch.
uint64_t argmax_scratch_bytes(uint32_t rows, uint32_t cols);

// out[t] = argmax over v of x[t, v];  x: [T, V] f32 (V up to 262144 and beyond), out: [T] u32,
// scratch: argmax_scratch_bytes(T, V) bytes. Equal maxima give the lowest index; NaN never wins; a row of
// only NaN gives 0.
void argmax(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding scratch, gpu::Binding out, uint32_t rows,
            uint32_t cols);

// x[i] = cap * tanh(x[i] / cap) in place over n floats (Gemma's final_logit_softcapping, cap 30).
void softcap(gpu::CommandList& cmd, gpu::Binding x, uint32_t n, float cap);

}  // namespace mach::ops
