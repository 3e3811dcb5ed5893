#include "engine/prefix_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace mach::engine {
namespace {

namespace fs = std::filesystem;

// Staging for copies in and out of the device is bounded: larger transfers go in batches of whole blocks.
constexpr uint64_t kMaxStagingBytes = 64ull << 20;

}  // namespace

fs::path default_prefix_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return fs::path(xdg) / "mach/prefix";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : ".") / ".cache/mach/prefix";
}

void to_json(nlohmann::json& j, const PrefixCacheStats& s) {
  j = {{"lookups", s.lookups},           {"hit_tokens", s.hit_tokens},       {"l1_hits", s.l1_hits},
       {"l2_hits", s.l2_hits},           {"stored_blocks", s.stored_blocks}, {"l1_blocks", s.l1_blocks},
       {"l1_bytes", s.l1_bytes},         {"l2_files", s.l2_files},           {"l2_bytes", s.l2_bytes},
       {"l1_evictions", s.l1_evictions}, {"l2_evictions", s.l2_evictions},   {"l2_rejected", s.l2_rejected},
       {"l2_write_errors", s.l2_write_errors}};
}

PrefixCache::PrefixCache(const KvCache& kv, uint32_t block_size) : block_size_(block_size) {
  for (uint32_t l = 0; l < kv.num_layers(); ++l) {
    layer_block_bytes_.push_back(kv.layout(l).block_bytes());
    block_bytes_ += 2 * layer_block_bytes_.back();
  }
}

Result<std::unique_ptr<PrefixCache>> PrefixCache::create(const KvCache& kv, std::string fingerprint,
                                                         const PrefixCacheOptions& options) {
  std::unique_ptr<PrefixCache> cache(new PrefixCache(kv, kv.block_size()));
  cache->l1_budget_ = options.l1_bytes;
  if (!options.cache_dir.empty()) {
    const std::string folder = fmt::format("{:016x}", checksum64(std::as_bytes(std::span(fingerprint))));
    DiskLayout layout{std::move(fingerprint), cache->block_size_, cache->block_bytes_};
    auto disk = PrefixDisk::open(options.cache_dir / folder, std::move(layout), options.l2_bytes);
    if (!disk) return disk.error();
    cache->disk_ = std::move(disk).value();
  }
  return cache;
}

const PrefixCache::L1Block* PrefixCache::find_l1(const BlockKey& key, std::span<const uint32_t> tokens) const {
  auto it = l1_.find(key);
  if (it == l1_.end() || !std::equal(tokens.begin(), tokens.end(), it->second.tokens.begin(), it->second.tokens.end()))
    return nullptr;
  return &it->second;
}

uint32_t PrefixCache::lookup(std::span<const uint32_t> tokens) const {
  const auto keys = chain_keys(tokens, block_size_);
  uint32_t n = 0;
  while (n < keys.size() && (find_l1(keys[n], tokens.subspan(n * block_size_, block_size_)) ||
                             (disk_ && disk_->contains(keys[n]))))
    ++n;
  return n * block_size_;
}

uint32_t PrefixCache::restore(gpu::Context& context, KvCache& kv, uint32_t seq, std::span<const uint32_t> tokens) {
  ++stats_.lookups;
  const auto keys = chain_keys(tokens, block_size_);
  assert(kv.capacity_tokens(seq) >= keys.size() * block_size_);
  std::vector<Bytes> hit;
  const uint64_t tick = ++tick_;
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto block_tokens = tokens.subspan(i * block_size_, block_size_);
    const L1Block* b = find_l1(keys[i], block_tokens);
    if (!b && disk_ && disk_->contains(keys[i]) && load_from_disk(keys, i, tick)) b = find_l1(keys[i], block_tokens);
    if (!b) break;
    ++(b->tick == tick ? stats_.l2_hits : stats_.l1_hits);  // blocks loaded by this restore carry its tick
    hit.push_back(b->data);
    // Every block of the hit gets the same tick, so LRU order among them falls back to depth (deepest first).
    touch(keys[i], tick);
  }
  evict_l1();
  if (hit.empty()) return 0;
  copy_in(context, kv, kv.blocks(seq).first(hit.size()), hit);
  const auto restored = static_cast<uint32_t>(hit.size()) * block_size_;
  stats_.hit_tokens += restored;
  return restored;
}

bool PrefixCache::load_from_disk(std::span<const BlockKey> keys, size_t i, uint64_t tick) {
  auto segment = disk_->load(keys[i]);
  if (!segment) return false;
  // The segment may start before block i (another prompt's chain shares it up to here) or run past the
  // prompt; its blocks' depths follow from where keys[i] sits in it.
  const auto at = std::find(segment->keys.begin(), segment->keys.end(), keys[i]) - segment->keys.begin();
  for (size_t j = 0; j < segment->keys.size(); ++j) {
    const auto seg_tokens = std::span<const uint32_t>(segment->tokens).subspan(j * block_size_, block_size_);
    if (l1_.contains(segment->keys[j])) continue;
    const auto* first = segment->blocks.data() + j * block_bytes_;
    auto data = std::make_shared<const std::vector<std::byte>>(first, first + block_bytes_);
    insert_l1(segment->keys[j], seg_tokens, std::move(data), static_cast<uint32_t>(i - at + j), tick);
  }
  return true;
}

void PrefixCache::store(gpu::Context& context, const KvCache& kv, uint32_t seq, std::span<const uint32_t> tokens) {
  const uint32_t usable = std::min<uint32_t>(static_cast<uint32_t>(tokens.size()), kv.capacity_tokens(seq));
  tokens = tokens.first(usable);
  const auto keys = chain_keys(tokens, block_size_);
  std::vector<Bytes> data(keys.size());
  std::vector<uint32_t> missing, physical;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (const L1Block* b = find_l1(keys[i], tokens.subspan(i * block_size_, block_size_))) {
      data[i] = b->data;
    } else if (l1_.contains(keys[i])) {
      data.resize(i);  // a key collision (same key, other tokens): the chain is not cacheable past it
      break;
    } else {
      missing.push_back(static_cast<uint32_t>(i));
      physical.push_back(kv.blocks(seq)[i]);
    }
  }
  auto copied = copy_out(context, kv, physical);
  for (size_t m = 0; m < missing.size(); ++m) data[missing[m]] = std::move(copied[m]);
  stats_.stored_blocks += missing.size();

  const uint64_t tick = ++tick_;
  for (size_t i = 0; i < data.size(); ++i) {
    insert_l1(keys[i], tokens.subspan(i * block_size_, block_size_), data[i], static_cast<uint32_t>(i), tick);
    touch(keys[i], tick);
  }
  if (disk_) write_to_disk(std::span(keys).first(data.size()), tokens, data);
  evict_l1();
}

void PrefixCache::write_to_disk(std::span<const BlockKey> keys, std::span<const uint32_t> tokens,
                                std::span<const Bytes> data) {
  for (size_t i = 0; i < keys.size();) {
    if (disk_->contains(keys[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < keys.size() && !disk_->contains(keys[end])) ++end;
    Segment s;
    s.parent = i ? keys[i - 1] : kRootKey;
    s.keys.assign(keys.begin() + i, keys.begin() + end);
    s.tokens.assign(tokens.begin() + i * block_size_, tokens.begin() + end * block_size_);
    s.blocks.reserve((end - i) * block_bytes_);
    for (size_t j = i; j < end; ++j) s.blocks.insert(s.blocks.end(), data[j]->begin(), data[j]->end());
    if (!disk_->write(s)) ++stats_.l2_write_errors;
    i = end;
  }
}

void PrefixCache::insert_l1(const BlockKey& key, std::span<const uint32_t> tokens, Bytes data, uint32_t depth,
                            uint64_t tick) {
  auto [it, fresh] = l1_.try_emplace(key);
  L1Block& b = it->second;
  if (fresh) {
    b.tokens.assign(tokens.begin(), tokens.end());
    b.data = std::move(data);
    b.depth = depth;
    b.tick = tick;
    lru_.insert({b.tick, ~b.depth, key});
    stats_.l1_bytes += b.data->size() + b.tokens.size() * 4;
  }
}

void PrefixCache::touch(const BlockKey& key, uint64_t tick) {
  L1Block& b = l1_.at(key);
  lru_.erase({b.tick, ~b.depth, key});
  b.tick = tick;
  lru_.insert({b.tick, ~b.depth, key});
}

void PrefixCache::erase_l1(const BlockKey& key) {
  auto it = l1_.find(key);
  lru_.erase({it->second.tick, ~it->second.depth, key});
  stats_.l1_bytes -= it->second.data->size() + it->second.tokens.size() * 4;
  l1_.erase(it);
}

void PrefixCache::evict_l1() {
  while (stats_.l1_bytes > l1_budget_ && !lru_.empty()) {
    erase_l1(std::get<2>(*lru_.begin()));
    ++stats_.l1_evictions;
  }
}

void PrefixCache::clear_l1() {
  l1_.clear();
  lru_.clear();
  stats_.l1_bytes = 0;
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = stats_;
  s.l1_blocks = l1_.size();
  if (disk_) {
    s.l2_files = disk_->files();
    s.l2_bytes = disk_->bytes();
    s.l2_evictions = disk_->evictions();
    s.l2_rejected = disk_->rejected();
  }
  return s;
}

gpu::CommandList& PrefixCache::commands(gpu::Context& context) {
  if (!cmd_) cmd_ = context.begin_commands();
  return *cmd_;
}

gpu::Buffer& PrefixCache::staging(gpu::Context& context, gpu::Buffer& buffer, gpu::MemoryKind kind, uint64_t bytes) {
  if (!buffer || buffer.size() < bytes) buffer = context.create_buffer(bytes, kind, "prefix cache staging");
  return buffer;
}

// Per batch: one submission of copies, block by block and layer by layer ([layer][K, V] in host order).
std::vector<PrefixCache::Bytes> PrefixCache::copy_out(gpu::Context& context, const KvCache& kv,
                                                      std::span<const uint32_t> physical) {
  std::vector<Bytes> out;
  const size_t per_batch = std::max<uint64_t>(1, kMaxStagingBytes / block_bytes_);
  for (size_t first = 0; first < physical.size(); first += per_batch) {
    const size_t n = std::min(per_batch, physical.size() - first);
    gpu::Buffer& buf = staging(context, readback_, gpu::MemoryKind::host_readback, n * block_bytes_);
    auto& cmd = commands(context);
    cmd.begin();
    uint64_t at = 0;
    for (size_t b = first; b < first + n; ++b) {
      for (uint32_t l = 0; l < layer_block_bytes_.size(); ++l) {
        const uint64_t bb = layer_block_bytes_[l];
        cmd.copy(kv.k(l), physical[b] * bb, buf, at, bb);
        cmd.copy(kv.v(l), physical[b] * bb, buf, at + bb, bb);
        at += 2 * bb;
      }
    }
    context.wait(context.submit(cmd));
    for (size_t b = 0; b < n; ++b) {
      const std::byte* p = buf.mapped() + b * block_bytes_;
      out.push_back(std::make_shared<const std::vector<std::byte>>(p, p + block_bytes_));
    }
  }
  return out;
}

void PrefixCache::copy_in(gpu::Context& context, KvCache& kv, std::span<const uint32_t> physical,
                          std::span<const Bytes> data) {
  const size_t per_batch = std::max<uint64_t>(1, kMaxStagingBytes / block_bytes_);
  for (size_t first = 0; first < physical.size(); first += per_batch) {
    const size_t n = std::min(per_batch, physical.size() - first);
    gpu::Buffer& buf = staging(context, upload_, gpu::MemoryKind::host_upload, n * block_bytes_);
    for (size_t b = 0; b < n; ++b) std::memcpy(buf.mapped() + b * block_bytes_, data[first + b]->data(), block_bytes_);
    auto& cmd = commands(context);
    cmd.begin();
    uint64_t at = 0;
    for (size_t b = first; b < first + n; ++b) {
      for (uint32_t l = 0; l < layer_block_bytes_.size(); ++l) {
        const uint64_t bb = layer_block_bytes_[l];
        cmd.copy(buf, at, kv.k(l), physical[b] * bb, bb);
        cmd.copy(buf, at + bb, kv.v(l), physical[b] * bb, bb);
        at += 2 * bb;
      }
    }
    context.wait(context.submit(cmd));
  }
}

}  // namespace mach::engine
