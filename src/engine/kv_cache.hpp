// The paged KV cache: per layer a K and a V buffer of fixed-size token blocks (layout in
// ops/kv_cache_layout.hpp), one block table shared by every layer (a block id names the same tokens in all
// layers), and the block allocator. The table is edited on the CPU and copied to the device at the start of
// each step (attention reads it in its inner loop, which must not cross PCIe).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/block_allocator.hpp"
#include "gpu/command_list.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "ops/kv_cache_layout.hpp"

namespace mach::engine {

struct KvLayerShape {
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
};

struct KvCacheOptions {
  uint32_t block_size = 16;
  uint32_t max_sequences = 1;
  uint32_t max_context = 4096;  // tokens one sequence may hold
  uint32_t blocks = 0;          // physical blocks; 0: from budget_bytes, else every sequence's full context
  uint64_t budget_bytes = 0;    // device memory for K and V of all layers (--kv-cache-gb); 0: unset
};

class KvCache {
 public:
  // Throws mach::Exception(invalid_argument) when budget_bytes holds less than one block.
  KvCache(gpu::Context& context, std::vector<KvLayerShape> layers, const KvCacheOptions& options);
  // Physical blocks that `bytes` of K and V hold for these layers.
  static uint64_t blocks_in_budget(const std::vector<KvLayerShape>& layers, uint32_t block_size, uint64_t bytes);

  ops::KvCacheLayout layout(uint32_t layer) const;
  uint32_t num_layers() const { return static_cast<uint32_t>(layers_.size()); }
  const gpu::Buffer& k(uint32_t layer) const { return k_[layer]; }
  const gpu::Buffer& v(uint32_t layer) const { return v_[layer]; }
  // Writable K and V, for copies into a sequence's blocks (the prefix cache's restore).
  gpu::Buffer& k(uint32_t layer) { return k_[layer]; }
  gpu::Buffer& v(uint32_t layer) { return v_[layer]; }
  const gpu::Buffer& block_table() const { return table_; }
  uint32_t block_size() const { return options_.block_size; }
  uint32_t max_context() const { return options_.max_context; }
  uint32_t max_sequences() const { return options_.max_sequences; }
  uint64_t bytes() const { return bytes_; }

  // Makes room for positions [0, tokens) of sequence `seq`, allocating blocks as needed. False (nothing
  // changed) when the blocks are not free or `tokens` exceeds max_context.
  bool reserve(uint32_t seq, uint32_t tokens);
  // Frees every block of the sequence.
  void release(uint32_t seq);
  uint32_t capacity_tokens(uint32_t seq) const;
  uint32_t free_blocks() const { return allocator_.free_blocks(); }
  uint32_t total_blocks() const { return allocator_.capacity(); }
  // The physical blocks of a sequence in logical order: block i holds positions [i*B, (i+1)*B).
  std::span<const uint32_t> blocks(uint32_t seq) const { return seq_blocks_.at(seq); }

  // Records the copy of the CPU-side block table into the device table when it changed.
  void record_table_upload(gpu::CommandList& cmd);
  // Whether the next step must copy the table; mark_table_uploaded() is for a replayed recording that
  // already holds the copy (Model::replay_step).
  bool table_dirty() const { return table_dirty_; }
  void mark_table_uploaded() { table_dirty_ = false; }

 private:
  gpu::Context& context_;
  std::vector<KvLayerShape> layers_;
  KvCacheOptions options_;
  uint32_t max_blocks_per_seq_ = 0;
  BlockAllocator allocator_;
  std::vector<std::vector<uint32_t>> seq_blocks_;
  std::vector<gpu::Buffer> k_, v_;
  gpu::Buffer table_host_, table_;
  bool table_dirty_ = true;
  uint64_t bytes_ = 0;
};

}  // namespace mach::engine
