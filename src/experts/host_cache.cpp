#include "experts/host_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <fstream>
#include <string>

namespace mach::experts {

Result<std::unique_ptr<HostCache>> HostCache::create(gpu::Context& context, uint64_t slab_bytes,
                                                     uint64_t capacity_bytes, uint32_t min_entries) {
  assert(slab_bytes > 0 && min_entries > 0);
  const uint64_t count = capacity_bytes / slab_bytes;
  if (count < min_entries)
    return Error{Errc::invalid_argument,
                 fmt::format("--host-cache-gb {:.3f} holds {} expert slabs of {} bytes, fewer than one layer's bank "
                             "({} slots); give at least {:.3f} GiB, or 0 to turn the RAM tier off",
                             capacity_bytes / 1073741824.0, count, slab_bytes, min_entries,
                             double(min_entries) * slab_bytes / 1073741824.0)};
  std::unique_ptr<HostCache> c(new HostCache(slab_bytes));
  c->per_buffer_ = static_cast<uint32_t>(std::max<uint64_t>(1, (uint64_t{1} << 30) / slab_bytes));
  try {
    for (uint64_t made = 0; made < count;) {
      const uint64_t n = std::min<uint64_t>(c->per_buffer_, count - made);
      c->buffers_.push_back(context.create_buffer(n * slab_bytes, gpu::MemoryKind::host_upload,
                                                  fmt::format("expert RAM tier {}", c->buffers_.size()), true));
      made += n;
    }
  } catch (const Exception& e) {
    return Error{Errc::out_of_device_memory,
                 fmt::format("the expert RAM tier of {:.2f} GiB could not be allocated ({}); give a smaller "
                             "--host-cache-gb, or 0 to turn it off", count * double(slab_bytes) / 1073741824.0,
                             e.error().message)};
  }
  c->slots_.resize(count);
  for (uint32_t s = 0; s < count; ++s) c->slots_[s].lru = c->lru_.insert(c->lru_.end(), s);
  return c;
}

HostCache::Entry HostCache::entry(uint32_t slot) const {
  const gpu::Buffer& b = buffers_[slot / per_buffer_];
  const uint64_t offset = uint64_t{slot % per_buffer_} * slab_bytes_;
  return {&b, offset, b.mapped() + offset};
}

void HostCache::touch(uint32_t slot, uint64_t stamp) {
  slots_[slot].stamp = stamp;
  lru_.splice(lru_.begin(), lru_, slots_[slot].lru);
}

std::optional<HostCache::Entry> HostCache::find(uint32_t layer, uint32_t expert, uint64_t stamp) {
  const auto it = index_.find(key(layer, expert));
  if (it == index_.end()) return std::nullopt;
  touch(it->second, stamp);
  return entry(it->second);
}

std::optional<uint32_t> HostCache::victim(uint64_t stamp) const {
  // The back is the least recently used; entries of this pass were moved to the front, and a pass never
  // holds more entries than there are (create's min_entries). Entries an upload still reads are skipped.
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    const Slot& s = slots_[*it];
    if (s.hold > released_) continue;
    if (s.stamp == stamp && s.key != kEmpty) return std::nullopt;  // the rest are this pass's too
    return *it;
  }
  return std::nullopt;
}

void HostCache::hold(uint32_t layer, uint32_t expert, uint64_t until) {
  const auto it = index_.find(key(layer, expert));
  assert(it != index_.end());
  slots_[it->second].hold = std::max(slots_[it->second].hold, until);
}

HostCache::Entry HostCache::claim(uint32_t layer, uint32_t expert, uint64_t stamp) {
  assert(!index_.contains(key(layer, expert)));
  const std::optional<uint32_t> found = victim(stamp);
  assert(found && "claim() without claimable(): every entry is this pass's or held by an upload");
  const uint32_t slot = *found;
  if (slots_[slot].key != kEmpty) index_.erase(slots_[slot].key);
  slots_[slot].key = key(layer, expert);
  index_[slots_[slot].key] = slot;
  touch(slot, stamp);
  return entry(slot);
}

void HostCache::drop(uint32_t layer, uint32_t expert) {
  const auto it = index_.find(key(layer, expert));
  if (it == index_.end()) return;
  const uint32_t slot = it->second;
  index_.erase(it);
  slots_[slot].key = kEmpty;
  lru_.splice(lru_.end(), lru_, slots_[slot].lru);  // first to be reused
}

uint64_t default_host_cache_bytes(uint64_t wanted) {
  std::ifstream f("/proc/meminfo");
  std::string name;
  uint64_t kib = 0, total = 0, available = 0;
  std::string unit;
  while (f >> name >> kib) {
    std::getline(f, unit);
    if (name == "MemTotal:") total = kib * 1024;
    if (name == "MemAvailable:") available = kib * 1024;
  }
  if (total == 0 || available == 0) return 0;
  const uint64_t margin = std::max<uint64_t>(uint64_t{4} << 30, total / 5);
  return available > margin ? std::min(wanted, available - margin) : 0;
}

}  // namespace mach::experts
