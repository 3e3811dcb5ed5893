// The host's view of one MoE layer's GPU bank: which expert sits in which slot, which slots give way to a
// miss (through an EvictionPolicy), and how a step's experts are split into passes when they outnumber the
// slots. GPU-free, so the policy logic is testable on its own; ExpertStreamer mirrors it on the device.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "experts/eviction.hpp"

namespace mach::experts {

struct SlotLoad {
  uint32_t expert = 0;
  uint32_t slot = 0;
};

class SlotMap {
 public:
  // `upload_cap`: at most this many slots receive experts in one step (one tick); the step's further misses
  // take turns in those same slots, pass after pass, so that a long prompt touching every expert of a layer
  // does not flush the rest of the bank (the working set of the sequences that decode). 0: no cap.
  SlotMap(uint32_t experts, uint32_t slots, std::unique_ptr<EvictionPolicy> policy, uint32_t upload_cap = 0);

  uint32_t experts() const { return static_cast<uint32_t>(slot_of_.size()); }
  uint32_t slots() const { return static_cast<uint32_t>(expert_in_.size()); }
  // ops::kNoSlot when the expert is not in the bank.
  uint32_t slot_of(uint32_t expert) const { return slot_of_.at(expert); }

  // Keeps `expert` in the bank for good (a hot expert from a profile): it takes a slot now and is never
  // evicted. Returns the load to perform. Contract: not yet pinned, and pinned() < slots() - 1 before the call,
  // so that at least one slot stays for the other experts.
  SlotLoad pin(uint32_t expert);
  uint32_t pinned() const { return pinned_count_; }
  // The slots a step may load (slots() - pinned() without a cap).
  uint32_t upload_cap() const;

  // Splits a step's experts (distinct ids, any order) into passes that fit the bank: pinned experts join the
  // first pass, and the others go slots() - pinned() at a time, those already in the bank first (so that loads
  // of the first pass never evict them), with at most upload_cap() misses per pass; each pass is sorted.
  std::vector<std::vector<uint32_t>> plan(std::span<const uint32_t> needed) const;

  // Makes every expert of `pass` (at most slots() distinct ids) resident: returns the loads to perform, each
  // into an empty slot or one the policy evicts among slots holding no expert of `pass`; once upload_cap()
  // slots have been loaded at `tick`, only among those. `hits` gets the number already resident. Every
  // expert of the pass counts as used at `tick`.
  std::vector<SlotLoad> place(std::span<const uint32_t> pass, uint64_t tick, uint32_t& hits);

  // Loads experts ahead of the step that will use them (ExpertStreamer::upload_predicted): each one not
  // resident takes an empty slot or one the policy evicts (pinned ones excepted), used at `tick`. These loads
  // do not count toward upload_cap() at `tick` (the step's own misses still get the cap's slots); at most
  // upload_cap() experts. Returns the loads to perform.
  std::vector<SlotLoad> preload(std::span<const uint32_t> experts, uint64_t tick);

  // Empties a slot whose load failed or was abandoned: its bytes on the GPU are not those of any expert.
  void forget(uint32_t slot);

 private:
  // Puts `e` into a free slot, or one the policy evicts, not locked (and among loaded_ when `capped`).
  uint32_t load(uint32_t e, uint64_t tick, std::vector<bool>& locked, bool capped);

  std::vector<uint32_t> slot_of_;    // [experts] -> slot or kNoSlot
  std::vector<uint32_t> expert_in_;  // [slots] -> expert or kNoSlot
  std::vector<bool> pinned_;         // [slots]: never evicted
  uint32_t pinned_count_ = 0;
  std::unique_ptr<EvictionPolicy> policy_;
  uint32_t upload_cap_ = 0;
  uint64_t loaded_tick_ = 0;           // the tick of loaded_
  std::vector<uint32_t> loaded_;       // slots loaded at loaded_tick_ (at most upload_cap())
};

}  // namespace mach::experts
