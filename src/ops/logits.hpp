// Ops on the final logits on the GPU: greedy argmax and Gemma's soft-capping. Shapes: T tokens, V vocabulary.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

// out[t] = argmax over v of x[t, v];  x: [T, V] f32 (V up to 262144 and beyond), out: [T] u32.
// Equal maxima give the lowest index; NaN never wins; a row without a finite or +inf value gives 0.
void argmax(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding out, uint32_t rows, uint32_t cols);

// x[i] = cap * tanh(x[i] / cap) in place over n floats (Gemma's final_logit_softcapping, cap 30).
void softcap(gpu::CommandList& cmd, gpu::Binding x, uint32_t n, float cap);

}  // namespace mach::ops
