// The prefix cache: KV blocks of token prefixes seen before, so that a request whose prompt starts with a
// cached prefix (a system prompt, tool definitions, an earlier turn) skips straight to its first new token.
//
// Keys: a full block of B tokens is keyed by chain_key(parent block's key, its B ids) (engine/chain_hash.hpp),
// so equal keys mean equal whole prefixes; only full blocks are cached.
// L1: blocks in host memory (K and V of every layer, copied out of the device KV cache), LRU under a byte
//     budget. Among blocks last used together, the deepest goes first, so a chain loses its tail, not its head.
// L2: the same blocks on disk (engine/prefix_disk.hpp), written through when a block is stored, loaded into
//     L1 on a hit, size-bounded with eviction by value.
// Restore copies the hit blocks into the sequence's own freshly reserved KV blocks. Why copies and not
// shared device blocks (BlockAllocator::retain): the KV cache is sized for the live sequences' contexts, so
// blocks pinned by the cache would take room from admission, and sharing needs the scheduler to decide when
// cached device blocks may be reclaimed. Copying a block costs a PCIe transfer of its bytes; recomputing it
// costs a forward pass over its tokens. Sharing resident blocks is the next step once the scheduler owns
// block lifetimes.
//
// Not thread-safe: the owner (generator, later the scheduler) calls it from one thread, between GPU steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "engine/chain_hash.hpp"
#include "engine/kv_cache.hpp"
#include "engine/prefix_disk.hpp"
#include "gpu/command_list.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"

namespace mach::engine {

struct PrefixCacheOptions {
  uint64_t l1_bytes = 1ull << 30;   // host memory for cached blocks
  std::filesystem::path cache_dir;  // L2 root (default_prefix_cache_dir()); empty: no L2. A model's files live in
                                    // a subfolder named by a hash of its fingerprint, so models never collide.
  uint64_t l2_bytes = 16ull << 30;  // disk budget of this model's subfolder
};

// $XDG_CACHE_HOME/mach/prefix, else ~/.cache/mach/prefix (what `--cache-dir` defaults to).
std::filesystem::path default_prefix_cache_dir();

struct PrefixCacheStats {
  uint64_t lookups = 0;          // restore() calls
  uint64_t hit_tokens = 0;       // prompt tokens restored instead of computed
  uint64_t l1_hits = 0;          // blocks restored from L1
  uint64_t l2_hits = 0;          // blocks restored from L2 (loaded from disk by that restore)
  uint64_t stored_blocks = 0;    // blocks copied out of the KV cache into L1
  uint64_t l1_blocks = 0, l1_bytes = 0;
  uint64_t l2_files = 0, l2_bytes = 0;
  uint64_t l1_evictions = 0;     // blocks
  uint64_t l2_evictions = 0;     // files
  uint64_t l2_rejected = 0;      // files removed as corrupt, truncated or another model's
  uint64_t l2_write_errors = 0;  // segments that could not be written (disk full, permissions)
};

void to_json(nlohmann::json& j, const PrefixCacheStats& s);

class PrefixCache {
 public:
  // `kv` gives the block layout (only its shapes are read; no reference is kept). `fingerprint` names the
  // model whose KV the blocks hold (model::Model::fingerprint()). Fails when the L2 folder cannot be created.
  static Result<std::unique_ptr<PrefixCache>> create(const KvCache& kv, std::string fingerprint,
                                                     const PrefixCacheOptions& options);

  uint32_t block_size() const { return block_size_; }

  // Tokens of the longest cached chain prefix of `tokens` in L1 or on disk (a multiple of B). Reads no file.
  uint32_t lookup(std::span<const uint32_t> tokens) const;

  // Copies the longest cached chain prefix of `tokens` into the first blocks of sequence `seq` and returns its
  // length in tokens (a multiple of B). The caller has reserved the sequence through at least tokens.size()
  // positions. Blocks found only on disk are loaded into L1 first; a file that fails verification ends the hit
  // there. Blocks until the copies are done.
  uint32_t restore(gpu::Context& context, KvCache& kv, uint32_t seq, std::span<const uint32_t> tokens);

  // Remembers the full blocks of `tokens`, whose KV sequence `seq` holds (computed and complete on the GPU):
  // blocks not in L1 are copied out of the device, blocks not on disk are written to L2 (as one file per run
  // of consecutive new blocks). Blocks until done.
  void store(gpu::Context& context, const KvCache& kv, uint32_t seq, std::span<const uint32_t> tokens);

  // Drops every L1 block (L2 stays).
  void clear_l1();
  PrefixCacheStats stats() const;
  // The L2 store, or nullptr without a cache folder.
  const PrefixDisk* disk() const { return disk_.get(); }

 private:
  using Bytes = std::shared_ptr<const std::vector<std::byte>>;
  struct L1Block {
    std::vector<uint32_t> tokens;  // [B], compared on a hit
    Bytes data;                    // [block_bytes]: per layer K then V
    uint32_t depth = 0;            // block index in its chain
    uint64_t tick = 0;
  };
  using LruKey = std::tuple<uint64_t, uint32_t, BlockKey>;  // (tick, ~depth, key): the first goes first

  PrefixCache(const KvCache& kv, uint32_t block_size);
  const L1Block* find_l1(const BlockKey& key, std::span<const uint32_t> tokens) const;
  // Adds a block unless its key is present; `tick` orders it for LRU.
  void insert_l1(const BlockKey& key, std::span<const uint32_t> tokens, Bytes data, uint32_t depth, uint64_t tick);
  void touch(const BlockKey& key, uint64_t tick);
  void erase_l1(const BlockKey& key);
  void evict_l1();
  // Loads the disk segment holding keys[i] (block i of a chain) into L1 with `tick`; false when the file failed
  // verification.
  bool load_from_disk(std::span<const BlockKey> keys, size_t i, uint64_t tick);
  void write_to_disk(std::span<const BlockKey> keys, std::span<const uint32_t> tokens, std::span<const Bytes> data);
  std::vector<Bytes> copy_out(gpu::Context& context, const KvCache& kv, std::span<const uint32_t> physical);
  void copy_in(gpu::Context& context, KvCache& kv, std::span<const uint32_t> physical, std::span<const Bytes> data);
  gpu::CommandList& commands(gpu::Context& context);
  gpu::Buffer& staging(gpu::Context& context, gpu::Buffer& buffer, gpu::MemoryKind kind, uint64_t bytes);

  uint32_t block_size_ = 0;
  std::vector<uint64_t> layer_block_bytes_;  // one block of one layer's K (= V)
  uint64_t block_bytes_ = 0;                 // one block's K and V over all layers
  uint64_t l1_budget_ = 0;
  std::unordered_map<BlockKey, L1Block, BlockKeyHash> l1_;
  std::set<LruKey> lru_;
  uint64_t tick_ = 0;
  std::unique_ptr<PrefixDisk> disk_;
  PrefixCacheStats stats_;
  std::unique_ptr<gpu::CommandList> cmd_;
  gpu::Buffer upload_, readback_;
};

}  // namespace mach::engine
