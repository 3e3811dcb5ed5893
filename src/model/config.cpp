#include "model/config.hpp"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>

namespace mach::model {
namespace {

using nlohmann::json;

// Reads typed values from one config object. Errors throw mach::Exception (caught in parse_model_config),
// which keeps every field read to one line.
class Reader {
 public:
  Reader(const json& obj, std::string_view source) : obj_(obj), source_(source) {}

  const json* find(std::initializer_list<std::string_view> keys, std::string* found = nullptr) const {
    for (auto key : keys) {
      auto it = obj_.find(std::string(key));
      if (it != obj_.end() && !it->is_null()) {
        if (found) *found = std::string(key);
        return &*it;
      }
    }
    return nullptr;
  }
  bool has(std::initializer_list<std::string_view> keys) const { return find(keys) != nullptr; }

  uint64_t u64(std::initializer_list<std::string_view> keys, std::optional<uint64_t> fallback) const {
    std::string key;
    const json* v = find(keys, &key);
    if (!v) return require(keys, fallback);
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_number_integer() && v->get<int64_t>() >= 0) return static_cast<uint64_t>(v->get<int64_t>());
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (d >= 0 && d == std::floor(d) && d < 1.8e19) return static_cast<uint64_t>(d);
    }
    fail(fmt::format("'{}' must be a non-negative integer, got {}", key, v->dump()));
  }
  uint32_t u32(std::initializer_list<std::string_view> keys, std::optional<uint32_t> fallback) const {
    uint64_t v = u64(keys, fallback);
    if (v > std::numeric_limits<uint32_t>::max()) fail(fmt::format("'{}' = {} is too large", *keys.begin(), v));
    return static_cast<uint32_t>(v);
  }
  double number(std::initializer_list<std::string_view> keys, std::optional<double> fallback) const {
    std::string key;
    const json* v = find(keys, &key);
    if (!v) return require(keys, fallback);
    if (!v->is_number()) fail(fmt::format("'{}' must be a number, got {}", key, v->dump()));
    double d = v->get<double>();
    if (!std::isfinite(d)) fail(fmt::format("'{}' must be finite", key));
    return d;
  }
  bool boolean(std::initializer_list<std::string_view> keys, bool fallback) const {
    std::string key;
    const json* v = find(keys, &key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(fmt::format("'{}' must be true or false, got {}", key, v->dump()));
    return v->get<bool>();
  }
  std::string string(std::initializer_list<std::string_view> keys, std::string fallback) const {
    std::string key;
    const json* v = find(keys, &key);
    if (!v) return fallback;
    if (!v->is_string()) fail(fmt::format("'{}' must be a string, got {}", key, v->dump()));
    return v->get<std::string>();
  }
  std::vector<std::string> strings(std::string_view key) const {
    std::vector<std::string> out;
    const json* v = find({key});
    if (!v) return out;
    if (!v->is_array()) fail(fmt::format("'{}' must be a list of strings", key));
    for (const auto& e : *v) {
      if (!e.is_string()) fail(fmt::format("'{}' must be a list of strings, found {}", key, e.dump()));
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  std::vector<uint32_t> u32_list(std::string_view key) const {
    std::vector<uint32_t> out;
    const json* v = find({key});
    if (!v) return out;
    if (!v->is_array()) fail(fmt::format("'{}' must be a list of integers", key));
    for (const auto& e : *v) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > UINT32_MAX)
        fail(fmt::format("'{}' must be a list of non-negative integers, found {}", key, e.dump()));
      out.push_back(static_cast<uint32_t>(e.get<int64_t>()));
    }
    return out;
  }
  // An int, a list of ints, or absent.
  std::vector<int64_t> ids(std::string_view key) const {
    std::vector<int64_t> out;
    const json* v = find({key});
    if (!v) return out;
    auto one = [&](const json& e) {
      if (!e.is_number_integer()) fail(fmt::format("'{}' must be a token id or a list of them, got {}", key, v->dump()));
      out.push_back(e.get<int64_t>());
    };
    if (v->is_array()) {
      for (const auto& e : *v) one(e);
    } else {
      one(*v);
    }
    return out;
  }
  std::optional<int64_t> id(std::string_view key) const {
    auto v = ids(key);
    if (v.empty()) return std::nullopt;
    if (v.size() > 1) fail(fmt::format("'{}' must be one token id", key));
    return v[0];
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Exception(Errc::parse, fmt::format("{}: {}", source_, what));
  }

 private:
  template <class T>
  T require(std::initializer_list<std::string_view> keys, std::optional<T> fallback) const {
    if (fallback) return *fallback;
    std::string names;
    for (auto k : keys) names += (names.empty() ? "'" : " or '") + std::string(k) + "'";
    fail(fmt::format("missing {}", names));
  }

  const json& obj_;
  std::string_view source_;
};

// Defaults of each family's transformers config class, for keys a config.json leaves out.
struct FamilyDefaults {
  double rms_norm_eps;
  double rope_theta;
  double partial_rotary_factor;
  bool norm_topk_prob;
  bool tie_word_embeddings;
  uint32_t sliding_window;
};

FamilyDefaults family_defaults(Family f) {
  switch (f) {
    case Family::qwen3_moe: return {1e-6, 10000.0, 1.0, false, false, 0};
    case Family::qwen3_5_moe: return {1e-6, 10000.0, 0.25, true, false, 0};
    case Family::gpt_oss: return {1e-5, 150000.0, 1.0, true, false, 128};
    case Family::gemma4: return {1e-6, 10000.0, 1.0, true, true, 512};
    case Family::deepseek_v4: return {1e-6, 10000.0, 64.0 / 512.0, true, false, 128};
  }
  return {1e-6, 10000.0, 1.0, false, false, 0};
}

// One rope dict (old `rope_scaling` or new `rope_parameters`); `top` supplies rope_theta and
// partial_rotary_factor when the dict lacks them.
RopeConfig parse_rope(const json* dict, const Reader& top, double default_theta, double default_partial,
                      std::string_view source) {
  RopeConfig r;
  r.theta = top.number({"rope_theta"}, default_theta);
  r.partial_rotary_factor = top.number({"partial_rotary_factor"}, default_partial);
  if (!dict) return r;
  if (!dict->is_object()) top.fail(fmt::format("rope parameters must be an object, got {}", dict->dump()));
  Reader d(*dict, source);
  r.rope_type = d.string({"rope_type", "type"}, "default");
  r.theta = d.number({"rope_theta"}, r.theta);
  r.partial_rotary_factor = d.number({"partial_rotary_factor"}, r.partial_rotary_factor);
  r.factor = d.number({"factor"}, 1.0);
  r.original_max_position_embeddings = d.u64({"original_max_position_embeddings"}, 0);
  r.beta_fast = d.number({"beta_fast"}, 32.0);
  r.beta_slow = d.number({"beta_slow"}, 1.0);
  if (d.has({"attention_factor"})) r.attention_factor = d.number({"attention_factor"}, 1.0);
  r.truncate = d.boolean({"truncate"}, true);
  if (r.theta <= 0) top.fail("rope_theta must be positive");
  if (r.partial_rotary_factor <= 0 || r.partial_rotary_factor > 1)
    top.fail(fmt::format("partial_rotary_factor must be in (0, 1], got {}", r.partial_rotary_factor));
  return r;
}

// True for a rope_parameters object keyed by layer type or branch: every value is an object.
bool rope_is_keyed(const json& rp) {
  if (!rp.is_object() || rp.empty()) return false;
  for (const auto& [k, v] : rp.items()) {
    if (!v.is_object()) return false;
  }
  return true;
}

void parse_rope_all(ModelConfig& c, const Reader& r, const FamilyDefaults& def, std::string_view source) {
  const json* rp = r.find({"rope_parameters"});
  const json* rs = r.find({"rope_scaling"});
  if (rp && rope_is_keyed(*rp)) {
    for (const auto& [kind, sub] : rp->items()) {
      c.rope_by_kind[kind] = parse_rope(&sub, r, def.rope_theta, def.partial_rotary_factor, source);
    }
    for (auto main_key : {"main", "full_attention"}) {
      if (auto it = c.rope_by_kind.find(main_key); it != c.rope_by_kind.end()) {
        c.rope = it->second;
        return;
      }
    }
    c.rope = c.rope_by_kind.begin()->second;
    return;
  }
  c.rope = parse_rope(rp ? rp : rs, r, def.rope_theta, def.partial_rotary_factor, source);
  if (!rp && !rs && c.family == Family::gpt_oss) {  // GptOssConfig's default: YaRN x32 over 4096
    c.rope.rope_type = "yarn";
    c.rope.factor = 32.0;
    c.rope.original_max_position_embeddings = 4096;
    c.rope.truncate = false;
  }
}

// Per-layer head_dim / kv heads: `per_layer_config` {"<layer>": {"head_dim": .., "num_key_value_heads": ..}}
// as transformers 5 saves it, or gemma4's global_head_dim / num_global_key_value_heads on full layers.
void parse_per_layer(ModelConfig& c, const Reader& r, std::string_view source) {
  c.layer_head_dim.assign(c.num_layers, c.head_dim);
  c.layer_kv_heads.assign(c.num_layers, c.num_kv_heads);
  if (const json* plc = r.find({"per_layer_config"})) {
    if (!plc->is_object()) r.fail("'per_layer_config' must be an object keyed by layer index");
    for (const auto& [k, v] : plc->items()) {
      uint32_t layer = 0;
      try {
        size_t used = 0;
        layer = static_cast<uint32_t>(std::stoul(k, &used));
        if (used != k.size()) throw std::invalid_argument(k);
      } catch (const std::exception&) {
        continue;  // keyed by something other than a layer index (e.g. a layer type): not a shape override
      }
      if (layer >= c.num_layers) r.fail(fmt::format("'per_layer_config' names layer {} of {}", layer, c.num_layers));
      if (!v.is_object()) r.fail(fmt::format("'per_layer_config.{}' must be an object", k));
      Reader lr(v, source);
      c.layer_head_dim[layer] = lr.u32({"head_dim"}, c.head_dim);
      c.layer_kv_heads[layer] = lr.u32({"num_key_value_heads"}, c.num_kv_heads);
    }
    return;
  }
  if (c.family != Family::gemma4) return;
  const auto& e = std::get<Gemma4Extras>(c.extras);
  for (uint32_t i = 0; i < c.num_layers; ++i) {
    if (c.layer_types[i] != "full_attention") continue;
    c.layer_head_dim[i] = e.global_head_dim;
    if (e.attention_k_eq_v && e.num_global_key_value_heads) c.layer_kv_heads[i] = e.num_global_key_value_heads;
  }
}

std::vector<std::string> default_layer_types(Family f, uint32_t n, const Reader& r) {
  std::vector<std::string> t(n);
  for (uint32_t i = 0; i < n; ++i) {
    switch (f) {
      case Family::qwen3_moe: t[i] = "full_attention"; break;
      case Family::qwen3_5_moe: {
        uint32_t interval = r.u32({"full_attention_interval"}, 4);
        if (interval == 0) r.fail("'full_attention_interval' must be positive");
        t[i] = (i + 1) % interval ? "linear_attention" : "full_attention";
        break;
      }
      case Family::gpt_oss: t[i] = (i + 1) % 2 ? "sliding_attention" : "full_attention"; break;
      case Family::gemma4: t[i] = ((i + 1) % 6 && i + 1 != n) ? "sliding_attention" : "full_attention"; break;
      case Family::deepseek_v4:
        t[i] = i < 2 ? "heavily_compressed_attention"
                     : ((i - 2) % 2 ? "compressed_sparse_attention" : "heavily_compressed_attention");
        break;
    }
  }
  return t;
}

void parse_extras(ModelConfig& c, const Reader& r, std::string_view source) {
  switch (c.family) {
    case Family::qwen3_moe: {
      Qwen3MoeExtras e;
      e.decoder_sparse_step = r.u32({"decoder_sparse_step"}, 1);
      if (e.decoder_sparse_step == 0) r.fail("'decoder_sparse_step' must be positive");
      e.mlp_only_layers = r.u32_list("mlp_only_layers");
      e.attention_bias = r.boolean({"attention_bias"}, false);
      c.extras = e;
      break;
    }
    case Family::qwen3_5_moe: {
      Qwen35MoeExtras e;
      e.linear_conv_kernel_dim = r.u32({"linear_conv_kernel_dim"}, 4);
      e.linear_key_head_dim = r.u32({"linear_key_head_dim"}, 128);
      e.linear_value_head_dim = r.u32({"linear_value_head_dim"}, 128);
      e.linear_num_key_heads = r.u32({"linear_num_key_heads"}, 16);
      e.linear_num_value_heads = r.u32({"linear_num_value_heads"}, 32);
      e.mtp_num_hidden_layers = r.u32({"mtp_num_hidden_layers"}, 0);
      c.extras = e;
      break;
    }
    case Family::gpt_oss: {
      GptOssExtras e;
      e.swiglu_limit = r.number({"swiglu_limit"}, 7.0);
      e.attention_bias = r.boolean({"attention_bias"}, true);
      c.extras = e;
      break;
    }
    case Family::gemma4: {
      Gemma4Extras e;
      e.global_head_dim = r.u32({"global_head_dim"}, 512);
      e.num_global_key_value_heads = r.u32({"num_global_key_value_heads"}, 0);
      e.attention_k_eq_v = r.boolean({"attention_k_eq_v"}, false);
      e.enable_moe_block = r.boolean({"enable_moe_block"}, false);
      e.use_double_wide_mlp = r.boolean({"use_double_wide_mlp"}, false);
      e.num_kv_shared_layers = r.u32({"num_kv_shared_layers"}, 0);
      e.hidden_size_per_layer_input = r.u32({"hidden_size_per_layer_input"}, 0);
      e.vocab_size_per_layer_input = r.u32({"vocab_size_per_layer_input"}, 0);
      c.extras = e;
      break;
    }
    case Family::deepseek_v4: {
      DeepseekV4Extras e;
      e.q_lora_rank = r.u32({"q_lora_rank"}, 0);
      e.o_groups = r.u32({"o_groups"}, 0);
      e.o_lora_rank = r.u32({"o_lora_rank"}, 0);
      e.n_shared_experts = r.u32({"n_shared_experts"}, 0);
      e.scoring_func = r.string({"scoring_func"}, "sqrtsoftplus");
      e.routed_scaling_factor = r.number({"routed_scaling_factor"}, 1.0);
      e.compress_rates = {{"compressed_sparse_attention", 4}, {"heavily_compressed_attention", 128}};
      if (const json* cr = r.find({"compress_rates"})) {
        if (!cr->is_object()) r.fail("'compress_rates' must be an object");
        Reader cr_reader(*cr, source);
        for (const auto& [k, v] : cr->items()) e.compress_rates[k] = cr_reader.u32({k}, std::nullopt);
      }
      if (r.has({"compress_rate_csa"})) e.compress_rates["compressed_sparse_attention"] = r.u32({"compress_rate_csa"}, 4);
      if (r.has({"compress_rate_hca"})) e.compress_rates["heavily_compressed_attention"] = r.u32({"compress_rate_hca"}, 128);
      e.compress_rope_theta = r.number({"compress_rope_theta"}, 160000.0);
      e.hc_mult = r.u32({"hc_mult"}, 4);
      e.hc_sinkhorn_iters = r.u32({"hc_sinkhorn_iters"}, 20);
      e.hc_eps = r.number({"hc_eps"}, 1e-6);
      e.mlp_layer_types = r.strings("mlp_layer_types");
      if (e.mlp_layer_types.empty()) {
        uint32_t hash_layers = r.u32({"num_hash_layers"}, 3);
        for (uint32_t i = 0; i < c.num_layers; ++i) e.mlp_layer_types.push_back(i < hash_layers ? "hash_moe" : "moe");
      }
      if (e.mlp_layer_types.size() != c.num_layers)
        r.fail(fmt::format("'mlp_layer_types' has {} entries for {} layers", e.mlp_layer_types.size(), c.num_layers));
      e.swiglu_limit = r.number({"swiglu_limit"}, 10.0);
      e.index_n_heads = r.u32({"index_n_heads"}, 0);
      e.index_head_dim = r.u32({"index_head_dim"}, 0);
      e.index_topk = r.u32({"index_topk"}, 0);
      e.num_nextn_predict_layers = r.u32({"num_nextn_predict_layers"}, 0);
      c.extras = e;
      break;
    }
  }
}

// deepseek_v4: legacy per-layer compress_ratios (0/4/128) name the layer types; its rope is "main" for
// sliding layers and "compress" (compress_rope_theta, YaRN) for compressed ones.
void finish_deepseek_v4(ModelConfig& c, const Reader& r, const FamilyDefaults& def, std::string_view source) {
  auto& e = std::get<DeepseekV4Extras>(c.extras);
  if (!r.has({"layer_types"}) && r.has({"compress_ratios"})) {
    c.layer_types.clear();
    for (uint32_t ratio : r.u32_list("compress_ratios")) {
      if (ratio == 0) c.layer_types.push_back("sliding_attention");
      else if (ratio == 4) c.layer_types.push_back("compressed_sparse_attention");
      else if (ratio == 128) c.layer_types.push_back("heavily_compressed_attention");
      else r.fail(fmt::format("'compress_ratios' entry {} is not 0, 4 or 128", ratio));
    }
    if (c.layer_types.size() > c.num_layers) c.layer_types.resize(c.num_layers);
  }
  double partial = def.partial_rotary_factor;
  if (r.has({"partial_rotary_factor"})) partial = r.number({"partial_rotary_factor"}, partial);
  else if (r.has({"qk_rope_head_dim"})) partial = double(r.u32({"qk_rope_head_dim"}, 64)) / c.head_dim;
  if (!c.rope_by_kind.count("main")) {
    RopeConfig main;
    main.theta = r.number({"rope_theta"}, def.rope_theta);
    main.partial_rotary_factor = partial;
    RopeConfig compress = c.rope;  // the scaling dict, if any
    compress.theta = e.compress_rope_theta;
    compress.partial_rotary_factor = partial;
    if (compress.rope_type == "yarn" && !compress.attention_factor) compress.attention_factor = 1.0;
    c.rope_by_kind["main"] = main;
    c.rope_by_kind["compress"] = compress;
    c.rope = main;
  }
  if (!c.rope_by_kind.count("compress")) r.fail("rope_parameters has 'main' but no 'compress'");
  c.rope_by_kind["sliding_attention"] = c.rope_by_kind["main"];
  c.rope_by_kind["compressed_sparse_attention"] = c.rope_by_kind["compress"];
  c.rope_by_kind["heavily_compressed_attention"] = c.rope_by_kind["compress"];
  (void)source;
}

void validate(const ModelConfig& c, const Reader& r) {
  if (c.hidden_size == 0 || c.num_layers == 0 || c.num_heads == 0 || c.vocab_size == 0 || c.head_dim == 0)
    r.fail("hidden_size, num_hidden_layers, num_attention_heads, head_dim and vocab_size must be positive");
  if (c.num_kv_heads == 0 || c.num_heads % c.num_kv_heads != 0)
    r.fail(fmt::format("num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", c.num_heads,
                       c.num_kv_heads));
  if (c.num_experts == 0) r.fail("the number of experts must be positive (num_experts / num_local_experts)");
  if (c.num_experts_per_tok == 0 || c.num_experts_per_tok > c.num_experts)
    r.fail(fmt::format("num_experts_per_tok ({}) must be in 1..{} (the number of experts)", c.num_experts_per_tok,
                       c.num_experts));
  if (c.layer_types.size() != c.num_layers)
    r.fail(fmt::format("'layer_types' has {} entries for {} layers", c.layer_types.size(), c.num_layers));
  if (!(c.rms_norm_eps > 0)) r.fail("rms_norm_eps must be positive");
}

ModelConfig parse_or_throw(const json& root, std::string_view source) {
  Reader top(root, source);
  if (!root.is_object()) top.fail("expected a JSON object");
  const json* text = top.find({"text_config"});
  if (text && !text->is_object()) top.fail("'text_config' must be an object");

  std::string model_type = top.string({"model_type"}, "");
  if (model_type.empty() && text) model_type = Reader(*text, source).string({"model_type"}, "");
  const ArchInfo* arch = find_arch(model_type);
  if (!arch) {
    top.fail(fmt::format("model_type '{}' is not supported; supported: {}",
                         model_type.empty() ? "(missing)" : model_type, supported_model_types()));
  }

  ModelConfig c;
  c.family = arch->family;
  c.model_type = model_type;
  c.text_config_nested = text != nullptr;
  const json& obj = text ? *text : root;
  c.raw = obj;
  Reader r(obj, source);
  const FamilyDefaults def = family_defaults(c.family);

  c.hidden_size = r.u32({"hidden_size"}, std::nullopt);
  c.num_layers = r.u32({"num_hidden_layers"}, std::nullopt);
  c.num_heads = r.u32({"num_attention_heads"}, std::nullopt);
  c.num_kv_heads = r.u32({"num_key_value_heads"}, c.num_heads);
  c.head_dim = r.u32({"head_dim"}, c.num_heads ? c.hidden_size / c.num_heads : 0);
  c.vocab_size = r.u32({"vocab_size"}, std::nullopt);
  c.max_position_embeddings = r.u64({"max_position_embeddings"}, 0);

  c.intermediate_size = r.u32({"intermediate_size"}, 0);
  c.moe_intermediate_size = r.u32({"moe_intermediate_size"}, c.intermediate_size);
  c.shared_expert_intermediate_size = r.u32({"shared_expert_intermediate_size"}, 0);
  c.num_experts = r.u32({"num_experts", "num_local_experts", "n_routed_experts"}, std::nullopt);
  c.num_experts_per_tok = r.u32({"num_experts_per_tok", "experts_per_token", "top_k_experts"}, std::nullopt);
  c.norm_topk_prob = r.boolean({"norm_topk_prob"}, def.norm_topk_prob);
  c.rms_norm_eps = r.number({"rms_norm_eps"}, def.rms_norm_eps);

  parse_rope_all(c, r, def, source);

  c.sliding_window = r.u32({"sliding_window"}, def.sliding_window);
  if (c.family == Family::qwen3_moe && !r.boolean({"use_sliding_window"}, false)) c.sliding_window = 0;
  c.layer_types = r.strings("layer_types");
  if (c.layer_types.empty()) c.layer_types = default_layer_types(c.family, c.num_layers, r);

  // A wrapper's own tie_word_embeddings and token ids win over the nested text config's.
  Reader outer = text ? top : r;
  c.tie_word_embeddings = outer.boolean({"tie_word_embeddings"}, r.boolean({"tie_word_embeddings"}, def.tie_word_embeddings));
  c.final_logit_softcapping = r.number({"final_logit_softcapping"}, 0.0);
  c.bos_token_id = r.id("bos_token_id");
  if (!c.bos_token_id) c.bos_token_id = outer.id("bos_token_id");
  c.eos_token_ids = r.ids("eos_token_id");
  if (c.eos_token_ids.empty()) c.eos_token_ids = outer.ids("eos_token_id");
  c.pad_token_id = r.id("pad_token_id");

  parse_extras(c, r, source);
  if (c.family == Family::deepseek_v4) finish_deepseek_v4(c, r, def, source);
  validate(c, r);
  parse_per_layer(c, r, source);
  for (uint32_t i = 0; i < c.num_layers; ++i) {
    if (c.layer_head_dim[i] == 0 || c.layer_kv_heads[i] == 0 || c.num_heads % c.layer_kv_heads[i] != 0)
      r.fail(fmt::format("layer {}: head_dim {} / {} kv heads do not fit {} attention heads", i, c.layer_head_dim[i],
                         c.layer_kv_heads[i], c.num_heads));
  }
  return c;
}

}  // namespace

const RopeConfig& ModelConfig::rope_for(std::string_view type) const {
  auto it = rope_by_kind.find(std::string(type));
  return it == rope_by_kind.end() ? rope : it->second;
}

uint32_t ModelConfig::head_dim_of(uint32_t layer) const {
  return layer < layer_head_dim.size() ? layer_head_dim[layer] : head_dim;
}

uint32_t ModelConfig::kv_heads_of(uint32_t layer) const {
  return layer < layer_kv_heads.size() ? layer_kv_heads[layer] : num_kv_heads;
}

std::string_view ModelConfig::layer_type(uint32_t layer) const {
  return layer < layer_types.size() ? std::string_view(layer_types[layer]) : std::string_view("full_attention");
}

Result<ModelConfig> parse_model_config(const nlohmann::json& config, std::string_view source) {
  try {
    return parse_or_throw(config, source);
  } catch (const Exception& e) {
    return e.error();
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("{}: {}", source, e.what())};
  }
}

Result<ModelConfig> parse_model_config_text(std::string_view text, std::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error{Errc::parse, fmt::format("{}: not valid JSON", source)};
  return parse_model_config(j, source);
}

Result<ModelConfig> load_model_config(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error{Errc::not_found, fmt::format("{}: cannot open (is this a model directory?)", file.string())};
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_model_config_text(ss.str(), file.string());
}

}  // namespace mach::model
