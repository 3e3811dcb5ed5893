#include "experts/expert_stats.hpp"

namespace mach::experts {

ExpertLayerStats ExpertStats::total() const {
  ExpertLayerStats t;
  for (const auto& l : layers) {
    t.pinned += l.pinned;
    t.hits += l.hits;
    t.misses += l.misses;
    t.ram_hits += l.ram_hits;
    t.bytes_uploaded += l.bytes_uploaded;
    t.passes += l.passes;
    t.bytes_read += l.bytes_read;
    t.read_ns += l.read_ns;
    t.stall_ns += l.stall_ns;
    t.errors += l.errors;
    t.prefetch_predicted += l.prefetch_predicted;
    t.prefetch_correct += l.prefetch_correct;
    t.prefetch_reads += l.prefetch_reads;
    t.prefetch_failed += l.prefetch_failed;
    t.awaited_reads += l.awaited_reads;
    t.ahead_uploads += l.ahead_uploads;
    t.ahead_used += l.ahead_used;
    t.ahead_late += l.ahead_late;
    t.ahead_late_age_ns += l.ahead_late_age_ns;
    t.host_pairs += l.host_pairs;
    t.host_ns += l.host_ns;
    t.host_wait_ns += l.host_wait_ns;
  }
  return t;
}

namespace {

nlohmann::json layer_json(const ExpertLayerStats& l) {
  const double seconds = static_cast<double>(l.read_ns) * 1e-9;
  return {{"layer", l.layer},
          {"pinned", l.pinned},
          {"hits", l.hits},
          {"misses", l.misses},
          {"hit_rate", l.hits + l.misses ? static_cast<double>(l.hits) / static_cast<double>(l.hits + l.misses) : 0.0},
          {"ram_hits", l.ram_hits},
          {"ram_hit_rate", l.misses ? static_cast<double>(l.ram_hits) / static_cast<double>(l.misses) : 0.0},
          {"passes", l.passes},
          {"bytes_read", l.bytes_read},
          {"read_ms", static_cast<double>(l.read_ns) * 1e-6},
          {"read_gbps", seconds > 0 ? static_cast<double>(l.bytes_read) / seconds * 1e-9 : 0.0},
          {"bytes_uploaded", l.bytes_uploaded},
          {"stall_ms", static_cast<double>(l.stall_ns) * 1e-6},
          {"errors", l.errors},
          {"prefetch_predicted", l.prefetch_predicted},
          {"prefetch_correct", l.prefetch_correct},
          {"prefetch_accuracy", l.prefetch_predicted ? static_cast<double>(l.prefetch_correct) /
                                                           static_cast<double>(l.prefetch_predicted)
                                                     : 0.0},
          {"prefetch_reads", l.prefetch_reads},
          {"prefetch_failed", l.prefetch_failed},
          {"awaited_reads", l.awaited_reads},
          {"ahead_uploads", l.ahead_uploads},
          {"ahead_used", l.ahead_used},
          {"ahead_late", l.ahead_late},
          {"ahead_late_age_ms", l.ahead_late_age_ns * 1e-6},
          {"host_pairs", l.host_pairs},
          {"host_ms", static_cast<double>(l.host_ns) * 1e-6},
          {"host_wait_ms", static_cast<double>(l.host_wait_ns) * 1e-6}};
}

}  // namespace

nlohmann::json to_json(const ExpertStats& s) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : s.layers) layers.push_back(layer_json(l));
  nlohmann::json bad = nlohmann::json::array();
  for (const auto& b : s.bad) bad.push_back({{"layer", b.layer}, {"expert", b.expert}, {"error", b.error}});
  nlohmann::json total = layer_json(s.total());
  total.erase("layer");
  return {{"streaming", s.streaming},       {"slots_per_layer", s.slots_per_layer}, {"bank_bytes", s.bank_bytes},
          {"slab_bytes", s.slab_bytes},     {"eviction", s.eviction},               {"direct_read", s.direct_read},
          {"upload_cap", s.upload_cap},
          {"host_cache_bytes", s.host_cache_bytes}, {"host_cache_entries", s.host_cache_entries},
          {"prefetch", s.prefetch},         {"upload_ahead", s.upload_ahead},       {"transfer_queue", s.transfer_queue},
          {"host_experts", s.host_experts}, {"host_threads", s.host_threads},
          {"host_max_tokens", s.host_max_tokens},
          {"host_experts_bytes", s.host_experts_bytes}, {"host_simd", s.host_simd},
          {"total", std::move(total)},      {"layers", std::move(layers)},          {"bad_experts", std::move(bad)}};
}

}  // namespace mach::experts
