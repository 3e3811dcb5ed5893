// `mach synth`: an engine-layout checkpoint (docs/formats.md, "Engine layout and expert sidecar") with the
// exact shape of a reference model and random weights, so that benchmarks run on a real-size model without
// downloading one:
//   OUT/config.json                  the shape's config.json (layers cut by --layers), with a "mach_synth" key
//   OUT/model.safetensors            the non-expert tensors, bf16, with the names the family's loader reads
//   OUT/expert_sidecar/              the routed experts, written directly in the sidecar's quant layout
// No tokenizer is written: synthetic checkpoints take token ids (--prompt-ids), not text.
//
// The weights are drawn so that activations stay in range through every layer (docs/formats.md, "Synthetic
// checkpoints"): every matrix is zero-mean uniform with std gain/sqrt(fan_in), the residual-branch outputs
// (o_proj, the experts' down) carry gain 1/sqrt(2·layers), norm weights are 1, and the router's logits have
// std ~1 so that routing spreads over the experts. Quantized experts are made from random quants and fixed
// scales (no float master), which is why synth runs at disk speed.
//
// Deterministic: each slab and each 2 MiB piece of a non-expert tensor has its own random stream keyed by
// (seed, what it is), so the output depends on shape, layers, quant and seed only, not on --threads.
//
// Atomic: everything is written under OUT.partial/ (marked by OUT.partial/.synth) and renamed to OUT last, so
// a killed run never leaves OUT; config.json and layout.json are written only after every slab. A stale
// OUT.partial of an earlier synth run is removed; any other OUT.partial is refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "mach/error.hpp"
#include "model/config.hpp"
#include "ops/weight_format.hpp"

namespace mach::experts {

// A model shape synth can write: the widths of a reference checkpoint's config.json.
struct SynthShape {
  std::string_view name;         // --shape: "qwen3-30b-a3b"
  std::string_view description;  // one line for --help
  std::string_view model_type;   // config.json's model_type (only "qwen3_moe" so far)
  uint32_t layers = 0;
  uint32_t hidden = 0;
  uint32_t heads = 0;      // query heads
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t experts = 0;
  uint32_t top_k = 0;
  uint32_t moe_intermediate = 0;  // one expert's width
  uint32_t intermediate = 0;      // dense MLP width in the reference config (unused by qwen3_moe's MoE layers)
  uint32_t vocab = 0;
  uint64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 0;
};

std::span<const SynthShape> synth_shapes();
const SynthShape* find_synth_shape(std::string_view name);  // nullptr for an unknown name

// The config.json synth writes for `shape` with `layers` layers.
nlohmann::ordered_json synth_config(const SynthShape& shape, uint32_t layers, ops::WeightType quant, uint64_t seed);

// The standard deviation synth draws a weight with: `tensor` is a model.safetensors name
// ("model.layers.3.self_attn.o_proj.weight") or a slab tensor ("gate_up", "down"). 0 for norm weights, which
// are all 1; nullopt for a name synth does not write. Every matrix is zero-mean.
std::optional<double> synth_weight_std(const model::ModelConfig& config, std::string_view tensor);

struct SynthProgress {
  std::optional<uint32_t> layer;  // the sidecar layer finished; nullopt: model.safetensors finished
  uint32_t done = 0;              // sidecar layers finished, this one included
  uint32_t total = 0;             // sidecar layers
  uint64_t bytes = 0;             // bytes of the file just finished
  double seconds = 0;             // since the run started
};

struct SynthOptions {
  std::string shape;              // a synth_shapes() name
  ops::WeightType quant = ops::WeightType::q4;  // expert format: q4, q8_0 or bf16
  std::filesystem::path output;   // must not exist
  std::optional<uint32_t> layers; // default: the shape's
  uint64_t seed = 0;
  uint32_t threads = 0;           // 0: one per hardware thread
  // Called once per finished file, from a worker thread but never concurrently; slabs of several layers are
  // written at once, so layers may finish out of order.
  std::function<void(const SynthProgress&)> on_progress;
};

struct SynthSummary {
  uint32_t layers = 0;
  uint64_t experts = 0;
  uint64_t expert_bytes = 0;      // sidecar layer files
  uint64_t non_expert_bytes = 0;  // model.safetensors
  double seconds = 0;             // the whole run, fsyncs included
};

Result<SynthSummary> synthesize(const SynthOptions& options);

}  // namespace mach::experts
