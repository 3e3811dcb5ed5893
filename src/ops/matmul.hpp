// Matrix products of activations with weight matrices, for every weight format of weight_format.hpp.
// Shapes: T tokens, K input features (W's cols), N output features (W's rows), E experts, k slots (top-k).
//
// Each op picks one of two kernels by T: a matrix-vector kernel for T <= kVerifyMaxTokens (decode and
// speculative-verify blocks) and a tiled matrix-matrix kernel for larger T (prefill). The matrix-vector
// kernels handle at most kMatVecMaxTokens tokens per weight load; larger blocks run in chunks of at most
// that many tokens within one dispatch, each chunk re-reading the weights (mostly from L2, as a row tile's
// chunks run side by side). On an H100 the tiled kernel took 134 us for a 4096 x 2048 q4 matrix at T = 16,
// against ~8 us for one matrix-vector pass, so chunking wins well past T = 8. mul_mat_id runs the
// matrix-vector kernels per (row tile, pair) for T <= kVerifyMaxTokens. Both read weights with 16-byte loads, so K must keep rows 16-byte aligned:
// K % 4 == 0 for f32, K % 8 == 0 for f16/bf16, and the group size for quantized types. x and y bindings
// need no more than the device's storage-buffer offset alignment.
//
// Launch shapes are spec constants of the shaders, tunable on a device without rebuilding through
// $MACH_MUL_MAT_VEC ("wg=256,rows=4": max workgroup size, rows per workgroup) and $MACH_MUL_MAT
// ("bm=64,bn=64,tm=4,tn=4": tile and per-thread block); both are read once per process.
#pragma once

#include <cstdint>
#include <span>

#include "gpu/command_list.hpp"
#include "ops/attention_prep.hpp"
#include "ops/norm.hpp"
#include "ops/weight_format.hpp"

namespace mach::ops {

// A weight range bound for a kernel: the binding starts at the device's storage-buffer offset alignment at or
// below `offset`, and the weights begin base_units 16-byte units into it.
struct WeightBinding {
  gpu::Binding binding;
  uint32_t base_units = 0;
};
WeightBinding bind_weights(const gpu::Context& context, const gpu::Buffer& buffer, uint64_t offset, uint64_t bytes);

// Tokens per weight load in the matrix-vector kernels (their register blocking).
inline constexpr uint32_t kMatVecMaxTokens = 8;
// The largest T on the matrix-vector kernels (speculative verify blocks); larger T take the tiled kernels.
inline constexpr uint32_t kVerifyMaxTokens = 32;

// Whether mul_mat / mul_mat_id of `type` weights over T tokens run the packed-f16 q4 kernels, which read x
// as prepare_q4h() leaves it: q4 weights, T <= kVerifyMaxTokens, a device with shaderFloat16, and
// $MACH_Q4_F32 not "1" (which forces the f32 kernels, those of devices without f16 arithmetic).
bool uses_q4h(const gpu::Context& context, WeightType type, uint32_t tokens);
// Whether q4 products on mul_mat_vec.comp (those of T <= kVerifyMaxTokens that do not take the packed-f16
// kernels) run its Q4_DOT variants: int8 dot products on x quantized per 32 values in the kernel, with
// x's rounding error (2e-5 to 9e-5 of the product's energy in the op tests, against ~1e-2 for q4's own
// rounding of the weights) for about a quarter of the instructions. Where the device has
// shaderIntegerDotProduct and says its signed x unsigned packed form is accelerated (NVIDIA: dp4a);
// $MACH_Q4_DOT=1 forces it where it only runs (lavapipe's tests), 0 turns it off.
bool uses_q4_dot(const gpu::Context& context, WeightType type);

// Whether products of T > kVerifyMaxTokens tokens of `type` weights run on tensor cores (mul_mat_cm.comp):
// f16 / bf16 / q8_0 / q4 weights on a device with NVIDIA cooperative matrices and subgroups of 32, x rounded
// to f16 per row scaled by a power of two, f32 accumulation. $MACH_COOPMAT = "0" turns it off; "emu" runs the
// kernel's plain-arithmetic twin on any device with f16 arithmetic (how CI tests the tiling on lavapipe).
bool uses_coopmat(const gpu::Context& context, WeightType type, uint32_t tokens);

// x prepared for the packed-f16 q4 kernels (shaders/q4h_prep.comp): per 64-column group, x / max|x| as f16
// and the group's scale and per-32-column sums. Preparing is a dispatch of its own and reads all of x, so
// products with the same input (q, k and v; the router and the experts' gate/up) should share one.
// The bindings are scratch of the command list that prepared them: valid until its next begin().
struct PreparedX {
  gpu::Binding xh;  // [rows, K / 8] 16-byte words
  gpu::Binding xg;  // [rows, K / 32] (group scale, unit sum) f32 pairs
  uint32_t rows = 0;
  uint32_t k = 0;
};
// Command scratch for a prepared x of rows x k (for ops that write the form themselves: rms_norm_q4h, the
// normed router).
PreparedX q4h_scratch(gpu::CommandList& cmd, uint32_t rows, uint32_t k);
// x: [rows, K] f32, K % 64 == 0.
PreparedX prepare_q4h(gpu::CommandList& cmd, gpu::Binding x, uint32_t rows, uint32_t k);

// Whether a product overwrites y or adds to it. With accumulate the op binds y read-write; the sum is
// y + (W x) rounded once, as ops::add would give, on every kernel.
enum class Output { overwrite, accumulate };

// y[t, n] (+)= sum_k W[n, k] * x[t, k].  w: [N, K]; x: [T, K] f32; y: [T, N] f32. Where uses_q4h, x is
// prepared here first, except for one token on at most 6 MiB of weights, which runs the f32 kernel on x (the
// prep dispatch would cost more than it saves).
void mul_mat(gpu::CommandList& cmd, const WeightRef& w, gpu::Binding x, gpu::Binding y, uint32_t tokens,
             Output output = Output::overwrite);
// The same with x prepared by prepare_q4h (rows = T, k = K); only where uses_q4h(context, w.type, T).
void mul_mat(gpu::CommandList& cmd, const WeightRef& w, const PreparedX& x, gpu::Binding y, uint32_t tokens,
             Output output = Output::overwrite);
// Two or three products of one prepared x in one dispatch (attention's q, k and v): y[i] = w[i] x, each
// overwritten. The matrices share a type, K and a buffer, and their span in it fits one storage-buffer range;
// only where uses_q4h(context, type, T). One dispatch instead of three saves two launches and barriers per
// layer, which is most of what those small products cost at decode.
void mul_mat_multi(gpu::CommandList& cmd, std::span<const WeightRef> w, const PreparedX& x,
                   std::span<const gpu::Binding> y, uint32_t tokens);
// The same on x's RMSNorm, which the product applies (ops::NormedX; mul_mat_vec.comp's MULTI + NORM): any weight
// type, x: [T, K] f32 before the norm. One dispatch, no norm dispatch before it, for T <= kVerifyMaxTokens;
// larger T norm into command scratch first.
void mul_mat_multi(gpu::CommandList& cmd, std::span<const WeightRef> w, const NormedX& x,
                   std::span<const gpu::Binding> y, uint32_t tokens);

// Attention's inputs from the layer's input row x in one dispatch: q, k, v = rms_norm(x) W{q,k,v} (as
// mul_mat_multi on NormedX, into qk.q, qk.k and store.v), then qk_norm_rope_kv_store of them. The last
// workgroup to finish a head's rows normalizes and rotates that head and stores its K or V rows (mul_mat_vec.comp's
// QK_TAIL), counting in `counts`: 4 * (q_heads + 2 * kv_heads) u32, zero before the call and after it, used
// by no other op. Where that kernel does not apply (T > kVerifyMaxTokens, head_dim not a multiple of the
// rows per workgroup), mul_mat_multi and then qk_norm_rope_kv_store. w: q, k, v, as mul_mat_multi's.
struct QkvTail {
  QkNormRopeArgs qk;
  QkNormRopeShape shape;  // its tokens are the products'
  QkNormRopeParams params;
  KvStoreArgs store;
  gpu::Binding counts;
};
void qkv_norm_rope_kv_store(gpu::CommandList& cmd, std::span<const WeightRef> w, const NormedX& x,
                            const QkvTail& tail);

// The experts of a MoE layer: y[t, s, n] = sum_k W_e[n, k] * x[t, (s,) k] with e = ids[t, s] and W_e the
// matrix in slot slot_table[e] of the stack `w`.
//   ids: [T, top_k] u32 expert ids, distinct within a token (as top-k makes them);
//   slot_table: [experts] u32, expert id -> slot of `w` (identity when every expert is resident), or ops::kNoSlot:
//     the pairs routed to that expert are skipped and their y rows keep their contents, so that a streaming
//     step can run a layer's experts in passes over a bank smaller than the step's experts;
//   x: [T, K] f32 shared by all slots (gate/up projections) or, with x_per_slot, [T, top_k, K] (down);
//   y: [T, top_k, N] f32.
// The weight stack is bound as one range, so offset through the last slot must fit the device's
// maxStorageBufferRange (an expert bank larger than that needs one call per part).
struct MoeRouting {
  gpu::Binding ids;
  gpu::Binding slot_table;
  uint32_t experts = 0;
  uint32_t top_k = 0;
};
void mul_mat_id(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, gpu::Binding x,
                bool x_per_slot, gpu::Binding y, uint32_t tokens);
// The same with x prepared by prepare_q4h (rows = T, or T * top_k with x_per_slot; k = K); only where
// uses_q4h(context, w.type, T).
void mul_mat_id(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, const PreparedX& x,
                bool x_per_slot, gpu::Binding y, uint32_t tokens);

// The routed experts' gate/up projection and SwiGLU (no clamp):
//   act[t, j, i] = silu(g) * u, g = (W x[t])[i], u = (W x[t])[I + i], W = the fused [2I, K] gate/up matrix
//   (gate rows first) of expert ids[t, j]; act: [T, top_k, I] f32.
// Rows of pairs whose expert has no slot are left unspecified (the down projection skips those pairs too).
// Where swiglu_takes_q4h(T) (through prepare_q4h), or for T <= kVerifyMaxTokens where uses_q4_dot
// (mul_mat_vec.comp's int8-x kernel on x as it is): one dispatch whose workgroups compute gate and up rows
// together and write act, so the [T, top_k, 2I] product never goes through memory; otherwise mul_mat_id
// into command scratch, then glu.
void mul_mat_id_swiglu(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, gpu::Binding x,
                       gpu::Binding act, uint32_t tokens);
// Whether mul_mat_id_swiglu over T tokens of `type` experts runs the packed-f16 kernel on an x prepared by
// prepare_q4h (the overload below, which a caller that packs x itself uses): uses_q4h, but not where
// uses_q4_dot.
bool swiglu_takes_q4h(const gpu::Context& context, WeightType type, uint32_t tokens);
// The same with x ([T, K]) prepared by prepare_q4h; only where swiglu_takes_q4h.
void mul_mat_id_swiglu(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing,
                       const PreparedX& x, gpu::Binding act, uint32_t tokens);

// The routed experts' down projection added to the residual, mul_mat_id and moe_combine in one op:
//   residual[t, n] += sum over j < top_k with slot_table[ids[t, j]] != kNoSlot of
//                     route_w[t, j] * (W_{ids[t, j]} x[t, j, :])[n].
//   x: [T, top_k, K] f32, one row per pair (as mul_mat_id's x_per_slot); route_w: [T, top_k] f32;
//   residual: [T, N] f32, read and written.
// Pairs whose expert has no slot add nothing, so the passes of a streaming step (each with only its own
// experts slotted) add up to the whole sum. For T <= kVerifyMaxTokens it is one dispatch (after the q4h
// prep of the T * top_k rows of x where uses_q4h): a workgroup owns a row tile of one token and sums the
// token's pairs in registers, so the expert outputs never go through memory and no combine dispatch or
// barrier follows. Larger T run mul_mat_id into command scratch and moe_combine's kNoSlot-aware variant.
void mul_mat_id_combine(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing,
                        gpu::Binding route_w, gpu::Binding x, gpu::Binding residual, uint32_t tokens);

}  // namespace mach::ops
