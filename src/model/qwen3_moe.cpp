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
#include "experts/probes.hpp"
#include "model/family.hpp"
#include "model/qwen3_moe.hpp"
#include "model/weight_arena.hpp"

namespace mach::model {
namespace qwen3_moe {


// Reads a tensor, checking its shape; the error names the tensor and both shapes.
static Result<std::vector<float>> read_tensor(const TensorSource& src, const std::string& name,
                                       std::vector<uint64_t> expected) {
  auto shape = src.shape(name);
  if (!shape) return shape.error();
  if (shape->dims != expected) {
    return Error{Errc::parse, fmt::format("tensor '{}' has shape [{}], expected [{}]", name,
                                          fmt::join(shape->dims, ", "), fmt::join(expected, ", "))};
  }
  return src.read_f32(name);
}

static uint64_t add_matrix(WeightArena& arena, ops::WeightType type, std::span<const float> w, uint32_t rows, uint32_t cols) {
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
static std::string size_text(uint64_t bytes) {
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

uint32_t Qwen3Moe::auto_host_experts(uint64_t free_host) {
  const experts::SidecarLayout& layout = sidecar_->layout();
  const uint32_t E = config_.num_experts;
  uint32_t pinned = 0;
  for (const auto& [layer, ids] : options_.pinned_experts) pinned = std::max<uint32_t>(pinned, ids.size());
  const auto none = [&](std::string_view why) {
    if (options_.log) options_.log(fmt::format("host experts: none ({})", why));
    return 0u;
  };
  if (context_.info().type == "cpu") return none("the device is the CPU");
  if (layout.quant != ops::WeightType::q4 && layout.quant != ops::WeightType::q8_0)
    return none(fmt::format("the host computes q4 and q8_0 experts; the sidecar's are {}",
                            ops::weight_type_name(layout.quant)));
  if (slots_ >= E) return none("the bank holds every expert");
  if (options_.host_cache_bytes) return none("--host-cache-gb was given; --host-experts N computes some anyway");
  if (free_host < layout.expert_bytes())
    return none(fmt::format("{:.1f} GiB of free host memory (less a margin) cannot hold all {:.1f} GiB of experts",
                            free_host / 1073741824.0, layout.expert_bytes() / 1073741824.0));
  const double host = experts::probe_host_read(uint64_t{256} << 20, options_.host_threads);
  const double upload = experts::probe_upload(context_, uint64_t{64} << 20);
  const uint32_t n = std::min(experts::choose_host_experts(E, slots_, host, upload), E - std::min(E, pinned));
  if (options_.log)
    options_.log(fmt::format("host experts: {} of {} per layer (auto: the host's cores read {:.0f} GB/s, copies to the "
                             "GPU run at {:.0f} GB/s: the host's share of what the {}-slot bank does not hold "
                             "balances its time against the copies'; --host-experts N sets it)",
                             n, E, host, upload, slots_));
  return n;
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
    // What the host can spare (read once, before the probes of auto_host_experts take memory of their own).
    const uint64_t free = experts::default_host_cache_bytes(UINT64_MAX);
    so.host_experts = options_.host_experts_auto ? auto_host_experts(free) : options_.host_experts;
    so.host_threads = options_.host_threads;
    so.host_max_tokens = options_.host_max_tokens;
    if (options_.host_cache_bytes) {
      so.host_cache_bytes = *options_.host_cache_bytes;
    } else {
      // The host experts' slabs come out of what the host can spare, and never enter the tier.
      const uint64_t host_bytes = uint64_t{so.host_experts} * sidecar_->layout().layers.size() *
                                  sidecar_->layout().slab_bytes;
      const uint64_t spare =
          std::min(sidecar_->layout().expert_bytes() - std::min(host_bytes, sidecar_->layout().expert_bytes()),
                   free > host_bytes ? free - host_bytes : 0);
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
  const uint64_t count_bytes = 4ull * 4 * (config_.num_heads + 2 * config_.num_kv_heads);
  qkv_counts_ = device(count_bytes, "q/k/v head counts");
  context_.fill(qkv_counts_, 0, count_bytes, 0);
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
    moe_y_ = device(T * k * H * 4, "expert outputs");
    // The layer's ids, then the next layer's predicted ids (prefetch).
    ids_host_ = context_.create_buffer(2 * T * k * 4, gpu::MemoryKind::host_readback, "expert ids (host)");
    predicted_ids_ = device(T * k * 4, "predicted expert ids");
    if (streamer_->host_experts()) {
      h_host_ = context_.create_buffer(T * H * 4, gpu::MemoryKind::host_readback, "expert inputs (host)");
      y_host_ = context_.create_buffer(T * k * H * 4, gpu::MemoryKind::host_upload, "host expert outputs");
    }
  }
}

}  // namespace qwen3_moe

Result<std::unique_ptr<Model>> load_qwen3_moe(ModelConfig config, const TensorSource& src,
                                              std::optional<experts::Sidecar> sidecar, gpu::Context& context,
                                              const LoadOptions& options) {
  auto model = std::make_unique<qwen3_moe::Qwen3Moe>(std::move(config), std::move(sidecar), context, options);
  try {
    if (auto r = model->load(src); !r) return r.error();
  } catch (const Exception& e) {
    return e.error();
  }
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace mach::model
