#include "engine/kv_cache.hpp"

#include <fmt/format.h>

#include <cstring>

namespace mach::engine {
namespace {

uint32_t blocks_for(uint32_t tokens, uint32_t block_size) { return (tokens + block_size - 1) / block_size; }

}  // namespace

uint64_t KvCache::blocks_in_budget(const std::vector<KvLayerShape>& layers, uint32_t block_size, uint64_t bytes) {
  uint64_t per_block = 0;  // K and V of one block in every layer, f16
  for (const auto& l : layers) per_block += 2ull * l.kv_heads * block_size * l.head_dim * 2;
  return per_block ? bytes / per_block : 0;
}

namespace {

uint32_t physical_blocks(const std::vector<KvLayerShape>& layers, const KvCacheOptions& o) {
  if (o.blocks) return o.blocks;
  const uint32_t full = blocks_for(o.max_context, o.block_size) * o.max_sequences;
  if (o.budget_bytes == 0) return full;
  const uint64_t fit = KvCache::blocks_in_budget(layers, o.block_size, o.budget_bytes);
  if (fit == 0)
    throw Exception(Errc::invalid_argument,
                    fmt::format("a KV cache of {:.3f} GiB holds no {}-token block of this model; raise --kv-cache-gb",
                                o.budget_bytes / 1073741824.0, o.block_size));
  // More than every sequence's full context would never be used.
  return static_cast<uint32_t>(std::min<uint64_t>(fit, full));
}

}  // namespace

KvCache::KvCache(gpu::Context& context, std::vector<KvLayerShape> layers, const KvCacheOptions& options)
    : context_(context),
      layers_(std::move(layers)),
      options_(options),
      max_blocks_per_seq_(blocks_for(options.max_context, options.block_size)),
      allocator_(physical_blocks(layers_, options)),
      seq_blocks_(options.max_sequences) {
  assert(options_.block_size > 0 && (options_.block_size & (options_.block_size - 1)) == 0);
  for (uint32_t l = 0; l < layers_.size(); ++l) {
    const uint64_t bytes = uint64_t{allocator_.capacity()} * layout(l).block_bytes();
    k_.push_back(context_.create_buffer(bytes, gpu::MemoryKind::device, fmt::format("kv cache K layer {}", l)));
    v_.push_back(context_.create_buffer(bytes, gpu::MemoryKind::device, fmt::format("kv cache V layer {}", l)));
    bytes_ += 2 * bytes;
  }
  const uint64_t table_bytes = uint64_t{options_.max_sequences} * max_blocks_per_seq_ * 4;
  table_host_ = context_.create_buffer(table_bytes, gpu::MemoryKind::host_upload, "block table (host)");
  table_ = context_.create_buffer(table_bytes, gpu::MemoryKind::device, "block table");
  std::memset(table_host_.mapped(), 0, table_bytes);
}

ops::KvCacheLayout KvCache::layout(uint32_t layer) const {
  ops::KvCacheLayout l;
  l.kv_heads = layers_[layer].kv_heads;
  l.head_dim = layers_[layer].head_dim;
  l.block_size = options_.block_size;
  l.max_blocks_per_seq = max_blocks_per_seq_;
  return l;
}

bool KvCache::reserve(uint32_t seq, uint32_t tokens) {
  assert(seq < seq_blocks_.size());
  if (tokens > options_.max_context) return false;
  auto& blocks = seq_blocks_[seq];
  const uint32_t need = blocks_for(tokens, options_.block_size);
  if (need <= blocks.size()) return true;
  auto fresh = allocator_.allocate(need - static_cast<uint32_t>(blocks.size()));
  if (!fresh) return false;
  auto* row = reinterpret_cast<uint32_t*>(table_host_.mapped()) + uint64_t{seq} * max_blocks_per_seq_;
  for (uint32_t b : *fresh) {
    row[blocks.size()] = b;
    blocks.push_back(b);
  }
  table_dirty_ = true;
  return true;
}

void KvCache::release(uint32_t seq) {
  for (uint32_t b : seq_blocks_[seq]) allocator_.release(b);
  seq_blocks_[seq].clear();
}

uint32_t KvCache::capacity_tokens(uint32_t seq) const {
  return static_cast<uint32_t>(seq_blocks_[seq].size()) * options_.block_size;
}

void KvCache::record_table_upload(gpu::CommandList& cmd) {
  if (!table_dirty_) return;
  cmd.copy(table_host_, 0, table_, 0, table_.size());
  table_dirty_ = false;
}

}  // namespace mach::engine
