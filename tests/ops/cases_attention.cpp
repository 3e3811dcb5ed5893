// Op cases for the paged KV cache: kv_store alone, and kv_store followed by attention (decode, prefill,
// verify, mixed batches; GQA, sliding window, sinks, softcap, shared K=V; head dims 64..512). Physical
// blocks are shuffled so every case walks a non-trivial block table.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "op_case.hpp"
#include "ops/attention.hpp"
#include "ops/reference/attention.hpp"
#include "ops/weight_format.hpp"

namespace mach::test {
namespace {

// One sequence of a step: `context` tokens already in the cache, then `fresh` new tokens at positions
// [context, context + fresh).
struct SeqSpec {
  uint32_t context = 0, fresh = 1;
};

struct AttentionSpec {
  std::string label;
  uint32_t head_dim = 128, n_heads = 8, kv_heads = 2, block_size = 16;
  uint32_t window = 0;
  float softcap = 0;
  bool sinks = false;
  bool shared_kv = false;  // K is V: one cache
  ops::AttentionKernel kernel = ops::AttentionKernel::automatic;
  uint32_t splits = 0;        // 0: as planned
  uint32_t check_stride = 1;  // perf cases check every n-th token
  float q_stddev = 1.0f;
  std::vector<SeqSpec> seqs;
};

// Host copy of a paged cache with its block table and one step's tokens.
struct PagedStep {
  ops::KvCacheLayout layout;
  std::vector<uint32_t> block_table, seq_of_token, pos_of_token;
  std::vector<uint16_t> k_cache, v_cache;  // f16 bits, before the step's tokens are stored
  std::vector<float> k_new, v_new;         // [T, KVH, D]
  uint32_t tokens = 0, max_keys = 0;

  // unwritten: f16 bits for slots no token wrote (NaN in attention cases: a read of one shows).
  PagedStep(const AttentionSpec& spec, Rng& rng, uint16_t unwritten) {
    layout.kv_heads = spec.kv_heads;
    layout.head_dim = spec.head_dim;
    layout.block_size = spec.block_size;
    const uint32_t B = spec.block_size;
    uint32_t needed = 0;
    for (const auto& s : spec.seqs) {
      layout.max_blocks_per_seq = std::max(layout.max_blocks_per_seq, (s.context + s.fresh + B - 1) / B + 1);
      needed += (s.context + s.fresh + B - 1) / B;
    }
    const uint32_t num_blocks = needed + 3;  // a few never used
    std::vector<uint32_t> physical(num_blocks);
    std::iota(physical.begin(), physical.end(), 0u);
    std::shuffle(physical.begin(), physical.end(), rng.engine());
    block_table.assign(spec.seqs.size() * layout.max_blocks_per_seq, 0xffffffffu);
    uint32_t next = 0;
    for (size_t s = 0; s < spec.seqs.size(); ++s)
      for (uint32_t b = 0; b < (spec.seqs[s].context + spec.seqs[s].fresh + B - 1) / B; ++b)
        block_table[s * layout.max_blocks_per_seq + b] = physical[next++];

    const size_t cache_halves = size_t{num_blocks} * layout.block_bytes() / 2;
    k_cache.assign(cache_halves, unwritten);
    if (!spec.shared_kv) v_cache.assign(cache_halves, unwritten);
    if (unwritten != 0x7e00)
      for (auto* c : {&k_cache, &v_cache})
        for (auto& h : *c) h = ops::float_to_half(rng.normal());

    // Earlier context, written straight into the host cache.
    std::vector<uint32_t> hist_seq, hist_pos;
    for (size_t s = 0; s < spec.seqs.size(); ++s)
      for (uint32_t p = 0; p < spec.seqs[s].context; ++p) {
        hist_seq.push_back(static_cast<uint32_t>(s));
        hist_pos.push_back(p);
      }
    const size_t row = size_t{spec.kv_heads} * spec.head_dim;
    const auto hist_k = rng.normal_vec(hist_seq.size() * row);
    const auto hist_v = spec.shared_kv ? std::vector<float>{} : rng.normal_vec(hist_seq.size() * row);
    ref::kv_store(layout, hist_k, hist_v, hist_seq, hist_pos, block_table, k_cache, v_cache);

    for (size_t s = 0; s < spec.seqs.size(); ++s)
      for (uint32_t p = spec.seqs[s].context; p < spec.seqs[s].context + spec.seqs[s].fresh; ++p) {
        seq_of_token.push_back(static_cast<uint32_t>(s));
        pos_of_token.push_back(p);
        max_keys = std::max(max_keys, spec.window > 0 ? std::min(p + 1, spec.window) : p + 1);
      }
    tokens = static_cast<uint32_t>(seq_of_token.size());
    k_new = rng.normal_vec(tokens * row);
    if (!spec.shared_kv) v_new = rng.normal_vec(tokens * row);
  }
};

template <class T>
GuardedBuffer upload_guarded(gpu::Context& context, const std::vector<T>& v, std::string label) {
  GuardedBuffer b(context, std::max<size_t>(v.size(), 1) * sizeof(T), std::move(label));
  if (!v.empty()) b.upload(v);
  return b;
}

std::vector<float> halves_to_floats(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = ops::half_to_float(h[i]);
  return f;
}

// The GPU side of a PagedStep: its buffers and the kv_store recording.
struct PagedBuffers {
  GuardedBuffer table, seq, pos, k_cache, v_cache, k_new, v_new;
  bool shared_kv = false;

  PagedBuffers(gpu::Context& context, const PagedStep& step, bool shared)
      : table(upload_guarded(context, step.block_table, "block_table")),
        seq(upload_guarded(context, step.seq_of_token, "seq_of_token")),
        pos(upload_guarded(context, step.pos_of_token, "pos_of_token")),
        k_cache(upload_guarded(context, step.k_cache, "k_cache")),
        k_new(upload_guarded(context, step.k_new, "k_new")),
        shared_kv(shared) {
    if (!shared) {
      v_cache = upload_guarded(context, step.v_cache, "v_cache");
      v_new = upload_guarded(context, step.v_new, "v_new");
    }
  }
  gpu::Binding v_cache_in() const { return shared_kv ? k_cache.in() : v_cache.in(); }
  void record_store(gpu::CommandList& cmd, const PagedStep& step) const {
    if (shared_kv)
      ops::kv_store_shared(cmd, step.layout, k_new.in(), seq.in(), pos.in(), table.in(), k_cache.out(),
                           step.tokens);
    else
      ops::kv_store(cmd, step.layout, k_new.in(), v_new.in(), seq.in(), pos.in(), table.in(), k_cache.out(),
                    v_cache.out(), step.tokens);
  }
  std::vector<const GuardedBuffer*> all() const {
    std::vector<const GuardedBuffer*> v{&table, &seq, &pos, &k_cache, &k_new};
    if (!shared_kv) v.insert(v.end(), {&v_cache, &v_new});
    return v;
  }
};

std::string spec_params(const AttentionSpec& spec) {
  std::string seqs;
  for (const auto& s : spec.seqs) seqs += fmt::format("{}{}+{}", seqs.empty() ? "" : ",", s.context, s.fresh);
  return fmt::format("{} d={} h={} kvh={} B={} win={} cap={} sinks={} kv_shared={} seqs={}", spec.label,
                     spec.head_dim, spec.n_heads, spec.kv_heads, spec.block_size, spec.window, spec.softcap,
                     spec.sinks, spec.shared_kv, seqs);
}

class KvStoreCase : public OpCase {
 public:
  explicit KvStoreCase(AttentionSpec spec) : spec_(std::move(spec)) {}
  std::string op() const override { return "kv_store"; }
  std::string params() const override { return spec_params(spec_); }
  // Exact but for the rounding mode of packHalf2x16, which Vulkan leaves to the driver (1 ulp = 2^-11).
  double max_nmse() const override { return 1e-7; }
  double bytes() const override {
    const double values = static_cast<double>(step_->tokens) * spec_.kv_heads * spec_.head_dim;
    return values * (spec_.shared_kv ? 1 : 2) * (4 + 2);  // f32 in, f16 out
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    step_ = std::make_unique<PagedStep>(spec_, rng, 0);
    gpu_ = std::make_unique<PagedBuffers>(context, *step_, spec_.shared_kv);
    expected_k_ = step_->k_cache;
    expected_v_ = step_->v_cache;
    ref::kv_store(step_->layout, step_->k_new, step_->v_new, step_->seq_of_token, step_->pos_of_token,
                  step_->block_table, expected_k_, expected_v_);
  }
  void record(gpu::CommandList& cmd) override { gpu_->record_store(cmd, *step_); }
  CheckResult check(gpu::Context&) override {
    CheckResult r;
    auto got = halves_to_floats(gpu_->k_cache.download<uint16_t>());
    auto want = halves_to_floats(expected_k_);
    if (!spec_.shared_kv) {
      const auto gv = halves_to_floats(gpu_->v_cache.download<uint16_t>());
      const auto wv = halves_to_floats(expected_v_);
      got.insert(got.end(), gv.begin(), gv.end());
      want.insert(want.end(), wv.begin(), wv.end());
    }
    r.nmse = nmse(got, want);
    std::string why;
    for (const GuardedBuffer* b : gpu_->all())
      if (!b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail = why;
      }
    return r;
  }

 private:
  AttentionSpec spec_;
  std::unique_ptr<PagedStep> step_;
  std::unique_ptr<PagedBuffers> gpu_;
  std::vector<uint16_t> expected_k_, expected_v_;
};

// kv_store of the step's tokens, then attention of the same tokens (their own keys included).
class AttentionCase : public OpCase {
 public:
  explicit AttentionCase(AttentionSpec spec) : spec_(std::move(spec)) {}
  std::string op() const override { return "attention"; }
  std::string params() const override {
    return fmt::format("{} kernel={} splits={}", spec_params(spec_), ops::attention_kernel_name(spec_.kernel),
                       spec_.splits);
  }
  // f32 dot products and softmax against a double reference on identical f16 K/V.
  double max_nmse() const override { return 1e-9; }
  double bytes() const override { return bytes_; }
  double flops() const override { return flops_; }

  void prepare(gpu::Context& context, Rng& rng) override {
    step_ = std::make_unique<PagedStep>(spec_, rng, 0x7e00);
    const PagedStep& st = *step_;
    gpu_ = std::make_unique<PagedBuffers>(context, st, spec_.shared_kv);
    params_.n_heads = spec_.n_heads;
    params_.scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
    params_.window = spec_.window;
    params_.softcap = spec_.softcap;
    params_.sinks = spec_.sinks;
    plan_ = ops::plan_attention(st.layout, params_, st.tokens, st.max_keys, spec_.kernel, spec_.splits);

    const size_t q_size = size_t{st.tokens} * spec_.n_heads * spec_.head_dim;
    const auto q = rng.normal_vec(q_size, spec_.q_stddev);
    const auto sinks = spec_.sinks ? rng.normal_vec(spec_.n_heads, 2.0f) : std::vector<float>{};
    q_ = upload_guarded(context, q, "q");
    sinks_ = upload_guarded(context, sinks, "sinks");
    out_ = GuardedBuffer(context, q_size * 4, "out");
    if (plan_.scratch_bytes > 0)
      scratch_ = context.create_buffer(plan_.scratch_bytes, gpu::MemoryKind::device, "scratch");

    auto k_cache = st.k_cache, v_cache = st.v_cache;
    ref::kv_store(st.layout, st.k_new, st.v_new, st.seq_of_token, st.pos_of_token, st.block_table, k_cache,
                  v_cache);
    expected_.assign(q_size, 0.0f);
    ref::attention(st.layout, params_, q, st.seq_of_token, st.pos_of_token, st.block_table, k_cache,
                   spec_.shared_kv ? k_cache : v_cache, sinks, expected_, spec_.check_stride);

    // Bytes: every token's q and out, the new K/V stored, and each sequence's attended keys read once.
    const double kv_row = static_cast<double>(spec_.kv_heads) * spec_.head_dim * 2 * (spec_.shared_kv ? 1 : 2);
    bytes_ = 2.0 * q_size * 4 + st.tokens * kv_row * 3;
    flops_ = 0;
    for (const auto& s : spec_.seqs) {
      const uint32_t last = s.context + s.fresh - 1;
      const uint32_t first =
          spec_.window > 0 && s.context + 1 > spec_.window ? s.context + 1 - spec_.window : 0;
      bytes_ += (last - first + 1) * kv_row;
      for (uint32_t p = s.context; p <= last; ++p) {
        const uint32_t keys = spec_.window > 0 ? std::min(p + 1, spec_.window) : p + 1;
        flops_ += 4.0 * keys * spec_.n_heads * spec_.head_dim;
      }
    }
  }

  void record(gpu::CommandList& cmd) override {
    gpu_->record_store(cmd, *step_);
    ops::AttentionArgs args{q_.in(),         gpu_->seq.in(),     gpu_->pos.in(),
                            gpu_->table.in(), gpu_->k_cache.in(), gpu_->v_cache_in(),
                            sinks_.in(),      gpu::out(scratch_), out_.out()};
    ops::attention(cmd, step_->layout, params_, plan_, args, step_->tokens);
  }

  CheckResult check(gpu::Context&) override {
    CheckResult r;
    const auto all = out_.download<float>();
    const size_t row = size_t{spec_.n_heads} * spec_.head_dim;
    std::vector<float> got, want;
    for (size_t t = 0; t < step_->tokens; ++t) {
      if (t % spec_.check_stride != 0 && t + 1 != step_->tokens) continue;
      got.insert(got.end(), all.begin() + t * row, all.begin() + (t + 1) * row);
      want.insert(want.end(), expected_.begin() + t * row, expected_.begin() + (t + 1) * row);
    }
    r.nmse = nmse(got, want);
    std::string why;
    auto guarded = gpu_->all();
    guarded.insert(guarded.end(), {&q_, &sinks_, &out_});
    for (const GuardedBuffer* b : guarded)
      if (!b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail = why;
      }
    if (r.nmse > max_nmse()) r.detail += fmt::format(" (splits={} tiles={})", plan_.splits, plan_.token_tiles);
    return r;
  }

 private:
  AttentionSpec spec_;
  std::unique_ptr<PagedStep> step_;
  std::unique_ptr<PagedBuffers> gpu_;
  ops::AttentionParams params_;
  ops::AttentionPlan plan_;
  GuardedBuffer q_, sinks_, out_;
  gpu::Buffer scratch_;
  std::vector<float> expected_;
  double bytes_ = 0, flops_ = 0;
};

using ops::AttentionKernel;
constexpr auto kDecode = AttentionKernel::decode;
constexpr auto kBlock = AttentionKernel::block;
constexpr auto kNarrow = AttentionKernel::narrow;

std::vector<AttentionSpec> test_specs() {
  std::vector<AttentionSpec> v;
  auto add = [&](AttentionSpec s) { v.push_back(std::move(s)); };
  // Decode, Qwen3-30B-A3B heads (GQA 8): one token, then split-K forced.
  add({.label = "decode", .head_dim = 128, .n_heads = 32, .kv_heads = 4, .kernel = kDecode,
       .seqs = {{100, 1}}});
  add({.label = "decode", .head_dim = 128, .n_heads = 32, .kv_heads = 4, .kernel = kDecode, .splits = 3,
       .seqs = {{300, 1}}});
  // A batch of three sequences at different positions (GQA 4).
  add({.label = "decode_batch", .head_dim = 64, .n_heads = 16, .kv_heads = 4, .kernel = kDecode, .splits = 2,
       .seqs = {{57, 1}, {130, 1}, {9, 1}}});
  // Prefill chunks of 37 tokens: from position 0, and at 50 after earlier context (GQA 1 and 8).
  add({.label = "prefill", .head_dim = 64, .n_heads = 4, .kv_heads = 4, .kernel = kBlock, .seqs = {{0, 37}}});
  add({.label = "prefill", .head_dim = 128, .n_heads = 8, .kv_heads = 1, .kernel = kBlock, .seqs = {{50, 37}}});
  add({.label = "prefill", .head_dim = 128, .n_heads = 8, .kv_heads = 1, .kernel = kBlock, .splits = 2,
       .seqs = {{50, 37}}});
  // A verify block of 5 after 100 positions, by both kernels.
  add({.label = "verify", .head_dim = 128, .n_heads = 16, .kv_heads = 4, .kernel = kBlock, .seqs = {{100, 5}}});
  add({.label = "verify", .head_dim = 128, .n_heads = 16, .kv_heads = 4, .kernel = kDecode,
       .seqs = {{100, 5}}});
  // A mixed step: decode tokens, a prefill chunk and a verify block in one dispatch.
  add({.label = "mixed", .head_dim = 128, .n_heads = 16, .kv_heads = 4, .kernel = kBlock,
       .seqs = {{30, 1}, {0, 20}, {70, 5}, {11, 1}}});
  // gpt-oss: sliding window 128 with sinks, GQA 8, D 64; decode and prefill.
  add({.label = "gpt_oss", .head_dim = 64, .n_heads = 16, .kv_heads = 2, .window = 128, .sinks = true,
       .kernel = kDecode, .splits = 2, .seqs = {{200, 1}, {40, 1}}});
  add({.label = "gpt_oss", .head_dim = 64, .n_heads = 16, .kv_heads = 2, .window = 16, .sinks = true,
       .kernel = kBlock, .seqs = {{20, 37}}});
  add({.label = "gpt_oss", .head_dim = 64, .n_heads = 16, .kv_heads = 2, .sinks = true, .kernel = kDecode,
       .seqs = {{60, 1}}});
  // Gemma: D 256 with softcap and a sliding window; B 32.
  add({.label = "gemma", .head_dim = 256, .n_heads = 8, .kv_heads = 2, .block_size = 32, .window = 32,
       .softcap = 5.0f, .kernel = kBlock, .q_stddev = 3.0f, .seqs = {{50, 37}}});
  add({.label = "gemma", .head_dim = 256, .n_heads = 8, .kv_heads = 2, .softcap = 5.0f, .kernel = kDecode,
       .splits = 2, .q_stddev = 3.0f, .seqs = {{77, 1}}});
  // D 512: DeepSeek-V4's single latent head shared as K and V (16 heads: two head chunks), and a Gemma-like
  // full layer with its own V.
  add({.label = "deepseek", .head_dim = 512, .n_heads = 16, .kv_heads = 1, .shared_kv = true, .kernel = kDecode,
       .splits = 4, .seqs = {{90, 1}}});
  add({.label = "deepseek", .head_dim = 512, .n_heads = 16, .kv_heads = 1, .shared_kv = true, .kernel = kBlock,
       .seqs = {{40, 5}}});
  add({.label = "full512", .head_dim = 512, .n_heads = 4, .kv_heads = 2, .block_size = 8, .kernel = kBlock,
       .seqs = {{13, 7}}});
  // The head dims of the tiny golden-test checkpoints (16, 32): decode with splits, prefill, a mixed step.
  add({.label = "tiny", .head_dim = 16, .n_heads = 4, .kv_heads = 2, .kernel = kDecode, .splits = 2,
       .seqs = {{20, 1}, {5, 1}}});
  add({.label = "tiny", .head_dim = 16, .n_heads = 4, .kv_heads = 2, .kernel = kBlock, .seqs = {{0, 7}}});
  add({.label = "tiny", .head_dim = 32, .n_heads = 8, .kv_heads = 2, .kernel = kDecode, .seqs = {{33, 1}}});
  add({.label = "tiny", .head_dim = 32, .n_heads = 8, .kv_heads = 2, .kernel = kBlock, .seqs = {{3, 1}, {0, 19}}});
  // The narrow decode tiles (2 heads per workgroup for D 128 and 256, 4 for D 64): one token, split-K, a
  // batch, a verify block, softcap; D 32 falls back to decode's tile.
  add({.label = "narrow", .head_dim = 128, .n_heads = 32, .kv_heads = 4, .kernel = kNarrow, .seqs = {{100, 1}}});
  add({.label = "narrow", .head_dim = 128, .n_heads = 32, .kv_heads = 4, .kernel = kNarrow, .splits = 3,
       .seqs = {{300, 1}}});
  add({.label = "narrow", .head_dim = 64, .n_heads = 16, .kv_heads = 4, .kernel = kNarrow, .splits = 2,
       .seqs = {{57, 1}, {130, 1}, {9, 1}}});
  add({.label = "narrow", .head_dim = 128, .n_heads = 16, .kv_heads = 4, .kernel = kNarrow, .seqs = {{100, 5}}});
  add({.label = "narrow", .head_dim = 256, .n_heads = 8, .kv_heads = 2, .softcap = 5.0f, .kernel = kNarrow,
       .q_stddev = 3.0f, .seqs = {{77, 1}}});
  add({.label = "narrow", .head_dim = 32, .n_heads = 8, .kv_heads = 2, .kernel = kNarrow, .seqs = {{33, 1}}});
  // GQA groups that do not divide the tile: 3 heads per kv head (block), 12 (decode: two head chunks).
  add({.label = "odd_group", .head_dim = 64, .n_heads = 6, .kv_heads = 2, .kernel = kBlock, .seqs = {{10, 13}}});
  add({.label = "odd_group", .head_dim = 256, .n_heads = 24, .kv_heads = 2, .kernel = kDecode, .splits = 2,
       .seqs = {{45, 1}, {3, 1}}});
  return v;
}

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  if (set == CaseSet::test) {
    const AttentionSpec stores[] = {
        {.label = "decode_batch", .head_dim = 128, .n_heads = 32, .kv_heads = 4,
         .seqs = {{57, 1}, {130, 1}, {9, 1}}},
        {.label = "prefill", .head_dim = 64, .n_heads = 8, .kv_heads = 2, .seqs = {{50, 37}}},
        {.label = "deepseek", .head_dim = 512, .n_heads = 16, .kv_heads = 1, .shared_kv = true,
         .seqs = {{100, 5}, {3, 2}}}};
    for (const AttentionSpec& s : stores)
      cases.push_back(std::make_unique<KvStoreCase>(s));
    for (auto& s : test_specs()) cases.push_back(std::make_unique<AttentionCase>(s));
  } else {
    // Qwen3-30B-A3B: 32 q heads, 4 kv heads, D 128.
    const AttentionSpec qwen{.label = "qwen3_30b", .head_dim = 128, .n_heads = 32, .kv_heads = 4};
    for (uint32_t ctx : {4096u, 16384u}) {
      AttentionSpec s = qwen;
      s.label = "decode";
      s.seqs = {{ctx - 1, 1}};
      cases.push_back(std::make_unique<AttentionCase>(s));
    }
    // A short context (the decode benchmark's first tokens), and 4096, on both decode tiles.
    for (uint32_t ctx : {64u, 4096u})
      for (AttentionKernel kernel : {kDecode, kNarrow}) {
        AttentionSpec s = qwen;
        s.label = "decode";
        s.kernel = kernel;
        s.seqs = {{ctx - 1, 1}};
        cases.push_back(std::make_unique<AttentionCase>(s));
      }
    AttentionSpec batch = qwen;
    batch.label = "decode_batch16";
    batch.seqs.assign(16, {4095, 1});
    cases.push_back(std::make_unique<AttentionCase>(batch));
    for (uint32_t t : {512u, 4096u}) {
      AttentionSpec s = qwen;
      s.label = "prefill";
      s.seqs = {{0, t}};
      s.check_stride = t / 32;
      cases.push_back(std::make_unique<AttentionCase>(s));
    }
    AttentionSpec store = qwen;
    store.label = "prefill";
    store.seqs = {{0, 4096}};
    cases.push_back(std::make_unique<KvStoreCase>(store));
  }
});

}  // namespace
}  // namespace mach::test
