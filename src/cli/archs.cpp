// `mach archs [--json]`: the model families this build knows and their static facts, straight from the
// architecture registry (src/model/registry.hpp).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "model/registry.hpp"

namespace mach::cli {

void add_archs_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("archs", "list supported model architectures and their facts");
  static bool json = false;
  cmd->add_flag("--json", json, "print JSON");
  cmd->callback([&exit_code] {
    exit_code = 0;
    if (json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& a : model::all_archs()) out.push_back(model::arch_to_json(a));
      fmt::print("{}\n", out.dump(2));
      return;
    }
    fmt::print("{:<12} {:<15} {:<12} {:<8} {:<11} {:<19} {:<16} {:<6} {}\n", "model_type", "activation",
               "text_config", "exp_bias", "batching", "kv_cache", "spec_decoding", "status", "reference");
    for (const auto& a : model::all_archs()) {
      fmt::print("{:<12} {:<15} {:<12} {:<8} {:<11} {:<19} {:<16} {:<6} {}\n", a.model_type,
                 model::activation_name(a.activation), model::text_config_wrapping_name(a.text_config),
                 a.expert_bias ? "yes" : "no", a.continuous_batching ? "continuous" : "single",
                 model::kv_cache_kind_name(a.kv_cache), model::spec_decoding_kind_name(a.spec_decoding),
                 model::support_status_name(a.status), a.reference);
    }
  });
}

}  // namespace mach::cli
