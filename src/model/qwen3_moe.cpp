// qwen3_moe (Qwen3-30B-A3B, Qwen3-Coder-30B-A3B) as transformers' modeling_qwen3_moe.py computes it:
//   x = embed(ids)
//   per layer:  h = rms(x)·w_in;  q, k, v = h Wq, h Wk, h Wv;  q, k = per-head rms·w_q / w_k;  neox RoPE;
//               x += Wo · attention(q, k, v)   (GQA, causal)
//               h = rms(x)·w_post;  p = softmax(h Wr);  top-k experts, weights renormalized (norm_topk_prob)
//               x += sum_j w_j · down_j(silu(gate_j h) * up_j h)
//   logits = lm_head(rms(x)·w_final)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "engine/chain_hash.hpp"
#include "experts/expert_streamer.hpp"
#include "model/family.hpp"
#include "model/weight_arena.hpp"
#include "ops/activation.hpp"
#include "ops/attention.hpp"
#include "ops/attention_prep.hpp"
#include "ops/elementwise.hpp"
#include "ops/embedding.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"
#include "ops/rope_freq.hpp"
#include "ops/router.hpp"

namespace mach::model {
namespace {

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
  Result<void> load_experts(const TensorSource& src, uint32_t l, WeightArena& arena, Layer& layer);
  Result<void> load_layer(const TensorSource& src, uint32_t l, Layer& layer);
  void allocate_workspace();
  void write_inputs(const StepBatch& batch);  // the batch into inputs_host_, pending_ for the recording
  ops::AttentionParams attention_params() const;
  void record_attention(gpu::CommandList& cmd, uint32_t l, uint32_t tokens, uint32_t max_keys);
  void record_router(gpu::CommandList& cmd, uint32_t l, uint32_t tokens);
  ops::RouterParams router_params(uint32_t tokens) const;
  void record_experts(gpu::CommandList& cmd, uint32_t l, uint32_t tokens);
  void record_head(gpu::CommandList& cmd, std::span<const uint32_t> logit_rows);
  // h_ = rms(x_) · weights[norm], and h_'s q4h form for the products that share it (rms_norm_q4h).
  ops::PreparedX norm_prepared(gpu::CommandList& cmd, uint64_t norm, const gpu::Buffer& weights, uint32_t T);
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
  gpu::Buffer router_finished_;  // route_logits' count of finished workgroups (0 between dispatches)
  gpu::Buffer predicted_ids_;    // streaming prefetch: the next layer's router on this layer's hidden state
  std::optional<ops::PreparedX> moe_x_;  // h_ prepared for the q4 expert kernels by record_router
  gpu::Buffer ids_host_;  // streaming: a layer's router ids read back, [T, k] u32
  gpu::Buffer scratch_;
  std::vector<RecordedStep> recorded_;  // replay_step's lists, least recently used first to go
  uint64_t replays_ = 0;
  bool replay_ = true;  // $MACH_STEP_REPLAY=0 turns replay_step off
};

uint64_t elapsed_ns(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

// Reads a tensor, checking its shape; the error names the tensor and both shapes.
Result<std::vector<float>> read_tensor(const TensorSource& src, const std::string& name,
                                       std::vector<uint64_t> expected) {
  auto shape = src.shape(name);
  if (!shape) return shape.error();
  if (shape->dims != expected) {
    return Error{Errc::parse, fmt::format("tensor '{}' has shape [{}], expected [{}]", name,
                                          fmt::join(shape->dims, ", "), fmt::join(expected, ", "))};
  }
  return src.read_f32(name);
}

uint64_t add_matrix(WeightArena& arena, ops::WeightType type, std::span<const float> w, uint32_t rows, uint32_t cols) {
  return arena.add(ops::quantize(type, w, rows, cols));
}

// The layer's routed experts: from the sidecar's slabs (engine layout: stacked as they are, one slab per
// expert, no conversion), as a streaming bank, or converted from the checkpoint's tensors to --quant.
Result<void> Qwen3Moe::load_experts(const TensorSource& src, uint32_t l, WeightArena& arena, Layer& layer) {
  const auto& c = config_;
  const uint32_t H = c.hidden_size, E = c.num_experts, I = c.moe_intermediate_size;
  if (streamer_) {
    layer.gate_up = streamer_->tensor(l, 0);
    layer.down = streamer_->tensor(l, 1);
    weight_bytes_ += uint64_t{E} * streamer_->sidecar().layout().slab_bytes;  // on disk, read on demand
    return {};
  }
  if (sidecar_) {
    const auto& layout = sidecar_->layout();
    std::vector<std::byte> stack(layout.slab_bytes * E);
    for (uint32_t e = 0; e < E; ++e) {
      auto slab = sidecar_->read_verified(l, e);
      if (!slab) return slab.error();
      std::memcpy(stack.data() + e * layout.slab_bytes, slab->data(), layout.slab_bytes);
    }
    const uint64_t base = arena.add(stack);
    layer.gate_up = experts::tensor_ref(layout, 0, nullptr, base, E);
    layer.down = experts::tensor_ref(layout, 1, nullptr, base, E);
    return {};
  }
  const ops::WeightType wt = options_.weight_type;
  const std::string p = fmt::format("model.layers.{}.", l);
  // Per-expert tensors (checkpoints on the Hub) or fused stacks (transformers 5 save_pretrained).
  std::vector<std::byte> gate_up_stack, down_stack;
  const uint64_t gu_bytes = ops::weight_bytes(wt, 2 * I, H), dn_bytes = ops::weight_bytes(wt, H, I);
  gate_up_stack.reserve(gu_bytes * E);
  down_stack.reserve(dn_bytes * E);
  const bool fused = src.has(p + "mlp.experts.gate_up_proj");
  std::vector<float> fused_gu, fused_dn;
  if (fused) {
    auto gu = read_tensor(src, p + "mlp.experts.gate_up_proj", {E, 2ull * I, H});
    if (!gu) return gu.error();
    auto dn = read_tensor(src, p + "mlp.experts.down_proj", {E, H, I});
    if (!dn) return dn.error();
    fused_gu = std::move(gu).value();
    fused_dn = std::move(dn).value();
  }
  for (uint32_t e = 0; e < E; ++e) {
    std::vector<float> gu(2ull * I * H), dn(uint64_t{H} * I);
    if (fused) {
      std::memcpy(gu.data(), fused_gu.data() + e * gu.size(), gu.size() * 4);
      std::memcpy(dn.data(), fused_dn.data() + e * dn.size(), dn.size() * 4);
    } else {
      const std::string ep = fmt::format("{}mlp.experts.{}.", p, e);
      auto g = read_tensor(src, ep + "gate_proj.weight", {I, H});
      if (!g) return g.error();
      auto u = read_tensor(src, ep + "up_proj.weight", {I, H});
      if (!u) return u.error();
      auto d = read_tensor(src, ep + "down_proj.weight", {H, I});
      if (!d) return d.error();
      std::copy(g->begin(), g->end(), gu.begin());
      std::copy(u->begin(), u->end(), gu.begin() + g->size());
      dn = std::move(d).value();
    }
    const auto qgu = ops::quantize(wt, gu, 2 * I, H);
    const auto qdn = ops::quantize(wt, dn, H, I);
    gate_up_stack.insert(gate_up_stack.end(), qgu.begin(), qgu.end());
    down_stack.insert(down_stack.end(), qdn.begin(), qdn.end());
  }
  layer.gate_up = {nullptr, arena.add(gate_up_stack), gu_bytes, E, wt, 2 * I, H};
  layer.down = {nullptr, arena.add(down_stack), dn_bytes, E, wt, H, I};
  return {};
}

Result<void> Qwen3Moe::load_layer(const TensorSource& src, uint32_t l, Layer& layer) {
  const auto& c = config_;
  const uint32_t H = c.hidden_size, D = c.head_dim, nh = c.num_heads, kvh = c.num_kv_heads;
  const uint32_t E = c.num_experts;
  const ops::WeightType wt = options_.weight_type;
  const std::string p = fmt::format("model.layers.{}.", l);
  WeightArena arena;

  auto matrix = [&](const std::string& name, uint32_t rows, uint32_t cols, ops::WeightType type,
                    ops::WeightRef& out) -> Result<void> {
    auto w = read_tensor(src, p + name, {rows, cols});
    if (!w) return w.error();
    out = {nullptr, add_matrix(arena, type, *w, rows, cols), type, rows, cols};
    return {};
  };
  auto vector = [&](const std::string& name, uint32_t n, uint64_t& offset) -> Result<void> {
    auto w = read_tensor(src, p + name, {n});
    if (!w) return w.error();
    offset = arena.add_f32(*w);
    return {};
  };
  for (auto r : {matrix("self_attn.q_proj.weight", nh * D, H, wt, layer.q),
                 matrix("self_attn.k_proj.weight", kvh * D, H, wt, layer.k),
                 matrix("self_attn.v_proj.weight", kvh * D, H, wt, layer.v),
                 matrix("self_attn.o_proj.weight", H, nh * D, wt, layer.o),
                 matrix("mlp.gate.weight", E, H, ops::WeightType::bf16, layer.router),
                 vector("input_layernorm.weight", H, layer.input_norm),
                 vector("post_attention_layernorm.weight", H, layer.post_norm),
                 vector("self_attn.q_norm.weight", D, layer.q_norm),
                 vector("self_attn.k_norm.weight", D, layer.k_norm)}) {
    if (!r) return r;
  }

  if (auto r = load_experts(src, l, arena, layer); !r) return r;

  weight_bytes_ += arena.size();
  layer.buffer = arena.build(context_, fmt::format("layer {}", l));
  for (ops::WeightRef* w : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.router}) w->buffer = &layer.buffer;
  if (!layer.gate_up.buffer) {  // resident experts live in the layer's buffer; a streaming bank has its own
    layer.gate_up.buffer = &layer.buffer;
    layer.down.buffer = &layer.buffer;
  }
  return {};
}

// Bytes for a message: GiB, MiB or KiB, whichever reads best.
std::string size_text(uint64_t bytes) {
  if (bytes >= (1ull << 30)) return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{:.1f} KiB", bytes / 1024.0);
}

uint64_t Qwen3Moe::device_memory() const {
  return options_.device_memory_bytes ? options_.device_memory_bytes : context_.info().device_local_bytes;
}

uint64_t Qwen3Moe::non_expert_bytes() const {
  const auto& c = config_;
  const ops::WeightType wt = options_.weight_type;
  const uint64_t H = c.hidden_size, D = c.head_dim, qd = uint64_t{c.num_heads} * D, kvd = uint64_t{c.num_kv_heads} * D;
  uint64_t bytes = ops::weight_bytes(wt, c.vocab_size, H) * (c.tie_word_embeddings ? 1 : 2);
  const uint64_t layer = 2 * ops::weight_bytes(wt, qd, H) + 2 * ops::weight_bytes(wt, kvd, H) +
                         ops::weight_bytes(ops::WeightType::bf16, c.num_experts, H) + 4 * (2 * H + 2 * D);
  bytes += layer * c.num_layers;
  return bytes + uint64_t{options_.max_step_tokens} * c.vocab_size * 4;
}

uint64_t Qwen3Moe::kv_bytes() const {
  const auto& c = config_;
  return options_.kv_cache_bytes ? options_.kv_cache_bytes
                                 : 2ull * c.num_layers * c.num_kv_heads * c.head_dim * 2 * options_.max_context *
                                       options_.max_sequences;
}

// Resident: every expert must fit next to the other weights. Streaming: the banks must, and their slot count
// is --expert-slots, or what --expert-cache-gb holds, or what the device has left after the other weights and
// the KV cache, with a 10% margin. The KV cache is not part of the refusals: its allocation fails on its own
// (and some drivers, lavapipe among them, report less device memory than they can allocate).
Result<void> Qwen3Moe::check_memory() {
  const auto& c = config_;
  const uint64_t device = device_memory(), rest = non_expert_bytes();
  const uint64_t per_expert = sidecar_ ? sidecar_->layout().slab_bytes
                                       : ops::weight_bytes(options_.weight_type, 2 * c.moe_intermediate_size, c.hidden_size) +
                                             ops::weight_bytes(options_.weight_type, c.hidden_size, c.moe_intermediate_size);
  const uint64_t per_slot_all_layers = per_expert * c.num_layers;
  if (!options_.streaming) {
    const uint64_t experts = per_slot_all_layers * c.num_experts;
    if (experts + rest > device)
      return Error{Errc::out_of_device_memory,
                   fmt::format("the routed experts need {} of device memory and the other weights about {}, but "
                               "the device has {}; run with --streaming (and --expert-cache-gb or --expert-slots) to "
                               "keep the experts on disk and a bank of them on the GPU",
                               size_text(experts), size_text(rest), size_text(device))};
    return {};
  }
  if (options_.expert_slots) {
    slots_ = options_.expert_slots;
  } else if (options_.expert_cache_bytes) {
    slots_ = static_cast<uint32_t>(std::min<uint64_t>(options_.expert_cache_bytes / per_slot_all_layers, c.num_experts));
    if (slots_ == 0)
      return Error{Errc::invalid_argument,
                   fmt::format("--expert-cache-gb holds {}, less than one expert slot in each of {} layers ({})",
                               size_text(options_.expert_cache_bytes), c.num_layers, size_text(per_slot_all_layers))};
  } else {
    const uint64_t usable = device / 10 * 9, taken = rest + kv_bytes();
    slots_ = usable > taken ? static_cast<uint32_t>(std::min<uint64_t>((usable - taken) / per_slot_all_layers,
                                                                       c.num_experts))
                            : 0;
    if (slots_ == 0)
      return Error{Errc::out_of_device_memory,
                   fmt::format("the device's {} leave no room for expert slots next to the other weights and the "
                               "KV cache ({}); give --expert-slots or --expert-cache-gb, or lower --max-context, "
                               "--max-batch or --kv-cache-gb", size_text(device), size_text(taken))};
  }
  slots_ = std::min(slots_, c.num_experts);
  const uint64_t banks = per_slot_all_layers * slots_;
  if (banks + rest > device)
    return Error{Errc::out_of_device_memory,
                 fmt::format("{} expert slots per layer take {} and the other weights about {}, but the device has "
                             "{}; use fewer --expert-slots or a smaller --expert-cache-gb", slots_, size_text(banks),
                             size_text(rest), size_text(device))};
  return {};
}

// The sidecar must hold this model's experts in the slab layout this loader reads.
Result<void> Qwen3Moe::check_sidecar() const {
  if (!sidecar_) return {};
  const auto& c = config_;
  const auto& got = sidecar_->layout();
  const auto want = experts::qwen3_moe_slab_layout(c, got.quant);
  const std::string where = (sidecar_->dir() / experts::kLayoutFile).string();
  bool same = got.slab_bytes == want.slab_bytes && got.tensors.size() == want.tensors.size();
  for (size_t t = 0; same && t < want.tensors.size(); ++t) {
    const auto &a = got.tensors[t], &b = want.tensors[t];
    same = a.name == b.name && a.rows == b.rows && a.cols == b.cols && a.offset == b.offset;
  }
  if (!same)
    return Error{Errc::parse, fmt::format("{}: the slab layout is not qwen3_moe's gate_up [2I, H] then down [H, I] "
                                          "for this config.json; rerun mach prune", where)};
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const auto* layer = got.find_layer(l);
    if (!layer || layer->experts.size() != c.num_experts)
      return Error{Errc::parse, fmt::format("{}: layer {} should have {} experts (config.json), it has {}; rerun mach "
                                            "prune", where, l, c.num_experts, layer ? layer->experts.size() : 0)};
  }
  return {};
}

std::string Qwen3Moe::residency() const {
  if (!streamer_)
    return fmt::format("residency=resident experts={} expert_format={}", sidecar_ ? "sidecar" : "checkpoint",
                       ops::weight_type_name(expert_type()));
  const auto st = streamer_->stats();
  return fmt::format("residency=streaming expert_slots={} experts={} bank_mib={:.1f} host_cache_mib={:.1f} "
                     "upload_cap={} eviction={} prefetch={} direct_read={} expert_format={}", st.slots_per_layer,
                     config_.num_experts, st.bank_bytes / 1048576.0, st.host_cache_bytes / 1048576.0, st.upload_cap,
                     st.eviction, st.prefetch, st.direct_read, ops::weight_type_name(expert_type()));
}

Result<void> Qwen3Moe::load(const TensorSource& src) {
  const auto& c = config_;
  if (auto* extras = std::get_if<Qwen3MoeExtras>(&c.extras)) {
    if (extras->decoder_sparse_step != 1 || !extras->mlp_only_layers.empty())
      return Error{Errc::unsupported, "qwen3_moe checkpoints with dense MLP layers (decoder_sparse_step > 1 or "
                                      "mlp_only_layers) are not supported yet"};
    if (extras->attention_bias)
      return Error{Errc::unsupported, "qwen3_moe with attention_bias is not supported yet"};
  }
  if (c.num_experts == 0 || c.num_experts_per_tok == 0 || c.num_experts_per_tok > ops::kRouterMaxK ||
      c.num_experts > ops::kRouterMaxExperts)
    return Error{Errc::unsupported, fmt::format("qwen3_moe with {} experts, top-{} is not supported",
                                                c.num_experts, c.num_experts_per_tok)};
  const ops::WeightType wt = options_.weight_type;
  std::vector<std::pair<uint32_t, uint32_t>> shapes = {{c.vocab_size, c.hidden_size},
                                                       {c.num_heads * c.head_dim, c.hidden_size}};
  if (!sidecar_) shapes.emplace_back(c.hidden_size, c.moe_intermediate_size);  // else the sidecar's format
  for (auto [rows, cols] : shapes) {
    if (!ops::shape_fits(wt, rows, cols))
      return Error{Errc::unsupported, fmt::format("--quant {} needs input widths that are multiples of {}; this model "
                                                  "has a width of {}", ops::weight_type_name(wt), ops::group_size(wt), cols)};
  }

  if (auto r = check_sidecar(); !r) return r;
  if (auto r = check_memory(); !r) return r;
  if (sidecar_ && options_.log && sidecar_->layout().quant != wt)
    options_.log(fmt::format("experts use the sidecar's format {}; --quant {} applies to the other weights",
                             ops::weight_type_name(sidecar_->layout().quant), ops::weight_type_name(wt)));
  if (options_.streaming) {
    experts::StreamerOptions so;
    so.slots = slots_;
    so.eviction = options_.eviction;
    so.pinned = options_.pinned_experts;
    so.upload_cap = options_.expert_upload_cap.value_or(std::max<uint32_t>(1, slots_ / 2));
    so.prefetch = options_.expert_prefetch;
    if (options_.host_cache_bytes) {
      so.host_cache_bytes = *options_.host_cache_bytes;
    } else {
      const uint64_t spare = experts::default_host_cache_bytes(sidecar_->layout().expert_bytes());
      so.host_cache_bytes = spare >= uint64_t{slots_} * sidecar_->layout().slab_bytes ? spare : 0;
      if (options_.log && so.host_cache_bytes == 0)
        options_.log("the host has too little free memory for an expert RAM tier: misses read the disk");
    }
    auto streamer = experts::ExpertStreamer::create(context_, *sidecar_, so);
    if (!streamer) return streamer.error();
    streamer_ = std::move(streamer).value();
  }

  WeightArena globals;
  {
    auto e = read_tensor(src, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
    if (!e) return e.error();
    const size_t digest_floats = std::min<size_t>(e->size(), 1 << 16);
    weights_digest_ = engine::checksum64(std::as_bytes(std::span<const float>(e->data(), digest_floats)));
    embed_ = {nullptr, add_matrix(globals, wt, *e, c.vocab_size, c.hidden_size), wt, c.vocab_size, c.hidden_size};
    const bool tied = c.tie_word_embeddings || !src.has("lm_head.weight");
    if (tied) {
      lm_head_ = embed_;
    } else {
      auto h = read_tensor(src, "lm_head.weight", {c.vocab_size, c.hidden_size});
      if (!h) return h.error();
      lm_head_ = {nullptr, add_matrix(globals, wt, *h, c.vocab_size, c.hidden_size), wt, c.vocab_size, c.hidden_size};
    }
    auto n = read_tensor(src, "model.norm.weight", {c.hidden_size});
    if (!n) return n.error();
    final_norm_ = globals.add_f32(*n);
    weights_digest_ ^= engine::checksum64(std::as_bytes(std::span<const float>(*n)));
  }
  weight_bytes_ += globals.size();
  globals_ = globals.build(context_, "embeddings and head");
  embed_.buffer = &globals_;
  lm_head_.buffer = &globals_;

  layers_.resize(c.num_layers);
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    if (auto r = load_layer(src, l, layers_[l]); !r) return r;
  }

  ops::RopeConfig rc;
  rc.theta = c.rope.theta;
  rc.head_dim = c.head_dim;
  rc.partial_rotary_factor = c.rope.partial_rotary_factor;
  if (c.rope.rope_type == "yarn") {
    rc.scaling = ops::RopeScaling::yarn;
    rc.factor = c.rope.factor;
    rc.max_position_embeddings = static_cast<uint32_t>(c.max_position_embeddings);
    rc.original_max_position_embeddings = static_cast<uint32_t>(c.rope.original_max_position_embeddings);
    rc.beta_fast = c.rope.beta_fast;
    rc.beta_slow = c.rope.beta_slow;
  } else if (c.rope.rope_type != "default") {
    return Error{Errc::unsupported, fmt::format("qwen3_moe with rope_type '{}' is not supported", c.rope.rope_type)};
  }
  rope_ = ops::rope_table(rc);

  engine::KvCacheOptions kvo;
  kvo.block_size = options_.kv_block_size;
  kvo.max_sequences = options_.max_sequences;
  kvo.max_context = options_.max_context;
  kvo.budget_bytes = options_.kv_cache_bytes;
  kv_ = std::make_unique<engine::KvCache>(
      context_, std::vector<engine::KvLayerShape>(c.num_layers, {c.num_kv_heads, c.head_dim}), kvo);
  allocate_workspace();
  return {};
}

void Qwen3Moe::allocate_workspace() {
  const auto& c = config_;
  const uint64_t T = options_.max_step_tokens, H = c.hidden_size, k = c.num_experts_per_tok;
  const uint64_t I = c.moe_intermediate_size, qd = uint64_t{c.num_heads} * c.head_dim;
  const uint64_t kvd = uint64_t{c.num_kv_heads} * c.head_dim;
  auto device = [&](uint64_t bytes, const char* label) {
    return context_.create_buffer(bytes, gpu::MemoryKind::device, label);
  };
  // Inputs: three [T] u32 arrays, each at a 256-byte aligned offset (storage-buffer offset alignment).
  const uint64_t region = (T * 4 + 255) / 256 * 256;
  tokens_at_ = 0;
  seq_at_ = region;
  pos_at_ = 2 * region;
  inputs_host_ = context_.create_buffer(3 * region, gpu::MemoryKind::host_upload, "step inputs (host)");
  inputs_ = device(3 * region, "step inputs");
  x_ = device(T * H * 4, "residual");
  h_ = device(T * H * 4, "normed");
  q_ = device(T * qd * 4, "q");
  k_ = device(T * kvd * 4, "k");
  v_ = device(T * kvd * 4, "v");
  attn_ = device(T * qd * 4, "attention out");
  router_logits_ = device(T * c.num_experts * 4, "router logits");
  router_finished_ = device(4, "router finished count");
  context_.fill(router_finished_, 0, 4, 0);
  ids_ = device(T * k * 4, "expert ids");
  route_w_ = device(T * k * 4, "expert weights");
  act_ = device(T * k * I * 4, "expert activations");
  sel_ = device(T * H * 4, "logit rows");
  logits_ = device(T * c.vocab_size * 4, "logits");
  rope_freq_ = device(rope_.inv_freq.size() * 4, "rope inv_freq");
  context_.upload(rope_freq_, 0, std::as_bytes(std::span<const float>(rope_.inv_freq)));
  std::vector<uint32_t> identity(c.num_experts);
  for (uint32_t e = 0; e < c.num_experts; ++e) identity[e] = e;
  scratch_ = device(256, "attention scratch");
  slot_table_ = device(identity.size() * 4, "expert slot table");
  context_.upload(slot_table_, 0, std::as_bytes(std::span<const uint32_t>(identity)));
  if (streamer_) {
    // The layer's ids, then the next layer's predicted ids (prefetch).
    ids_host_ = context_.create_buffer(2 * T * k * 4, gpu::MemoryKind::host_readback, "expert ids (host)");
    predicted_ids_ = device(T * k * 4, "predicted expert ids");
  }
}

void Qwen3Moe::record_attention(gpu::CommandList& cmd, uint32_t l, uint32_t T, uint32_t max_keys) {
  const auto& c = config_;
  const Layer& L = layers_[l];
  const uint32_t H = c.hidden_size, D = c.head_dim, nh = c.num_heads, kvh = c.num_kv_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const gpu::Binding tokens_seq = gpu::in(inputs_, seq_at_, T * 4ull), tokens_pos = gpu::in(inputs_, pos_at_, T * 4ull);

  // h = rms(x); q, k, v = h Wq, h Wk, h Wv (one prepared h for the three where the q4 kernels run).
  if (ops::uses_q4h(context_, L.q.type, T)) {
    const ops::PreparedX px = norm_prepared(cmd, L.input_norm, L.buffer, T);
    const ops::WeightRef qkv[] = {L.q, L.k, L.v};
    const gpu::Binding out[] = {gpu::out(q_), gpu::out(k_), gpu::out(v_)};
    ops::mul_mat_multi(cmd, qkv, px, out, T);
  } else {
    ops::rms_norm(cmd, gpu::in(x_), f32_range(L.buffer, L.input_norm, H), gpu::out(h_), {T, H}, eps, ops::NormWeight::w);
    ops::mul_mat(cmd, L.q, gpu::in(h_), gpu::out(q_), T);
    ops::mul_mat(cmd, L.k, gpu::in(h_), gpu::out(k_), T);
    ops::mul_mat(cmd, L.v, gpu::in(h_), gpu::out(v_), T);
  }
  // q_norm / k_norm, RoPE and the KV store in one dispatch.
  const ops::KvCacheLayout layout = kv_->layout(l);
  const gpu::Binding table = gpu::in(kv_->block_table());
  const ops::QkNormRopeArgs qk{gpu::inout(q_), gpu::inout(k_), f32_range(L.buffer, L.q_norm, D),
                               f32_range(L.buffer, L.k_norm, D), tokens_pos, gpu::in(rope_freq_)};
  const ops::QkNormRopeShape shape{T, nh, kvh, D, rope_.rotary_dim, 0};
  const ops::QkNormRopeParams params{eps, ops::NormWeight::w, ops::RopeStyle::neox, rope_.attention_factor};
  const ops::KvStoreArgs store{layout, gpu::in(v_), tokens_seq, tokens_pos, table, gpu::inout(kv_->k(l)),
                               gpu::inout(kv_->v(l))};
  ops::qk_norm_rope_kv_store(cmd, qk, shape, params, store);
  const ops::AttentionParams ap = attention_params();
  const ops::AttentionPlan plan = ops::plan_attention(layout, ap, T, max_keys);
  if (plan.scratch_bytes > scratch_.size()) {
    // The previous step is complete (record_step's contract), so the old scratch is no longer in use; the
    // recorded steps that bind it go with it.
    recorded_.clear();
    scratch_ = context_.create_buffer(plan.scratch_bytes * 2, gpu::MemoryKind::device, "attention scratch");
  }
  ops::AttentionArgs args{gpu::in(q_), tokens_seq, tokens_pos, table, gpu::in(kv_->k(l)), gpu::in(kv_->v(l)),
                          gpu::in(rope_freq_), gpu::inout(scratch_), gpu::out(attn_)};
  ops::attention(cmd, layout, ap, plan, args, T);
  // x += Wo · attention (the residual add inside the product).
  ops::mul_mat(cmd, L.o, gpu::in(attn_), gpu::inout(x_), T, ops::Output::accumulate);
}

ops::AttentionParams Qwen3Moe::attention_params() const {
  ops::AttentionParams ap;
  ap.n_heads = config_.num_heads;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  return ap;
}

ops::PreparedX Qwen3Moe::norm_prepared(gpu::CommandList& cmd, uint64_t norm, const gpu::Buffer& weights, uint32_t T) {
  const uint32_t H = config_.hidden_size;
  ops::PreparedX px{cmd.scratch(uint64_t{T} * H * 2), cmd.scratch(uint64_t{T} * (H / 32) * 8), T, H};
  ops::rms_norm_q4h(cmd, gpu::in(x_), f32_range(weights, norm, H), gpu::out(h_), px.xh, px.xg, {T, H},
                    static_cast<float>(config_.rms_norm_eps), ops::NormWeight::w);
  px.xh.access = px.xg.access = gpu::Access::read;  // the products that share it only read it
  return px;
}

// The MoE block up to the router's top-k: ids_ [T, k] and route_w_ [T, k]; moe_x_ is h's prepared form
// when the expert products run the q4 kernels (valid in this recording only).
void Qwen3Moe::record_router(gpu::CommandList& cmd, uint32_t l, uint32_t T) {
  const auto& c = config_;
  const Layer& L = layers_[l];
  const uint32_t H = c.hidden_size;
  moe_x_.reset();
  if (ops::uses_q4h(context_, L.gate_up.type, T)) {
    moe_x_ = norm_prepared(cmd, L.post_norm, L.buffer, T);
  } else {
    ops::rms_norm(cmd, gpu::in(x_), f32_range(L.buffer, L.post_norm, H), gpu::out(h_), {T, H},
                  static_cast<float>(c.rms_norm_eps), ops::NormWeight::w);
  }
  ops::route_logits(cmd, L.router, gpu::in(h_), gpu::inout(router_logits_), gpu::inout(router_finished_),
                    gpu::in(router_logits_), gpu::in(router_logits_), gpu::out(ids_), gpu::out(route_w_),
                    router_params(T));
}

// The expert products of the routed pairs whose expert has a slot in the layer's slot table (all of them
// when resident), added into the residual with their routing weights. A streaming layer runs this once per
// pass; each pass's table slots only its own experts, so the passes add up to the whole sum.
void Qwen3Moe::record_experts(gpu::CommandList& cmd, uint32_t l, uint32_t T) {
  const auto& c = config_;
  const Layer& L = layers_[l];
  const uint32_t E = c.num_experts, k = c.num_experts_per_tok;
  const gpu::Binding table = streamer_ ? streamer_->slot_table(l) : gpu::in(slot_table_);
  const ops::MoeRouting routing{gpu::in(ids_), table, E, k};
  if (moe_x_)
    ops::mul_mat_id_swiglu(cmd, L.gate_up, routing, *moe_x_, gpu::out(act_), T);
  else
    ops::mul_mat_id_swiglu(cmd, L.gate_up, routing, gpu::in(h_), gpu::out(act_), T);
  ops::mul_mat_id_combine(cmd, L.down, routing, gpu::in(route_w_), gpu::in(act_), gpu::inout(x_), T);
}

void Qwen3Moe::record_head(gpu::CommandList& cmd, std::span<const uint32_t> logit_rows) {
  const auto& c = config_;
  const uint32_t H = c.hidden_size, R = static_cast<uint32_t>(logit_rows.size());
  if (R == 0) return;
  // Gather the rows that need logits (contiguous runs as one copy), then the final norm and the head.
  for (uint32_t r = 0; r < R;) {
    uint32_t n = 1;
    while (r + n < R && logit_rows[r + n] == logit_rows[r] + n) ++n;
    cmd.copy(x_, uint64_t{logit_rows[r]} * H * 4, sel_, uint64_t{r} * H * 4, uint64_t{n} * H * 4);
    r += n;
  }
  ops::rms_norm(cmd, gpu::inout(sel_), f32_range(globals_, final_norm_, H), gpu::inout(sel_), {R, H},
                static_cast<float>(c.rms_norm_eps), ops::NormWeight::w);
  // Bind only the rows this step produces, in pieces that fit the device's storage-buffer range (a large
  // vocabulary times a long step exceeds lavapipe's 128 MiB).
  const uint64_t V = c.vocab_size;
  const uint64_t max_rows = std::max<uint64_t>(1, context_.info().max_storage_buffer_range / (V * 4));
  for (uint32_t r0 = 0; r0 < R;) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(R - r0, max_rows));
    ops::mul_mat(cmd, lm_head_, gpu::in(sel_, uint64_t{r0} * H * 4, uint64_t{n} * H * 4),
                 gpu::out(logits_, uint64_t{r0} * V * 4, uint64_t{n} * V * 4), n);
    r0 += n;
  }
}

ops::RouterParams Qwen3Moe::router_params(uint32_t T) const {
  ops::RouterParams rp;
  rp.mode = ops::RouterMode::softmax_topk;
  rp.tokens = T;
  rp.experts = config_.num_experts;
  rp.k = config_.num_experts_per_tok;
  rp.normalize = config_.norm_topk_prob;
  return rp;
}

void Qwen3Moe::stop_after_router(gpu::CommandList& cmd, uint32_t l) {
  const uint32_t T = pending_.tokens;
  const uint64_t id_bytes = uint64_t{T} * config_.num_experts_per_tok * 4;
  record_attention(cmd, l, T, pending_.max_keys);
  record_router(cmd, l, T);
  cmd.copy(ids_, 0, ids_host_, 0, id_bytes);
  if (streamer_->prefetching() && l + 1 < config_.num_layers) {
    // The next layer's router on this layer's normed hidden state: its picks are read ahead (the prediction
    // ignores this layer's expert output and the next layer's attention, so it is right only in part:
    // ExpertLayerStats counts how often). The logits and weights are scratch.
    gpu::Binding weights = cmd.scratch(id_bytes);
    weights.access = gpu::Access::write;
    ops::route_logits(cmd, layers_[l + 1].router, gpu::in(h_), gpu::inout(router_logits_),
                      gpu::inout(router_finished_), gpu::in(router_logits_), gpu::in(router_logits_),
                      gpu::out(predicted_ids_), weights, router_params(T));
    cmd.copy(predicted_ids_, 0, ids_host_, id_bytes, id_bytes);
  }
  moe_x_.reset();  // scratch of this recording: the experts run in the next one
  pending_.active = true;
  pending_.layer = l;
  pending_.ids_read = false;
}

void Qwen3Moe::write_inputs(const StepBatch& batch) {
  const uint32_t T = static_cast<uint32_t>(batch.tokens.size());
  const uint32_t R = static_cast<uint32_t>(batch.logit_rows.size());
  assert(T > 0 && T <= options_.max_step_tokens && R <= T);
  assert(batch.seq_of_token.size() == T && batch.positions.size() == T);
  (void)R;
  std::byte* host = inputs_host_.mapped();
  std::memcpy(host + tokens_at_, batch.tokens.data(), T * 4);
  std::memcpy(host + seq_at_, batch.seq_of_token.data(), T * 4);
  std::memcpy(host + pos_at_, batch.positions.data(), T * 4);
  pending_ = {};
  pending_.tokens = T;
  for (uint32_t p : batch.positions) pending_.max_keys = std::max(pending_.max_keys, p + 1);
  pending_.logit_rows.assign(batch.logit_rows.begin(), batch.logit_rows.end());
}

// A resident step's recording depends on the batch only through StepShape: every op reads the tokens,
// sequences and positions from inputs_ and the block table, and the context length only picks attention's
// split. So one recording serves every later step of the same shape (a decode stream's next 127 tokens, at
// most, before the split grows), and the host's work per step is the memcpys above.
gpu::CommandList* Qwen3Moe::replay_step(const StepBatch& batch) {
  if (streamer_ || !replay_ || batch.tokens.size() > kReplayMaxTokens) return nullptr;
  const uint32_t T = static_cast<uint32_t>(batch.tokens.size());
  uint32_t max_keys = 0;
  for (uint32_t p : batch.positions) max_keys = std::max(max_keys, p + 1);
  StepShape shape{T, {batch.logit_rows.begin(), batch.logit_rows.end()}, {}, kv_->table_dirty()};
  const ops::AttentionParams ap = attention_params();
  for (uint32_t l = 0; l < config_.num_layers; ++l)
    shape.splits.push_back(ops::plan_attention(kv_->layout(l), ap, T, max_keys).splits);
  auto it = std::find_if(recorded_.begin(), recorded_.end(), [&](const RecordedStep& r) { return r.shape == shape; });
  if (it != recorded_.end()) {
    write_inputs(batch);
    if (shape.table_upload) kv_->mark_table_uploaded();  // the replayed list copies the table
    it->last_use = ++replays_;
    return it->commands.get();
  }
  auto commands = context_.begin_commands();
  commands->begin();
  record_step(*commands, batch);  // may drop the other recordings (a larger attention scratch)
  commands->timestamp("step");
  commands->end();
  const auto older = [](const RecordedStep& a, const RecordedStep& b) { return a.last_use < b.last_use; };
  if (recorded_.size() >= kReplayEntries) recorded_.erase(std::min_element(recorded_.begin(), recorded_.end(), older));
  recorded_.push_back({std::move(shape), std::move(commands), ++replays_});
  return recorded_.back().commands.get();
}

void Qwen3Moe::record_step(gpu::CommandList& cmd, const StepBatch& batch) {
  write_inputs(batch);
  const uint32_t T = pending_.tokens;
  cmd.copy(inputs_host_, 0, inputs_, 0, inputs_.size());
  kv_->record_table_upload(cmd);
  ops::embedding(cmd, embed_, gpu::in(inputs_, tokens_at_, T * 4ull), gpu::out(x_), T);
  if (streamer_) {
    stop_after_router(cmd, 0);
    return;
  }
  for (uint32_t l = 0; l < config_.num_layers; ++l) {
    record_attention(cmd, l, T, pending_.max_keys);
    record_router(cmd, l, T);
    record_experts(cmd, l, T);
  }
  record_head(cmd, pending_.logit_rows);
}

// After the segment that ended at layer pending_.layer's router: read its ids back, run the layer's next
// pass of expert loads, and record on. A layer whose experts outnumber the slots ends a segment after each
// pass but its last, because the next pass's loads reuse the staging memory this pass's copies read.
void Qwen3Moe::begin_pending_layer() {
  if (pending_.ids_read) return;
  const auto* ids = reinterpret_cast<const uint32_t*>(ids_host_.mapped());
  streamer_->begin_layer(pending_.layer, std::span(ids, uint64_t{pending_.tokens} * config_.num_experts_per_tok));
  pending_.ids_read = true;
}

bool Qwen3Moe::start_step_reads() {
  if (!pending_.active || !streamer_) return false;
  const auto t0 = std::chrono::steady_clock::now();
  begin_pending_layer();
  const bool pending = streamer_->start_pass_reads();
  streamer_->add_stall(pending_.layer, elapsed_ns(t0));
  return pending;
}

Result<void> Qwen3Moe::continue_step(gpu::CommandList& cmd) {
  assert(pending_.active && streamer_);
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t l = pending_.layer;
  begin_pending_layer();
  auto last = streamer_->record_pass(cmd);
  if (last && *last && streamer_->prefetching() && l + 1 < config_.num_layers) {
    const uint64_t n = uint64_t{pending_.tokens} * config_.num_experts_per_tok;
    streamer_->prefetch(l + 1, std::span(reinterpret_cast<const uint32_t*>(ids_host_.mapped()) + n, n));
  }
  streamer_->add_stall(l, elapsed_ns(t0));
  if (!last) {
    pending_.active = false;
    return last.error();
  }
  record_experts(cmd, l, pending_.tokens);
  if (*last) {
    if (l + 1 < config_.num_layers) {
      stop_after_router(cmd, l + 1);
    } else {
      pending_.active = false;
      record_head(cmd, pending_.logit_rows);
    }
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Model>> load_qwen3_moe(ModelConfig config, const TensorSource& src,
                                              std::optional<experts::Sidecar> sidecar, gpu::Context& context,
                                              const LoadOptions& options) {
  auto model = std::make_unique<Qwen3Moe>(std::move(config), std::move(sidecar), context, options);
  try {
    if (auto r = model->load(src); !r) return r.error();
  } catch (const Exception& e) {
    return e.error();
  }
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace mach::model
