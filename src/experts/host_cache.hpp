// The host-RAM tier of expert streaming: slabs that were read from the sidecar stay in pinned host memory
// (host-visible buffers the GPU copies from directly), so a model that fits in RAM but not in GPU memory
// loads its missed experts at host-to-device copy speed instead of disk speed. One entry per slab, least
// recently used first out, over all layers.
//
//   GPU bank miss -> find(layer, expert): a RAM hit copies the entry into the slot
//                 -> else claim(layer, expert): the entry the sidecar read fills, then copied into the slot
//
// An entry handed out for the current pass (find or claim with the pass's stamp) is never claimed again by the
// same pass, so a pass's copies always read what they were recorded with; the caller waits for a pass's
// copies before it starts the next pass (ExpertStreamer's contract). A failed read must be dropped (drop())
// so that no unverified bytes are ever served.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "gpu/context.hpp"
#include "mach/error.hpp"

namespace mach::experts {

class HostCache {
 public:
  // `capacity_bytes` of entries of `slab_bytes` each (at least `min_entries`: one pass must fit), in host
  // buffers of at most 1 GiB. Errors: not even `min_entries` fit, or the host allocation fails.
  static Result<std::unique_ptr<HostCache>> create(gpu::Context& context, uint64_t slab_bytes,
                                                   uint64_t capacity_bytes, uint32_t min_entries);

  struct Entry {
    const gpu::Buffer* buffer = nullptr;
    uint64_t offset = 0;
    std::byte* data = nullptr;  // slab_bytes, mapped (write-combined: write, do not read)
  };

  uint32_t entries() const { return static_cast<uint32_t>(slots_.size()); }
  uint64_t bytes() const { return uint64_t{entries()} * slab_bytes_; }
  uint32_t used() const { return static_cast<uint32_t>(index_.size()); }

  // The entry holding (layer, expert), marked used by pass `stamp`; nullopt when it is not cached.
  std::optional<Entry> find(uint32_t layer, uint32_t expert, uint64_t stamp);
  // An entry for (layer, expert) to be filled now: the least recently used one not used by pass `stamp` and
  // not held (whatever it held is forgotten). Call only after find() returned nullopt, and only when
  // claimable(stamp).
  Entry claim(uint32_t layer, uint32_t expert, uint64_t stamp);
  bool claimable(uint64_t stamp) const { return victim(stamp).has_value(); }
  // An upload on the transfer queue (ExpertStreamer's uploads ahead) reads (layer, expert)'s entry until its
  // ticket `until` is done: claim() passes it over until release() says so. (layer, expert) must be cached.
  void hold(uint32_t layer, uint32_t expert, uint64_t until);
  // Transfer tickets up to `done` are done: their entries may be claimed again.
  void release(uint64_t done) { released_ = std::max(released_, done); }
  // Whether (layer, expert) is cached (no use recorded).
  bool contains(uint32_t layer, uint32_t expert) const { return index_.contains(key(layer, expert)); }
  // Forgets (layer, expert): its read failed, the entry's bytes are not that slab.
  void drop(uint32_t layer, uint32_t expert);

 private:
  struct Slot {
    uint64_t key = kEmpty;
    uint64_t stamp = 0;
    uint64_t hold = 0;  // a transfer ticket that reads the entry (hold()); free once released_ reaches it
    std::list<uint32_t>::iterator lru;  // position in lru_ (front: most recently used)
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key(uint32_t layer, uint32_t expert) { return (uint64_t{layer} << 32) | expert; }

  HostCache(uint64_t slab_bytes) : slab_bytes_(slab_bytes) {}
  Entry entry(uint32_t slot) const;
  std::optional<uint32_t> victim(uint64_t stamp) const;
  void touch(uint32_t slot, uint64_t stamp);

  uint64_t slab_bytes_;
  uint32_t per_buffer_ = 0;  // entries per host buffer
  std::vector<gpu::Buffer> buffers_;
  std::vector<Slot> slots_;
  std::list<uint32_t> lru_;
  std::unordered_map<uint64_t, uint32_t> index_;  // key -> slot
  uint64_t released_ = 0;  // transfer tickets up to this one are done
};

// The default size of the tier: what the host can spare (MemAvailable less a margin of max(4 GiB, 20% of
// MemTotal)), at most `wanted` (every slab of the sidecar); 0 when /proc/meminfo cannot be read.
uint64_t default_host_cache_bytes(uint64_t wanted);

}  // namespace mach::experts
