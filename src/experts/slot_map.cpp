#include "experts/slot_map.hpp"

#include <algorithm>
#include <cassert>

#include "ops/weight_format.hpp"

namespace mach::experts {

SlotMap::SlotMap(uint32_t experts, uint32_t slots, std::unique_ptr<EvictionPolicy> policy, uint32_t upload_cap)
    : slot_of_(experts, ops::kNoSlot), expert_in_(slots, ops::kNoSlot), pinned_(slots), policy_(std::move(policy)),
      upload_cap_(upload_cap) {
  assert(slots > 0 && policy_);
}

uint32_t SlotMap::upload_cap() const {
  const uint32_t free = slots() - pinned_count_;
  return upload_cap_ ? std::min(upload_cap_, free) : free;
}

SlotLoad SlotMap::pin(uint32_t expert) {
  assert(pinned_count_ + 1 < slots() && slot_of_.at(expert) == ops::kNoSlot);
  uint32_t slot = 0;
  while (expert_in_[slot] != ops::kNoSlot) ++slot;  // pins come first, into empty slots
  expert_in_[slot] = expert;
  slot_of_[expert] = slot;
  pinned_[slot] = true;
  ++pinned_count_;
  return {expert, slot};
}

std::vector<std::vector<uint32_t>> SlotMap::plan(std::span<const uint32_t> needed) const {
  std::vector<uint32_t> pinned, order;
  for (uint32_t e : needed) {
    const uint32_t s = slot_of_.at(e);
    (s != ops::kNoSlot && pinned_[s] ? pinned : order).push_back(e);
  }
  // Resident first (stable on id), then the misses by id.
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const bool ra = slot_of_.at(a) != ops::kNoSlot, rb = slot_of_.at(b) != ops::kNoSlot;
    return ra != rb ? ra : a < b;
  });
  const size_t per_pass = slots() - pinned_count_, cap = upload_cap();
  std::vector<std::vector<uint32_t>> passes;
  for (size_t i = 0; i < order.size();) {
    // Residents never count against the cap: only the pass's misses are loads.
    size_t n = 0, misses = 0;
    while (i + n < order.size() && n < per_pass) {
      const bool miss = slot_of_.at(order[i + n]) == ops::kNoSlot;
      if (miss && misses == cap) break;
      misses += miss ? 1 : 0;
      ++n;
    }
    passes.emplace_back(order.begin() + i, order.begin() + i + n);
    i += n;
  }
  if (!pinned.empty()) {
    if (passes.empty()) passes.emplace_back();
    passes[0].insert(passes[0].end(), pinned.begin(), pinned.end());
  }
  for (auto& p : passes) std::sort(p.begin(), p.end());
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
  if (tick != loaded_tick_) loaded_.clear(), loaded_tick_ = tick;
  std::vector<SlotLoad> loads;
  for (uint32_t e : missing) {
    // Under the cap any unlocked slot may take the load; at the cap only the slots this step loaded already.
    const uint32_t slot = load(e, tick, locked, loaded_.size() >= upload_cap());
    if (std::find(loaded_.begin(), loaded_.end(), slot) == loaded_.end()) loaded_.push_back(slot);
    loads.push_back({e, slot});
  }
  return loads;
}

std::vector<SlotLoad> SlotMap::preload(std::span<const uint32_t> experts, uint64_t tick) {
  assert(experts.size() <= upload_cap());
  std::vector<bool> locked(slots());
  std::vector<SlotLoad> loads;
  for (uint32_t e : experts) {
    if (slot_of_.at(e) != ops::kNoSlot) continue;
    loads.push_back({e, load(e, tick, locked, false)});
  }
  return loads;
}

uint32_t SlotMap::load(uint32_t e, uint64_t tick, std::vector<bool>& locked, bool capped) {
  uint32_t slot = ops::kNoSlot;
  std::vector<uint32_t> candidates;
  for (uint32_t s = 0; s < slots(); ++s) {
    if (locked[s] || pinned_[s]) continue;
    if (capped && std::find(loaded_.begin(), loaded_.end(), s) == loaded_.end()) continue;
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
  return slot;
}

void SlotMap::forget(uint32_t slot) {
  assert(!pinned_.at(slot));
  const uint32_t e = expert_in_.at(slot);
  if (e != ops::kNoSlot) slot_of_[e] = ops::kNoSlot;
  expert_in_[slot] = ops::kNoSlot;
}

}  // namespace mach::experts
