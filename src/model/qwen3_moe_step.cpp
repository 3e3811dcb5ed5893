// qwen3_moe's forward steps (the class in qwen3_moe.hpp; loading in qwen3_moe.cpp): per layer attention,
// router and experts recorded from src/ops, the whole step recorded once and replayed while its shape repeats,
// and a streaming model's step in segments that stop at each router for the host to load the layer's experts.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "model/qwen3_moe.hpp"
#include "ops/attention_prep.hpp"
#include "ops/elementwise.hpp"
#include "ops/embedding.hpp"
#include "ops/norm.hpp"

namespace mach::model::qwen3_moe {
namespace {

// f(at, first, n) for each run of consecutive values rows[at .. at + n) = first, first + 1, ...: one copy per
// run instead of one per row.
template <class F>
void for_each_run(std::span<const uint32_t> rows, F f) {
  for (size_t at = 0; at < rows.size();) {
    size_t n = 1;
    while (at + n < rows.size() && rows[at + n] == rows[at] + n) ++n;
    f(at, rows[at], n);
    at += n;
  }
}

}  // namespace

void Qwen3Moe::record_attention(gpu::CommandList& cmd, uint32_t l, uint32_t T, uint32_t max_keys) {
  const auto& c = config_;
  const Layer& L = layers_[l];
  const uint32_t H = c.hidden_size, D = c.head_dim, nh = c.num_heads, kvh = c.num_kv_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const gpu::Binding tokens_seq = gpu::in(inputs_, seq_at_, T * 4ull), tokens_pos = gpu::in(inputs_, pos_at_, T * 4ull);

  const ops::KvCacheLayout layout = kv_->layout(l);
  const gpu::Binding table = gpu::in(kv_->block_table());
  const ops::QkNormRopeArgs qk{gpu::inout(q_), gpu::inout(k_), f32_range(L.buffer, L.q_norm, D),
                               f32_range(L.buffer, L.k_norm, D), tokens_pos, gpu::in(rope_freq_)};
  const ops::QkNormRopeShape shape{T, nh, kvh, D, rope_.rotary_dim, 0};
  const ops::QkNormRopeParams params{eps, ops::NormWeight::w, ops::RopeStyle::neox, rope_.attention_factor};
  const ops::KvStoreArgs store{layout, gpu::in(v_), tokens_seq, tokens_pos, table, gpu::inout(kv_->k(l)),
                               gpu::inout(kv_->v(l))};
  // h = rms(x); q, k, v = h Wq, h Wk, h Wv; then q_norm / k_norm, RoPE and the KV store. Where the f32
  // kernels run (one token, where they beat norm + packed kernels; or weights the packed kernels do not
  // take), all of it is one dispatch that applies the norm as it reads x and whose last workgroup per head does
  // the head's tail. Else one prepared h for the three products, and the tail as a dispatch of its own.
  const ops::WeightRef qkv_w[] = {L.q, L.k, L.v};
  if (fused_norm_ && (T == 1 || !ops::uses_q4h(context_, L.q.type, T)) && T <= ops::kVerifyMaxTokens) {
    ops::qkv_norm_rope_kv_store(cmd, qkv_w, normed_x(L.buffer, L.input_norm),
                                {qk, shape, params, store, gpu::inout(qkv_counts_)});
  } else {
    const gpu::Binding qkv_out[] = {gpu::out(q_), gpu::out(k_), gpu::out(v_)};
    if (ops::uses_q4h(context_, L.q.type, T)) {
      ops::mul_mat_multi(cmd, qkv_w, norm_prepared(cmd, L.input_norm, L.buffer, T), qkv_out, T);
    } else {
      ops::rms_norm(cmd, gpu::in(x_), f32_range(L.buffer, L.input_norm, H), gpu::out(h_), {T, H}, eps,
                    ops::NormWeight::w);
      for (int i = 0; i < 3; ++i) ops::mul_mat(cmd, qkv_w[i], gpu::in(h_), qkv_out[i], T);
    }
    ops::qk_norm_rope_kv_store(cmd, qk, shape, params, store);
  }
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

ops::NormedX Qwen3Moe::normed_x(const gpu::Buffer& weights, uint64_t norm) const {
  return {gpu::in(x_), f32_range(weights, norm, config_.hidden_size), static_cast<float>(config_.rms_norm_eps),
          ops::NormWeight::w};
}

ops::PreparedX Qwen3Moe::norm_prepared(gpu::CommandList& cmd, uint64_t norm, const gpu::Buffer& weights, uint32_t T) {
  const uint32_t H = config_.hidden_size;
  ops::PreparedX px = ops::q4h_scratch(cmd, T, H);
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
  const bool q4h = ops::swiglu_takes_q4h(context_, L.gate_up.type, T);
  if (fused_norm_) {
    // The norm inside the router's dispatch, which writes h_ (and its q4h form) for the expert products.
    if (q4h) moe_x_ = ops::q4h_scratch(cmd, T, H);
    ops::route_logits(cmd, L.router, normed_x(L.buffer, L.post_norm), gpu::out(h_), q4h ? &*moe_x_ : nullptr,
                      gpu::inout(router_logits_), gpu::inout(router_finished_), gpu::in(router_logits_),
                      gpu::in(router_logits_), gpu::out(ids_), gpu::out(route_w_), router_params(T));
    if (moe_x_) moe_x_->xh.access = moe_x_->xg.access = gpu::Access::read;
    return;
  }
  if (q4h) {
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
// pass; each pass's table slots only its own experts. There each pair's down projection goes to moe_y_ and
// the weighted sum runs once, after the last pass, over every pair in slot order (record_layer_end): adding
// each pass's share to the residual instead made the sums' rounding depend on how the bank's contents split
// the step into passes, so that the same request could decode differently with a warm and a cold bank.
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
  if (streamer_) {
    ops::mul_mat_id(cmd, L.down, routing, gpu::in(act_), true, gpu::out(moe_y_), T);
    return;
  }
  ops::mul_mat_id_combine(cmd, L.down, routing, gpu::in(route_w_), gpu::in(act_), gpu::inout(x_), T);
}

void Qwen3Moe::record_head(gpu::CommandList& cmd, std::span<const uint32_t> logit_rows) {
  const auto& c = config_;
  const uint32_t H = c.hidden_size, R = static_cast<uint32_t>(logit_rows.size());
  if (R == 0) return;
  // Gather the rows that need logits (contiguous runs as one copy), then the final norm and the head.
  for_each_run(logit_rows, [&](size_t at, uint32_t first, size_t n) {
    cmd.copy(x_, uint64_t{first} * H * 4, sel_, at * H * 4, n * H * 4);
  });
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
  if (streamer_->host_computes(T)) cmd.copy(h_, 0, h_host_, 0, uint64_t{T} * config_.hidden_size * 4);
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
  const std::span<const uint32_t> layer_ids(ids, uint64_t{pending_.tokens} * config_.num_experts_per_tok);
  const bool on_host = streamer_->begin_layer(pending_.layer, layer_ids, pending_.tokens);
  pending_.ids_read = true;
  // The host's experts start at once and compute while the passes below load and record.
  if (on_host) {
    const auto pairs = streamer_->start_host(pending_.layer, layer_ids, config_.num_experts_per_tok,
                                             reinterpret_cast<const float*>(h_host_.mapped()),
                                             reinterpret_cast<float*>(y_host_.mapped()));
    host_pairs_.assign(pairs.begin(), pairs.end());
  }
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
  const uint32_t l = pending_.layer;
  if (pending_.combine_next) {
    pending_.combine_next = false;
    record_layer_end(cmd, l);
    return {};
  }
  const auto t0 = std::chrono::steady_clock::now();
  begin_pending_layer();
  auto last = streamer_->record_pass(cmd);
  if (last && *last && streamer_->prefetching() && l + 1 < config_.num_layers) {
    const uint64_t n = uint64_t{pending_.tokens} * config_.num_experts_per_tok;
    streamer_->prefetch(l + 1, std::span(reinterpret_cast<const uint32_t*>(ids_host_.mapped()) + n, n));
    // Layer l + 1's bank is idle until the next segment, which waits for these uploads on the GPU.
    streamer_->upload_predicted(l + 1);
  }
  if (!last) streamer_->finish_host();  // the abandoned step's host share must not outlive it
  streamer_->add_stall(l, elapsed_ns(t0));
  if (!last) {
    pending_.active = false;
    return last.error();
  }
  record_experts(cmd, l, pending_.tokens);
  if (!*last) return {};
  // With host pairs the passes go to the GPU now and the host computes meanwhile; the combine, in the next
  // segment, waits for both.
  if (host_pairs_.empty())
    record_layer_end(cmd, l);
  else
    pending_.combine_next = true;
  return {};
}

void Qwen3Moe::record_layer_end(gpu::CommandList& cmd, uint32_t l) {
  // With host pairs, everything below is recorded while the host still computes, and only the submission (the
  // caller's, after this returns) waits for it: the recording is off the step's critical path.
  const bool host = !host_pairs_.empty();
  if (host) {
    // The host's pairs' rows of y into moe_y_ (runs of consecutive pairs as one copy); the passes skipped them.
    const uint64_t row = uint64_t{config_.hidden_size} * 4;
    for_each_run(host_pairs_, [&](size_t, uint32_t first, size_t n) {
      cmd.copy(y_host_, first * row, moe_y_, first * row, n * row);
    });
    host_pairs_.clear();
  }
  const uint32_t T = pending_.tokens;
  ops::moe_combine(cmd, gpu::in(moe_y_), gpu::in(route_w_), gpu::inout(x_), T, config_.num_experts_per_tok,
                   config_.hidden_size);
  if (l + 1 < config_.num_layers) {
    stop_after_router(cmd, l + 1);
  } else {
    pending_.active = false;
    record_head(cmd, pending_.logit_rows);
  }
  if (host) {
    const auto t0 = std::chrono::steady_clock::now();
    streamer_->finish_host();  // before the submission that copies its outputs
    streamer_->add_stall(l, elapsed_ns(t0));
  }
}

}  // namespace mach::model::qwen3_moe
