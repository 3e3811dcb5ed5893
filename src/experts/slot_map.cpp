#include "experts/slot_map.hpp"

#include <algorithm>
#include <cassert>

#include "ops/weight_format.hpp"

namespace mach::experts {

SlotMap::SlotMap(uint32_t experts, uint32_t slots, std::unique_ptr<EvictionPolicy> policy)
    : slot_of_(experts, ops::kNoSlot), expert_in_(slots, ops::kNoSlot), policy_(std::move(policy)) {
  assert(slots > 0 && policy_);
}

std::vector<std::vector<uint32_t>> SlotMap::plan(std::span<const uint32_t> needed) const {
  std::vector<uint32_t> order(needed.begin(), needed.end());
  // Resident first (stable on id), then the misses by id.
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const bool ra = slot_of_.at(a) != ops::kNoSlot, rb = slot_of_.at(b) != ops::kNoSlot;
    return ra != rb ? ra : a < b;
  });
  std::vector<std::vector<uint32_t>> passes;
  for (size_t i = 0; i < order.size(); i += slots()) {
    const size_t n = std::min<size_t>(slots(), order.size() - i);
    passes.emplace_back(order.begin() + i, order.begin() + i + n);
    std::sort(passes.back().begin(), passes.back().end());
  }
  return passes;
}

std::vector<SlotLoad> SlotMap::place(std::span<const uint32_t> pass, uint64_t tick, uint32_t& hits) {
  assert(pass.size() <= slots());
  hits = 0;
  std::vector<bool> locked(slots());
  std::vector<uint32_t> missing;
  for (uint32_t e : pass) {
    const uint32_t s = slot_of_.at(e);
    if (s == ops::kNoSlot) {
      missing.push_back(e);
      continue;
    }
    ++hits;
    locked[s] = true;
    policy_->touch(s, tick, false);
  }
  std::vector<SlotLoad> loads;
  for (uint32_t e : missing) {
    uint32_t slot = ops::kNoSlot;
    std::vector<uint32_t> candidates;
    for (uint32_t s = 0; s < slots(); ++s) {
      if (locked[s]) continue;
      if (expert_in_[s] == ops::kNoSlot) {
        slot = s;
        break;
      }
      candidates.push_back(s);
    }
    if (slot == ops::kNoSlot) {
      assert(!candidates.empty());
      slot = policy_->victim(candidates, tick);
      slot_of_[expert_in_[slot]] = ops::kNoSlot;
    }
    expert_in_[slot] = e;
    slot_of_[e] = slot;
    locked[slot] = true;
    policy_->touch(slot, tick, true);
    loads.push_back({e, slot});
  }
  return loads;
}

void SlotMap::forget(uint32_t slot) {
  const uint32_t e = expert_in_.at(slot);
  if (e != ops::kNoSlot) slot_of_[e] = ops::kNoSlot;
  expert_in_[slot] = ops::kNoSlot;
}

}  // namespace mach::experts
