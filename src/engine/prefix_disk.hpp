// L2 of the prefix cache: KV blocks on disk, one file per chain segment (a run of consecutive blocks of one
// token prefix), size-bounded with eviction by value. File format: docs/formats.md, "Prefix cache files".
//
// Every file is verified before its bytes are used: the header (magic, version, model fingerprint, block size
// and bytes, its own checksum) when the folder is indexed, and the payload checksum plus the chain keys
// recomputed from the stored token ids when a segment is loaded. A file that fails any check is removed and
// counted as rejected, never loaded. Writes go to a temporary file renamed into place, so a reader (this or
// another process) sees a whole file or none; a crash can leave a short file, which the size check rejects.
//
// Not thread-safe: one owner (the prefix cache) on one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/chain_hash.hpp"
#include "mach/error.hpp"

namespace mach::engine {

// What must match for a file's KV bytes to mean the same thing to this model.
struct DiskLayout {
  std::string fingerprint;   // the model's (model_type, weight type, shapes, ...)
  uint32_t block_size = 0;   // tokens per block
  uint64_t block_bytes = 0;  // one block's K and V over all layers
};

// One file's content: blocks i = 0..n-1 with keys[i] = chain_key(keys[i-1] (parent for i = 0), tokens of i).
struct Segment {
  BlockKey parent;
  std::vector<BlockKey> keys;     // [n]
  std::vector<uint32_t> tokens;   // [n * block_size]
  std::vector<std::byte> blocks;  // [n, block_bytes]: per block, per layer K then V ([kv_heads, B, D] f16 each)
};

class PrefixDisk {
 public:
  // Creates `dir` if needed and indexes its segment files; those whose header fails a check (another model or
  // version, a bad checksum, a size that does not match the header) are removed.
  static Result<std::unique_ptr<PrefixDisk>> open(std::filesystem::path dir, DiskLayout layout, uint64_t max_bytes);

  bool contains(const BlockKey& key) const { return where_.contains(key); }
  // Reads and verifies the segment holding `key` and counts a hit on it. A file that fails verification (or
  // vanished) is removed with its index entries; the result is then an error and nothing is loaded.
  Result<Segment> load(const BlockKey& key);
  // Writes a segment as a new file, then evicts the files of least value until the folder fits max_bytes
  // (the new file is kept; a segment larger than the whole budget is not written).
  Result<void> write(const Segment& segment);
  // Removes every indexed file.
  void clear();

  const std::filesystem::path& dir() const { return dir_; }
  uint64_t bytes() const { return bytes_; }
  size_t files() const { return files_.size(); }
  uint64_t evictions() const { return evictions_; }
  uint64_t rejected() const { return rejected_; }
  // The file holding `key`, for tests and tools.
  std::optional<std::filesystem::path> path_of(const BlockKey& key) const;

 private:
  struct File {
    std::vector<BlockKey> keys;
    uint64_t bytes = 0;
    uint64_t hits = 0;   // loads since this process indexed the file
    uint64_t used = 0;   // tick of the last write or load: breaks ties in value, older goes first
  };

  PrefixDisk(std::filesystem::path dir, DiskLayout layout, uint64_t max_bytes)
      : dir_(std::move(dir)), layout_(std::move(layout)), max_bytes_(max_bytes) {}
  void index_folder();
  void add(const std::string& name, std::vector<BlockKey> keys, uint64_t bytes);
  void remove(const std::string& name);
  void reject(const std::string& name);
  void evict_to_budget(const std::string& keep);

  std::filesystem::path dir_;
  DiskLayout layout_;
  uint64_t max_bytes_ = 0;
  std::unordered_map<std::string, File> files_;                   // by file name
  std::unordered_map<BlockKey, std::string, BlockKeyHash> where_;  // block key -> file name
  uint64_t bytes_ = 0, tick_ = 0, evictions_ = 0, rejected_ = 0, tmp_counter_ = 0;
};

}  // namespace mach::engine
