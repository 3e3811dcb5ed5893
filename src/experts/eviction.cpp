#include "experts/eviction.hpp"

#include <cassert>
#include <cmath>
#include <tuple>
#include <vector>

namespace mach::experts {
namespace {

// Picks the candidate with the smallest key; keys are compared as tuples, the slot number breaks ties.
template <class Key>
uint32_t argmin(std::span<const uint32_t> candidates, Key key) {
  assert(!candidates.empty());
  uint32_t best = candidates[0];
  auto best_key = std::tuple(key(best), best);
  for (uint32_t s : candidates.subspan(1)) {
    auto k = std::tuple(key(s), s);
    if (k < best_key) best = s, best_key = k;
  }
  return best;
}

class Lru final : public EvictionPolicy {
 public:
  explicit Lru(uint32_t slots) : last_(slots) {}
  void touch(uint32_t slot, uint64_t tick, bool) override { last_.at(slot) = tick; }
  uint32_t victim(std::span<const uint32_t> candidates, uint64_t) const override {
    return argmin(candidates, [&](uint32_t s) { return last_[s]; });
  }

 private:
  std::vector<uint64_t> last_;
};

class Lfu final : public EvictionPolicy {
 public:
  explicit Lfu(uint32_t slots) : uses_(slots), last_(slots) {}
  void touch(uint32_t slot, uint64_t tick, bool loaded) override {
    uses_.at(slot) = loaded ? 1 : uses_[slot] + 1;
    last_[slot] = tick;
  }
  uint32_t victim(std::span<const uint32_t> candidates, uint64_t) const override {
    return argmin(candidates, [&](uint32_t s) { return std::pair(uses_[s], last_[s]); });
  }

 private:
  std::vector<uint64_t> uses_, last_;
};

class Lfru final : public EvictionPolicy {
 public:
  explicit Lfru(uint32_t slots) : score_(slots), last_(slots) {}
  void touch(uint32_t slot, uint64_t tick, bool loaded) override {
    score_.at(slot) = loaded ? 1.0 : decayed(slot, tick) + 1.0;
    last_[slot] = tick;
  }
  uint32_t victim(std::span<const uint32_t> candidates, uint64_t tick) const override {
    return argmin(candidates, [&](uint32_t s) { return std::pair(decayed(s, tick), last_[s]); });
  }

 private:
  double decayed(uint32_t slot, uint64_t tick) const {
    return score_[slot] * std::exp2(-static_cast<double>(tick - last_[slot]) / kLfruHalfLife);
  }
  std::vector<double> score_;
  std::vector<uint64_t> last_;
};

}  // namespace

std::string_view eviction_name(EvictionKind kind) {
  switch (kind) {
    case EvictionKind::lru: return "lru";
    case EvictionKind::lfu: return "lfu";
    case EvictionKind::lfru: return "lfru";
  }
  return "?";
}

std::optional<EvictionKind> parse_eviction(std::string_view name) {
  for (EvictionKind k : {EvictionKind::lru, EvictionKind::lfu, EvictionKind::lfru})
    if (eviction_name(k) == name) return k;
  return std::nullopt;
}

std::unique_ptr<EvictionPolicy> make_eviction_policy(EvictionKind kind, uint32_t slots) {
  switch (kind) {
    case EvictionKind::lru: return std::make_unique<Lru>(slots);
    case EvictionKind::lfu: return std::make_unique<Lfu>(slots);
    case EvictionKind::lfru: return std::make_unique<Lfru>(slots);
  }
  return nullptr;
}

}  // namespace mach::experts
