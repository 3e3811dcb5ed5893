#include "experts/expert_profile.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <vector>

#include "experts/file_write.hpp"

namespace mach::experts {

std::string expert_profile_jsonl(const ExpertStats& stats, uint32_t per_layer) {
  std::string out;
  for (const ExpertLayerStats& l : stats.layers) {
    std::vector<uint32_t> order(l.uses.size());
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return l.uses[a] > l.uses[b]; });
    nlohmann::json experts = nlohmann::json::array(), uses = nlohmann::json::array();
    for (uint32_t e : order) {
      if (experts.size() >= per_layer || l.uses[e] == 0) break;
      experts.push_back(e);
      uses.push_back(l.uses[e]);
    }
    nlohmann::ordered_json line;
    line["layer"] = l.layer;
    line["experts"] = std::move(experts);
    line["uses"] = std::move(uses);
    out += line.dump() + "\n";
  }
  return out;
}

Result<void> write_expert_profile(const std::filesystem::path& path, const ExpertStats& stats, uint32_t per_layer) {
  return write_text_atomic(path, expert_profile_jsonl(stats, per_layer));
}

}  // namespace mach::experts
