// RMSNorm on the GPU. Shapes: rows = T (hidden norm) or T * heads (per-head q/k norm), H = row length.
#pragma once

#include <cstdint>

#include "gpu/command_list.hpp"

namespace mach::ops {

// How the normalized row x̂ = x / sqrt(mean(x^2) + eps) is scaled.
enum class NormWeight : uint32_t {
  none = 0,        // x̂ (Gemma 4's v_norm and router norm: no weight)
  w = 1,           // w * x̂ (Qwen3, gpt-oss, DeepSeek, Gemma 4)
  one_plus_w = 2,  // (1 + w) * x̂ (Qwen3.5 / Qwen3-Next, Gemma 3; checkpoints store w around 0)
};

// A row before an RMSNorm that the op reading it applies itself (ops::mul_mat_multi, ops::route_logits): no
// norm dispatch, and no barrier between the norm and the op. The op scales each column by the norm's scale as
// it reads x, sums x's squares over the row in the same pass, and divides its outputs by the row's RMS: the
// op of y = rms_norm(x), its sums taken in another order.
struct NormedX {
  gpu::Binding x;       // [T, K] f32, the norm's input
  gpu::Binding weight;  // [K] f32 (bind anything for NormWeight::none)
  float eps = 1e-6f;
  NormWeight mode = NormWeight::w;

  // The kernels' scale of column i: weight[i] * scale_mul() + scale_add().
  float scale_mul() const { return mode == NormWeight::none ? 0.0f : 1.0f; }
  float scale_add() const { return mode == NormWeight::w ? 0.0f : 1.0f; }
};

struct RmsNormShape {
  uint32_t rows = 0;
  uint32_t h = 0;
  uint32_t x_stride = 0;  // floats between rows of x; 0 means h
  uint32_t y_stride = 0;  // floats between rows of y; 0 means h
};

// y[r, :] = x̂[r, :] * scale;  x: [rows, H] f32, w: [H] f32 (ignored for NormWeight::none: bind anything),
// y: [rows, H] f32, may be the same range as x (pass it as inout to both) for the in-place norm.
void rms_norm(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding w, gpu::Binding y, const RmsNormShape& shape,
              float eps, NormWeight weight);

// rms_norm, and in the same dispatch y's q4h form: the prepared activations of ops::mul_mat's packed-f16 q4
// kernel (shaders/q4h_prep.comp's format), so the q4 products that read y need no q4h_prep dispatch of their
// own. xh: [rows, H/8] uvec4 (rows * H * 2 bytes), xg: [rows, H/32] vec2 (rows * H / 4 bytes), rows
// contiguous whatever y_stride: the sizes and layout of matmul.cpp's prepared x for rows = tokens, K = H.
// xh and xg are bit for bit what q4h_prep writes for this y. H must be a multiple of 64; y as for rms_norm
// except that it is another buffer than x (never in place: a row is split over workgroups that all read x).
void rms_norm_q4h(gpu::CommandList& cmd, gpu::Binding x, gpu::Binding w, gpu::Binding y, gpu::Binding xh,
                  gpu::Binding xg, const RmsNormShape& shape, float eps, NormWeight weight);

}  // namespace mach::ops
