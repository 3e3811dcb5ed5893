// Engine-layout checkpoints (non-expert safetensors + expert sidecar, written by mach prune) on the tiny
// qwen3_moe fixture: loaded resident they compute what the source checkpoint computes, bit for bit; streamed
// through a bank of 2 slots per layer they compute what resident mode computes (the same greedy tokens, logits
// to float rounding: see expect_close); a truncated layer file or a
// corrupted slab fails the request that needed it with an error naming file, layer and expert, and the next
// request works once the file is whole again.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <nlohmann/json.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include "engine/engine_loop.hpp"
#include "engine/generator.hpp"
#include "engine/scheduler.hpp"
#include "experts/expert_profile.hpp"
#include "experts/expert_stats.hpp"
#include "experts/prune.hpp"
#include "experts/sidecar.hpp"
#include "experts/slot_map.hpp"
#include "gpu_fixture.hpp"
#include "scoped_env.hpp"
#include "model/model.hpp"
#include "temp_dir.hpp"

namespace mach::test {
namespace {

namespace fs = std::filesystem;
using mach::testing::TempDir;

fs::path fixture() {
  const char* env = std::getenv("MACH_SOURCE_DIR");
  return fs::path(env && *env ? env : MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
}

std::vector<uint32_t> reference_prompt() {
  std::ifstream f(fixture() / "reference.json");
  return nlohmann::json::parse(f).at("prompt_ids").get<std::vector<uint32_t>>();
}

// The fixture pruned into `dir`/model with every expert in `quant`.
fs::path pruned(const TempDir& dir, ops::WeightType quant) {
  experts::PruneOptions o;
  o.source = fixture();
  o.output = dir / "model";
  o.quant = quant;
  o.threads = 1;
  std::move(experts::prune(o)).value_or_throw();
  return o.output;
}

model::LoadOptions options(ops::WeightType quant, uint32_t slots = 0) {
  model::LoadOptions o;
  o.weight_type = quant;
  o.max_context = 64;
  o.max_step_tokens = 16;  // the 23-token prompt runs in two prefill steps
  o.streaming = slots > 0;
  o.expert_slots = slots;
  o.host_cache_bytes = 0;  // no RAM tier unless a test asks for one (the default sizes it from free memory)
  return o;
}

std::unique_ptr<model::Model> load(const fs::path& dir, const model::LoadOptions& o) {
  return std::move(model::load_model(dir, gpu_context(), o)).value_or_throw();
}

Result<engine::GenerateResult> generate(model::Model& model, uint32_t max_tokens = 12) {
  engine::GenerateOptions go;
  go.sampling.temperature = 0;
  go.max_tokens = max_tokens;
  go.prompt_logits = true;
  return engine::generate(gpu_context(), model, reference_prompt(), go);
}

// Streamed logits against resident ones. Streaming sums a layer's expert outputs with moe_combine after its
// last pass, resident mode in the fused down + combine kernel, which adds them in another order: equal to
// float rounding (~1e-7 relative), not bit for bit; greedy tokens are compared exactly by the callers.
void expect_close(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  float worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LE(worst, 2e-5f) << "largest logit difference";
}

std::vector<char> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Flips one byte in the middle of every slab of the layer file.
void corrupt_every_slab(const fs::path& sidecar, uint32_t layer) {
  auto opened = std::move(experts::Sidecar::open(sidecar)).value_or_throw();
  const fs::path file = sidecar / experts::layer_file_name(layer);
  auto bytes = read_file(file);
  for (const auto& e : opened.layout().find_layer(layer)->experts) bytes[e.offset + 100] ^= 0x40;
  write_file(file, bytes);
}

class EngineLayout : public ::testing::TestWithParam<ops::WeightType> {};

TEST_P(EngineLayout, ResidentComputesWhatTheSourceComputes) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, GetParam());
  auto source = load(fixture(), options(GetParam()));
  auto engine = load(dir, options(GetParam()));
  // One expert is one 4096-aligned slab (bf16: 8192 + 4096 bytes; q8_0: 4352 + 2176, padded to 8192).
  EXPECT_EQ(engine->expert_bytes(), GetParam() == ops::WeightType::bf16 ? 12288u : 8192u);
  const auto want = std::move(generate(*source)).value_or_throw();
  const auto got = std::move(generate(*engine)).value_or_throw();
  EXPECT_EQ(got.prompt_logits, want.prompt_logits);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_FALSE(engine->expert_stats().streaming);
}

TEST_P(EngineLayout, TwoSlotsPerLayerStreamWhatResidentComputes) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, GetParam());
  auto resident = load(dir, options(GetParam()));
  auto streamed = load(dir, options(GetParam(), 2));
  const auto want = std::move(generate(*resident)).value_or_throw();
  const auto got = std::move(generate(*streamed)).value_or_throw();
  expect_close(got.prompt_logits, want.prompt_logits);
  EXPECT_EQ(got.tokens, want.tokens);

  const auto stats = streamed->expert_stats();
  ASSERT_TRUE(stats.streaming);
  EXPECT_EQ(stats.slots_per_layer, 2u);
  ASSERT_EQ(stats.layers.size(), 3u);
  const uint64_t steps = 2 + want.tokens.size() - 1;  // two prefill chunks, then one step per further token
  for (const auto& l : stats.layers) {
    EXPECT_GT(l.misses, 0u) << "layer " << l.layer;
    EXPECT_EQ(l.bytes_read, l.misses * stats.slab_bytes) << "layer " << l.layer;
    EXPECT_GT(l.read_ns, 0u);
    EXPECT_EQ(l.errors, 0u);
    // Prefill chunks route to more than 2 experts: they run in several passes.
    EXPECT_GT(l.passes, steps) << "layer " << l.layer;
    EXPECT_GE(l.hits + l.misses, 2 * steps - 2);  // decode steps use 2 experts, prefill more
    // Each (step, expert) use is a hit or a miss, and counts once in the expert profile's input.
    EXPECT_EQ(std::accumulate(l.uses.begin(), l.uses.end(), uint64_t{0}), l.hits + l.misses) << "layer " << l.layer;
  }
  EXPECT_TRUE(stats.bad.empty());
}

// The upload cap: one slot per layer per step takes every miss of a prompt chunk in turn (more passes, the
// same result); without a cap the chunk's misses spread over the whole bank.
TEST_P(EngineLayout, UploadCapStreamsWhatResidentComputes) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, GetParam());
  auto resident = load(dir, options(GetParam()));
  const auto want = std::move(generate(*resident)).value_or_throw();
  uint64_t passes[2] = {0, 0};
  for (uint32_t cap : {0u, 1u}) {
    auto o = options(GetParam(), 4);
    o.expert_upload_cap = cap;
    auto streamed = load(dir, o);
    const auto got = std::move(generate(*streamed)).value_or_throw();
    expect_close(got.prompt_logits, want.prompt_logits);
    EXPECT_EQ(got.tokens, want.tokens) << "cap " << cap;
    const auto stats = streamed->expert_stats();
    EXPECT_EQ(stats.upload_cap, cap == 0 ? 4u : cap);
    passes[cap] = stats.total().passes;
  }
  EXPECT_GT(passes[1], passes[0]);
  // The default: half the slots.
  auto streamed = load(dir, options(GetParam(), 4));
  EXPECT_EQ(streamed->expert_stats().upload_cap, 2u);
}

TEST_P(EngineLayout, EveryEvictionPolicyStreamsTheSameTokens) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, GetParam());
  auto resident = load(dir, options(GetParam()));
  const auto want = std::move(generate(*resident)).value_or_throw();
  for (auto kind : {experts::EvictionKind::lfu, experts::EvictionKind::lfru}) {
    auto o = options(GetParam(), 3);
    o.eviction = kind;
    auto streamed = load(dir, o);
    const auto got = std::move(generate(*streamed)).value_or_throw();
    SCOPED_TRACE(experts::eviction_name(kind));
    expect_close(got.prompt_logits, want.prompt_logits);
    EXPECT_EQ(got.tokens, want.tokens) << experts::eviction_name(kind);
  }
}

// Continuous batching and speculative verify blocks (up to 5 tokens, so up to 10 experts per layer per step)
// through 2 slots per layer: the scheduler's tokens are resident mode's.
TEST_P(EngineLayout, BatchedSpeculativeStepsStreamWhatResidentComputes) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, GetParam());
  auto run = [&](uint32_t slots, uint32_t host_experts = 0) {
    auto o = options(GetParam(), slots);
    o.max_sequences = 3;
    o.host_experts = host_experts;
    auto model = load(dir, o);
    engine::Scheduler scheduler(gpu_context(), *model, {.max_batch = 3});
    std::vector<uint32_t> ids;
    for (uint32_t i = 0; i < 3; ++i) {
      engine::SequenceRequest req;
      req.prompt = reference_prompt();
      req.prompt.resize(5 + 6 * i);
      for (uint32_t r = 0; r < 3; ++r) req.prompt.insert(req.prompt.end(), req.prompt.begin(), req.prompt.begin() + 4);
      req.max_tokens = 14;
      req.sampling.temperature = 0;
      req.speculation = engine::Speculation::ngram;
      ids.push_back(std::move(scheduler.submit(req)).value_or_throw());
    }
    scheduler.run();
    std::vector<engine::SequenceResult> out;
    for (uint32_t id : ids) out.push_back(scheduler.result(id));
    return std::pair(out, model->expert_stats());
  };
  const auto [want, none] = run(0);
  const auto [got, stats] = run(2);
  uint64_t drafted = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "sequence " << i;
    EXPECT_EQ(got[i].finish_reason, "length");
    drafted += got[i].speculation.drafted;
  }
  EXPECT_GT(drafted, 0u) << "the prompts repeat, so prompt lookup drafts";
  EXPECT_GT(stats.total().misses, 0u);
  if (GetParam() != ops::WeightType::q8_0) return;
  // The host's experts in batched verify blocks (several tokens per expert): within rounding of resident
  // mode, and the same tokens here.
  const auto [hosted, host_stats] = run(2, 3);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(hosted[i].tokens, want[i].tokens) << "sequence " << i;
  EXPECT_GT(host_stats.total().host_pairs, 0u);
}

// Pinned experts stay in the bank: with 3 slots and 2 pinned per layer, every other expert takes the one free
// slot in turn; logits and tokens are still resident mode's, and uses of pinned experts count as hits.
TEST_P(EngineLayout, PinnedExpertsStayAndStreamWhatResidentComputes) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, GetParam());
  auto resident = load(dir, options(GetParam()));
  const auto want = std::move(generate(*resident)).value_or_throw();
  auto o = options(GetParam(), 3);
  o.pinned_experts = {{0, {1, 6}}, {1, {0, 7}}, {2, {3, 4}}};
  auto streamed = load(dir, o);
  const auto got = std::move(generate(*streamed)).value_or_throw();
  expect_close(got.prompt_logits, want.prompt_logits);
  EXPECT_EQ(got.tokens, want.tokens);
  for (const auto& l : streamed->expert_stats().layers) {
    EXPECT_EQ(l.pinned, 2u);
    EXPECT_GT(l.hits, 0u);
    EXPECT_GT(l.misses, 0u);
  }
  o.pinned_experts = {{1, {0, 1, 2}}};
  auto r = model::load_model(dir, gpu_context(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("at most 2 can be pinned"), std::string::npos) << r.error().message;
  o.pinned_experts = {{1, {9}}};
  EXPECT_FALSE(model::load_model(dir, gpu_context(), o).ok());
}

// --host-experts: the 3 highest-numbered of each layer's 8 experts computed on the host's cores, the others
// streamed through 2 slots (without and with the RAM tier, whose prefetch and uploads ahead must leave the
// host's experts alone). The host quantizes its activations to int8 (experts/host_experts.hpp) and the GPU's
// q8_0 kernels do not, so logits agree with resident mode to that rounding and greedy tokens exactly; the same
// request again gives the same logits bit for bit, whatever the bank held (each expert always runs on the
// same device).
TEST(HostExperts, HostAndBankComputeWhatResidentComputes) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::q8_0);
  auto resident = load(dir, options(ops::WeightType::q8_0));
  const auto want = std::move(generate(*resident)).value_or_throw();
  float scale = 0;
  for (float v : want.prompt_logits) scale = std::max(scale, std::abs(v));
  // The third run streams the prompt chunk's host experts through the bank (--host-max-tokens 4; the chunk
  // has 7 tokens: the first 16 of the prompt come from the prefix cache that the resident run filled), and
  // the decode steps compute them on the host.
  for (const auto [tier, max_tokens] : {std::pair(false, 16u), std::pair(true, 16u), std::pair(false, 4u)}) {
    SCOPED_TRACE(fmt::format("RAM tier {}, host max tokens {}", tier, max_tokens));
    auto o = options(ops::WeightType::q8_0, 2);
    o.host_experts = 3;
    o.host_threads = 3;
    o.host_max_tokens = max_tokens;
    if (tier) o.host_cache_bytes = uint64_t{64} << 20;
    auto streamed = load(dir, o);
    const auto got = std::move(generate(*streamed)).value_or_throw();
    ASSERT_EQ(got.prompt_logits.size(), want.prompt_logits.size());
    float worst = 0;
    for (size_t i = 0; i < got.prompt_logits.size(); ++i)
      worst = std::max(worst, std::abs(got.prompt_logits[i] - want.prompt_logits[i]));
    EXPECT_LE(worst, 0.02f * scale) << "largest logit difference, against the largest logit " << scale;
    EXPECT_EQ(got.tokens, want.tokens);
    const auto again = std::move(generate(*streamed)).value_or_throw();
    EXPECT_EQ(again.prompt_logits, got.prompt_logits) << "the second run meets a warm bank";
    EXPECT_EQ(again.tokens, got.tokens);

    const auto stats = streamed->expert_stats();
    EXPECT_EQ(stats.host_experts, 3u);
    EXPECT_EQ(stats.host_threads, 3u);
    EXPECT_EQ(stats.host_experts_bytes, 3u * 3u * stats.slab_bytes);
    EXPECT_EQ(stats.host_simd, "portable") << "q8_0 runs the portable loop";
    EXPECT_EQ(stats.prefetch, tier);
    for (const auto& l : stats.layers) {
      // Experts 5..7 are the host's: never a hit, a miss or an upload; 0..4 stream as before.
      const uint64_t streamed_uses = std::accumulate(l.uses.begin(), l.uses.begin() + 5, uint64_t{0});
      const uint64_t host_uses = std::accumulate(l.uses.begin() + 5, l.uses.end(), uint64_t{0});
      if (max_tokens == 16) {
        EXPECT_EQ(l.hits + l.misses, streamed_uses) << "layer " << l.layer;
        EXPECT_GE(l.host_pairs, host_uses) << "layer " << l.layer;
      } else {
        // The first chunk of each run loaded its host experts into the bank; the rest of the run did not.
        EXPECT_GT(l.hits + l.misses, streamed_uses) << "layer " << l.layer;
        EXPECT_LT(l.hits + l.misses, streamed_uses + host_uses) << "layer " << l.layer;
      }
      EXPECT_GT(host_uses, 0u) << "layer " << l.layer;
      EXPECT_GT(l.host_ns, 0u);
      EXPECT_EQ(l.bytes_uploaded, (l.misses - l.ahead_used + l.ahead_uploads) * stats.slab_bytes) << "layer " << l.layer;
    }
  }
}

// The host's experts are read (and checksummed) at load: a corrupt one fails the load, naming it; with the
// slab repaired the same options load.
TEST(HostExperts, LoadNamesACorruptHostSlab) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::q8_0);
  const fs::path file = dir / "expert_sidecar" / experts::layer_file_name(1);
  const auto good = read_file(file);
  corrupt_every_slab(dir / "expert_sidecar", 1);
  auto o = options(ops::WeightType::q8_0, 2);
  o.host_experts = 3;
  auto r = model::load_model(dir, gpu_context(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("--host-experts: "), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("layer 1 expert 5: checksum"), std::string::npos) << r.error().message;
  write_file(file, good);
  auto model = load(dir, o);
  EXPECT_TRUE(generate(*model, 2).ok());
}

TEST(HostExperts, RefusesMoreExpertsThanALayerHasAndFloatSidecars) {
  TempDir tmp("engine_layout");
  auto o = options(ops::WeightType::q8_0, 2);
  o.host_experts = 9;
  auto r = model::load_model(pruned(tmp, ops::WeightType::q8_0), gpu_context(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("layer 0 has 8 experts; give at most 8"), std::string::npos) << r.error().message;
  TempDir tmp2("engine_layout");
  o = options(ops::WeightType::bf16, 2);
  o.host_experts = 2;
  r = model::load_model(pruned(tmp2, ops::WeightType::bf16), gpu_context(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("computes q4 and q8_0 experts; this sidecar's are bf16"), std::string::npos)
      << r.error().message;
}

INSTANTIATE_TEST_SUITE_P(Quant, EngineLayout, ::testing::Values(ops::WeightType::bf16, ops::WeightType::q8_0),
                         [](const auto& info) { return std::string(ops::weight_type_name(info.param)); });

TEST(EngineLayoutErrors, ResidentLoadNamesACorruptSlab) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::bf16);
  corrupt_every_slab(dir / "expert_sidecar", 1);
  auto r = model::load_model(dir, gpu_context(), options(ops::WeightType::bf16));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("layer_01.bin: layer 1 expert 0: checksum"), std::string::npos)
      << r.error().message;
}

TEST(EngineLayoutErrors, ResidentRefusesExpertsThatDoNotFit) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::bf16);
  auto o = options(ops::WeightType::bf16);
  // The experts take 24 x 12 KiB = 288 KiB, the other weights ~205 KiB and the logits 32 KiB.
  o.device_memory_bytes = 450 << 10;
  auto r = model::load_model(dir, gpu_context(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::out_of_device_memory);
  EXPECT_NE(r.error().message.find("--streaming"), std::string::npos) << r.error().message;
  // The same budget streams with a bank of 2 slots per layer (72 KiB).
  o.streaming = true;
  o.expert_slots = 2;
  auto streamed = model::load_model(dir, gpu_context(), o);
  EXPECT_TRUE(streamed.ok()) << streamed.error().message;
}

TEST(EngineLayoutErrors, StreamingNeedsASidecar) {
  auto r = model::load_model(fixture(), gpu_context(), options(ops::WeightType::bf16, 2));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("mach prune"), std::string::npos) << r.error().message;
}

// The pruned fixture of `type`, what resident mode generates from it, its slab size, and streaming options
// with 2 slots per layer and a RAM tier of 24 slabs (3 layers x 8 experts: all of them).
struct RamTierSetup {
  fs::path dir;
  engine::GenerateResult want;
  uint64_t slab = 0;
  model::LoadOptions options;
};

RamTierSetup ram_tier_setup(const TempDir& tmp, ops::WeightType type) {
  RamTierSetup r;
  r.dir = pruned(tmp, type);
  auto resident = load(r.dir, options(type));
  r.want = std::move(generate(*resident)).value_or_throw();
  r.slab = resident->expert_bytes();
  r.options = options(type, 2);
  r.options.host_cache_bytes = 24 * r.slab;
  return r;
}

// The host-RAM tier between the sidecar and a bank of 2 slots: resident mode's logits and tokens; a miss found
// in RAM is copied from there (no read), so a second identical request reads nothing from the disk; a tier of
// 2 slabs (the least: one pass) evicts and still computes the same; a tier smaller than a pass is refused.
TEST_P(EngineLayout, RamTierServesMissesWithoutReadingTheDisk) {
  TempDir tmp("engine_layout");
  const RamTierSetup r = ram_tier_setup(tmp, GetParam());
  const auto& [dir, want, slab, base] = r;
  auto o = base;
  auto streamed = load(dir, o);
  const auto first = std::move(generate(*streamed)).value_or_throw();
  expect_close(first.prompt_logits, want.prompt_logits);
  EXPECT_EQ(first.tokens, want.tokens);
  const auto once = streamed->expert_stats();
  EXPECT_EQ(once.host_cache_entries, 24u);
  EXPECT_EQ(once.host_cache_bytes, 24 * slab);
  for (const auto& l : once.layers) {
    EXPECT_GT(l.ram_hits, 0u) << "layer " << l.layer << ": 8 experts through 2 slots come back";
    EXPECT_EQ(l.bytes_read, (l.misses - l.ram_hits) * slab) << "layer " << l.layer;
    // Every miss is copied once: in its pass, or ahead (predicted, on the transfer queue), and predictions the
    // step did not use were copied too.
    EXPECT_LE(l.ahead_used, l.ahead_uploads) << "layer " << l.layer;
    EXPECT_EQ(l.bytes_uploaded, (l.misses - l.ahead_used + l.ahead_uploads) * slab) << "layer " << l.layer;
    EXPECT_LE(l.bytes_read + l.prefetch_reads * slab, 8 * slab) << "layer " << l.layer << ": each slab read once";
  }
  EXPECT_TRUE(once.upload_ahead);
  const auto second = std::move(generate(*streamed)).value_or_throw();
  EXPECT_EQ(second.tokens, want.tokens);
  EXPECT_EQ(streamed->expert_stats().total().bytes_read, once.total().bytes_read);
  EXPECT_GT(streamed->expert_stats().total().misses, once.total().misses);

  o.host_cache_bytes = 2 * slab;
  auto small = load(dir, o);
  const auto got = std::move(generate(*small)).value_or_throw();
  expect_close(got.prompt_logits, want.prompt_logits);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_GT(small->expert_stats().total().bytes_read, 24 * slab) << "a 2-slab tier re-reads evicted slabs";

  o.host_cache_bytes = slab;
  auto refused = model::load_model(dir, gpu_context(), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("--host-cache-gb"), std::string::npos) << refused.error().message;
}

// Prefetch: each layer's hidden state through the next layer's router reads that layer's likely experts into
// the RAM tier ahead of need. The tokens stay resident mode's; the counters say what was predicted, how much
// of it was used and what was read; with --expert-prefetch off nothing is predicted or read ahead.
TEST_P(EngineLayout, PrefetchReadsAheadAndCountsItsAccuracy) {
  TempDir tmp("engine_layout");
  const RamTierSetup r = ram_tier_setup(tmp, GetParam());
  const auto& [dir, want, slab, base] = r;
  auto o = base;
  auto streamed = load(dir, o);
  const auto got = std::move(generate(*streamed)).value_or_throw();
  expect_close(got.prompt_logits, want.prompt_logits);
  EXPECT_EQ(got.tokens, want.tokens);
  const auto st = streamed->expert_stats();
  EXPECT_TRUE(st.prefetch);
  ASSERT_EQ(st.layers.size(), 3u);
  EXPECT_EQ(st.layers[0].prefetch_predicted, 0u) << "no layer comes before the first";
  for (const auto& l : st.layers) {
    if (l.layer > 0) EXPECT_GT(l.prefetch_predicted, 0u) << "layer " << l.layer;
    EXPECT_LE(l.prefetch_correct, l.prefetch_predicted) << "layer " << l.layer;
    EXPECT_EQ(l.prefetch_failed, 0u) << "layer " << l.layer;
    // The reads a step waited for: the misses the tier did not hold (prefetched slabs are RAM hits).
    EXPECT_EQ(l.bytes_read, (l.misses - l.ram_hits) * slab) << "layer " << l.layer;
    EXPECT_LE(l.bytes_read + l.prefetch_reads * slab, 8 * slab)
        << "layer " << l.layer << ": the tier holds all 24 slabs, none is read twice";
  }
  EXPECT_GT(st.total().prefetch_reads, 0u) << "a cold tier: predicted experts are read ahead";
  const auto json = experts::to_json(st);
  EXPECT_TRUE(json["total"].contains("prefetch_accuracy")) << json.dump();

  o.expert_prefetch = false;
  auto plain = load(dir, o);
  EXPECT_EQ(std::move(generate(*plain)).value_or_throw().tokens, want.tokens);
  const auto off = plain->expert_stats();
  EXPECT_FALSE(off.prefetch);
  EXPECT_EQ(off.total().prefetch_predicted, 0u);
  EXPECT_EQ(off.total().prefetch_reads, 0u);
  for (const auto& l : off.layers) EXPECT_EQ(l.bytes_read, (l.misses - l.ram_hits) * slab) << "layer " << l.layer;
}

// The same request twice on one streamed model: the second starts with the first's experts in the banks and
// the tier, so its layers split into other passes (hits first), yet its logits are the first's bit for bit:
// the expert outputs are summed once per layer, in slot order, whatever the passes were.
TEST_P(EngineLayout, StreamedLogitsDoNotDependOnTheBanksContents) {
  TempDir tmp("engine_layout");
  const RamTierSetup r = ram_tier_setup(tmp, GetParam());
  auto streamed = load(r.dir, r.options);
  const auto cold = std::move(generate(*streamed)).value_or_throw();
  const auto passes = streamed->expert_stats().total().passes;
  const auto warm = std::move(generate(*streamed)).value_or_throw();
  EXPECT_GT(streamed->expert_stats().total().passes, passes);
  ASSERT_EQ(cold.prompt_logits.size(), warm.prompt_logits.size());
  EXPECT_EQ(std::memcmp(cold.prompt_logits.data(), warm.prompt_logits.data(), cold.prompt_logits.size() * 4), 0)
      << "the warm run's logits differ from the cold run's";
  EXPECT_EQ(cold.tokens, warm.tokens);
}

// Uploads ahead: with prefetch on, the experts predicted for the next layer that the RAM tier holds are copied
// into its bank on the transfer queue (lavapipe has one queue: the uploads go to it as separate submissions
// that the next layer's waits on, the same code path as a device with a DMA queue) while this layer computes.
// Resident mode's logits and tokens, from a cold and from a warm tier and from a tier of the least size (the
// uploads' entries held from reuse until their upload is done); each upload counted once; with
// $MACH_UPLOAD_AHEAD=0 none, and the same tokens.
TEST_P(EngineLayout, UploadsPredictedExpertsAheadOnTheTransferQueue) {
  TempDir tmp("engine_layout");
  const RamTierSetup r = ram_tier_setup(tmp, GetParam());
  const auto& [dir, want, slab, base] = r;
  auto o = base;
  auto streamed = load(dir, o);
  for (int run = 0; run < 2; ++run) {
    const auto got = std::move(generate(*streamed)).value_or_throw();
    expect_close(got.prompt_logits, want.prompt_logits);
    EXPECT_EQ(got.tokens, want.tokens) << "run " << run;
  }
  const auto st = streamed->expert_stats();
  EXPECT_TRUE(st.upload_ahead);
  EXPECT_FALSE(st.transfer_queue.empty());
  EXPECT_EQ(st.layers[0].ahead_uploads, 0u) << "no layer predicts the first";
  EXPECT_GT(st.total().ahead_uploads, 0u);
  EXPECT_GT(st.total().ahead_used, 0u) << "the warm run's predictions are mostly right";
  for (const auto& l : st.layers) {
    EXPECT_LE(l.ahead_used, l.ahead_uploads) << "layer " << l.layer;
    EXPECT_LE(l.ahead_used, l.ram_hits) << "layer " << l.layer << ": an upload ahead copies from the tier";
    EXPECT_EQ(l.bytes_uploaded, (l.misses - l.ahead_used + l.ahead_uploads) * slab) << "layer " << l.layer;
  }
  EXPECT_EQ(experts::to_json(st)["total"]["ahead_uploads"], st.total().ahead_uploads);

  o.host_cache_bytes = 2 * slab;  // the least tier: claims wait for the uploads that read its entries
  auto small = load(dir, o);
  for (int run = 0; run < 2; ++run) EXPECT_EQ(std::move(generate(*small)).value_or_throw().tokens, want.tokens);

  const testing::ScopedEnv off("MACH_UPLOAD_AHEAD", "0");
  o.host_cache_bytes = base.host_cache_bytes;
  auto plain = load(dir, o);
  EXPECT_EQ(std::move(generate(*plain)).value_or_throw().tokens, want.tokens);
  EXPECT_FALSE(plain->expert_stats().upload_ahead);
  EXPECT_EQ(plain->expert_stats().total().ahead_uploads, 0u);
  EXPECT_GT(plain->expert_stats().total().prefetch_predicted, 0u) << "prefetch itself stays on";
}

// A corrupt slab fails the request that needs it, with or without the RAM tier (which must not keep the bad
// bytes), and once the file is whole again the next request computes resident mode's tokens.
class CorruptSlab : public ::testing::TestWithParam<bool> {};

TEST_P(CorruptSlab, FailsTheRequestAndTheNextOneWorks) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::bf16);
  auto resident = load(dir, options(ops::WeightType::bf16));
  const auto want = std::move(generate(*resident)).value_or_throw();
  auto o = options(ops::WeightType::bf16, 2);
  if (GetParam()) o.host_cache_bytes = 24 * resident->expert_bytes();
  auto streamed = load(dir, o);

  const fs::path file = dir / "expert_sidecar" / "layer_01.bin";
  const auto good = read_file(file);
  corrupt_every_slab(dir / "expert_sidecar", 1);
  auto failed = generate(*streamed);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find("layer_01.bin: layer 1 expert"), std::string::npos) << failed.error().message;
  EXPECT_NE(failed.error().message.find("checksum"), std::string::npos) << failed.error().message;
  auto stats = streamed->expert_stats();
  EXPECT_GT(stats.layers[1].errors, 0u);
  ASSERT_FALSE(stats.bad.empty());
  EXPECT_EQ(stats.bad[0].layer, 1u);

  write_file(file, good);
  const auto got = std::move(generate(*streamed)).value_or_throw();
  expect_close(got.prompt_logits, want.prompt_logits);
  EXPECT_EQ(got.tokens, want.tokens);
}

INSTANTIATE_TEST_SUITE_P(RamTier, CorruptSlab, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "with_ram_tier" : "without"; });

TEST(EngineLayoutErrors, ReadErrorFailsTheStepsSequencesAndTheNextRequestWorks) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::q8_0);
  auto resident = load(dir, options(ops::WeightType::q8_0));
  const auto want = std::move(generate(*resident)).value_or_throw();
  auto o = options(ops::WeightType::q8_0, 2);
  o.max_sequences = 2;
  auto streamed = load(dir, o);

  engine::SequenceRequest req;
  req.prompt = reference_prompt();
  req.max_tokens = static_cast<uint32_t>(want.tokens.size());
  req.sampling.temperature = 0;
  const fs::path file = dir / "expert_sidecar" / "layer_02.bin";
  const auto good = read_file(file);
  write_file(file, {});  // every read of layer 2 comes back short
  {
    engine::Scheduler scheduler(gpu_context(), *streamed, {.max_batch = 2});
    const uint32_t a = std::move(scheduler.submit(req)).value_or_throw();
    const uint32_t b = std::move(scheduler.submit(req)).value_or_throw();
    scheduler.run();
    for (uint32_t id : {a, b}) {
      EXPECT_EQ(scheduler.result(id).finish_reason, "error");
      EXPECT_NE(scheduler.result(id).error.find("layer_02.bin: layer 2 expert"), std::string::npos)
          << scheduler.result(id).error;
      EXPECT_NE(scheduler.result(id).error.find("truncated"), std::string::npos) << scheduler.result(id).error;
    }
  }
  EXPECT_GT(streamed->expert_stats().layers[2].errors, 0u);

  write_file(file, good);
  engine::Scheduler scheduler(gpu_context(), *streamed, {.max_batch = 2});
  const uint32_t a = std::move(scheduler.submit(req)).value_or_throw();
  const uint32_t b = std::move(scheduler.submit(req)).value_or_throw();
  scheduler.run();
  EXPECT_EQ(scheduler.result(a).tokens, want.tokens);
  EXPECT_EQ(scheduler.result(b).tokens, want.tokens);
  EXPECT_TRUE(scheduler.result(a).error.empty());
  EXPECT_TRUE(streamed->expert_stats().bad.empty());
}

// The coroutine path: EngineLoop co_awaits each segment through the GPU bridge. Two requests while layer 0's
// file is corrupt end with "error: ..." naming it; two more after it is repaired stream resident's tokens.
// ram_tier: the loop starts each segment's reads and polls them (EngineLoop with a RAM tier): the corrupt
// slabs' reads fail there, are dropped, and step_next reads them again and reports the error.
void engine_loop_survives_a_corrupt_slab(bool ram_tier) {
  TempDir tmp("engine_layout");
  const fs::path dir = pruned(tmp, ops::WeightType::bf16);
  auto resident = load(dir, options(ops::WeightType::bf16));
  const auto want = std::move(generate(*resident)).value_or_throw();
  auto o = options(ops::WeightType::bf16, 2);
  o.max_sequences = 2;
  o.host_cache_bytes = ram_tier ? 24 * resident->expert_bytes() : 0;
  o.expert_prefetch = false;
  auto streamed = load(dir, o);
  engine::SequenceRequest req;
  req.prompt = reference_prompt();
  req.max_tokens = static_cast<uint32_t>(want.tokens.size());
  req.sampling.temperature = 0;
  const fs::path file = dir / "expert_sidecar" / "layer_00.bin";
  const auto good = read_file(file);
  corrupt_every_slab(dir / "expert_sidecar", 0);

  asio::io_context io(1);
  runtime::GpuBridge bridge(io, gpu_context());
  engine::EngineLoop loop(io, gpu_context(), *streamed, bridge, {.max_batch = 2});
  asio::co_spawn(io, loop.run(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  struct Outcome {
    std::vector<uint32_t> tokens;
    std::string finish_reason;
  };
  std::vector<Outcome> outcomes(4);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int round = 0; round < 2; ++round) {
          if (round == 1) write_file(file, good);
          std::vector<std::shared_ptr<engine::TokenStream>> streams;
          for (int i = 0; i < 2; ++i) streams.push_back(std::move(loop.start(req)).value_or_throw());
          for (int i = 0; i < 2; ++i) {
            Outcome& out = outcomes[round * 2 + i];
            for (;;) {
              engine::TokenEvent ev = co_await streams[i]->channel.async_receive(asio::use_awaitable);
              out.tokens.insert(out.tokens.end(), ev.tokens.begin(), ev.tokens.end());
              if (ev.done) {
                out.finish_reason = ev.finish_reason;
                break;
              }
            }
          }
        }
        loop.stop();
      },
      [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(outcomes[i].finish_reason.rfind("error: ", 0), 0u) << outcomes[i].finish_reason;
    EXPECT_NE(outcomes[i].finish_reason.find("layer_00.bin: layer 0 expert"), std::string::npos);
    EXPECT_EQ(outcomes[2 + i].finish_reason, "length");
    EXPECT_EQ(outcomes[2 + i].tokens, want.tokens);
  }
  const auto total = streamed->expert_stats().total();
  EXPECT_GT(total.errors, 0u);
  if (ram_tier)
    EXPECT_GT(total.awaited_reads, 0u);
  else
    EXPECT_EQ(total.awaited_reads, 0u);
}

TEST(EngineLayoutErrors, EngineLoopStreamsAndSurvivesACorruptSlab) { engine_loop_survives_a_corrupt_slab(false); }

TEST(EngineLayoutErrors, EngineLoopAwaitingReadsSurvivesACorruptSlab) { engine_loop_survives_a_corrupt_slab(true); }

// The server's loop never blocks on the sidecar when a RAM tier is there: each segment's misses are read into
// the tier while the loop waits on a timer (EngineLoop, Scheduler::step_start_reads), so every sidecar read of
// the run is an awaited one (none from step_next), and the tokens are resident mode's.
TEST_P(EngineLayout, EngineLoopAwaitsTheReadsOfEachSegment) {
  TempDir tmp("engine_layout");
  const RamTierSetup r = ram_tier_setup(tmp, GetParam());
  auto o = r.options;
  o.expert_prefetch = false;  // every read is a demand read
  auto streamed = load(r.dir, o);
  asio::io_context io(1);
  runtime::GpuBridge bridge(io, gpu_context());
  engine::EngineLoop loop(io, gpu_context(), *streamed, bridge, {.max_batch = 1});
  asio::co_spawn(io, loop.run(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  std::vector<uint32_t> tokens;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        engine::SequenceRequest req;
        req.prompt = reference_prompt();
        req.max_tokens = static_cast<uint32_t>(r.want.tokens.size());
        req.sampling.temperature = 0;
        auto stream = std::move(loop.start(req)).value_or_throw();
        for (;;) {
          engine::TokenEvent ev = co_await stream->channel.async_receive(asio::use_awaitable);
          tokens.insert(tokens.end(), ev.tokens.begin(), ev.tokens.end());
          if (ev.done) break;
        }
        loop.stop();
      },
      [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  EXPECT_EQ(tokens, r.want.tokens);
  const auto total = streamed->expert_stats().total();
  EXPECT_GT(total.awaited_reads, 0u);
  EXPECT_EQ(total.bytes_read, total.awaited_reads * r.slab);
  EXPECT_EQ(total.errors, 0u);
  EXPECT_EQ(total.prefetch_reads, 0u);
}

// The bank's bookkeeping on its own: passes, hits first, and each policy's victim.
TEST(SlotMap, PlansResidentExpertsFirstAndSplitsIntoPasses) {
  experts::SlotMap map(8, 2, experts::make_eviction_policy(experts::EvictionKind::lru, 2));
  uint32_t hits = 0;
  const uint32_t first[] = {5, 6};
  EXPECT_EQ(map.place(first, 1, hits).size(), 2u);
  EXPECT_EQ(hits, 0u);
  const uint32_t needed[] = {1, 6, 3, 5, 0};
  const auto passes = map.plan(needed);
  ASSERT_EQ(passes.size(), 3u);
  EXPECT_EQ(passes[0], (std::vector<uint32_t>{5, 6}));
  EXPECT_EQ(passes[1], (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(passes[2], (std::vector<uint32_t>{3}));
  EXPECT_TRUE(map.place(passes[0], 2, hits).empty());
  EXPECT_EQ(hits, 2u);
}

uint32_t evicted_expert(experts::EvictionKind kind) {
  // Slot 0 holds expert 0, used at ticks 1..4; slot 1 holds expert 1, used at tick 5 only.
  experts::SlotMap map(4, 2, experts::make_eviction_policy(kind, 2));
  uint32_t hits = 0;
  const uint32_t zero[] = {0}, one[] = {1}, two[] = {2};
  for (uint64_t t = 1; t <= 4; ++t) map.place(zero, t, hits);
  map.place(one, 5, hits);
  const auto loads = map.place(two, 6, hits);
  EXPECT_EQ(loads.size(), 1u);
  return map.slot_of(0) == ops::kNoSlot ? 0 : 1;
}

TEST(SlotMap, EachPolicyPicksItsVictim) {
  EXPECT_EQ(evicted_expert(experts::EvictionKind::lru), 0u);   // least recently used
  EXPECT_EQ(evicted_expert(experts::EvictionKind::lfu), 1u);   // used once
  EXPECT_EQ(evicted_expert(experts::EvictionKind::lfru), 1u);  // 4 recent uses outweigh 1 newer one
}

TEST(SlotMap, PinnedExpertsAreNeverEvicted) {
  experts::SlotMap map(8, 3, experts::make_eviction_policy(experts::EvictionKind::lru, 3));
  EXPECT_EQ(map.pin(4).slot, 0u);
  EXPECT_EQ(map.pin(2).slot, 1u);
  uint32_t hits = 0;
  // Unpinned experts go one at a time (3 slots - 2 pinned); pinned ones join the first pass as hits.
  const uint32_t needed[] = {5, 4, 0, 2};
  const auto passes = map.plan(needed);
  ASSERT_EQ(passes.size(), 2u);
  EXPECT_EQ(passes[0], (std::vector<uint32_t>{0, 2, 4}));
  EXPECT_EQ(passes[1], (std::vector<uint32_t>{5}));
  for (uint64_t t = 1; t <= 20; ++t) {
    const uint32_t one[] = {static_cast<uint32_t>(t % 8 == 4 || t % 8 == 2 ? 0 : t % 8)};
    map.place(one, t, hits);
    EXPECT_EQ(map.slot_of(4), 0u);
    EXPECT_EQ(map.slot_of(2), 1u);
  }
}

// A step that needs more experts than its upload cap loads them in turns through the same capped slots: the
// rest of the bank (the decode working set) survives a long prompt.
TEST(SlotMap, UploadCapKeepsTheRestOfTheBank) {
  experts::SlotMap map(16, 6, experts::make_eviction_policy(experts::EvictionKind::lru, 6), 2);
  EXPECT_EQ(map.upload_cap(), 2u);
  uint32_t hits = 0;
  // Warm: experts 0..5 in the bank over three steps of two loads each.
  for (uint32_t t = 1; t <= 3; ++t) {
    const uint32_t two[] = {2 * t - 2, 2 * t - 1};
    EXPECT_EQ(map.place(two, t, hits).size(), 2u);
  }
  // The "prompt": residents 1 and 4 plus misses 8..14, at most 2 loads per pass.
  const uint32_t needed[] = {14, 1, 8, 9, 10, 4, 11, 12, 13};
  const auto passes = map.plan(needed);
  ASSERT_EQ(passes.size(), 4u);
  EXPECT_EQ(passes[0], (std::vector<uint32_t>{1, 4, 8, 9}));
  EXPECT_EQ(passes[1], (std::vector<uint32_t>{10, 11}));
  EXPECT_EQ(passes[2], (std::vector<uint32_t>{12, 13}));
  EXPECT_EQ(passes[3], (std::vector<uint32_t>{14}));
  std::set<uint32_t> loaded_slots;
  for (const auto& pass : passes) {
    const auto loads = map.place(pass, 4, hits);
    EXPECT_LE(loads.size(), 2u);
    for (const auto& l : loads) loaded_slots.insert(l.slot);
    for (uint32_t e : pass) EXPECT_NE(map.slot_of(e), ops::kNoSlot) << "pass expert " << e;
  }
  EXPECT_EQ(loaded_slots.size(), 2u);  // two slots took all seven loads
  // Four of the six warm experts survive: the two residents, and two the cap left alone.
  int survivors = 0;
  for (uint32_t e = 0; e < 6; ++e) survivors += map.slot_of(e) != ops::kNoSlot;
  EXPECT_EQ(survivors, 4);
  EXPECT_NE(map.slot_of(1), ops::kNoSlot);
  EXPECT_NE(map.slot_of(4), ops::kNoSlot);
  // The next step may load two slots again, wherever the policy says.
  const uint32_t next[] = {15};
  EXPECT_EQ(map.place(next, 5, hits).size(), 1u);
  // Without a cap the same prompt would have used every unlocked slot.
  experts::SlotMap uncapped(16, 6, experts::make_eviction_policy(experts::EvictionKind::lru, 6));
  EXPECT_EQ(uncapped.upload_cap(), 6u);
  EXPECT_EQ(uncapped.plan(needed).size(), 2u);
}

// The expert profile: per layer the most used experts (ties to the lower id), as --pin-experts reads them.
TEST(ExpertProfile, HottestFirstAndReadBackAsAPinList) {
  experts::ExpertStats stats;
  stats.layers.push_back({.layer = 3, .uses = {5, 0, 9, 5, 1}});
  stats.layers.push_back({.layer = 7, .uses = {0, 0, 0}});
  const std::string text = experts::expert_profile_jsonl(stats, 3);
  EXPECT_EQ(text,
            "{\"layer\":3,\"experts\":[2,0,3],\"uses\":[9,5,5]}\n"
            "{\"layer\":7,\"experts\":[],\"uses\":[]}\n");
  EXPECT_NE(experts::expert_profile_jsonl(stats, 10).find("\"experts\":[2,0,3,4],"), std::string::npos);  // no unused
  TempDir tmp("expert_profile");
  const auto path = tmp.path() / "profile.jsonl";
  ASSERT_TRUE(experts::write_expert_profile(path, stats, 2));
  const auto plan = std::move(experts::parse_keep_plan(path, "--pin-experts")).value_or_throw();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan.at(3), (std::vector<uint32_t>{0, 2}));
  EXPECT_TRUE(plan.at(7).empty());
}

TEST(SlotMap, LfruForgetsOldFrequency) {
  // Expert 0: 4 uses long ago; expert 1: 1 use now. After many half-lives expert 0's score fades below 1.
  experts::SlotMap map(4, 2, experts::make_eviction_policy(experts::EvictionKind::lfru, 2));
  uint32_t hits = 0;
  const uint32_t zero[] = {0}, one[] = {1}, two[] = {2};
  for (uint64_t t = 1; t <= 4; ++t) map.place(zero, t, hits);
  map.place(one, 100, hits);
  map.place(two, 101, hits);
  EXPECT_EQ(map.slot_of(0), ops::kNoSlot);
  EXPECT_NE(map.slot_of(1), ops::kNoSlot);
}

}  // namespace
}  // namespace mach::test
