#include "ops/attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cstdlib>

#include "gpu/context.hpp"

namespace mach::ops {
namespace {

// Tile shapes of attention.comp's variants; they must match the //! variant lines there. Shared memory
// (q tile f32 + one K/V tile f16 + scores) stays under 32 KiB, lavapipe's limit (NVIDIA has 48).
struct TileShape {
  uint32_t rows, keys;
};

// Whether attention.comp has a narrow variant for the head dim.
bool has_narrow(uint32_t head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

TileShape tile_shape(AttentionKernel kernel, uint32_t head_dim) {
  const bool decode = kernel != AttentionKernel::block;
  if (kernel == AttentionKernel::narrow) {
    assert(has_narrow(head_dim));
    return head_dim == 64 ? TileShape{4, 64} : head_dim == 128 ? TileShape{2, 64} : TileShape{2, 32};
  }
  switch (head_dim) {
    case 16: return TileShape{16, 64};  // the tiny test checkpoints
    case 32: return decode ? TileShape{8, 64} : TileShape{32, 32};
    case 64: return decode ? TileShape{8, 64} : TileShape{32, 32};
    case 128: return decode ? TileShape{8, 64} : TileShape{32, 32};
    case 256: return decode ? TileShape{8, 32} : TileShape{16, 16};
    case 512: return TileShape{8, 8};
  }
  assert(!"attention: head_dim must be 16, 32, 64, 128, 256 or 512");
  return {};
}

// The longest context on the narrow kernel when the kernel is automatic ($MACH_ATTENTION_NARROW_KEYS
// overrides). On an H200 (2026-12-03, Qwen3-30B-A3B heads, one token) narrow took 9.7 us against decode's
// 12.9 at 64 keys, where decode runs 4 workgroups, and 27.4 against 24.3 at 4096, where decode's key splits
// already fill the GPU and narrow reads each K/V tile 4 times. 512 lies between, where decode has at most 4
// splits; the crossover was not measured.
uint32_t narrow_max_keys() {
  static const uint32_t keys = [] {
    const char* env = std::getenv("MACH_ATTENTION_NARROW_KEYS");
    return env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 512u;
  }();
  return keys;
}

constexpr uint64_t kScratchAlign = 256;  // the largest minStorageBufferOffsetAlignment Vulkan allows
constexpr uint32_t kMaxSplits = 256;     // attention_combine.comp's shared weight array

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

bool is_power_of_two(uint32_t n) { return n != 0 && (n & (n - 1)) == 0; }

}  // namespace

void kv_store(gpu::CommandList& cmd, const KvCacheLayout& layout, gpu::Binding k_new, gpu::Binding v_new,
              gpu::Binding seq_of_token, gpu::Binding pos_of_token, gpu::Binding block_table,
              gpu::Binding k_cache, gpu::Binding v_cache, uint32_t tokens) {
  assert(is_power_of_two(layout.block_size) && layout.head_dim % 2 == 0);
  struct {
    uint32_t tokens, kv_heads, half_dim, block_size, max_blocks_per_seq;
  } push{tokens, layout.kv_heads, layout.head_dim / 2, layout.block_size, layout.max_blocks_per_seq};
  const uint32_t words = tokens * layout.kv_heads * layout.head_dim / 2;
  cmd.dispatch(cmd.context().pipeline("kv_store"),
               {k_new, v_new, seq_of_token, pos_of_token, block_table, k_cache, v_cache}, push,
               gpu::flat_groups(gpu::div_up(words, 256)));
}

void kv_store_shared(gpu::CommandList& cmd, const KvCacheLayout& layout, gpu::Binding kv_new,
                     gpu::Binding seq_of_token, gpu::Binding pos_of_token, gpu::Binding block_table,
                     gpu::Binding kv_cache, uint32_t tokens) {
  assert(is_power_of_two(layout.block_size) && layout.head_dim % 2 == 0);
  struct {
    uint32_t tokens, kv_heads, half_dim, block_size, max_blocks_per_seq;
  } push{tokens, layout.kv_heads, layout.head_dim / 2, layout.block_size, layout.max_blocks_per_seq};
  const uint32_t words = tokens * layout.kv_heads * layout.head_dim / 2;
  cmd.dispatch(cmd.context().pipeline("kv_store_k_only"),
               {kv_new, seq_of_token, pos_of_token, block_table, kv_cache}, push,
               gpu::flat_groups(gpu::div_up(words, 256)));
}

AttentionPlan plan_attention(const KvCacheLayout& layout, const AttentionParams& params, uint32_t tokens,
                             uint32_t max_keys, AttentionKernel kernel, uint32_t splits) {
  assert(params.n_heads % layout.kv_heads == 0 && tokens > 0);
  AttentionPlan plan;
  plan.kernel = kernel != AttentionKernel::automatic ? kernel
                : tokens >= 16                       ? AttentionKernel::block
                : max_keys <= narrow_max_keys()      ? AttentionKernel::narrow
                                                     : AttentionKernel::decode;
  if (plan.kernel == AttentionKernel::narrow && !has_narrow(layout.head_dim)) plan.kernel = AttentionKernel::decode;
  const TileShape tile = tile_shape(plan.kernel, layout.head_dim);
  const uint32_t group = params.n_heads / layout.kv_heads;
  plan.heads_per_tile = std::min(group, tile.rows);
  plan.head_chunks = gpu::div_up(group, plan.heads_per_tile);
  plan.tokens_per_tile = plan.kernel != AttentionKernel::block ? 1 : tile.rows / plan.heads_per_tile;
  plan.token_tiles = gpu::div_up(tokens, plan.tokens_per_tile);
  if (splits == 0) {
    // Aim at ~512 workgroups (about four resident per SM of an H100) but give each split at least two
    // key tiles, so the combine pass stays small next to the cache reads.
    constexpr uint32_t kTargetGroups = 512;
    const uint32_t groups = plan.token_tiles * layout.kv_heads * plan.head_chunks;
    splits = groups >= kTargetGroups ? 1
                                     : std::min({gpu::div_up(kTargetGroups, groups),
                                                 std::max(1u, max_keys / (2 * tile.keys)), kMaxSplits});
  }
  assert(splits >= 1 && splits <= kMaxSplits && plan.token_tiles <= 65535);
  plan.splits = splits;
  if (splits > 1) {
    const uint64_t rows = uint64_t{tokens} * params.n_heads * splits;
    plan.scratch_bytes = align_up(rows * layout.head_dim * 4, kScratchAlign) + rows * 8;
  }
  return plan;
}

const char* attention_kernel_name(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::decode: return "decode";
    case AttentionKernel::block: return "block";
    case AttentionKernel::narrow: return "narrow";
    case AttentionKernel::automatic: break;
  }
  return "auto";
}

void attention(gpu::CommandList& cmd, const KvCacheLayout& layout, const AttentionParams& params,
               const AttentionPlan& plan, const AttentionArgs& args, uint32_t tokens) {
  assert(plan.kernel != AttentionKernel::automatic && is_power_of_two(layout.block_size));
  const auto& pipeline = cmd.context().pipeline(
      fmt::format("attention_{}_d{}", attention_kernel_name(plan.kernel), layout.head_dim));
  struct {
    uint32_t tokens, n_heads, kv_heads, block_size, max_blocks_per_seq, window;
    uint32_t heads_per_tile, tokens_per_tile, head_chunks, splits, has_sinks;
    float scale, softcap;
  } push{tokens, params.n_heads, layout.kv_heads, layout.block_size, layout.max_blocks_per_seq,
         params.window, plan.heads_per_tile, plan.tokens_per_tile, plan.head_chunks, plan.splits,
         params.sinks ? 1u : 0u, params.scale, params.softcap};
  const gpu::Binding sinks = params.sinks ? args.sinks : args.q;  // unread placeholder without sinks
  const gpu::Groups groups{plan.token_tiles, layout.kv_heads * plan.head_chunks, plan.splits};
  if (plan.splits == 1) {
    // The partial-result bindings are unused: q stands in, read-only, so no barrier is implied.
    cmd.dispatch(pipeline,
                 {args.q, args.seq_of_token, args.pos_of_token, args.block_table, args.k_cache, args.v_cache,
                  sinks, args.out, args.q, args.q},
                 push, groups);
    return;
  }
  assert(args.scratch.buffer && args.scratch.offset % kScratchAlign == 0);
  const uint64_t rows = uint64_t{tokens} * params.n_heads * plan.splits;
  const uint64_t o_bytes = rows * layout.head_dim * 4;
  const uint64_t ml_offset = args.scratch.offset + align_up(o_bytes, kScratchAlign);
  const gpu::Binding part_o = gpu::out(*args.scratch.buffer, args.scratch.offset, o_bytes);
  const gpu::Binding part_ml = gpu::out(*args.scratch.buffer, ml_offset, rows * 8);
  cmd.dispatch(pipeline,
               {args.q, args.seq_of_token, args.pos_of_token, args.block_table, args.k_cache, args.v_cache,
                sinks, args.q, part_o, part_ml},
               push, groups);
  struct {
    uint32_t rows, n_heads, half_dim, splits, has_sinks;
  } combine_push{tokens * params.n_heads, params.n_heads, layout.head_dim / 2, plan.splits,
                 params.sinks ? 1u : 0u};
  cmd.dispatch(cmd.context().pipeline("attention_combine"),
               {gpu::in(*args.scratch.buffer, args.scratch.offset, o_bytes),
                gpu::in(*args.scratch.buffer, ml_offset, rows * 8), sinks, args.out},
               combine_push, gpu::flat_groups(tokens * params.n_heads));
}

}  // namespace mach::ops
