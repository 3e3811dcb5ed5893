// The expert-residency flags shared by `mach generate`, `mach serve` and `mach bench`: --streaming /
// --no-streaming, --expert-slots, --expert-cache-gb, --host-cache-gb, --expert-upload-cap, --eviction,
// --host-experts, --host-threads, --host-max-tokens, --pin-experts, --save-expert-profile.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>

#include "experts/eviction.hpp"
#include "experts/expert_profile.hpp"
#include "experts/prune.hpp"
#include "mach/error.hpp"
#include "model/model.hpp"

namespace mach::cli {

struct ExpertArgs {
  bool streaming = false;
  uint32_t expert_slots = 0;
  double expert_cache_gb = 0;
  std::string eviction = "lru";
  std::string pin_experts;
  double host_cache_gb = -1;  // < 0: the default (what the host can spare)
  int64_t upload_cap = -1;    // < 0: the default (half the slots)
  std::string prefetch;       // --expert-prefetch on|off; empty: the default (on)
  std::string save_profile;   // --save-expert-profile
  std::string host_experts;  // --host-experts: auto or a count; empty: the default (auto)
  unsigned host_threads = 0;  // --host-threads
  int64_t host_max_tokens = -1;  // --host-max-tokens; < 0: the default
};

inline void add_expert_options(CLI::App* cmd, ExpertArgs& a) {
  cmd->add_flag("--streaming,!--no-streaming", a.streaming,
                "stream routed experts from the engine layout's expert sidecar through a GPU bank of slots "
                "(default --no-streaming: every expert resident; refused when they do not fit)");
  cmd->add_option("--expert-slots", a.expert_slots, "expert slots per MoE layer (exact control of the bank)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--expert-cache-gb", a.expert_cache_gb,
                  "device memory for all layers' banks, GiB (default: what the device has left, 10% margin)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--host-cache-gb", a.host_cache_gb,
                  "pinned host RAM for experts read before, GiB: misses found there copy at PCIe speed instead of "
                  "reading the disk (default: free memory less max(4 GiB, 20%), at most the sidecar; 0: off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--expert-upload-cap", a.upload_cap,
                  "expert slots per layer one step may load (default: half the slots; 0: no cap): a step needing "
                  "more runs them in turns through those slots, so a long prompt keeps the rest of the bank")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--expert-prefetch", a.prefetch,
                  "on (default) or off: run each layer's hidden state through the next layer's router too, read "
                  "the experts it picks into the host-RAM tier ahead of need and upload those the tier holds into "
                  "the next layer's bank on a transfer queue while this layer computes (needs the tier)")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("--host-experts", a.host_experts,
                  "experts per MoE layer computed on the host's cores instead of streamed (the highest-numbered "
                  "unpinned ones; q4 or q8_0 sidecars): their slabs stay in host memory, and the host computes their "
                  "pairs while PCIe streams the others into a bank that then caches fewer experts. auto (default): "
                  "the share of the experts the bank cannot hold that balances the host's time against the copies', "
                  "from the host's read rate and the copy rate probed at load; 0 on a CPU device, "
                  "when the bank holds every expert, with --host-cache-gb, or when the host cannot hold every expert");
  cmd->add_option("--host-threads", a.host_threads,
                  "threads that compute the --host-experts (default: every core)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--host-max-tokens", a.host_max_tokens,
                  "steps of more tokens (prompt chunks) stream the --host-experts through the GPU bank instead: the "
                  "host computes every token, the GPU copies each expert once (default 16)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eviction", a.eviction, "bank eviction policy: lru (default), lfu or lfru");
  cmd->add_option("--save-expert-profile", a.save_profile,
                  "when done, write each layer's most used experts (half the slots' worth, hottest first, with their "
                  "use counts) as --pin-experts JSONL");
  cmd->add_option("--pin-experts", a.pin_experts,
                  "JSONL of {\"layer\": L, \"experts\": [ids]}: experts kept in the bank for good (at most slots - 1 "
                  "per layer)");
}

// Fills the residency fields of `lo`; errors name the flag.
inline Result<void> apply_expert_options(const ExpertArgs& a, model::LoadOptions& lo) {
  lo.streaming = a.streaming;
  lo.expert_slots = a.expert_slots;
  lo.expert_cache_bytes = static_cast<uint64_t>(a.expert_cache_gb * 1073741824.0);
  const auto eviction = experts::parse_eviction(a.eviction);
  if (!eviction) return Error{Errc::invalid_argument, fmt::format("--eviction {}: use lru, lfu or lfru", a.eviction)};
  lo.eviction = *eviction;
  if (a.host_cache_gb >= 0) lo.host_cache_bytes = static_cast<uint64_t>(a.host_cache_gb * 1073741824.0);
  if (a.upload_cap >= 0) lo.expert_upload_cap = static_cast<uint32_t>(std::min<int64_t>(a.upload_cap, UINT32_MAX));
  lo.expert_prefetch = a.prefetch != "off";
  if (a.host_experts.empty() || a.host_experts == "auto") {
    lo.host_experts_auto = true;
  } else {
    uint32_t n = 0;
    const auto [end, ec] = std::from_chars(a.host_experts.data(), a.host_experts.data() + a.host_experts.size(), n);
    if (ec != std::errc() || end != a.host_experts.data() + a.host_experts.size())
      return Error{Errc::invalid_argument,
                   fmt::format("--host-experts {}: give auto or a number of experts per layer", a.host_experts)};
    lo.host_experts = n;
  }
  lo.host_threads = a.host_threads;
  if (a.host_max_tokens >= 0) lo.host_max_tokens = static_cast<uint32_t>(std::min<int64_t>(a.host_max_tokens, UINT32_MAX));
  if (!a.streaming && (a.expert_slots || a.expert_cache_gb > 0 || !a.pin_experts.empty() || a.host_cache_gb >= 0 ||
                       a.upload_cap >= 0 || !a.save_profile.empty() || !a.prefetch.empty() ||
                       !a.host_experts.empty() || a.host_threads || a.host_max_tokens >= 0))
    return Error{Errc::invalid_argument, "--expert-slots, --expert-cache-gb, --host-cache-gb, --expert-upload-cap, "
                                         "--expert-prefetch, --host-experts, --host-threads, --host-max-tokens, --pin-experts and "
                                         "--save-expert-profile shape (or count) the expert streaming of --streaming; "
                                         "add --streaming"};
  if (!a.pin_experts.empty()) {
    auto pins = experts::parse_keep_plan(a.pin_experts, "--pin-experts");
    if (!pins) return pins.error();
    lo.pinned_experts = std::move(pins).value();
  }
  return {};
}

// With --save-expert-profile, writes the streamed model's expert profile (half the slots per layer, the most a
// later run's pins leave room for passes with) and says so on stderr.
inline Result<void> save_expert_profile(const ExpertArgs& a, const model::Model& model) {
  if (a.save_profile.empty()) return {};
  const experts::ExpertStats stats = model.expert_stats();
  const uint32_t per_layer = stats.slots_per_layer / 2;
  if (auto r = experts::write_expert_profile(a.save_profile, stats, per_layer); !r) return r;
  fmt::print(stderr, "mach: expert profile ({} per layer) written to {}\n", per_layer, a.save_profile);
  return {};
}

}  // namespace mach::cli
