#include "ops/attention_prep.hpp"

#include <cassert>

#include "gpu/context.hpp"

namespace mach::ops {
namespace {

constexpr uint32_t kMaxHeadDim = 512;  // qk_norm_rope.comp's shared row

struct Push {
  uint32_t tokens, q_heads, kv_heads, head_dim, rotary_dim, offset;
  float eps, attention_factor;
  uint32_t block_size, max_blocks_per_seq;
};

// The workgroup size and the other specialization constants. The size follows ops::rms_norm's choice for
// rows of D, which keeps the reduction tree (and so the rounding) the same as the unfused norm's.
gpu::SpecConstants spec_constants(const QkNormRopeShape& shape, const QkNormRopeParams& params) {
  const uint32_t threads = shape.head_dim <= 256 ? 64 : 256;
  return {threads, static_cast<uint32_t>(params.weight), params.style == RopeStyle::interleaved ? 1u : 0u};
}

void check_shape(const QkNormRopeShape& shape) {
  assert(shape.head_dim > 0 && shape.head_dim % 2 == 0 && shape.head_dim <= kMaxHeadDim);
  assert(shape.rotary_dim % 2 == 0 && shape.offset + shape.rotary_dim <= shape.head_dim);
}

}  // namespace

void qk_norm_rope(gpu::CommandList& cmd, const QkNormRopeArgs& args, const QkNormRopeShape& shape,
                  const QkNormRopeParams& params) {
  check_shape(shape);
  const uint32_t rows = shape.tokens * (shape.q_heads + shape.kv_heads);
  if (rows == 0) return;
  const Push push{shape.tokens, shape.q_heads, shape.kv_heads, shape.head_dim, shape.rotary_dim, shape.offset,
                  params.eps,   params.attention_factor, 0, 0};
  cmd.dispatch(cmd.context().pipeline("qk_norm_rope", spec_constants(shape, params)),
               {args.q, args.k, args.q_norm, args.k_norm, args.positions, args.inv_freq}, push,
               gpu::flat_groups(rows));
}

void qk_norm_rope_kv_store(gpu::CommandList& cmd, const QkNormRopeArgs& args, const QkNormRopeShape& shape,
                           const QkNormRopeParams& params, const KvStoreArgs& store) {
  check_shape(shape);
  const KvCacheLayout& layout = store.layout;
  assert(layout.kv_heads == shape.kv_heads && layout.head_dim == shape.head_dim);
  assert(layout.block_size != 0 && (layout.block_size & (layout.block_size - 1)) == 0);
  const uint32_t rows = shape.tokens * (shape.q_heads + shape.kv_heads);
  if (rows == 0) return;
  const Push push{shape.tokens, shape.q_heads, shape.kv_heads, shape.head_dim, shape.rotary_dim, shape.offset,
                  params.eps,   params.attention_factor, layout.block_size, layout.max_blocks_per_seq};
  cmd.dispatch(cmd.context().pipeline("qk_norm_rope_kv_store", spec_constants(shape, params)),
               {args.q, args.k, args.q_norm, args.k_norm, args.positions, args.inv_freq, store.v,
                store.seq_of_token, store.pos_of_token, store.block_table, store.k_cache, store.v_cache},
               push, gpu::flat_groups(rows));
}

}  // namespace mach::ops
