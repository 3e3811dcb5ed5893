// The qwen3_moe model class, shared by its two files: qwen3_moe.cpp loads the checkpoint and plans memory,
// qwen3_moe_step.cpp records forward steps (resident, replayed, or streaming in segments). Internal to
// src/model: everything else reaches the family through load_qwen3_moe (family.hpp) and model::Model.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "experts/expert_streamer.hpp"
#include "model/model.hpp"
#include "model/tensor_source.hpp"
#include "model/weight_arena.hpp"
#include "ops/attention.hpp"
#include "ops/matmul.hpp"
#include "ops/rope_freq.hpp"
#include "ops/router.hpp"

namespace mach::model::qwen3_moe {

struct Layer {
  gpu::Buffer buffer;
  ops::WeightRef q, k, v, o, router;
  uint64_t input_norm = 0, post_norm = 0, q_norm = 0, k_norm = 0;  // offsets of [H] / [D] f32 vectors
  ops::ExpertWeightsRef gate_up;  // per expert [2I, H]: gate rows first, then up rows
  ops::ExpertWeightsRef down;     // per expert [H, I]
};

class Qwen3Moe final : public Model {
 public:
  Qwen3Moe(ModelConfig config, std::optional<experts::Sidecar> sidecar, gpu::Context& context,
           const LoadOptions& options)
      : config_(std::move(config)), context_(context), options_(options), sidecar_(std::move(sidecar)) {
    const char* replay = std::getenv("MACH_STEP_REPLAY");
    replay_ = !(replay && std::string_view(replay) == "0");
    const char* fused = std::getenv("MACH_FUSED_NORM");
    fused_norm_ = !(fused && std::string_view(fused) == "0");
  }

  // A step abandoned after its host experts started must not leave them writing the buffers freed below.
  ~Qwen3Moe() override {
    if (streamer_) streamer_->finish_host();
  }

  Result<void> load(const TensorSource& src);

  const ModelConfig& config() const override { return config_; }
  engine::KvCache& kv_cache() override { return *kv_; }
  uint32_t max_step_tokens() const override { return options_.max_step_tokens; }
  uint64_t weight_bytes() const override { return weight_bytes_; }
  uint64_t expert_bytes() const override {
    if (sidecar_) return sidecar_->layout().slab_bytes;
    return layers_.empty() ? 0 : layers_[0].gate_up.expert_stride + layers_[0].down.expert_stride;
  }
  std::string fingerprint() const override {
    std::string f = model_fingerprint(config_, options_.weight_type, weights_digest_);
    if (sidecar_) f += fmt::format(" experts={}", ops::weight_type_name(expert_type()));
    return f;
  }
  const gpu::Buffer& logits() const override { return logits_; }
  void record_step(gpu::CommandList& cmd, const StepBatch& batch) override;
  gpu::CommandList* replay_step(const StepBatch& batch) override;
  bool step_pending() const override { return pending_.active; }
  Result<void> continue_step(gpu::CommandList& cmd) override;
  bool start_step_reads() override;
  bool step_reads_pending() override { return streamer_ && streamer_->reads_pending(); }
  experts::ExpertStats expert_stats() const override { return streamer_ ? streamer_->stats() : experts::ExpertStats{}; }
  std::string residency() const override;

 private:
  // Where a streaming step stopped: at layer `layer`'s experts, after its router (ids copied to the host).
  struct Pending {
    bool active = false;
    uint32_t layer = 0;
    uint32_t tokens = 0, max_keys = 0;
    bool ids_read = false;  // the layer's passes are planned (begin_layer ran)
    // --host-experts: the layer's passes are submitted and the host computes its pairs; the next segment
    // begins with their outputs and the layer's combine.
    bool combine_next = false;
    std::vector<uint32_t> logit_rows;
  };

  // What a step's recording depends on besides buffer contents (replay_step's cache key).
  struct StepShape {
    uint32_t tokens = 0;
    std::vector<uint32_t> logit_rows;
    std::vector<uint32_t> splits;  // per layer: attention's key split, which grows with the context
    bool table_upload = false;     // the block table changed: the step copies it first
    bool operator==(const StepShape&) const = default;
  };
  struct RecordedStep {
    StepShape shape;
    std::unique_ptr<gpu::CommandList> commands;
    uint64_t last_use = 0;
  };
  static constexpr uint32_t kReplayMaxTokens = 32;  // decode batches and verify blocks; prefill records
  static constexpr size_t kReplayEntries = 4;       // each list keeps its own scratch (16 MiB at least)

  ops::WeightType expert_type() const { return sidecar_ ? sidecar_->layout().quant : options_.weight_type; }
  Result<void> check_memory();
  uint64_t device_memory() const;
  uint64_t non_expert_bytes() const;  // estimate: the other weights and the logits
  uint64_t kv_bytes() const;          // the KV cache's budget
  Result<void> check_sidecar() const;
  // LoadOptions::host_experts_auto's choice (logged with its reason); `free_host`: what the host can spare
  // (experts::default_host_cache_bytes).
  uint32_t auto_host_experts(uint64_t free_host);
  Result<void> load_experts(const TensorSource& src, uint32_t l, WeightArena& arena, Layer& layer);
  Result<void> load_layer(const TensorSource& src, uint32_t l, Layer& layer);
  void allocate_workspace();
  void write_inputs(const StepBatch& batch);  // the batch into inputs_host_, pending_ for the recording
  ops::AttentionParams attention_params() const;
  void record_attention(gpu::CommandList& cmd, uint32_t l, uint32_t tokens, uint32_t max_keys);
  void record_router(gpu::CommandList& cmd, uint32_t l, uint32_t tokens);
  ops::RouterParams router_params(uint32_t tokens) const;
  void record_experts(gpu::CommandList& cmd, uint32_t l, uint32_t tokens);
  // Streaming, after a layer's last pass: the host's outputs into moe_y_ (waiting for them), the weighted sum
  // of every pair into the residual, and the rest of the step up to the next layer's router (or the head).
  void record_layer_end(gpu::CommandList& cmd, uint32_t l);
  void record_head(gpu::CommandList& cmd, std::span<const uint32_t> logit_rows);
  // h_ = rms(x_) · weights[norm], and h_'s q4h form for the products that share it (rms_norm_q4h).
  ops::PreparedX norm_prepared(gpu::CommandList& cmd, uint64_t norm, const gpu::Buffer& weights, uint32_t T);
  // x_ before the RMSNorm of weights[norm], for the ops that apply the norm themselves (ops::NormedX).
  ops::NormedX normed_x(const gpu::Buffer& weights, uint64_t norm) const;
  // Streaming: records the layer's attention and router, then the ids' copy to the host, and ends the segment.
  void stop_after_router(gpu::CommandList& cmd, uint32_t l);
  void begin_pending_layer();  // streaming: the stopped layer's ids read back and its passes planned, once
  gpu::Binding f32_range(const gpu::Buffer& b, uint64_t offset, uint64_t floats) const {
    return gpu::in(b, offset, floats * 4);
  }

  ModelConfig config_;
  gpu::Context& context_;
  LoadOptions options_;
  std::optional<experts::Sidecar> sidecar_;           // engine-layout checkpoints
  std::unique_ptr<experts::ExpertStreamer> streamer_;  // --streaming
  Pending pending_;
  uint32_t slots_ = 0;  // streaming: expert slots per layer (check_memory picks them)
  uint64_t weight_bytes_ = 0;
  uint64_t weights_digest_ = 0;  // of the final norm and the first embedding rows (see fingerprint())

  gpu::Buffer globals_;  // embeddings, final norm, lm_head
  ops::WeightRef embed_, lm_head_;
  uint64_t final_norm_ = 0;
  std::vector<Layer> layers_;
  std::unique_ptr<engine::KvCache> kv_;
  ops::RopeTable rope_;
  gpu::Buffer rope_freq_, slot_table_;

  // Step inputs: written on the host, copied to the device at the start of the step.
  gpu::Buffer inputs_host_, inputs_;
  uint64_t tokens_at_ = 0, seq_at_ = 0, pos_at_ = 0;
  // Activations, sized for max_step_tokens.
  gpu::Buffer x_, h_, q_, k_, v_, attn_, router_logits_, ids_, route_w_, act_, sel_, logits_;
  gpu::Buffer moe_y_;  // streaming: each pair's down projection, [T, k, H], summed after a layer's last pass
  gpu::Buffer router_finished_;  // route_logits' count of finished workgroups (0 between dispatches)
  gpu::Buffer qkv_counts_;       // qkv_norm_rope_kv_store's finished workgroups per head (0 between dispatches)
  gpu::Buffer predicted_ids_;    // streaming prefetch: the next layer's router on this layer's hidden state
  std::optional<ops::PreparedX> moe_x_;  // h_ prepared for the q4 expert kernels by record_router
  gpu::Buffer ids_host_;  // streaming: a layer's router ids read back, [T, k] u32
  // --host-experts: the layer's expert input read back, [T, H] f32, and the host's expert outputs, [T, k, H]
  // f32, copied into moe_y_'s rows of the pairs the host computed (host_pairs_).
  gpu::Buffer h_host_;
  gpu::Buffer y_host_;
  std::vector<uint32_t> host_pairs_;
  gpu::Buffer scratch_;
  std::vector<RecordedStep> recorded_;  // replay_step's lists, least recently used first to go
  uint64_t replays_ = 0;
  bool replay_ = true;  // $MACH_STEP_REPLAY=0 turns replay_step off
  // $MACH_FUSED_NORM=0 turns off the norms applied inside q/k/v and the router (for A/B measurements): each
  // norm is a dispatch of its own again.
  bool fused_norm_ = true;
};

inline uint64_t elapsed_ns(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace mach::model::qwen3_moe
