// `mach check MODEL [--json] [--expert-cache-gb N] [--context-length N] [--verify]` and
// `mach check --all-archs`: what this build can do with a checkpoint, statically (src/experts/check.hpp).
// Exit 0 when the model is supported, 1 when not.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "experts/check.hpp"
#include "experts/host_cache.hpp"
#include "gpu/context.hpp"

namespace mach::cli {
namespace {

struct CheckArgs {
  std::string model, quant = "bf16";
  bool json = false, all_archs = false, verify = false;
  double expert_cache_gb = -1;
  uint64_t context_length = 4096;
};

// The GPU the estimate compares against: the largest non-CPU device, else a CPU driver (lavapipe), else none.
void pick_gpu(experts::CheckOptions& o) {
  auto devices = gpu::Context::list_devices();
  if (!devices) return;
  const gpu::DeviceInfo* best = nullptr;
  for (const auto& d : *devices) {
    const bool better = !best || (best->type == "cpu" && d.type != "cpu") ||
                        ((best->type == "cpu") == (d.type == "cpu") && d.device_local_bytes > best->device_local_bytes);
    if (better) best = &d;
  }
  if (!best) return;
  o.gpu_memory_bytes = best->device_local_bytes;
  o.gpu_name = best->name;
}

std::string human(uint64_t bytes) {
  if (bytes >= (1ull << 30)) return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{:.1f} KiB", bytes / 1024.0);
}

void print_paths(const std::vector<experts::PathVerdict>& paths) {
  for (const auto& p : paths) fmt::print("  {:<20} {:<15} {}\n", p.path, p.status, p.reason);
}

void print_text(const experts::CheckReport& r, const experts::CheckOptions& o) {
  fmt::print("model: {}\nmodel_type: {}\nsupported: {}\nlayout: {}\nquantization: {}\nsidecar: {}\n", r.model,
             r.model_type.empty() ? "unknown" : r.model_type, r.supported ? "yes" : "no", r.layout,
             r.quantization.empty() ? "unknown" : r.quantization, r.sidecar.empty() ? "n/a" : r.sidecar);
  fmt::print("artifacts:");
  for (const auto& [name, present] : r.artifacts) fmt::print(" {}={}", name, present ? "yes" : "no");
  fmt::print("\n");
  if (r.memory) {
    const auto& m = *r.memory;
    fmt::print("memory ({}, context {}): experts {}, non-experts {}, kv {}, working set {} vs GPU {} -> {}\n", m.mode,
               o.context_length, human(m.expert_bytes), human(m.non_expert_bytes), human(m.kv_bytes),
               human(m.working_set_bytes),
               m.gpu_bytes ? fmt::format("{} ({})", human(*m.gpu_bytes), o.gpu_name) : "unknown", m.verdict);
    if (m.mode == "streaming" && m.host_spare_bytes) {
      fmt::print("host RAM: {} to spare; the RAM tier holds {} of the experts ({:.0f}%){}\n", human(*m.host_spare_bytes),
                 human(m.host_tier_bytes), m.expert_bytes ? 100.0 * m.host_tier_bytes / m.expert_bytes : 100.0,
                 m.host_tier_bytes < m.expert_bytes ? "; misses outside it read the disk" : "");
    } else if (m.mode == "streaming") {
      fmt::print("host RAM: unknown (/proc/meminfo unreadable); the RAM tier will be off\n");
    }
  }
  fmt::print("paths:\n");
  print_paths(r.paths);
  for (const auto& p : r.problems) fmt::print("problem: {}\n", p);
  if (!r.suggested_command.empty()) fmt::print("suggested: {}\n", r.suggested_command);
}

int run_all_archs(const CheckArgs& a) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& arch : model::all_archs()) {
    const auto paths = experts::arch_paths(arch);
    if (a.json) {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& p : paths) j[p.path] = {{"status", p.status}, {"reason", p.reason}};
      out[std::string(arch.model_type)] = j;
      continue;
    }
    fmt::print("{} ({}):\n", arch.model_type, model::support_status_name(arch.status));
    print_paths(paths);
  }
  if (a.json) fmt::print("{}\n", out.dump(2));
  return 0;
}

int run_check(const CheckArgs& a) {
  if (a.all_archs) return run_all_archs(a);
  if (a.model.empty()) {
    fmt::print(stderr, "mach check: give a MODEL directory or --all-archs\n");
    return 1;
  }
  experts::CheckOptions o;
  o.model = a.model;
  if (a.expert_cache_gb >= 0) o.expert_cache_gb = a.expert_cache_gb;
  o.context_length = a.context_length;
  o.verify_checksums = a.verify;
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant) {
    fmt::print(stderr, "mach check: --quant {}: use bf16, f16, f32, q8_0 or q4\n", a.quant);
    return 1;
  }
  o.expert_quant = *quant;
  pick_gpu(o);
  if (const uint64_t spare = experts::default_host_cache_bytes(UINT64_MAX); spare > 0) o.host_spare_bytes = spare;
  const auto report = experts::check_model(o);
  if (a.json) fmt::print("{}\n", experts::report_to_json(report).dump(2));
  else print_text(report, o);
  return report.supported ? 0 : 1;
}

}  // namespace

void add_check_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("check", "what this build can do with a checkpoint (static; loads no weights)");
  static CheckArgs a;
  cmd->add_option("model", a.model, "checkpoint directory");
  cmd->add_flag("--json", a.json, "print one JSON object");
  cmd->add_flag("--all-archs", a.all_archs, "print the path table of every registered family");
  cmd->add_option("--expert-cache-gb", a.expert_cache_gb, "GPU expert bank size for the streaming estimate");
  cmd->add_option("--context-length", a.context_length, "tokens of KV cache in the estimate (default 4096)");
  cmd->add_option("--quant", a.quant, "expert format for the estimate when there is no sidecar (default bf16)");
  cmd->add_flag("--verify", a.verify, "read every sidecar slab and check its checksum");
  cmd->callback([&exit_code] { exit_code = run_check(a); });
}

}  // namespace mach::cli
