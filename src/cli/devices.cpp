// `mach devices [--json]`: the Vulkan devices mach sees, what they support, and which one it would pick.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "gpu/context.hpp"

namespace mach::cli {

void add_devices_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("devices", "list Vulkan devices and their features");
  static bool json = false;
  cmd->add_flag("--json", json, "print JSON");
  cmd->callback([&exit_code] {
    auto devices = gpu::Context::list_devices();
    if (!devices) {
      fmt::print(stderr, "mach: {}\n", devices.error().message);
      exit_code = 1;
      return;
    }
    nlohmann::json out = nlohmann::json::array();
    for (const auto& d : *devices) {
      if (json) {
        out.push_back({{"index", d.index},
                       {"name", d.name},
                       {"type", d.type},
                       {"driver", d.driver},
                       {"device_local_bytes", d.device_local_bytes},
                       {"subgroup_size", d.subgroup_size},
                       {"fp16", d.fp16},
                       {"int8", d.int8},
                       {"nv_cooperative_matrix", d.nv_cooperative_matrix},
                       {"int_dot", d.int_dot},
                       {"int_dot_accelerated", d.int_dot_accelerated},
                       {"khr_cooperative_matrix", d.khr_cooperative_matrix},
                       {"max_storage_buffer_range", d.max_storage_buffer_range},
                       {"usable", d.usable},
                       {"unusable_reason", d.unusable_reason}});
      } else {
        const char* int_dot = d.int_dot ? (d.int_dot_accelerated ? "accelerated" : "yes") : "no";
        fmt::print("{}: {} ({}, {:.1f} GiB) subgroup={} fp16={} int8={} int_dot={} nv_coopmat={} {}\n", d.index,
                   d.name, d.type, d.device_local_bytes / 1073741824.0, d.subgroup_size, d.fp16, d.int8, int_dot,
                   d.nv_cooperative_matrix, d.usable ? "usable" : "unusable: " + d.unusable_reason);
      }
    }
    if (json) fmt::print("{}\n", out.dump(2));
  });
}

}  // namespace mach::cli
