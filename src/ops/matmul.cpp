#include "ops/matmul.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include "gpu/context.hpp"
#include "ops/activation.hpp"
#include "ops/elementwise.hpp"
#include "ops/norm.hpp"

namespace mach::ops {

WeightBinding bind_weights(const gpu::Context& context, const gpu::Buffer& buffer, uint64_t offset,
                           uint64_t bytes) {
  assert(offset % 16 == 0);
  const uint64_t align = std::max<uint64_t>(16, context.info().min_storage_buffer_offset_alignment);
  const uint64_t start = offset / align * align;
  const uint64_t size = offset - start + bytes;
  assert(start + size <= buffer.size());
  assert(size <= context.info().max_storage_buffer_range && "weights exceed maxStorageBufferRange");
  return {gpu::in(buffer, start, size), static_cast<uint32_t>((offset - start) / 16)};
}

namespace {

// Mirrors the push-constant block of shaders/mul_mat_funcs.glsl.
struct MulMatPush {
  uint32_t n, k, units, w_base, w_stride, scales, tokens, top_k, x_per_slot, experts, accumulate;
};

// Launch shape of mul_mat_vec.comp (its spec constants). Read once from $MACH_MUL_MAT_VEC, e.g.
// "wg=128,rows=8", so that the kernel can be tuned on a device without rebuilding.
struct MatVecTuning {
  uint32_t max_workgroup = 256;
  uint32_t rows = 4;
};

// mul_mat_vec.comp's fused gate/up + SwiGLU on int8 dot products: 8 rows (4 outputs) per workgroup.
// Qwen3-30B-A3B's gate/up on an H200 (2026-12-03, docs/perf/2026-12-03-h200-ops-swiglu-dot.jsonl) took 9.9 us
// with 8 rows, 12.1 with 4 and 15.5 with 2 (13.2 on the packed-f16 kernel). Several tokens' workgroups take
// at most 32 invocations: a 16-token block's (2026-12-04, docs/perf/2026-12-04-h200-ops-swiglu-t16.jsonl)
// 67.3 us with 32 (two units each) against 78.3 with 64 (K = 2048: one unit each). One token's were equal
// alone (9.8 us) but 12.5 against 11.7 in the decode profile, so decode keeps 64.
constexpr MatVecTuning kSwigluDotTuning{256, 8};
constexpr MatVecTuning kSwigluDotVerifyTuning{32, 8};

// Read on every call (a getenv per dispatch is noise) so that ops_bench --sweep can vary it in one process.
// `t` is the caller's default, which the variable overrides.
MatVecTuning mat_vec_tuning(MatVecTuning t = {}) {
  if (const char* env = std::getenv("MACH_MUL_MAT_VEC")) {
    unsigned wg = 0, rows = 0;
    if (std::sscanf(env, "wg=%u,rows=%u", &wg, &rows) == 2 && std::has_single_bit(wg) && wg >= 32 &&
        wg <= 1024 && rows >= 1 && rows <= 16) {
      t.max_workgroup = wg;
      t.rows = rows;
    } else {
      std::fprintf(stderr, "mach: ignoring MACH_MUL_MAT_VEC='%s' (want wg=POW2>=32,rows=1..16)\n", env);
    }
  }
  return t;
}

uint32_t element_bits(WeightType type) {
  switch (type) {
    case WeightType::f32: return 32;
    case WeightType::f16:
    case WeightType::bf16: return 16;
    case WeightType::q8_0: return 8;
    case WeightType::q4: return 4;
  }
  return 0;
}

// 16-byte units per row: the row's elements (the quants, for quantized types).
uint32_t row_units(WeightType type, uint32_t cols) {
  const uint64_t bits = uint64_t{cols} * element_bits(type);
  assert(bits % 128 == 0 && "K must keep weight rows 16-byte aligned (see matmul.hpp)");
  return static_cast<uint32_t>(bits / 128);
}

std::string variant(const char* kernel, WeightType type) {
  return std::string(kernel) + "_" + std::string(weight_type_name(type));
}

// A mul_mat_vec.comp variant: its Q4_DOT form where uses_q4_dot().
std::string vec_variant(const gpu::Context& context, const char* kernel, WeightType type) {
  return variant(kernel, type) + (uses_q4_dot(context, type) ? "_dot" : "");
}

// Binds [offset, offset + bytes) of a weight buffer: the binding starts at the nearest offset the device
// accepts below `offset`, and the shader skips the difference (returned in 16-byte units).
uint32_t mat_vec_workgroup(uint32_t units, uint32_t max_wg = mat_vec_tuning().max_workgroup) {
  return std::clamp<uint32_t>(std::bit_ceil(units), std::min<uint32_t>(32, max_wg), max_wg);
}

// Launch shape of mul_mat_vec_q4h.comp, read from $MACH_Q4H ("wg=32,rows=2,unr=2") for tuning, which
// overrides every variant's default. The default was the fastest on the >= 1 GiB shapes of an H200 sweep
// (2026-11-22, docs/performance.md); the MoE variants have their own (kSwigluTuning, kCombineTuning).
struct Q4hTuning {
  uint32_t workgroup = 32;
  uint32_t rows = 2;
  uint32_t unroll = 2;
};

// Qwen3-30B-A3B's decode shapes on an H200 (2026-12-03, docs/perf/2026-12-03-h200-ops-q4h-moe-sweep.jsonl):
// the fused gate/up + SwiGLU took 13.0 us with 4 rows (2 outputs) per workgroup against 14.6 with 2. The
// down + combine runs here for 2..32 tokens (one token takes the f32 kernel): 16 tokens took 55.8 us with
// 4 rows against 57.9 with 128 invocations in pair groups (docs/perf/2026-12-03-h200-ops-combine-pairs.jsonl).
// A 16-token block's down + combine (2026-12-04, docs/perf/2026-12-04-h200-ops-q4h-t16.jsonl): 53.1 us with one
// unit in flight against 57.8 with two.
constexpr Q4hTuning kSwigluTuning{32, 4, 2};
constexpr Q4hTuning kCombineTuning{32, 4, 1};
// Dense products of 2..32 tokens (a verify block's q/k/v and o): 4 rows, each x chunk read once for twice the
// rows. 16 tokens on an H200 (2026-12-04, the same file): the o projection (2048 x 4096) took 25.1 us against
// 32.9 with the old default {32, 2, 2}, q/k/v (5120 x 2048) 33.5 against 37.1; 64 or 128 invocations were
// slower in every combination.
constexpr Q4hTuning kVerifyTuning{32, 4, 1};
// One token's dense products on the packed kernel: those whose weights make the prep pay (the lm_head; smaller
// ones take mul_mat_vec.comp). Qwen3-30B-A3B's 151936 x 2048 lm_head on an H200 (2026-12-03,
// docs/perf/2026-12-03-h200-ops-lm-head-sweep.jsonl): 59.7 us with 4 rows and 4 units in flight against 108 us
// with the default 2 and 2 (wg=64 or 128 were slower in every combination tried).
constexpr Q4hTuning kDenseDecodeTuning{32, 4, 4};

Q4hTuning q4h_tuning(Q4hTuning t = {}) {
  if (const char* env = std::getenv("MACH_Q4H")) {
    Q4hTuning e;
    if (std::sscanf(env, "wg=%u,rows=%u,unr=%u", &e.workgroup, &e.rows, &e.unroll) == 3 &&
        std::has_single_bit(e.workgroup) && e.workgroup >= 32 && e.workgroup <= 1024 && e.rows >= 1 && e.rows <= 4 &&
        e.unroll >= 1 && e.unroll <= 4)
      t = e;
    else
      std::fprintf(stderr, "mach: ignoring MACH_Q4H='%s' (want wg=POW2>=32,rows=1..4,unr=1..4)\n", env);
  }
  return t;
}

// How the matrix-vector kernels split T <= kVerifyMaxTokens tokens: ceil(T / 8) chunks of equal size but
// the last (their NT, a pipeline each); one workgroup per (row tile, chunk).
struct TokenChunks {
  uint32_t count = 1;
  uint32_t tokens = 1;
};

TokenChunks token_chunks(uint32_t tokens) {
  assert(tokens <= kVerifyMaxTokens);
  const uint32_t count = gpu::div_up(tokens, kMatVecMaxTokens);
  return {count, gpu::div_up(tokens, count)};
}

// Tile shape of mul_mat.comp (its spec constants; see the shader's header).
struct MatMulTiles {
  uint32_t bm = 64, bn = 64, bk = 64, tm = 4, tn = 4;

  uint32_t workgroup() const { return (bm / tm) * (bn / tn); }
  uint64_t shared_bytes() const { return 4ull * bk * (bm + bn) + 4ull * bn + workgroup(); }
  bool valid(const gpu::DeviceInfo& info) const {
    const auto pow2 = [](uint32_t v) { return std::has_single_bit(v); };
    return pow2(bm) && pow2(bn) && pow2(bk) && pow2(tm) && pow2(tn) && bm >= tm && bn >= tn && bk >= 64 &&
           workgroup() % bn == 0 && workgroup() >= 32 && workgroup() <= info.max_compute_workgroup_invocations &&
           shared_bytes() <= info.max_compute_shared_memory;
  }
  gpu::SpecConstants constants() const { return {workgroup(), bm, bn, bk, tm, tn}; }
};

// The default tiles where they fit the device's shared memory (48 KiB on NVIDIA), else 64 x 32 tiles
// (lavapipe's 32 KiB). $MACH_MUL_MAT, e.g. "bm=128,bn=32,tm=8,tn=4", overrides for tuning.
const MatMulTiles& mat_mul_tiles(const gpu::DeviceInfo& info) {
  static const MatMulTiles tiles = [&] {
    MatMulTiles t;
    if (!t.valid(info)) t.bn = 32;
    if (const char* env = std::getenv("MACH_MUL_MAT")) {
      MatMulTiles e = t;
      if (std::sscanf(env, "bm=%u,bn=%u,tm=%u,tn=%u", &e.bm, &e.bn, &e.tm, &e.tn) == 4 && e.valid(info))
        t = e;
      else
        std::fprintf(stderr, "mach: ignoring MACH_MUL_MAT='%s' (bad shape, or too much shared memory)\n", env);
    }
    assert(t.valid(info));
    return t;
  }();
  return tiles;
}

// Tiles of the MoE product (mul_mat_id_*): an expert's pairs are padded to a multiple of BN tokens, and with
// Qwen3-30B-A3B's 128 experts and top-8 a 512-token chunk gives each expert ~32 pairs, half of a 64-token
// tile. So where the experts average at most 32 pairs, 32-token tiles of 128 rows (4 x 4 per thread, 256
// threads) when they fit the device's shared memory: on an H200 (2026-12-03) 2.70 ms against 3.18 for the
// 512-token gate/up and 1.86 against 2.13 for the down product. Shapes with 128 threads (8 x 4 per thread,
// or 64 x 32 and 16-token tiles) took 2-7x longer there. $MACH_MUL_MAT_ID ("bm=..,bn=..,tm=..,tn=..")
// overrides; it is read at every call so that ops_bench --sweep can compare shapes in one process.
// Whether the experts of a MoE product average at most 32 pairs (32-token tiles then waste less).
bool moe_narrow(uint32_t tokens, uint32_t top_k, uint32_t experts) {
  return uint64_t{tokens} * top_k <= uint64_t{32} * experts;
}

MatMulTiles moe_tiles(const gpu::DeviceInfo& info, uint32_t tokens, uint32_t top_k, uint32_t experts) {
  MatMulTiles t = mat_mul_tiles(info);
  if (const char* env = std::getenv("MACH_MUL_MAT_ID")) {
    MatMulTiles e = t;
    if (std::sscanf(env, "bm=%u,bn=%u,tm=%u,tn=%u", &e.bm, &e.bn, &e.tm, &e.tn) == 4 && e.valid(info)) return e;
    static bool warned = false;
    if (!std::exchange(warned, true))
      std::fprintf(stderr, "mach: ignoring MACH_MUL_MAT_ID='%s' (bad shape, or too much shared memory)\n", env);
    return t;
  }
  const MatMulTiles narrow{.bm = 128, .bn = 32, .bk = 64, .tm = 4, .tn = 4};
  if (moe_narrow(tokens, top_k, experts) && t.bn > 32 && narrow.valid(info)) return narrow;
  return t;
}

// Which tiled kernel a product of T > kVerifyMaxTokens tokens runs: mul_mat.comp (f32 FMAs), or
// mul_mat_cm.comp on tensor cores (native: NVIDIA's cooperative matrices, subgroups of 32) or its emulated
// twin (plain arithmetic over the same tiles: for tests on devices without them). $MACH_COOPMAT: "0" turns
// the tensor-core kernel off, "emu" picks the twin wherever f16 arithmetic exists; read at every call.
enum class Coopmat { none, native, emulated };

Coopmat coopmat_mode(const gpu::Context& context, WeightType type, uint32_t tokens) {
  if (tokens <= kVerifyMaxTokens || type == WeightType::f32 || !context.info().fp16) return Coopmat::none;
  const char* env = std::getenv("MACH_COOPMAT");
  const std::string_view mode = env ? env : "";
  if (mode == "0") return Coopmat::none;
  if (mode == "emu") return Coopmat::emulated;
  const auto& info = context.info();
  if (info.nv_cooperative_matrix && info.subgroup_size == 32 && gpu::Context::has_shader("mul_mat_cm_q4"))
    return Coopmat::native;
  return Coopmat::none;
}

// mul_mat_cm.comp's token tile: 32 where MoE experts average at most 32 pairs (see moe_tiles) or where the
// device's shared memory lacks room for 64 (lavapipe's 32 KiB); else 64.
uint32_t coopmat_bn(const gpu::Context& context, bool narrow) {
  constexpr uint64_t kShared64 = 2ull * 72 * (128 + 64) + 4ull * 8 * 256 + 4ull * 64;
  return narrow || context.info().max_compute_shared_memory < kShared64 ? 32 : 64;
}

std::string coopmat_shader(const char* base, Coopmat mode, WeightType type) {
  return std::string(base) + (mode == Coopmat::native ? "_cm_" : "_cm_emu_") + std::string(weight_type_name(type));
}

// x [rows, k] f32 -> f16 rows scaled into [-1, 1] and their power-of-two scales (x_f16_rows.comp).
struct F16Rows {
  gpu::Binding xs, scale;
};

F16Rows prepare_f16_rows(gpu::CommandList& cmd, gpu::Binding x, uint32_t rows, uint32_t k) {
  assert(rows > 0 && k % 8 == 0);
  F16Rows out{cmd.scratch(uint64_t{rows} * k * 2), cmd.scratch(uint64_t{rows} * 4)};
  const struct {
    uint32_t rows, k;
  } push{rows, k};
  cmd.dispatch(cmd.context().pipeline("x_f16_rows"), {x, out.xs, out.scale}, push, gpu::flat_groups(rows));
  out.xs.access = out.scale.access = gpu::Access::read;
  return out;
}

// Each expert's pairs of a MoE product, listed once for all of the tiled kernel's workgroups (moe_pairs.comp):
// counts [E] and lists [E, T] of pair indices in ascending order. Scanning all T * top_k ids in every
// workgroup instead cost more than the products at T = 512 on an H200 (docs/performance.md).
struct PairLists {
  gpu::Binding counts, lists;
};

PairLists pair_lists(gpu::CommandList& cmd, const MoeRouting& routing, uint32_t tokens) {
  PairLists out{cmd.scratch(uint64_t{routing.experts} * 4), cmd.scratch(uint64_t{routing.experts} * tokens * 4)};
  const struct {
    uint32_t tokens, top_k, experts;
  } push{tokens, routing.top_k, routing.experts};
  cmd.dispatch(cmd.context().pipeline("moe_pairs"), {routing.ids, out.counts, out.lists}, push,
               gpu::flat_groups(routing.experts));
  out.counts.access = out.lists.access = gpu::Access::read;
  return out;
}

// What every kernel of these ops gets: the weights (one matrix, or the whole stack of experts) and the
// push constants.
struct KernelCall {
  WeightBinding weights;
  MulMatPush push;
};

KernelCall dense_call(const gpu::Context& context, const WeightRef& w, uint32_t tokens, Output output) {
  assert(w.buffer && tokens > 0 && shape_fits(w.type, w.rows, w.cols));
  const auto wb = bind_weights(context, *w.buffer, w.offset, weight_bytes(w.type, w.rows, w.cols));
  return {wb,
          {w.rows, w.cols, row_units(w.type, w.cols), wb.base_units, 0,
           static_cast<uint32_t>(scales_offset(w.type, w.rows, w.cols) / 4), tokens, 1, 0, 1,
           output == Output::accumulate ? 1u : 0u}};
}

gpu::Binding output_binding(gpu::Binding y, Output output) {
  if (output == Output::accumulate) y.access = gpu::Access::read_write;
  return y;
}

KernelCall expert_call(const gpu::Context& context, const ExpertWeightsRef& w, const MoeRouting& routing,
                       bool x_per_slot, uint32_t tokens) {
  assert(w.buffer && w.count > 0 && tokens > 0 && routing.experts > 0 && routing.top_k > 0);
  assert(shape_fits(w.type, w.rows, w.cols) && w.expert_stride % 16 == 0);
  const uint64_t matrix_bytes = weight_bytes(w.type, w.rows, w.cols);
  assert(w.count == 1 || w.expert_stride >= matrix_bytes);
  // The stack is bound as one range.
  const auto wb = bind_weights(context, *w.buffer, w.offset, (w.count - 1) * w.expert_stride + matrix_bytes);
  return {wb,
          {w.rows, w.cols, row_units(w.type, w.cols), wb.base_units, static_cast<uint32_t>(w.expert_stride / 16),
           static_cast<uint32_t>(scales_offset(w.type, w.rows, w.cols) / 4), tokens, routing.top_k,
           x_per_slot ? 1u : 0u, routing.experts, 0}};
}

}  // namespace

bool uses_coopmat(const gpu::Context& context, WeightType type, uint32_t tokens) {
  return coopmat_mode(context, type, tokens) != Coopmat::none;
}

// Below this many bytes of q4 weights, one token's product from an unprepared x runs the f32 kernel: the
// prep dispatch costs more than the packed kernel saves. On an H200 (2026-12-03), a 2048 x 4096 matrix
// (4.7 MB, the o projection of Qwen3-30B-A3B) took 7.6 us on the f32 kernel against 10.2 for prep + packed;
// at 1.2 GB the packed kernel took half the f32 one's time (518 against 1050 us).
constexpr uint64_t kQ4hPrepMinBytes = uint64_t{6} << 20;

bool uses_q4_dot(const gpu::Context& context, WeightType type) {
  if (type != WeightType::q4 || !context.info().int_dot || !gpu::Context::has_shader("mul_mat_vec_q4_dot")) return false;
  const char* env = std::getenv("MACH_Q4_DOT");
  if (env && *env) return std::string_view(env) == "1";
  return context.info().int_dot_accelerated;
}

bool swiglu_takes_q4h(const gpu::Context& context, WeightType type, uint32_t tokens) {
  return uses_q4h(context, type, tokens) && !uses_q4_dot(context, type);
}

bool uses_q4h(const gpu::Context& context, WeightType type, uint32_t tokens) {
  if (type != WeightType::q4 || tokens > kVerifyMaxTokens || !context.info().fp16) return false;
  const char* force = std::getenv("MACH_Q4_F32");
  return !(force && *force == '1');
}

PreparedX q4h_scratch(gpu::CommandList& cmd, uint32_t rows, uint32_t k) {
  assert(rows > 0 && k % 64 == 0);
  return {cmd.scratch(uint64_t{rows} * k * 2), cmd.scratch(uint64_t{rows} * (k / 32) * 8), rows, k};
}

PreparedX prepare_q4h(gpu::CommandList& cmd, gpu::Binding x, uint32_t rows, uint32_t k) {
  PreparedX px = q4h_scratch(cmd, rows, k);
  const struct {
    uint32_t rows, k;
  } push{rows, k};
  cmd.dispatch(cmd.context().pipeline("q4h_prep"), {x, px.xh, px.xg}, push,
               gpu::flat_groups(uint64_t{rows} * (k / 64)));
  // Its readers only read it: products sharing it need no barrier between them.
  px.xh.access = px.xg.access = gpu::Access::read;
  return px;
}

void mul_mat(gpu::CommandList& cmd, const WeightRef& w, gpu::Binding x, gpu::Binding y, uint32_t tokens,
             Output output) {
  auto& context = cmd.context();
  const bool prep_pays = tokens > 1 || weight_bytes(w.type, w.rows, w.cols) > kQ4hPrepMinBytes;
  if (uses_q4h(context, w.type, tokens) && prep_pays) {
    mul_mat(cmd, w, prepare_q4h(cmd, x, tokens, w.cols), y, tokens, output);
    return;
  }
  const KernelCall call = dense_call(context, w, tokens, output);
  const gpu::Binding wb = call.weights.binding;
  y = output_binding(y, output);
  if (const Coopmat cm = coopmat_mode(context, w.type, tokens); cm != Coopmat::none) {
    const F16Rows xs = prepare_f16_rows(cmd, x, tokens, w.cols);
    const uint32_t bn = coopmat_bn(context, false);
    const auto& pipeline = context.pipeline(coopmat_shader("mul_mat", cm, w.type), {bn});
    cmd.dispatch(pipeline, {wb, wb, xs.xs, xs.scale, y}, call.push,
                 gpu::flat_groups(gpu::div_up(w.rows, 128) * gpu::div_up(tokens, bn)));
    return;
  }
  if (tokens <= kVerifyMaxTokens) {
    const MatVecTuning t = mat_vec_tuning();
    const TokenChunks chunks = token_chunks(tokens);
    const auto& pipeline = context.pipeline(vec_variant(context, "mul_mat_vec", w.type),
                                            {mat_vec_workgroup(call.push.units), t.rows, chunks.tokens});
    cmd.dispatch(pipeline, {wb, wb, x, y}, call.push, gpu::flat_groups(gpu::div_up(w.rows, t.rows) * chunks.count));
  } else {
    const auto& tiles = mat_mul_tiles(context.info());
    const auto& pipeline = context.pipeline(variant("mul_mat", w.type), tiles.constants());
    const uint32_t groups = gpu::div_up(w.rows, tiles.bm) * gpu::div_up(tokens, tiles.bn);
    cmd.dispatch(pipeline, {wb, wb, x, y}, call.push, gpu::flat_groups(groups));
  }
}

void mul_mat(gpu::CommandList& cmd, const WeightRef& w, const PreparedX& x, gpu::Binding y, uint32_t tokens,
             Output output) {
  auto& context = cmd.context();
  assert(uses_q4h(context, w.type, tokens) && x.rows == tokens && x.k == w.cols);
  const KernelCall call = dense_call(context, w, tokens, output);
  const gpu::Binding wb = call.weights.binding;
  const Q4hTuning t = q4h_tuning(tokens == 1 ? kDenseDecodeTuning : kVerifyTuning);
  const TokenChunks chunks = token_chunks(tokens);
  const auto& pipeline =
      context.pipeline("mul_mat_vec_q4h_" + std::to_string(chunks.tokens), {t.workgroup, t.rows, t.unroll});
  cmd.dispatch(pipeline, {wb, wb, x.xh, x.xg, output_binding(y, output)}, call.push,
               gpu::flat_groups(gpu::div_up(w.rows, t.rows) * chunks.count));
}

namespace {

// The weights and push constants of a MULTI product (both kernels): the matrices' span of their buffer as one
// binding.
struct MultiCall {
  WeightBinding weights;
  struct {
    MulMatPush base;
    uint32_t n1, w_base1, scales1, n2, w_base2, scales2;
  } push{};
};

MultiCall multi_call(const gpu::Context& context, std::span<const WeightRef> w, uint32_t tokens) {
  assert(w.size() == 2 || w.size() == 3);
  uint64_t begin = w[0].offset, end = 0;
  for (const WeightRef& m : w) {
    assert(m.buffer == w[0].buffer && m.type == w[0].type && m.cols == w[0].cols);
    begin = std::min(begin, m.offset);
    end = std::max(end, m.offset + weight_bytes(m.type, m.rows, m.cols));
  }
  MultiCall call{bind_weights(context, *w[0].buffer, begin, end - begin)};
  const auto matrix = [&](const WeightRef& m, uint32_t& n, uint32_t& base, uint32_t& scales) {
    n = m.rows;
    base = call.weights.base_units + static_cast<uint32_t>((m.offset - begin) / 16);
    scales = static_cast<uint32_t>(scales_offset(m.type, m.rows, m.cols) / 4);
  };
  auto& push = call.push;
  push.base = {0, w[0].cols, row_units(w[0].type, w[0].cols), 0, 0, 0, tokens, 1, 0, 1, 0};
  matrix(w[0], push.base.n, push.base.w_base, push.base.scales);
  matrix(w[1], push.n1, push.w_base1, push.scales1);
  if (w.size() == 3) matrix(w[2], push.n2, push.w_base2, push.scales2);
  return call;
}

// The y bindings of a MULTI product: two matrices repeat the second in the third binding (never written).
std::array<gpu::Binding, 3> multi_outputs(std::span<const gpu::Binding> y) {
  assert(y.size() == 2 || y.size() == 3);
  std::array<gpu::Binding, 3> ys;
  for (size_t i = 0; i < 3; ++i) {
    ys[i] = y[std::min(i, y.size() - 1)];
    ys[i].access = gpu::Access::write;
  }
  return ys;
}

// The push constants of mul_mat_vec.comp's MULTI + NORM (and the start of QK_TAIL's).
struct MultiNormPush {
  decltype(MultiCall::push) multi;
  float eps, mul, add;
};

MultiNormPush multi_norm_push(const MultiCall& call, const NormedX& x) {
  return {call.push, x.eps, x.scale_mul(), x.scale_add()};
}

uint32_t multi_tiles(std::span<const WeightRef> w, uint32_t rows) {
  uint32_t tiles = 0;
  for (const WeightRef& m : w) tiles += gpu::div_up(m.rows, rows);
  return tiles;
}

}  // namespace

void mul_mat_multi(gpu::CommandList& cmd, std::span<const WeightRef> w, const PreparedX& x,
                   std::span<const gpu::Binding> y, uint32_t tokens) {
  auto& context = cmd.context();
  assert(y.size() == w.size());
  assert(uses_q4h(context, w[0].type, tokens) && x.rows == tokens && x.k == w[0].cols);
  const MultiCall call = multi_call(context, w, tokens);
  const Q4hTuning t = q4h_tuning(tokens == 1 ? Q4hTuning{} : kVerifyTuning);
  const TokenChunks chunks = token_chunks(tokens);
  const auto& pipeline =
      context.pipeline("mul_mat_vec_multi_q4h_" + std::to_string(chunks.tokens), {t.workgroup, t.rows, t.unroll});
  const auto ys = multi_outputs(y);
  const gpu::Binding wb = call.weights.binding;
  cmd.dispatch(pipeline, {wb, wb, x.xh, x.xg, ys[0], ys[1], ys[2]}, call.push,
               gpu::flat_groups(multi_tiles(w, t.rows) * chunks.count));
}

void mul_mat_multi(gpu::CommandList& cmd, std::span<const WeightRef> w, const NormedX& x,
                   std::span<const gpu::Binding> y, uint32_t tokens) {
  auto& context = cmd.context();
  assert(y.size() == w.size() && tokens > 0);
  const uint32_t K = w[0].cols;
  if (tokens > kVerifyMaxTokens) {
    gpu::Binding h = cmd.scratch(uint64_t{tokens} * K * 4);
    h.access = gpu::Access::write;
    rms_norm(cmd, x.x, x.weight, h, {tokens, K}, x.eps, x.mode);
    h.access = gpu::Access::read;
    for (size_t i = 0; i < w.size(); ++i) mul_mat(cmd, w[i], h, y[i], tokens);
    return;
  }
  const MultiCall call = multi_call(context, w, tokens);
  const MultiNormPush push = multi_norm_push(call, x);
  const MatVecTuning t = mat_vec_tuning();
  const TokenChunks chunks = token_chunks(tokens);
  const auto& pipeline = context.pipeline(vec_variant(context, "mul_mat_vec_multi_norm", w[0].type),
                                          {mat_vec_workgroup(call.push.base.units), t.rows, chunks.tokens});
  const auto ys = multi_outputs(y);
  const gpu::Binding wb = call.weights.binding;
  cmd.dispatch(pipeline, {wb, wb, x.x, ys[0], ys[1], ys[2], x.weight}, push,
               gpu::flat_groups(multi_tiles(w, t.rows) * chunks.count));
}

void qkv_norm_rope_kv_store(gpu::CommandList& cmd, std::span<const WeightRef> w, const NormedX& x,
                            const QkvTail& tail) {
  auto& context = cmd.context();
  const QkNormRopeShape& shape = tail.shape;
  const KvCacheLayout& layout = tail.store.layout;
  const uint32_t tokens = shape.tokens, D = shape.head_dim;
  assert(w.size() == 3 && w[0].rows == shape.q_heads * D && w[1].rows == shape.kv_heads * D &&
         w[2].rows == shape.kv_heads * D);
  assert(layout.kv_heads == shape.kv_heads && layout.head_dim == D && std::has_single_bit(layout.block_size));
  const MatVecTuning t = mat_vec_tuning();
  if (tokens > kVerifyMaxTokens || D % t.rows != 0 || D > 512 || D % 2 != 0) {
    const gpu::Binding y[] = {tail.qk.q, tail.qk.k, tail.store.v};
    mul_mat_multi(cmd, w, x, y, tokens);
    qk_norm_rope_kv_store(cmd, tail.qk, shape, tail.params, tail.store);
    return;
  }
  const MultiCall call = multi_call(context, w, tokens);
  const TokenChunks chunks = token_chunks(tokens);
  assert(chunks.count <= 4);
  struct {
    MultiNormPush base;
    uint32_t q_heads, kv_heads, head_dim, rotary_dim, rope_offset;
    float head_eps, attention_factor;
    uint32_t block_size, max_blocks_per_seq;
  } push{multi_norm_push(call, x), shape.q_heads,   shape.kv_heads,  D, shape.rotary_dim, shape.offset,
         tail.params.eps,          tail.params.attention_factor, layout.block_size, layout.max_blocks_per_seq};
  static_assert(sizeof(push) <= 128, "Vulkan's guaranteed push-constant size");
  const gpu::SpecConstants spec{mat_vec_workgroup(call.push.base.units), t.rows, chunks.tokens,
                                static_cast<uint32_t>(tail.params.weight),
                                tail.params.style == RopeStyle::interleaved ? 1u : 0u};
  const auto& pipeline = context.pipeline(vec_variant(context, "mul_mat_vec_qkv", w[0].type), spec);
  gpu::Binding q = tail.qk.q, k = tail.qk.k, v = tail.store.v, counts = tail.counts;
  q.access = k.access = v.access = counts.access = gpu::Access::read_write;  // the tail reads the products back
  const gpu::Binding wb = call.weights.binding;
  const KvStoreArgs& st = tail.store;
  cmd.dispatch(pipeline,
               {wb, wb, x.x, q, k, v, x.weight, tail.qk.q_norm, tail.qk.k_norm, tail.qk.positions, tail.qk.inv_freq,
                st.seq_of_token, st.pos_of_token, st.block_table, st.k_cache, st.v_cache, counts},
               push, gpu::flat_groups(multi_tiles(w, t.rows) * chunks.count));
}

void mul_mat_id(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, gpu::Binding x,
                bool x_per_slot, gpu::Binding y, uint32_t tokens) {
  auto& context = cmd.context();
  if (uses_q4h(context, w.type, tokens)) {
    const uint32_t x_rows = x_per_slot ? tokens * routing.top_k : tokens;
    mul_mat_id(cmd, w, routing, prepare_q4h(cmd, x, x_rows, w.cols), x_per_slot, y, tokens);
    return;
  }
  const KernelCall call = expert_call(context, w, routing, x_per_slot, tokens);
  const gpu::Binding wb = call.weights.binding;
  if (const Coopmat cm = coopmat_mode(context, w.type, tokens); cm != Coopmat::none) {
    const uint32_t x_rows = x_per_slot ? tokens * routing.top_k : tokens;
    const F16Rows xs = prepare_f16_rows(cmd, x, x_rows, w.cols);
    const PairLists pairs = pair_lists(cmd, routing, tokens);
    const uint32_t bn = coopmat_bn(context, moe_narrow(tokens, routing.top_k, routing.experts));
    const auto& pipeline = context.pipeline(coopmat_shader("mul_mat_id", cm, w.type), {bn});
    const uint64_t groups = uint64_t{gpu::div_up(w.rows, 128)} * routing.experts * gpu::div_up(tokens, bn);
    assert(groups <= uint64_t{65535} * 65535);
    cmd.dispatch(pipeline, {wb, wb, xs.xs, xs.scale, y, routing.ids, routing.slot_table, pairs.counts, pairs.lists},
                 call.push, gpu::flat_groups(static_cast<uint32_t>(groups)));
    return;
  }
  const std::initializer_list<gpu::Binding> bindings = {wb, wb, x, y, routing.ids, routing.slot_table};
  if (tokens <= kVerifyMaxTokens) {
    // One workgroup per (row tile, pair): experts picked by several tokens are read once per pair (mostly
    // from L2 for such small T).
    const MatVecTuning t = mat_vec_tuning();
    const auto& pipeline = context.pipeline(vec_variant(context, "mul_mat_vec_id", w.type),
                                            {mat_vec_workgroup(call.push.units), t.rows, 1});
    const uint32_t groups = gpu::div_up(w.rows, t.rows) * tokens * routing.top_k;
    cmd.dispatch(pipeline, bindings, call.push, gpu::flat_groups(groups));
  } else {
    // (row tile, expert, token tile); an expert sees at most T pairs since a token's ids are distinct.
    const MatMulTiles tiles = moe_tiles(context.info(), tokens, routing.top_k, routing.experts);
    const auto& pipeline = context.pipeline(variant("mul_mat_id", w.type), tiles.constants());
    const uint64_t groups =
        uint64_t{gpu::div_up(w.rows, tiles.bm)} * routing.experts * gpu::div_up(tokens, tiles.bn);
    assert(groups <= uint64_t{65535} * 65535);
    const PairLists pairs = pair_lists(cmd, routing, tokens);
    cmd.dispatch(pipeline, {wb, wb, x, y, routing.ids, routing.slot_table, pairs.counts, pairs.lists}, call.push,
                 gpu::flat_groups(static_cast<uint32_t>(groups)));
  }
}

void mul_mat_id(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, const PreparedX& x,
                bool x_per_slot, gpu::Binding y, uint32_t tokens) {
  auto& context = cmd.context();
  assert(uses_q4h(context, w.type, tokens) && x.k == w.cols);
  assert(x.rows == (x_per_slot ? tokens * routing.top_k : tokens));
  const KernelCall call = expert_call(context, w, routing, x_per_slot, tokens);
  const gpu::Binding wb = call.weights.binding;
  const Q4hTuning t = q4h_tuning();
  const auto& pipeline = context.pipeline("mul_mat_vec_id_q4h", {t.workgroup, t.rows, t.unroll});
  const uint32_t groups = gpu::div_up(w.rows, t.rows) * tokens * routing.top_k;
  cmd.dispatch(pipeline, {wb, wb, x.xh, x.xg, y, routing.ids, routing.slot_table}, call.push,
               gpu::flat_groups(groups));
}

void mul_mat_id_swiglu(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing, gpu::Binding x,
                       gpu::Binding act, uint32_t tokens) {
  assert(w.rows % 2 == 0);
  auto& context = cmd.context();
  if (tokens <= kVerifyMaxTokens && uses_q4_dot(context, w.type)) {
    // The int8-x kernel on x as it is (no prep dispatch), gate and up rows side by side, a workgroup per
    // (output tile, pair).
    const KernelCall call = expert_call(context, w, routing, false, tokens);
    const MatVecTuning t = mat_vec_tuning(tokens == 1 ? kSwigluDotTuning : kSwigluDotVerifyTuning);
    const uint32_t rows = std::max<uint32_t>(2, t.rows + t.rows % 2);  // gate and up rows in pairs
    const auto& pipeline =
        context.pipeline("mul_mat_vec_id_swiglu_q4_dot", {mat_vec_workgroup(call.push.units, t.max_workgroup), rows, 1});
    act.access = gpu::Access::write;
    cmd.dispatch(pipeline, {call.weights.binding, call.weights.binding, x, act, routing.ids, routing.slot_table},
                 call.push, gpu::flat_groups(gpu::div_up(w.rows / 2, rows / 2) * tokens * routing.top_k));
    return;
  }
  if (swiglu_takes_q4h(context, w.type, tokens)) {
    mul_mat_id_swiglu(cmd, w, routing, prepare_q4h(cmd, x, tokens, w.cols), act, tokens);
    return;
  }
  const uint64_t pairs = uint64_t{tokens} * routing.top_k;
  gpu::Binding gate_up = cmd.scratch(pairs * w.rows * 4);
  gate_up.access = gpu::Access::write;
  mul_mat_id(cmd, w, routing, x, false, gate_up, tokens);
  gate_up.access = gpu::Access::read;
  GluParams glu;
  glu.kind = GluKind::swiglu;
  glu.layout = GluLayout::fused;
  glu.tokens = static_cast<uint32_t>(pairs);
  glu.width = w.rows / 2;
  ops::glu(cmd, gate_up, gate_up, act, glu);
}

void mul_mat_id_swiglu(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing,
                       const PreparedX& x, gpu::Binding act, uint32_t tokens) {
  auto& context = cmd.context();
  assert(swiglu_takes_q4h(context, w.type, tokens) && x.k == w.cols && x.rows == tokens && w.rows % 2 == 0);
  const KernelCall call = expert_call(context, w, routing, false, tokens);
  const gpu::Binding wb = call.weights.binding;
  Q4hTuning t = q4h_tuning(kSwigluTuning);
  t.rows += t.rows % 2;  // gate and up rows in pairs
  const auto& pipeline = context.pipeline("mul_mat_vec_id_swiglu_q4h", {t.workgroup, t.rows, t.unroll});
  const uint32_t groups = gpu::div_up(w.rows / 2, t.rows / 2) * tokens * routing.top_k;
  act.access = gpu::Access::write;
  cmd.dispatch(pipeline, {wb, wb, x.xh, x.xg, act, routing.ids, routing.slot_table}, call.push,
               gpu::flat_groups(groups));
}

void mul_mat_id_combine(gpu::CommandList& cmd, const ExpertWeightsRef& w, const MoeRouting& routing,
                        gpu::Binding route_w, gpu::Binding x, gpu::Binding residual, uint32_t tokens) {
  auto& context = cmd.context();
  residual.access = gpu::Access::read_write;
  if (tokens > kVerifyMaxTokens) {
    const uint64_t pairs = uint64_t{tokens} * routing.top_k;
    gpu::Binding y = cmd.scratch(pairs * w.rows * 4);
    y.access = gpu::Access::write;
    mul_mat_id(cmd, w, routing, x, true, y, tokens);
    y.access = gpu::Access::read;
    moe_combine(cmd, y, route_w, residual, tokens, routing.top_k, w.rows, routing.ids, routing.slot_table);
    return;
  }
  // One workgroup per (row tile, token), looping over the token's pairs.
  KernelCall call = expert_call(context, w, routing, true, tokens);
  call.push.accumulate = 1;
  const gpu::Binding wb = call.weights.binding;
  // One token's pairs run the f32 kernel on x as it is: on an H200 (2026-12-03) Qwen3-30B-A3B's down
  // projection + combine took 10.4 us that way against 11.9 for q4h_prep + the packed kernel (8.6 us on the
  // int8-x variant); 16 tokens take the packed kernel, which reads each x value once per unit instead of once
  // per row: 55.6 us against 57.9 on the float decode and 71.5 on the int8-x variant.
  if (uses_q4h(context, w.type, tokens) && tokens > 1) {
    const PreparedX px = prepare_q4h(cmd, x, tokens * routing.top_k, w.cols);
    const Q4hTuning t = q4h_tuning(kCombineTuning);
    const auto& pipeline = context.pipeline("mul_mat_vec_id_combine_q4h", {t.workgroup, t.rows, t.unroll});
    cmd.dispatch(pipeline, {wb, wb, px.xh, px.xg, residual, routing.ids, routing.slot_table, route_w}, call.push,
                 gpu::flat_groups(gpu::div_up(w.rows, t.rows) * tokens));
  } else {
    // A group of invocations per pair (the shader spreads the pairs over them), up to the tuning's maximum.
    const MatVecTuning t = mat_vec_tuning();
    const uint32_t wg = std::min(mat_vec_workgroup(call.push.units) * std::bit_ceil(routing.top_k), t.max_workgroup);
    const auto& pipeline = context.pipeline(vec_variant(context, "mul_mat_vec_id_combine", w.type), {wg, t.rows, 1});
    cmd.dispatch(pipeline, {wb, wb, x, residual, routing.ids, routing.slot_table, route_w}, call.push,
                 gpu::flat_groups(gpu::div_up(w.rows, t.rows) * tokens));
  }
}

}  // namespace mach::ops
