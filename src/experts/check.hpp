// `mach check`: what mach can do with a checkpoint, decided statically (config.json, safetensors headers,
// the sidecar's layout.json; no weights are read unless verify_checksums asks for it). The report says which
// run paths work today and why the others do not, so its reasons must follow what the build really does.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/registry.hpp"
#include "ops/weight_format.hpp"

namespace mach::experts {

struct CheckOptions {
  std::filesystem::path model;              // checkpoint directory
  std::optional<double> expert_cache_gb;    // streaming bank size; unset: everything resident
  uint64_t context_length = 4096;           // tokens of KV cache in the estimate
  ops::WeightType expert_quant = ops::WeightType::bf16;  // expert format when there is no sidecar (generate's --quant)
  bool verify_checksums = false;            // read every slab of a sidecar and check its checksum
  std::optional<uint64_t> gpu_memory_bytes; // the GPU's device-local memory; unset: no device
  std::string gpu_name;
  std::optional<uint64_t> host_spare_bytes; // what the host can spare for the RAM tier (default_host_cache_bytes)
};

// One run path: status is "ok", "blocked", "needs_artifact", "unknown" or "n/a".
struct PathVerdict {
  std::string path;  // openai_http, expert_streaming, resident_stacked, specdec, continuous_batching, prefix_kv_reuse
  std::string status;
  std::string reason;
};

struct MemoryEstimate {
  uint64_t expert_bytes = 0;      // all routed experts in their GPU format
  uint64_t non_expert_bytes = 0;  // everything else, in the checkpoint's dtype
  uint64_t kv_bytes = 0;          // f16 K and V at the context length
  std::string mode;               // "resident" or "streaming"
  uint64_t working_set_bytes = 0;
  std::optional<uint64_t> gpu_bytes;
  std::string gpu_name;
  std::string verdict;            // fits, tight, wont_fit, unknown
  // Streaming only: what the host can spare (unset: unknown) and the part of it the RAM tier takes by default,
  // every expert at most. Misses the tier does not hold read the disk.
  std::optional<uint64_t> host_spare_bytes;
  uint64_t host_tier_bytes = 0;
};

struct CheckReport {
  std::string model;
  std::string model_type;  // "" when config.json is missing or unreadable
  bool supported = false;  // the family runs in this build and nothing below is broken
  std::string layout;      // per-expert, fused, engine+sidecar, none, unknown
  std::string quantization;
  std::map<std::string, bool> artifacts;
  std::string sidecar;     // "absent", "valid", "verified" or the validation error
  std::optional<MemoryEstimate> memory;
  std::vector<PathVerdict> paths;
  std::string suggested_command;
  std::vector<std::string> problems;  // one line each; non-empty means not supported
};

CheckReport check_model(const CheckOptions& options);

// The path table of a family with no checkpoint at hand (`mach check --all-archs`).
std::vector<PathVerdict> arch_paths(const model::ArchInfo& arch);

nlohmann::json report_to_json(const CheckReport& report);

}  // namespace mach::experts
