// A Hugging Face config.json read into one typed ModelConfig covering every registered family.
//
// Key spellings differ across transformers versions and checkpoints; parse_model_config accepts each:
//   rope_theta | rope_parameters.rope_theta      rope_scaling | rope_parameters (YaRN fields in either)
//   num_experts | num_local_experts | n_routed_experts | (gemma4) num_experts
//   num_experts_per_tok | experts_per_token | top_k_experts
//   a nested `text_config` (multimodal wrappers: qwen3_5_moe, gemma4)
// Missing keys take the defaults of the family's transformers config class. An unknown model_type is an
// error that lists the supported ones.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "mach/error.hpp"
#include "model/registry.hpp"

namespace mach::model {

// Rotary embedding of one attention kind. rope_type "default" is plain RoPE; "yarn" uses the scaling fields;
// "proportional" (gemma4 full layers) rotates partial_rotary_factor of head_dim with frequencies of the
// full head_dim.
struct RopeConfig {
  std::string rope_type = "default";
  double theta = 10000.0;
  double partial_rotary_factor = 1.0;  // fraction of head_dim that is rotated
  // YaRN (and linear/dynamic factor) fields; zero when absent.
  double factor = 1.0;
  uint64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> attention_factor;  // YaRN mscale override; absent: 0.1 * ln(factor) + 1
  bool truncate = true;                    // YaRN: round the correction range to integers (gpt_oss: false)
};

struct Qwen3MoeExtras {
  uint32_t decoder_sparse_step = 1;     // layer i is MoE when (i + 1) % step == 0 and not in mlp_only_layers
  std::vector<uint32_t> mlp_only_layers;
  bool attention_bias = false;
};

struct Qwen35MoeExtras {
  uint32_t linear_conv_kernel_dim = 4;
  uint32_t linear_key_head_dim = 128;
  uint32_t linear_value_head_dim = 128;
  uint32_t linear_num_key_heads = 16;
  uint32_t linear_num_value_heads = 32;
  uint32_t mtp_num_hidden_layers = 0;
};

struct GptOssExtras {
  double swiglu_limit = 7.0;
  bool attention_bias = true;
};

struct Gemma4Extras {
  uint32_t global_head_dim = 0;             // head_dim of full-attention layers (0: same as head_dim)
  uint32_t num_global_key_value_heads = 0;  // kv heads of full-attention layers (0: same as num_kv_heads)
  bool attention_k_eq_v = false;            // full layers use the key projection as values
  bool enable_moe_block = false;
  bool use_double_wide_mlp = false;
  uint32_t num_kv_shared_layers = 0;
  uint32_t hidden_size_per_layer_input = 0;  // per-layer input embeddings (0: none)
  uint32_t vocab_size_per_layer_input = 0;
};

struct DeepseekV4Extras {
  uint32_t q_lora_rank = 0;
  uint32_t o_groups = 0;
  uint32_t o_lora_rank = 0;
  uint32_t n_shared_experts = 0;
  std::string scoring_func = "sqrtsoftplus";
  double routed_scaling_factor = 1.0;
  std::map<std::string, uint32_t> compress_rates;  // layer type -> compression rate
  double compress_rope_theta = 160000.0;
  uint32_t hc_mult = 4;
  uint32_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  std::vector<std::string> mlp_layer_types;  // "hash_moe" | "moe" per layer
  double swiglu_limit = 10.0;
  uint32_t index_n_heads = 0;
  uint32_t index_head_dim = 0;
  uint32_t index_topk = 0;
  uint32_t num_nextn_predict_layers = 0;
};

using FamilyExtras = std::variant<std::monostate, Qwen3MoeExtras, Qwen35MoeExtras, GptOssExtras, Gemma4Extras,
                                  DeepseekV4Extras>;

struct ModelConfig {
  Family family = Family::qwen3_moe;
  std::string model_type;          // as written in config.json (top level)
  bool text_config_nested = false;  // hyperparameters came from `text_config` (weights then carry a
                                    // `model.language_model.` prefix)

  uint32_t hidden_size = 0;
  uint32_t num_layers = 0;
  uint32_t num_heads = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t vocab_size = 0;
  uint64_t max_position_embeddings = 0;

  uint32_t intermediate_size = 0;         // dense MLP width (0: no dense MLP)
  uint32_t moe_intermediate_size = 0;     // width of one routed expert
  uint32_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  uint32_t num_experts = 0;
  uint32_t num_experts_per_tok = 0;
  bool norm_topk_prob = false;  // renormalize the top-k router weights to sum to 1

  double rms_norm_eps = 1e-6;
  RopeConfig rope;                                  // the main (or only) rotary embedding
  std::map<std::string, RopeConfig> rope_by_kind;   // per layer type (gemma4) or per branch (deepseek_v4 "compress")

  uint32_t sliding_window = 0;           // tokens; 0: none
  std::vector<std::string> layer_types;  // per layer: "full_attention", "sliding_attention", "linear_attention", ...

  bool tie_word_embeddings = false;
  double final_logit_softcapping = 0.0;  // 0: none
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;

  // Per-layer overrides (gemma4 full-attention layers have their own head_dim and kv heads); empty
  // when uniform. Read them through head_dim_of / kv_heads_of.
  std::vector<uint32_t> layer_head_dim;
  std::vector<uint32_t> layer_kv_heads;

  FamilyExtras extras;
  nlohmann::json raw;  // the (text) config object the values came from

  // The rotary embedding a layer of `layer_type` uses: rope_by_kind's entry or the main one.
  const RopeConfig& rope_for(std::string_view layer_type) const;
  uint32_t head_dim_of(uint32_t layer) const;
  uint32_t kv_heads_of(uint32_t layer) const;
  // Layer i's type, "full_attention" when the config names none.
  std::string_view layer_type(uint32_t layer) const;
};

// `source` names the file in error messages.
Result<ModelConfig> parse_model_config(const nlohmann::json& config, std::string_view source = "config.json");
Result<ModelConfig> parse_model_config_text(std::string_view text, std::string_view source = "config.json");
// Reads DIR/config.json when `path` is a directory.
Result<ModelConfig> load_model_config(const std::filesystem::path& path);

}  // namespace mach::model
