// config.json parsing across key spellings and families, and the architecture registry.
#include <gtest/gtest.h>

#include "model/config.hpp"
#include "model/registry.hpp"

namespace mach::model {
namespace {

using nlohmann::json;

json qwen3_moe_base() {
  return json::parse(R"({
    "model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "moe_intermediate_size": 32,
    "intermediate_size": 128, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "eos_token_id": 3, "bos_token_id": 1,
    "tie_word_embeddings": false, "sliding_window": 4096, "use_sliding_window": false
  })");
}

TEST(Config, Qwen3MoeOldSpelling) {
  auto c = parse_model_config(qwen3_moe_base()).value_or_throw();
  EXPECT_EQ(c.family, Family::qwen3_moe);
  EXPECT_EQ(c.hidden_size, 64u);
  EXPECT_EQ(c.num_kv_heads, 2u);
  EXPECT_EQ(c.head_dim, 16u);
  EXPECT_EQ(c.num_experts, 8u);
  EXPECT_EQ(c.num_experts_per_tok, 2u);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_EQ(c.rope.rope_type, "default");
  EXPECT_EQ(c.sliding_window, 0u);  // use_sliding_window false
  ASSERT_EQ(c.eos_token_ids.size(), 1u);
  EXPECT_EQ(c.eos_token_ids[0], 3);
  EXPECT_EQ(c.layer_types.size(), 2u);
  EXPECT_EQ(c.layer_type(1), "full_attention");
  EXPECT_EQ(c.head_dim_of(1), 16u);
}

TEST(Config, NewRopeSpellingAndLocalExperts) {
  json j = qwen3_moe_base();
  j.erase("rope_theta");
  j.erase("num_experts");
  j["num_local_experts"] = 8;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  j["eos_token_id"] = json::array({3, 4});
  auto c = parse_model_config(j).value_or_throw();
  EXPECT_DOUBLE_EQ(c.rope.theta, 5e5);
  EXPECT_EQ(c.num_experts, 8u);
  EXPECT_EQ(c.eos_token_ids.size(), 2u);
}

TEST(Config, DefaultsFromFamily) {
  json j = qwen3_moe_base();
  j.erase("head_dim");
  j.erase("norm_topk_prob");
  j.erase("rope_theta");
  auto c = parse_model_config(j).value_or_throw();
  EXPECT_EQ(c.head_dim, 16u);  // hidden / heads
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
}

TEST(Config, UnknownModelTypeListsSupported) {
  json j = qwen3_moe_base();
  j["model_type"] = "llama";
  auto r = parse_model_config(j, "/m/config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("/m/config.json"), std::string::npos);
  EXPECT_NE(r.error().message.find("'llama'"), std::string::npos);
  for (const auto& a : all_archs()) EXPECT_NE(r.error().message.find(a.model_type), std::string::npos);
}

TEST(Config, BadValuesAreErrors) {
  for (auto [key, value] : std::vector<std::pair<std::string, json>>{{"hidden_size", -1},
                                                                     {"hidden_size", "64"},
                                                                     {"num_key_value_heads", 3},
                                                                     {"num_experts_per_tok", 9},
                                                                     {"rms_norm_eps", 0.0},
                                                                     {"norm_topk_prob", 1}}) {
    json j = qwen3_moe_base();
    j[key] = value;
    auto r = parse_model_config(j);
    EXPECT_FALSE(r.ok()) << key << "=" << value.dump();
  }
  json j = qwen3_moe_base();
  j.erase("vocab_size");
  auto r = parse_model_config(j);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("vocab_size"), std::string::npos);
  EXPECT_FALSE(parse_model_config_text("{not json").ok());
  EXPECT_FALSE(parse_model_config_text("[1,2]").ok());
}

TEST(Config, Qwen35MoeNestedTextConfig) {
  json j = json::parse(R"({
    "model_type": "qwen3_5_moe", "tie_word_embeddings": false,
    "text_config": {
      "model_type": "qwen3_5_moe_text", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
      "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "moe_intermediate_size": 32,
      "shared_expert_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
      "linear_num_value_heads": 4, "linear_num_key_heads": 2,
      "rope_parameters": {"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
                          "mrope_section": [11, 11, 10], "mrope_interleaved": true},
      "eos_token_id": 7
    }
  })");
  auto c = parse_model_config(j).value_or_throw();
  EXPECT_EQ(c.family, Family::qwen3_5_moe);
  EXPECT_TRUE(c.text_config_nested);
  EXPECT_DOUBLE_EQ(c.rope.partial_rotary_factor, 0.25);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e7);
  EXPECT_EQ(c.shared_expert_intermediate_size, 32u);
  ASSERT_EQ(c.layer_types.size(), 4u);
  EXPECT_EQ(c.layer_types[0], "linear_attention");
  EXPECT_EQ(c.layer_types[3], "full_attention");
  EXPECT_EQ(std::get<Qwen35MoeExtras>(c.extras).linear_num_value_heads, 4u);
}

TEST(Config, GptOssYarnFromRopeScaling) {
  json j = json::parse(R"({
    "model_type": "gpt_oss", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "intermediate_size": 32,
    "num_local_experts": 8, "experts_per_token": 2, "rope_theta": 150000, "sliding_window": 128,
    "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "truncate": false, "original_max_position_embeddings": 4096}
  })");
  auto c = parse_model_config(j).value_or_throw();
  EXPECT_EQ(c.rope.rope_type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope.theta, 150000);
  EXPECT_DOUBLE_EQ(c.rope.factor, 32);
  EXPECT_FALSE(c.rope.truncate);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 4096u);
  EXPECT_EQ(c.moe_intermediate_size, 32u);
  EXPECT_EQ(c.num_experts_per_tok, 2u);
  EXPECT_EQ(c.layer_types[0], "sliding_attention");
  EXPECT_EQ(c.layer_types[1], "full_attention");
  EXPECT_EQ(c.sliding_window, 128u);
}

TEST(Config, Gemma4PerLayerRopeAndHeadDims) {
  json j = json::parse(R"({
    "model_type": "gemma4", "tie_word_embeddings": true,
    "text_config": {
      "model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
      "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32, "num_global_key_value_heads": 1,
      "attention_k_eq_v": true, "vocab_size": 512, "intermediate_size": 128, "moe_intermediate_size": 32,
      "enable_moe_block": true, "num_experts": 8, "top_k_experts": 2, "final_logit_softcapping": 30.0,
      "layer_types": ["sliding_attention", "sliding_attention", "full_attention"], "sliding_window": 16,
      "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0}
      }
    }
  })");
  auto c = parse_model_config(j).value_or_throw();
  EXPECT_EQ(c.family, Family::gemma4);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_EQ(c.num_experts_per_tok, 2u);
  EXPECT_EQ(c.rope_for("full_attention").rope_type, "proportional");
  EXPECT_DOUBLE_EQ(c.rope_for("full_attention").partial_rotary_factor, 0.25);
  EXPECT_DOUBLE_EQ(c.rope_for("sliding_attention").theta, 10000.0);
  EXPECT_EQ(c.head_dim_of(0), 16u);
  EXPECT_EQ(c.head_dim_of(2), 32u);
  EXPECT_EQ(c.kv_heads_of(2), 1u);
  // transformers 5 may save the overrides as per_layer_config instead.
  j["text_config"].erase("global_head_dim");
  j["text_config"]["per_layer_config"] = {{"2", {{"head_dim", 64}, {"num_key_value_heads", 2}}}};
  auto c2 = parse_model_config(j).value_or_throw();
  EXPECT_EQ(c2.head_dim_of(2), 64u);
  EXPECT_EQ(c2.kv_heads_of(2), 2u);
}

TEST(Config, DeepseekV4LegacyKeys) {
  json j = json::parse(R"({
    "model_type": "deepseek_v4", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 512, "moe_intermediate_size": 32,
    "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1, "qk_rope_head_dim": 16,
    "compress_ratios": [0, 4, 128, 4], "num_hash_layers": 1, "rope_theta": 10000, "compress_rope_theta": 160000,
    "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536}
  })");
  auto c = parse_model_config(j).value_or_throw();
  EXPECT_EQ(c.family, Family::deepseek_v4);
  EXPECT_EQ(c.num_experts, 8u);
  EXPECT_EQ(c.layer_types[0], "sliding_attention");
  EXPECT_EQ(c.layer_types[2], "heavily_compressed_attention");
  const auto& e = std::get<DeepseekV4Extras>(c.extras);
  EXPECT_EQ(e.mlp_layer_types[0], "hash_moe");
  EXPECT_EQ(e.mlp_layer_types[1], "moe");
  EXPECT_DOUBLE_EQ(c.rope_for("sliding_attention").theta, 10000);
  EXPECT_EQ(c.rope_for("sliding_attention").rope_type, "default");
  EXPECT_DOUBLE_EQ(c.rope_for("compressed_sparse_attention").theta, 160000);
  EXPECT_EQ(c.rope_for("compressed_sparse_attention").rope_type, "yarn");
  EXPECT_DOUBLE_EQ(*c.rope_for("compressed_sparse_attention").attention_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.partial_rotary_factor, 0.25);
}

// The configs transformers 5.17 saved for the golden fixtures (tests/fixtures/README.md).
TEST(Config, GoldenFixtureConfigsParse) {
  const std::string root = std::string(MACH_SOURCE_DIR) + "/tests/fixtures/";
  auto qwen = load_model_config(root + "qwen3_moe").value_or_throw();
  EXPECT_EQ(qwen.family, Family::qwen3_moe);
  EXPECT_EQ(qwen.num_layers, 3u);
  EXPECT_TRUE(qwen.norm_topk_prob);
  EXPECT_DOUBLE_EQ(qwen.rope.theta, 1e6);
  auto q35 = load_model_config(root + "qwen3_5_moe").value_or_throw();
  EXPECT_EQ(q35.family, Family::qwen3_5_moe);
  EXPECT_EQ(q35.layer_type(3), "full_attention");
  EXPECT_DOUBLE_EQ(q35.rope.partial_rotary_factor, 0.25);
  auto oss = load_model_config(root + "gpt_oss").value_or_throw();
  EXPECT_EQ(oss.rope.rope_type, "yarn");
  EXPECT_EQ(oss.sliding_window, 4u);
  auto gemma = load_model_config(root + "gemma4").value_or_throw();
  EXPECT_EQ(gemma.family, Family::gemma4);
  EXPECT_EQ(gemma.head_dim_of(2), 32u);
  EXPECT_EQ(gemma.kv_heads_of(2), 1u);
  EXPECT_EQ(gemma.head_dim_of(0), 16u);
  EXPECT_EQ(gemma.rope_for("full_attention").rope_type, "proportional");
  EXPECT_TRUE(gemma.tie_word_embeddings);
  auto ds = load_model_config(root + "deepseek_v4").value_or_throw();
  EXPECT_EQ(ds.family, Family::deepseek_v4);
  EXPECT_EQ(std::get<DeepseekV4Extras>(ds.extras).compress_rates.at("heavily_compressed_attention"), 8u);
  EXPECT_EQ(std::get<DeepseekV4Extras>(ds.extras).mlp_layer_types[0], "hash_moe");
  EXPECT_FALSE(load_model_config(root + "no_such_model").ok());
}

TEST(Registry, EveryFamilyRegisteredOnce) {
  EXPECT_EQ(all_archs().size(), 5u);
  for (auto f : {Family::qwen3_moe, Family::qwen3_5_moe, Family::gpt_oss, Family::gemma4, Family::deepseek_v4}) {
    EXPECT_EQ(arch_info(f).family, f);
    EXPECT_EQ(find_arch(arch_info(f).model_type), &arch_info(f));
  }
  EXPECT_EQ(find_arch("gemma4_text")->family, Family::gemma4);
  EXPECT_EQ(find_arch("llama"), nullptr);
  auto j = arch_to_json(arch_info(Family::qwen3_moe));
  EXPECT_EQ(j["model_type"], "qwen3_moe");
  EXPECT_EQ(j["status"], "runs");
  EXPECT_EQ(arch_to_json(arch_info(Family::gpt_oss))["status"], "planned");
  EXPECT_EQ(j["activation"], "swiglu");
}

}  // namespace
}  // namespace mach::model
