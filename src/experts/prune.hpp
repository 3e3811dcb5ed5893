// `mach prune`: turns a Hugging Face checkpoint into the engine layout (DESIGN.md "Weights and formats"):
//   OUT/config.json, tokenizer files      copied (config.json's expert count rewritten under --keep)
//   OUT/model.safetensors                 every non-expert tensor, in its source dtype
//   OUT/expert_sidecar/                   routed experts quantized to the chosen type (experts/sidecar.hpp)
//
// Atomic and resumable: everything is written under OUT.partial/, each layer file via a temporary name and a
// rename, with a per-layer manifest (OUT.partial/.prune/layer_NN.json) holding its checksums. A rerun with
// the same source, quant and keep plan keeps every layer whose file matches its manifest and redoes the rest.
// OUT appears only through the final rename of OUT.partial, so a killed run never leaves a half-valid OUT.
//
// Keep plans: under --keep every MoE layer keeps the same number of experts (config.json's num_experts is
// then that number, and the router rows of the dropped experts are removed, so the softmax runs over the
// kept experts only); layers absent from the plan keep all experts, which is only consistent when the plan
// keeps all of them elsewhere too. layout.json records each kept expert's source id.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "mach/error.hpp"
#include "ops/weight_format.hpp"

namespace mach::experts {

// layer number -> source expert ids to keep (sorted, unique).
using KeepPlan = std::map<uint32_t, std::vector<uint32_t>>;

// JSONL, one {"layer": L, "experts": [ids]} per line; blank lines are skipped. Errors name `flag`, the file
// and the line. The same format lists pinned experts (`mach generate --pin-experts`).
Result<KeepPlan> parse_keep_plan(const std::filesystem::path& path, const char* flag = "--keep");

struct PruneProgress {
  uint32_t layer = 0;        // model layer number
  uint32_t done = 0;         // MoE layers finished, this one included
  uint32_t total = 0;        // MoE layers
  uint32_t experts = 0;      // experts written (or found complete)
  uint64_t bytes = 0;        // bytes of the layer file
  bool resumed = false;      // the layer was already complete in OUT.partial and passed its checksums
  double seconds = 0;
};

struct PruneOptions {
  std::filesystem::path source;  // HF checkpoint directory
  std::filesystem::path output;  // must not exist
  ops::WeightType quant = ops::WeightType::bf16;
  std::optional<KeepPlan> keep;
  uint32_t threads = 0;  // experts quantized at once; 0: one per hardware thread
  std::function<void(const PruneProgress&)> on_layer;  // progress, after each MoE layer
  // Test hook: called after a layer is complete; returning false ends the run there with Errc::cancelled,
  // leaving OUT.partial as a killed run would.
  std::function<bool(uint32_t layer)> continue_after;
};

struct PruneSummary {
  uint32_t moe_layers = 0;
  uint64_t experts = 0;
  uint64_t expert_bytes = 0;      // sidecar layer files
  uint64_t non_expert_bytes = 0;  // model.safetensors
  uint32_t resumed_layers = 0;
};

Result<PruneSummary> prune(const PruneOptions& options);

}  // namespace mach::experts
