// Expert profiles: the hottest routed experts of each MoE layer, counted while a model streams, written as the
// JSONL that `--pin-experts` (and `mach prune --keep`) read, one line per layer:
//   {"layer": L, "experts": [ids, hottest first], "uses": [the steps that routed to each]}
// A run on a representative workload with `--save-expert-profile F` gives the list that a later run pins with
// `--pin-experts F`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "experts/expert_stats.hpp"
#include "mach/error.hpp"

namespace mach::experts {

// The profile's text: per layer of `stats`, at most `per_layer` experts with at least one use, by uses
// (descending; ties to the lower id). Layers without uses get an empty list.
std::string expert_profile_jsonl(const ExpertStats& stats, uint32_t per_layer);

// Writes it to `path` atomically (a reader sees the old file or the whole new one).
Result<void> write_expert_profile(const std::filesystem::path& path, const ExpertStats& stats, uint32_t per_layer);

}  // namespace mach::experts
