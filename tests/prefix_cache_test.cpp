// The prefix cache on the tiny qwen3_moe fixture: restores from L1 and from L2 compute only the new tokens
// and give a cold run's logits and tokens; L1 LRU and L2 value eviction; corrupt, truncated and foreign L2
// files are removed, never loaded.
#include "engine/prefix_cache.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>

#include "engine/generator.hpp"
#include "engine/prefix_warm.hpp"
#include "gpu_fixture.hpp"
#include "model/model.hpp"

namespace mach::test {
namespace {

namespace fs = std::filesystem;
using engine::PrefixCache;

constexpr uint32_t kBlock = 16;

fs::path fixture() {
  const char* env = std::getenv("MACH_SOURCE_DIR");
  return fs::path(env && *env ? env : MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
}

std::vector<uint32_t> random_tokens(uint32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> t(n);
  for (auto& id : t) id = rng() % 512;
  return t;
}

std::vector<uint32_t> concat(std::vector<uint32_t> a, const std::vector<uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class PrefixCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::LoadOptions options;
    options.max_context = 256;
    options.max_step_tokens = kBlock;  // chunks line up with blocks: restored and cold runs take equal steps
    options.kv_block_size = kBlock;
    model_ = std::move(model::load_model(fixture(), gpu_context(), options)).value_or_throw().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    const char* test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() / fmt::format("mach_prefix_test_{}_{}", ::getpid(), test);
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<PrefixCache> make_cache(uint64_t l1_bytes, uint64_t l2_bytes, bool disk = true,
                                          std::string fingerprint = "") {
    engine::PrefixCacheOptions o;
    o.l1_bytes = l1_bytes;
    o.l2_bytes = l2_bytes;
    if (disk) o.cache_dir = dir_;
    if (fingerprint.empty()) fingerprint = model_->fingerprint();
    return std::move(PrefixCache::create(model_->kv_cache(), fingerprint, o)).value_or_throw();
  }

  static engine::GenerateResult run(std::span<const uint32_t> prompt, PrefixCache* cache, uint32_t max_tokens = 8,
                                    model::Model* model = model_) {
    engine::GenerateOptions o;
    o.sampling.temperature = 0;
    o.max_tokens = max_tokens;
    o.prompt_logits = true;
    o.prefix_cache = cache;
    return std::move(engine::generate(gpu_context(), *model, prompt, o)).value_or_throw();
  }

  // The warm run computed only positions warm.cached_tokens.. and matches the cold run there.
  static void expect_same_as_cold(const engine::GenerateResult& warm, const engine::GenerateResult& cold,
                                  float tolerance = 1e-6f) {
    const uint64_t V = model_->config().vocab_size;
    ASSERT_EQ(warm.prompt_logits.size() + uint64_t{warm.cached_tokens} * V, cold.prompt_logits.size());
    float max_diff = 0;
    for (size_t i = 0; i < warm.prompt_logits.size(); ++i)
      max_diff = std::max(max_diff, std::fabs(warm.prompt_logits[i] - cold.prompt_logits[warm.cached_tokens * V + i]));
    EXPECT_LT(max_diff, tolerance);
    EXPECT_EQ(warm.tokens, cold.tokens);
  }

  // Host bytes of one cached block in L1: K and V of every layer plus its token ids.
  static uint64_t l1_block_bytes() {
    const auto& kv = model_->kv_cache();
    uint64_t bytes = kBlock * 4;
    for (uint32_t l = 0; l < kv.num_layers(); ++l) bytes += 2 * kv.layout(l).block_bytes();
    return bytes;
  }

  // Bytes of an L2 file of `blocks` blocks (docs/formats.md).
  static uint64_t l2_file_bytes(uint32_t blocks) {
    return 72 + 16ull * blocks + model_->fingerprint().size() + 8 + blocks * l1_block_bytes();
  }

  static model::Model* model_;
  fs::path dir_;
};

model::Model* PrefixCacheTest::model_ = nullptr;

TEST(ChainHash, KeysNameWholePrefixes) {
  const auto a = random_tokens(40, 1);
  auto b = a;
  b[3] ^= 1;
  const auto ka = engine::chain_keys(a, kBlock), kb = engine::chain_keys(b, kBlock);
  ASSERT_EQ(ka.size(), 2u);  // the partial third block has no key
  EXPECT_NE(ka[0], kb[0]);
  EXPECT_NE(ka[1], kb[1]);  // a change in block 0 changes every later key
  EXPECT_EQ(ka, engine::chain_keys(a, kBlock));
  EXPECT_EQ(ka[1], engine::chain_key(ka[0], std::span(a).subspan(kBlock, kBlock)));
  EXPECT_NE(engine::chain_key(engine::kRootKey, std::span(a).subspan(kBlock, kBlock)), ka[1]);
}

TEST_F(PrefixCacheTest, RestoresFromL1AndL2WithColdLogits) {
  const auto prefix = random_tokens(112, 7);  // 7 blocks
  const auto first = concat(prefix, random_tokens(20, 8));
  const auto second = concat(prefix, random_tokens(23, 9));
  const auto third = concat(prefix, random_tokens(17, 10));
  const auto cold_second = run(second, nullptr);
  const auto cold_third = run(third, nullptr);

  auto cache = make_cache(64 << 20, 64 << 20);
  EXPECT_EQ(run(first, cache.get()).cached_tokens, 0u);
  EXPECT_EQ(cache->stats().stored_blocks, 8u);  // 132 tokens: 8 full blocks

  const auto from_l1 = run(second, cache.get());
  EXPECT_EQ(from_l1.cached_tokens, 112u);
  EXPECT_EQ(cache->stats().l1_hits, 7u);
  EXPECT_EQ(cache->stats().hit_tokens, 112u);
  expect_same_as_cold(from_l1, cold_second);

  cache->clear_l1();
  const auto from_l2 = run(third, cache.get());
  EXPECT_EQ(from_l2.cached_tokens, 112u);
  EXPECT_EQ(cache->stats().l2_hits, 7u);
  EXPECT_EQ(cache->stats().l1_hits, 7u);
  expect_same_as_cold(from_l2, cold_third);

  // A new process: L2 only, indexed from the folder. The last run stored third's 8th block as well.
  auto restarted = make_cache(64 << 20, 64 << 20);
  const auto after_restart = run(third, restarted.get());
  EXPECT_EQ(after_restart.cached_tokens, 128u);
  EXPECT_EQ(restarted->stats().l2_hits, 8u);
  EXPECT_EQ(restarted->stats().l2_files, 3u);  // first's 8 blocks, then second's and third's 8th block
  EXPECT_EQ(restarted->stats().l2_rejected, 0u);
  expect_same_as_cold(after_restart, cold_third);
  EXPECT_EQ(nlohmann::json(restarted->stats()).at("l2_hits"), 8);
}

TEST_F(PrefixCacheTest, RestoreAlwaysComputesTheLastPromptToken) {
  const auto prompt = random_tokens(64, 11);  // exactly 4 blocks
  const auto cold = run(prompt, nullptr);
  auto cache = make_cache(64 << 20, 0, false);
  run(prompt, cache.get());
  const auto warm = run(prompt, cache.get());
  EXPECT_EQ(warm.cached_tokens, 48u);  // the 4th block holds the last token, whose logits are needed
  expect_same_as_cold(warm, cold);
}

// With steps longer than a block the first step after a restored prefix has fewer tokens than the cold run's
// step over the same positions. The results still match where the ops compute each token's row independently
// of how many rows the step has, which this checks on the device at hand.
TEST_F(PrefixCacheTest, LongerStepsThanBlocksKeepColdLogits) {
  model::LoadOptions options;
  options.max_context = 256;
  options.max_step_tokens = 64;
  options.kv_block_size = kBlock;
  auto model = std::move(model::load_model(fixture(), gpu_context(), options)).value_or_throw();
  const auto prefix = random_tokens(112, 14);
  const auto prompt = concat(prefix, random_tokens(30, 15));
  const auto cold = run(prompt, nullptr, 8, model.get());
  auto cache = make_cache(64 << 20, 0, false);  // the same shapes and fingerprint as model_'s
  run(concat(prefix, random_tokens(3, 16)), cache.get(), 1, model.get());
  const auto warm = run(prompt, cache.get(), 8, model.get());
  EXPECT_EQ(warm.cached_tokens, 112u);
  // The warm and cold runs cut the prompt into steps of other sizes here, and a step of at most 32 tokens
  // takes the matrix-vector kernels where a longer one takes the tiled kernels: their sums round differently
  // (~1e-4 on these logits), far below what a wrong restored block would change.
  expect_same_as_cold(warm, cold, 5e-4f);
}

TEST_F(PrefixCacheTest, WarmPrefixStoresAheadOfRequests) {
  const auto prefix = random_tokens(120, 12);
  const auto prompt = concat(prefix, random_tokens(9, 13));
  const auto cold = run(prompt, nullptr);
  auto cache = make_cache(64 << 20, 0, false);
  EXPECT_EQ(std::move(engine::warm_prefix(gpu_context(), *model_, *cache, prefix)).value_or_throw(), 112u);
  const auto warm = run(prompt, cache.get());
  EXPECT_EQ(warm.cached_tokens, 112u);
  expect_same_as_cold(warm, cold);
}

TEST_F(PrefixCacheTest, L1EvictsLeastRecentlyUsedDeepestFirst) {
  const auto a = random_tokens(129, 21), b = random_tokens(129, 22), c = random_tokens(129, 23);  // 8 blocks each
  auto cache = make_cache(12 * l1_block_bytes(), 0, false);
  run(a, cache.get(), 1);
  run(b, cache.get(), 1);
  EXPECT_EQ(cache->stats().l1_evictions, 4u);
  EXPECT_EQ(cache->lookup(a), 64u);  // a lost its tail, not its head
  EXPECT_EQ(cache->lookup(b), 128u);

  auto& kv = model_->kv_cache();
  ASSERT_TRUE(kv.reserve(0, 129));
  EXPECT_EQ(cache->restore(gpu_context(), kv, 0, a), 64u);  // a's head is now the most recently used
  kv.release(0);
  run(c, cache.get(), 1);
  EXPECT_EQ(cache->stats().l1_evictions, 12u);
  EXPECT_EQ(cache->lookup(b), 0u);
  EXPECT_EQ(cache->lookup(a), 64u);
  EXPECT_EQ(cache->lookup(c), 128u);
  EXPECT_LE(cache->stats().l1_bytes, 12 * l1_block_bytes());
}

TEST_F(PrefixCacheTest, L2EvictsByValue) {
  const auto a = random_tokens(129, 31), b = random_tokens(129, 32), c = random_tokens(129, 33);
  auto cache = make_cache(64 << 20, l2_file_bytes(8) * 5 / 2);
  run(a, cache.get(), 1);
  run(b, cache.get(), 1);
  ASSERT_EQ(cache->stats().l2_files, 2u);
  EXPECT_EQ(cache->stats().l2_bytes, 2 * l2_file_bytes(8));
  cache->clear_l1();
  EXPECT_EQ(run(a, cache.get(), 1).cached_tokens, 128u);  // one hit on a's file
  const auto b_file = *cache->disk()->path_of(engine::chain_keys(b, kBlock)[0]);
  run(c, cache.get(), 1);  // b's file has no hits: the least value
  EXPECT_EQ(cache->stats().l2_evictions, 1u);
  EXPECT_EQ(cache->stats().l2_files, 2u);
  EXPECT_FALSE(fs::exists(b_file));
  cache->clear_l1();
  EXPECT_EQ(cache->lookup(a), 128u);
  EXPECT_EQ(cache->lookup(b), 0u);
  EXPECT_EQ(cache->lookup(c), 128u);
}

// `mach generate --prefix-cache`: one process per prompt, so the second run's hit comes from disk.
TEST_F(PrefixCacheTest, CommandLineRestoresFromDisk) {
  const auto prompt = random_tokens(122, 17);
  auto generate = [&](std::span<const uint32_t> ids, bool cache) {
    std::string cmd = fmt::format("{}/mach generate {} --prompt-ids {} --temperature 0 --max-tokens 4 --json "
                                  "--step-tokens 16", MACH_BINARY_DIR, fixture().string(), fmt::join(ids, ","));
    if (cache) cmd += " --prefix-cache --cache-dir " + dir_.string();
    FILE* out = ::popen(cmd.c_str(), "r");
    std::string text;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, out)) text.append(buf, n);
    EXPECT_EQ(::pclose(out), 0) << cmd;
    return nlohmann::json::parse(text);
  };
  const auto cold = generate(prompt, false);
  EXPECT_EQ(generate(std::span(prompt).first(115), true).at("cached_tokens"), 0);
  const auto warm = generate(prompt, true);
  EXPECT_EQ(warm.at("cached_tokens"), 112);
  EXPECT_EQ(warm.at("prefix_cache").at("l2_hits"), 7);
  EXPECT_EQ(warm.at("tokens"), cold.at("tokens"));
}

// Writes the prefix's file with one cache, damages it, and checks that a fresh cache (a new process) removes
// it and computes the prompt from scratch with a cold run's results.
class DamagedL2File : public PrefixCacheTest {
 protected:
  void check(const std::function<void(const fs::path&)>& damage, bool caught_at_index) {
    const auto prefix = random_tokens(112, 41);
    const auto prompt = concat(prefix, random_tokens(21, 42));
    const auto cold = run(prompt, nullptr);
    fs::path file;
    {
      auto writer = make_cache(64 << 20, 64 << 20);
      run(concat(prefix, random_tokens(5, 43)), writer.get(), 1);
      file = *writer->disk()->path_of(engine::chain_keys(prefix, kBlock)[0]);
    }
    ASSERT_TRUE(fs::exists(file));
    damage(file);
    auto cache = make_cache(64 << 20, 64 << 20);
    EXPECT_EQ(cache->stats().l2_rejected, caught_at_index ? 1u : 0u);
    auto& kv = model_->kv_cache();
    ASSERT_TRUE(kv.reserve(0, static_cast<uint32_t>(prompt.size())));
    EXPECT_EQ(cache->restore(gpu_context(), kv, 0, prompt), 0u);
    kv.release(0);
    EXPECT_EQ(cache->stats().l2_rejected, 1u);
    EXPECT_EQ(cache->stats().l2_hits, 0u);
    EXPECT_FALSE(fs::exists(file));

    const auto warm = run(prompt, cache.get());  // computes everything and writes a sound file again
    EXPECT_EQ(warm.cached_tokens, 0u);
    expect_same_as_cold(warm, cold);
    auto restarted = make_cache(64 << 20, 64 << 20);
    EXPECT_EQ(run(prompt, restarted.get()).cached_tokens, 128u);
    EXPECT_EQ(restarted->stats().l2_rejected, 0u);
  }

  static void flip_byte(const fs::path& file, std::streamoff at) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(at);
    char c = 0;
    f.get(c);
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x10));
  }
};

TEST_F(DamagedL2File, FlippedPayloadByteIsRemovedAtLoad) {
  check([](const fs::path& f) { flip_byte(f, static_cast<std::streamoff>(fs::file_size(f)) - 100); }, false);
}

TEST_F(DamagedL2File, FlippedHeaderByteIsRemovedAtIndex) {
  check([](const fs::path& f) { flip_byte(f, 60); }, true);
}

TEST_F(DamagedL2File, TruncatedFileIsRemovedAtIndex) {
  check([](const fs::path& f) { fs::resize_file(f, fs::file_size(f) - 4096); }, true);
}

TEST_F(DamagedL2File, OtherModelsFileIsRemovedAtIndex) {
  check(
      [this](const fs::path& f) {
        // The same blocks written by a cache of another model, dropped into this model's folder.
        auto other = make_cache(64 << 20, 64 << 20, true, "another model");
        run(concat(random_tokens(112, 41), random_tokens(5, 43)), other.get(), 1);
        const auto foreign = *other->disk()->path_of(engine::chain_keys(random_tokens(112, 41), kBlock)[0]);
        fs::copy_file(foreign, f, fs::copy_options::overwrite_existing);
        fs::remove_all(foreign.parent_path());
      },
      true);
}

}  // namespace
}  // namespace mach::test
