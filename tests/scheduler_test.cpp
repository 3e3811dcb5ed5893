// Continuous batching and speculative decoding on the tiny qwen3_moe fixture: batching and speculation
// never change what a sequence generates.
#include "engine/scheduler.hpp"

#include "engine/prefix_cache.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "gpu_fixture.hpp"
#include "model/model.hpp"

namespace mach::engine {
namespace {

namespace fs = std::filesystem;

fs::path fixture() {
  const char* env = std::getenv("MACH_SOURCE_DIR");
  return fs::path(env && *env ? env : MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
}

std::unique_ptr<model::Model> load(uint32_t sequences, uint64_t kv_bytes = 0) {
  model::LoadOptions options;
  options.max_context = 160;
  options.max_sequences = sequences;
  options.max_step_tokens = 64;
  options.kv_cache_bytes = kv_bytes;
  return std::move(model::load_model(fixture(), test::gpu_context(), options)).value_or_throw();
}

std::vector<SequenceResult> run_all(model::Model& model, const std::vector<SequenceRequest>& requests,
                                    uint32_t max_batch, PrefixCache* cache = nullptr, unsigned sample_threads = 0) {
  Scheduler scheduler(test::gpu_context(), model,
                      {.max_batch = max_batch, .prefix_cache = cache, .sample_threads = sample_threads});
  std::vector<uint32_t> ids;
  for (const auto& r : requests) ids.push_back(std::move(scheduler.submit(r)).value_or_throw());
  scheduler.run();
  std::vector<SequenceResult> out;
  for (uint32_t id : ids) out.push_back(scheduler.result(id));
  return out;
}

std::vector<uint32_t> random_prompt(std::mt19937& gen, size_t n) {
  std::vector<uint32_t> p(n);
  for (auto& t : p) t = gen() % 512;
  return p;
}

// Logprobs are log-softmax of the raw logits: under greedy decoding the chosen token is the most likely one,
// the top list is sorted and, with the whole vocabulary, its probabilities sum to 1.
TEST(Scheduler, LogprobsDescribeTheRawDistribution) {
  auto model = load(2);
  SequenceRequest r;
  r.prompt = {5, 17, 99, 3};
  r.max_tokens = 6;
  r.sampling.temperature = 0;
  r.logprobs = true;
  r.top_logprobs = kMaxTopLogprobs;
  const auto with = run_all(*model, {r}, 2)[0];
  r.logprobs = false;
  const auto without = run_all(*model, {r}, 2)[0];
  EXPECT_EQ(with.tokens, without.tokens);
  ASSERT_EQ(with.logprobs.size(), with.tokens.size());
  EXPECT_TRUE(without.logprobs.empty());
  for (size_t i = 0; i < with.tokens.size(); ++i) {
    const auto& lp = with.logprobs[i];
    ASSERT_EQ(lp.top.size(), kMaxTopLogprobs);
    EXPECT_EQ(lp.top[0].first, with.tokens[i]);
    EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
    EXPECT_LE(lp.logprob, 0.0f);
    for (size_t k = 1; k < lp.top.size(); ++k) EXPECT_GE(lp.top[k - 1].second, lp.top[k].second);
  }
  // token_logprob on a small row against the definition.
  const std::vector<float> row = {1.0f, 3.0f, 2.0f, -1.0f};
  const auto t = token_logprob(row, 2, 4);
  double z = 0;
  for (float x : row) z += std::exp(x);
  EXPECT_NEAR(t.logprob, 2.0 - std::log(z), 1e-6);
  ASSERT_EQ(t.top.size(), 4u);
  EXPECT_EQ(t.top[0].first, 1u);
  EXPECT_EQ(t.top[3].first, 3u);
  double sum = 0;
  for (const auto& [id, l] : t.top) sum += std::exp(l);
  EXPECT_NEAR(sum, 1.0, 1e-6);
}

// A server releases finished sequences; their ids stay unique and results of others stay readable.
TEST(Scheduler, ReleasedSequencesAreForgotten) {
  auto model = load(2);
  Scheduler scheduler(test::gpu_context(), *model, {.max_batch = 2});
  SequenceRequest r;
  r.prompt = {1, 2, 3};
  r.max_tokens = 3;
  r.sampling.temperature = 0;
  const uint32_t a = std::move(scheduler.submit(r)).value_or_throw();
  const uint32_t b = std::move(scheduler.submit(r)).value_or_throw();
  scheduler.run();
  const auto tokens_b = scheduler.result(b).tokens;
  scheduler.release(a);
  EXPECT_THROW((void)scheduler.result(a), Exception);
  EXPECT_EQ(scheduler.result(b).tokens, tokens_b);
  const uint32_t c = std::move(scheduler.submit(r)).value_or_throw();
  EXPECT_NE(c, a);
  EXPECT_EQ(scheduler.waiting(), 1u);
  scheduler.run();
  EXPECT_EQ(scheduler.result(c).tokens, tokens_b);
  EXPECT_EQ(scheduler.running(), 0u);
}

// A request that needs more KV blocks than the whole cache holds fails instead of waiting forever.
TEST(Scheduler, UnadmittableRequestFails) {
  auto model = load(1, /*kv_bytes=*/2 * 6144);  // two blocks of 16 tokens (3 layers x K,V x 2 heads x 16 x 16 x f16)
  Scheduler scheduler(test::gpu_context(), *model, {.max_batch = 1});
  SequenceRequest r;
  r.prompt = std::vector<uint32_t>(40, 7);
  r.max_tokens = 8;
  const uint32_t id = std::move(scheduler.submit(r)).value_or_throw();
  EXPECT_FALSE(scheduler.step_begin().has_value());
  EXPECT_EQ(scheduler.fail_unadmittable(), 1u);
  EXPECT_EQ(scheduler.result(id).finish_reason, "error");
}

TEST(Scheduler, EightConcurrentSequencesGenerateWhatEachGeneratesAlone) {
  auto model = load(8);
  std::mt19937 gen(11);
  std::vector<SequenceRequest> requests;
  for (uint32_t i = 0; i < 8; ++i) {
    SequenceRequest r;
    r.prompt = random_prompt(gen, 5 + 7 * i);  // 5..54 tokens: prefill chunks of different lengths
    r.max_tokens = 10 + i;
    if (i % 2 == 1) r.sampling = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 100 + i};
    else r.sampling.temperature = 0;
    requests.push_back(r);
  }
  const auto together = run_all(*model, requests, 8);
  for (uint32_t i = 0; i < 8; ++i) {
    const auto alone = run_all(*model, {requests[i]}, 1);
    EXPECT_EQ(together[i].tokens, alone[0].tokens) << "sequence " << i;
    EXPECT_EQ(together[i].tokens.size(), requests[i].max_tokens);
  }
}

TEST(Scheduler, MoreSequencesThanSlotsQueueAndAllFinish) {
  auto model = load(2);
  std::mt19937 gen(5);
  std::vector<SequenceRequest> requests(5);
  for (auto& r : requests) {
    r.prompt = random_prompt(gen, 9);
    r.max_tokens = 6;
    r.sampling.temperature = 0;
  }
  const auto results = run_all(*model, requests, 2);
  for (const auto& r : results) {
    EXPECT_EQ(r.tokens.size(), 6u);
    EXPECT_EQ(r.finish_reason, "length");
  }
}

TEST(Scheduler, ASmallKvBudgetQueuesSequencesUntilBlocksFree) {
  // The fixture's 16-token block is 3 layers x K,V x 2 kv heads x 16 x 16 dims x 2 bytes = 6144 bytes; each
  // sequence below needs 2 blocks, and 3 blocks fit: one sequence at a time although 3 slots exist.
  auto model = load(3, 3 * 6144);
  EXPECT_EQ(model->kv_cache().total_blocks(), 3u);
  std::mt19937 gen(9);
  std::vector<SequenceRequest> requests(3);
  for (auto& r : requests) {
    r.prompt = random_prompt(gen, 20);
    r.max_tokens = 8;
    r.sampling.temperature = 0;
  }
  const auto results = run_all(*model, requests, 3);
  auto roomy = load(1);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(results[i].finish_reason, "length");
    EXPECT_EQ(results[i].tokens, run_all(*roomy, {requests[i]}, 1)[0].tokens) << i;
  }
}

TEST(Scheduler, AKvBudgetBelowOneBlockIsALoadError) {
  EXPECT_THROW(load(1, 1000), Exception);
}

TEST(Scheduler, PrefixCacheSkipsASharedPromptPrefix) {
  auto model = load(2);
  PrefixCacheOptions po;  // no cache_dir: L1 only
  auto cache = std::move(PrefixCache::create(model->kv_cache(), model->fingerprint(), po)).value_or_throw();
  std::mt19937 gen(21);
  const auto shared = random_prompt(gen, 112);  // 7 blocks of 16
  SequenceRequest a, b;
  a.prompt = shared;
  b.prompt = shared;
  for (uint32_t t : random_prompt(gen, 5)) a.prompt.push_back(t);
  for (uint32_t t : random_prompt(gen, 9)) b.prompt.push_back(t);
  a.max_tokens = b.max_tokens = 8;
  a.sampling.temperature = b.sampling.temperature = 0;
  const auto first = run_all(*model, {a}, 2, cache.get());
  EXPECT_EQ(first[0].cached_tokens, 0u);
  const auto second = run_all(*model, {b}, 2, cache.get());
  EXPECT_EQ(second[0].cached_tokens, 112u) << "the shared blocks come from the cache";
  EXPECT_EQ(second[0].tokens, run_all(*model, {b}, 2)[0].tokens) << "same tokens as a cold run";
}

TEST(Scheduler, StopTokenEndsTheSequenceAndIsKept) {
  auto model = load(1);
  SequenceRequest r;
  r.prompt = {324, 179, 211, 128, 327, 144, 451};  // the fixture's prompt: greedy 253, 253, 38, ...
  r.sampling.temperature = 0;
  r.max_tokens = 12;
  r.stop_ids = {38};
  const auto result = run_all(*model, {r}, 1)[0];
  EXPECT_EQ(result.tokens, (std::vector<uint32_t>{253, 253, 38}));
  EXPECT_EQ(result.finish_reason, "stop");
}

TEST(Speculation, GreedyOutputIsIdenticalWithAndWithoutDrafts) {
  auto model = load(1);
  // A repetitive prompt: the continuation copies it often, so prompt lookup drafts get accepted.
  SequenceRequest r;
  for (int i = 0; i < 6; ++i)
    for (uint32_t t : {41u, 42u, 43u, 44u, 45u, 46u, 47u}) r.prompt.push_back(t);
  r.sampling.temperature = 0;
  r.max_tokens = 64;
  const auto plain = run_all(*model, {r}, 1)[0];
  for (Speculation s : {Speculation::ngram, Speculation::summarization, Speculation::classification}) {
    SequenceRequest spec = r;
    spec.speculation = s;
    const auto drafted = run_all(*model, {spec}, 1)[0];
    EXPECT_EQ(drafted.tokens, plain.tokens) << speculation_name(s);
    EXPECT_GT(drafted.speculation.drafted, 0u) << speculation_name(s);
    EXPECT_GT(drafted.speculation.accepted, 0u) << speculation_name(s);
    EXPECT_LT(drafted.speculation.steps, plain.speculation.steps) << speculation_name(s);
  }
}

TEST(Speculation, BatchedSequencesWithDraftsMatchAlone) {
  auto model = load(4);
  std::vector<SequenceRequest> requests;
  for (uint32_t i = 0; i < 4; ++i) {
    SequenceRequest r;
    for (int rep = 0; rep < 4; ++rep)
      for (uint32_t t = 0; t < 5 + i; ++t) r.prompt.push_back(100 + 13 * i + t);
    r.sampling.temperature = 0;
    r.max_tokens = 20;
    r.speculation = Speculation::ngram;
    r.draft_max = 1;  // 4 sequences x 2 tokens stay within the matrix-vector kernels
    requests.push_back(r);
  }
  const auto together = run_all(*model, requests, 4);
  for (uint32_t i = 0; i < 4; ++i) {
    SequenceRequest plain = requests[i];
    plain.speculation = Speculation::none;
    EXPECT_EQ(together[i].tokens, run_all(*model, {plain}, 1)[0].tokens) << "sequence " << i;
  }
}

// The step's sequences sample side by side on several threads: each must still draw what it draws alone,
// with drafts, penalties that see the accepted drafts, and log-probabilities.
TEST(Speculation, SampledBatchWithDraftsAndLogprobsMatchesAlone) {
  auto model = load(4);
  std::vector<SequenceRequest> requests;
  for (uint32_t i = 0; i < 4; ++i) {
    SequenceRequest r;
    for (int rep = 0; rep < 4; ++rep)
      for (uint32_t t = 0; t < 5 + i; ++t) r.prompt.push_back(200 + 11 * i + t);
    r.sampling = {.temperature = 0.7f, .top_p = 0.9f, .presence_penalty = 0.3f, .seed = 40 + i};
    r.max_tokens = 16;
    r.speculation = Speculation::ngram;
    r.draft_max = 1;
    r.logprobs = true;
    r.top_logprobs = 3;
    requests.push_back(r);
  }
  const auto together = run_all(*model, requests, 4, nullptr, /*sample_threads=*/4);
  uint32_t drafted = 0;
  for (uint32_t i = 0; i < 4; ++i) {
    const auto alone = run_all(*model, {requests[i]}, 1, nullptr, 1)[0];
    EXPECT_EQ(together[i].tokens, alone.tokens) << "sequence " << i;
    EXPECT_EQ(together[i].speculation.accepted, alone.speculation.accepted) << "sequence " << i;
    ASSERT_EQ(together[i].logprobs.size(), together[i].tokens.size());
    ASSERT_EQ(alone.logprobs.size(), alone.tokens.size());
    for (size_t t = 0; t < std::min(alone.logprobs.size(), together[i].logprobs.size()); ++t) {
      EXPECT_NEAR(together[i].logprobs[t].logprob, alone.logprobs[t].logprob, 1e-3) << i << " " << t;
      EXPECT_EQ(together[i].logprobs[t].top.size(), 3u);
    }
    drafted += together[i].speculation.drafted;
  }
  EXPECT_GT(drafted, 0u);
}

// JSON mode on a random model: whatever it would say, every sequence's text stays a prefix of a JSON object,
// and one whose object closed finished with "stop" and parses. Drafts are off for it.
TEST(Scheduler, JsonModeKeepsTheTextAJsonObjectPrefix) {
  auto model = load(4);
  // A byte-level vocabulary for the fixture's 512 ids: ids below 256 are their byte, the rest JSON-ish pieces.
  const std::vector<std::string> pieces = {"{\"", "\":", "\",", "\"}", "},", "[", "]", "true", "null", "12", "0.5",
                                           " \"", "ab", "\\n", "\xC3\xA9", ":{", "}", ", ", "-3", "e+2"};
  std::vector<std::string> bytes;
  for (uint32_t id = 0; id < 512; ++id)
    bytes.push_back(id < 256 ? std::string(1, static_cast<char>(id)) : pieces[id % pieces.size()] + pieces[(id / 7) % pieces.size()]);
  const uint32_t stop = 511;
  const auto table = std::make_shared<const JsonTokenTable>(bytes, std::vector<uint32_t>{stop});
  std::vector<SequenceRequest> requests;
  for (uint32_t i = 0; i < 4; ++i) {
    SequenceRequest r;
    r.prompt = {5, 17, 99, 3, static_cast<uint32_t>(40 + i)};
    r.max_tokens = 96;
    r.stop_ids = {stop};
    if (i > 0) r.sampling = {.temperature = 1.0f, .top_p = i == 2 ? 0.9f : 1.0f, .seed = 9 + i};
    else r.sampling.temperature = 0;
    // The last one favours the one-byte '{' and '}' (through logit_bias): its object closes, so it must finish
    // with "stop".
    if (i == 3) r.sampling.logit_bias = {{'{', 30.0f}, {'}', 30.0f}};
    r.speculation = Speculation::ngram;
    r.json_object = table;
    requests.push_back(r);
  }
  const auto constrained = run_all(*model, requests, 4);
  EXPECT_EQ(constrained[3].finish_reason, "stop");
  int free_prefixes = 0;
  for (uint32_t i = 0; i < 4; ++i) {
    const auto& res = constrained[i];
    std::string text;
    for (uint32_t t : res.tokens) text += t == stop ? "" : bytes[t];
    JsonMachine m;
    EXPECT_TRUE(m.feed(text)) << i << ": " << text;
    EXPECT_EQ(res.speculation.drafted, 0u) << i;
    if (res.finish_reason == "stop") {
      EXPECT_TRUE(m.complete()) << i << ": " << text;
      EXPECT_TRUE(nlohmann::json::accept(text)) << i << ": " << text;
    } else {
      EXPECT_EQ(res.finish_reason, "length") << i;
    }
    // The same request without the constraint: its text is not a JSON prefix (the constraint did the work).
    SequenceRequest free = requests[i];
    free.json_object = nullptr;
    free.speculation = Speculation::none;
    std::string free_text;
    const auto unconstrained = run_all(*model, {free}, 1);
    for (uint32_t t : unconstrained[0].tokens) free_text += bytes[t];
    free_prefixes += JsonMachine().feed(free_text);
  }
  EXPECT_EQ(free_prefixes, 0);
}

TEST(Speculation, RejectionSamplingKeepsTheTargetDistribution) {
  // Target p over 4 tokens; the draft always proposes token 2. Emitted tokens must follow p.
  const std::vector<float> logits = {std::log(0.1f), std::log(0.2f), std::log(0.3f), std::log(0.4f)};
  Sampler sampler({.temperature = 1.0f, .seed = 3});
  std::map<uint32_t, int> counts;
  int accepted = 0;
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    auto row = logits;
    const auto v = verify_draft(sampler, row, {}, 2);
    ++counts[v.token];
    accepted += v.accepted;
  }
  const double p[] = {0.1, 0.2, 0.3, 0.4};
  for (uint32_t t = 0; t < 4; ++t) EXPECT_NEAR(counts[t] / double(n), p[t], 0.01) << t;
  EXPECT_NEAR(accepted / double(n), 0.3, 0.01);
}

TEST(Drafter, PromptLookupProposesWhatFollowedTheLastMatch) {
  NgramDrafter d(1, 3);
  const std::vector<uint32_t> tokens = {1, 2, 3, 4, 5, 9, 1, 2, 3};
  EXPECT_EQ(d.draft(tokens, 2), (std::vector<uint32_t>{4, 5}));
  EXPECT_EQ(d.draft(tokens, 10), (std::vector<uint32_t>{4, 5, 9, 1, 2, 3}));
  EXPECT_TRUE(d.draft(std::vector<uint32_t>{7, 8}, 4).empty());
  EXPECT_TRUE(d.draft(std::vector<uint32_t>{7}, 4).empty());
  NgramDrafter strict(2, 2);
  EXPECT_TRUE(strict.draft(std::vector<uint32_t>{5, 1, 6, 1}, 3).empty()) << "a 1-token match is too short";
}

TEST(Scheduler, InvalidRequestsAreErrors) {
  auto model = load(1);
  Scheduler scheduler(test::gpu_context(), *model, {.max_batch = 1});
  SequenceRequest empty;
  EXPECT_FALSE(scheduler.submit(empty).ok());
  SequenceRequest outside;
  outside.prompt = {600};
  EXPECT_FALSE(scheduler.submit(outside).ok());
  SequenceRequest too_long;
  too_long.prompt = {1, 2, 3};
  too_long.max_tokens = 1000;
  EXPECT_FALSE(scheduler.submit(too_long).ok());
}

}  // namespace
}  // namespace mach::engine
