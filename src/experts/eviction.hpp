// Which expert slot of a layer's GPU bank gives way when a missing expert must be loaded. One policy object
// per MoE layer; ExpertBank asks it only when every slot is occupied (empty slots are filled first) and
// only among slots whose expert the current pass does not use.
//
// Ticks count streaming steps (one per forward step that ran this layer), so "recent" means recent steps.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

namespace mach::experts {

enum class EvictionKind {
  lru,   // least recently used
  lfu,   // least frequently used since it was loaded; ties go to the least recently used
  lfru,  // least "frecent": a use count that halves every kLfruHalfLife ticks, so a burst of old uses fades
};

inline constexpr double kLfruHalfLife = 16;  // ticks

std::string_view eviction_name(EvictionKind kind);
std::optional<EvictionKind> parse_eviction(std::string_view name);

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // The expert in `slot` was used at `tick`; `loaded`: it was just loaded into the slot (its history starts).
  virtual void touch(uint32_t slot, uint64_t tick, bool loaded) = 0;
  // The slot to evict among `candidates` (non-empty, each holding an expert). Deterministic: ties go to the
  // lowest slot.
  virtual uint32_t victim(std::span<const uint32_t> candidates, uint64_t tick) const = 0;
};

std::unique_ptr<EvictionPolicy> make_eviction_policy(EvictionKind kind, uint32_t slots);

}  // namespace mach::experts
