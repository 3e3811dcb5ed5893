// A test double of model::Model whose every sequence generates the same scripted tokens: the first logits
// row of a sequence makes script[0] the only likely token, the next row script[1], and so on; after the
// script, `end` (an end-of-turn id). It runs no GPU math, but its KV cache is real, so the scheduler,
// engine loop and server around it are exercised exactly as with a real model. Used to test what a random
// model cannot produce on demand: tool calls, stop strings inside words, reasoning blocks.
//
// Positions tell the sequences' progress: a sequence's first logits row (the prompt's last token) is script
// position 0; a row at position p is script position p - that first position. A token at position 0 starts
// a new sequence in that KV slot.
#pragma once

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "engine/kv_cache.hpp"
#include "model/model.hpp"

namespace mach::test {

class ScriptedModel final : public model::Model {
 public:
  ScriptedModel(gpu::Context& context, std::vector<uint32_t> script, uint32_t end, uint32_t vocab, uint32_t max_sequences,
                uint32_t max_context)
      : context_(context), script_(std::move(script)), end_(end) {
    config_.model_type = "qwen3_moe";
    config_.vocab_size = vocab;
    config_.num_layers = 1;
    config_.hidden_size = 64;
    config_.num_heads = 1;
    config_.num_kv_heads = 1;
    config_.head_dim = 16;
    config_.eos_token_ids = {static_cast<int64_t>(end)};
    engine::KvCacheOptions kvo;
    kvo.max_sequences = max_sequences;
    kvo.max_context = max_context;
    kv_ = std::make_unique<engine::KvCache>(context, std::vector<engine::KvLayerShape>{{1, 16}}, kvo);
    logits_ = context.create_buffer(uint64_t{kMaxStep} * vocab * 4, gpu::MemoryKind::host_upload, "scripted logits");
  }
  const model::ModelConfig& config() const override { return config_; }
  engine::KvCache& kv_cache() override { return *kv_; }
  uint32_t max_step_tokens() const override { return kMaxStep; }
  uint64_t weight_bytes() const override { return 0; }
  uint64_t expert_bytes() const override { return 0; }
  std::string fingerprint() const override { return "scripted"; }
  const gpu::Buffer& logits() const override { return logits_; }

  void record_step(gpu::CommandList&, const model::StepBatch& batch) override {
    for (size_t i = 0; i < batch.tokens.size(); ++i)
      if (batch.positions[i] == 0) first_.erase(batch.seq_of_token[i]);
    const uint32_t V = config_.vocab_size;
    std::vector<float> rows(batch.logit_rows.size() * uint64_t{V}, 0.0f);
    for (size_t r = 0; r < batch.logit_rows.size(); ++r) {
      const uint32_t t = batch.logit_rows[r];
      const uint32_t seq = batch.seq_of_token[t], pos = batch.positions[t];
      const uint32_t first = first_.emplace(seq, pos).first->second;
      const uint32_t k = pos - first;
      rows[r * uint64_t{V} + (k < script_.size() ? script_[k] : end_)] = 30.0f;  // p ~ 1 - V e^-30
    }
    // The previous step is complete when a step is recorded, so the host may write the buffer now.
    std::memcpy(logits_.mapped(), rows.data(), rows.size() * 4);
  }

 private:
  static constexpr uint32_t kMaxStep = 64;
  gpu::Context& context_;
  std::vector<uint32_t> script_;
  uint32_t end_;
  model::ModelConfig config_;
  std::unique_ptr<engine::KvCache> kv_;
  gpu::Buffer logits_;
  std::map<uint32_t, uint32_t> first_;  // KV slot -> position of its sequence's first logits row
};

}  // namespace mach::test
