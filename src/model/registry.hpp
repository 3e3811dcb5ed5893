// The one architecture registry: the static facts of every model family mach knows, keyed by the
// config.json `model_type`. Everything that differs between families and can be known without reading a
// checkpoint lives here (config parsing, `mach archs`, /v1/capabilities and the loaders all read it), so
// that adding a family is one entry here plus its loader and ops.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mach::model {

enum class Family { qwen3_moe, qwen3_5_moe, gpt_oss, gemma4, deepseek_v4 };

// The expert MLP's nonlinearity.
enum class Activation {
  swiglu,          // silu(gate) * up
  clamped_swiglu,  // gate, up clamped to a limit; gpt_oss adds alpha 1.702 and (up + 1), deepseek_v4 plain clamp
  geglu,           // gelu_tanh(gate) * up
};

// How config.json nests the text model's hyperparameters.
enum class TextConfigWrapping {
  never,     // top-level keys only
  optional,  // either top-level keys or a `text_config` object (multimodal wrapper checkpoints)
};

// What per-sequence state the attention layers keep.
enum class KvCacheKind {
  full,                   // K and V for every position of every layer
  full_and_sliding,       // full layers keep everything, sliding layers a window
  hybrid_recurrent,       // KV on full-attention layers, a fixed-size recurrent (Gated DeltaNet) state on the rest
  compressed_and_sliding, // compressed KV blocks (CSA/HCA) plus a sliding window, one shared K=V head
};

// Which draft sources fit the family for exact speculative decoding.
enum class SpecDecodingKind {
  draft_model,  // n-gram / prompt lookup or a separate small draft model
  mtp,          // the checkpoint ships multi-token-prediction heads (n-gram and draft models also work)
};

// What this build can do with the family.
enum class SupportStatus {
  planned,  // registered and its config parses, but the forward pass has not landed
  runs,     // loads and generates
};

struct ArchInfo {
  Family family;
  std::string_view model_type;       // canonical config.json model_type
  std::string_view text_model_type;  // model_type of the nested text_config ("" when never nested)
  std::string_view reference;        // a reference checkpoint
  Activation activation;
  bool expert_bias;  // the router or the experts carry a bias term
  TextConfigWrapping text_config;
  KvCacheKind kv_cache;
  SpecDecodingKind spec_decoding;
  bool continuous_batching;  // many sequences per step at their own positions (architecture allows it)
  SupportStatus status;
  std::string_view notes;    // what is special, one line
};

// All registered families, in a stable order.
std::span<const ArchInfo> all_archs();

// The family whose model_type or text_model_type is `model_type`; nullptr when unknown.
const ArchInfo* find_arch(std::string_view model_type);
const ArchInfo& arch_info(Family family);

// "qwen3_moe, qwen3_5_moe, ...": for error messages that reject an unknown model_type.
std::string supported_model_types();

std::string_view family_name(Family family);
std::string_view activation_name(Activation activation);
std::string_view text_config_wrapping_name(TextConfigWrapping wrapping);
std::string_view kv_cache_kind_name(KvCacheKind kind);
std::string_view spec_decoding_kind_name(SpecDecodingKind kind);
std::string_view support_status_name(SupportStatus status);

// One family's facts as a JSON object (what `mach archs --json` prints per family).
nlohmann::json arch_to_json(const ArchInfo& arch);

}  // namespace mach::model
