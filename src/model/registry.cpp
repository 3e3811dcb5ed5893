#include "model/registry.hpp"

#include <array>
#include <cassert>

namespace mach::model {
namespace {

// Facts follow each family's transformers 5.x modeling code and DESIGN.md's registry table.
constexpr std::array<ArchInfo, 5> kArchs{{
    {Family::qwen3_moe, "qwen3_moe", "", "Qwen3-30B-A3B", Activation::swiglu, false, TextConfigWrapping::never,
     KvCacheKind::full, SpecDecodingKind::draft_model, true, SupportStatus::runs,
     "softmax -> top-k -> renorm router; QK RMSNorm before neox RoPE; per-expert or fused expert tensors"},
    {Family::qwen3_5_moe, "qwen3_5_moe", "qwen3_5_moe_text", "Qwen3.6-35B-A3B", Activation::swiglu, false,
     TextConfigWrapping::optional, KvCacheKind::hybrid_recurrent, SpecDecodingKind::mtp, true,
     SupportStatus::planned,
     "3 Gated DeltaNet layers per full-attention layer; (1+w) RMSNorm; gated attention; partial RoPE; "
     "shared expert with sigmoid gate"},
    {Family::gpt_oss, "gpt_oss", "", "gpt-oss-20b", Activation::clamped_swiglu, true, TextConfigWrapping::never,
     KvCacheKind::full_and_sliding, SpecDecodingKind::draft_model, true, SupportStatus::planned,
     "attention sinks; sliding window on alternate layers; YaRN RoPE; router bias, softmax over top-k; "
     "interleaved gate/up; MXFP4 experts"},
    {Family::gemma4, "gemma4", "gemma4_text", "Gemma 4 26B-A4B", Activation::geglu, false,
     TextConfigWrapping::optional, KvCacheKind::full_and_sliding, SpecDecodingKind::draft_model, true,
     SupportStatus::planned,
     "dense GeGLU MLP + MoE per layer; sliding/full layers with different head dims; k=v on full layers; "
     "final logit softcap; tied embeddings"},
    {Family::deepseek_v4, "deepseek_v4", "", "DeepSeek-V4-Flash", Activation::clamped_swiglu, true,
     TextConfigWrapping::never, KvCacheKind::compressed_and_sliding, SpecDecodingKind::mtp, true,
     SupportStatus::planned,
     "hyper-connections (Sinkhorn); shared 512-d K=V head; compressed KV + lightning indexer; "
     "sqrt-softplus router with bias; hash-routed first layers; FP8 + FP4 weights"},
}};

}  // namespace

std::span<const ArchInfo> all_archs() { return kArchs; }

const ArchInfo* find_arch(std::string_view model_type) {
  for (const auto& a : kArchs) {
    if (a.model_type == model_type || (!a.text_model_type.empty() && a.text_model_type == model_type)) return &a;
  }
  return nullptr;
}

const ArchInfo& arch_info(Family family) {
  for (const auto& a : kArchs) {
    if (a.family == family) return a;
  }
  assert(false && "every Family has a registry entry");
  return kArchs[0];
}

std::string supported_model_types() {
  std::string out;
  for (const auto& a : kArchs) {
    if (!out.empty()) out += ", ";
    out += a.model_type;
  }
  return out;
}

std::string_view family_name(Family family) { return arch_info(family).model_type; }

std::string_view activation_name(Activation activation) {
  switch (activation) {
    case Activation::swiglu: return "swiglu";
    case Activation::clamped_swiglu: return "clamped_swiglu";
    case Activation::geglu: return "geglu";
  }
  return "unknown";
}

std::string_view text_config_wrapping_name(TextConfigWrapping wrapping) {
  switch (wrapping) {
    case TextConfigWrapping::never: return "never";
    case TextConfigWrapping::optional: return "optional";
  }
  return "unknown";
}

std::string_view kv_cache_kind_name(KvCacheKind kind) {
  switch (kind) {
    case KvCacheKind::full: return "full";
    case KvCacheKind::full_and_sliding: return "full+sliding";
    case KvCacheKind::hybrid_recurrent: return "full+recurrent";
    case KvCacheKind::compressed_and_sliding: return "compressed+sliding";
  }
  return "unknown";
}

std::string_view spec_decoding_kind_name(SpecDecodingKind kind) {
  switch (kind) {
    case SpecDecodingKind::draft_model: return "ngram+draft";
    case SpecDecodingKind::mtp: return "ngram+draft+mtp";
  }
  return "unknown";
}

std::string_view support_status_name(SupportStatus status) {
  switch (status) {
    case SupportStatus::planned: return "planned";
    case SupportStatus::runs: return "runs";
  }
  return "unknown";
}

nlohmann::json arch_to_json(const ArchInfo& a) {
  return {{"model_type", a.model_type},
          {"text_model_type", a.text_model_type.empty() ? nlohmann::json(nullptr) : nlohmann::json(a.text_model_type)},
          {"reference", a.reference},
          {"activation", activation_name(a.activation)},
          {"expert_bias", a.expert_bias},
          {"text_config", text_config_wrapping_name(a.text_config)},
          {"kv_cache", kv_cache_kind_name(a.kv_cache)},
          {"spec_decoding", spec_decoding_kind_name(a.spec_decoding)},
          {"continuous_batching", a.continuous_batching},
          {"status", support_status_name(a.status)},
          {"notes", a.notes}};
}

}  // namespace mach::model
