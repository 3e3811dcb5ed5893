// Golden test: the tiny random qwen3_moe checkpoints of tests/fixtures (made by tools/make_fixtures.py with
// transformers) run on the GPU and match transformers' float32 logits and greedy continuation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/generator.hpp"
#include "experts/synth.hpp"
#include "gpu_fixture.hpp"
#include "model/model.hpp"
#include "model/npy.hpp"
#include "scoped_env.hpp"
#include "temp_dir.hpp"

namespace mach::test {
namespace {

namespace fs = std::filesystem;

struct Reference {
  std::vector<uint32_t> prompt, continuation;
  model::NpyArray logits;  // [prompt, vocab]
};

Reference load_reference(const fs::path& dir) {
  std::ifstream f(dir / "reference.json");
  const auto j = nlohmann::json::parse(f);
  Reference r;
  r.prompt = j.at("prompt_ids").get<std::vector<uint32_t>>();
  r.continuation = j.at("continuation_ids").get<std::vector<uint32_t>>();
  r.logits = std::move(model::read_npy_f32(dir / "logits.npy")).value_or_throw();
  return r;
}

struct EngineRun {
  std::vector<float> logits;
  std::vector<uint32_t> tokens;
};

EngineRun run_engine(const fs::path& dir, ops::WeightType type, const Reference& ref) {
  model::LoadOptions options;
  options.weight_type = type;
  options.max_context = 64;
  options.max_step_tokens = 16;
  auto model = std::move(model::load_model(dir, gpu_context(), options)).value_or_throw();
  engine::GenerateOptions go;
  go.sampling.temperature = 0;
  go.max_tokens = static_cast<uint32_t>(ref.continuation.size());
  go.prompt_logits = true;
  auto result = std::move(engine::generate(gpu_context(), *model, ref.prompt, go)).value_or_throw();
  return {std::move(result.prompt_logits), std::move(result.tokens)};
}

// The fixtures' folder: $MACH_SOURCE_DIR when set (a copy of the tree elsewhere, e.g. on a GPU machine),
// else the source tree this test was built from.
fs::path fixtures() {
  const char* env = std::getenv("MACH_SOURCE_DIR");
  return fs::path(env && *env ? env : MACH_SOURCE_DIR) / "tests/fixtures";
}

uint32_t argmax_row(std::span<const float> row) {
  return static_cast<uint32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

class GoldenQwen3Moe : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenQwen3Moe, Bf16MatchesTransformers) {
  const fs::path dir = fixtures() / GetParam();
  const Reference ref = load_reference(dir);
  const EngineRun got = run_engine(dir, ops::WeightType::bf16, ref);
  ASSERT_EQ(got.logits.size(), ref.logits.data.size());
  const uint64_t V = ref.logits.shape.at(1);
  for (size_t t = 0; t < ref.prompt.size(); ++t) {
    float max_ref = 0, max_err = 0;
    for (uint64_t v = 0; v < V; ++v) {
      max_ref = std::max(max_ref, std::fabs(ref.logits.data[t * V + v]));
      max_err = std::max(max_err, std::fabs(got.logits[t * V + v] - ref.logits.data[t * V + v]));
    }
    EXPECT_LE(max_err, 2e-3f * max_ref) << "position " << t;
  }
  EXPECT_EQ(got.tokens, ref.continuation);
}

TEST_P(GoldenQwen3Moe, Q8KeepsGreedyTokensAndTop1) {
  const fs::path dir = fixtures() / GetParam();
  const Reference ref = load_reference(dir);
  const EngineRun got = run_engine(dir, ops::WeightType::q8_0, ref);
  const uint64_t V = ref.logits.shape.at(1);
  for (size_t t = 0; t < ref.prompt.size(); ++t) {
    EXPECT_EQ(argmax_row(std::span<const float>(got.logits).subspan(t * V, V)),
              argmax_row(std::span<const float>(ref.logits.data).subspan(t * V, V)))
        << "position " << t;
  }
  EXPECT_EQ(got.tokens, ref.continuation);
}

// Model::replay_step against recording every step: the same logits to the bit over a stream that crosses
// KV blocks (the block table changes every 16 positions), grows attention's key split (at 256 keys), and
// mixes 1-token and 3-token steps, so several recordings are kept and replayed with new inputs.
TEST_P(GoldenQwen3Moe, ReplayedStepsEqualRecordedSteps) {
  model::LoadOptions options;
  options.weight_type = ops::WeightType::q8_0;
  options.max_context = 320;
  options.max_step_tokens = 16;
  auto model = std::move(model::load_model(fixtures() / GetParam(), gpu_context(), options)).value_or_throw();
  const uint32_t V = model->config().vocab_size;
  auto cmd = gpu_context().begin_commands();
  const auto run = [&](bool replay) {
    auto& kv = model->kv_cache();
    EXPECT_TRUE(kv.reserve(0, 300));
    std::vector<float> all;
    uint32_t replayed = 0, steps = 0;
    for (uint32_t pos = 0; pos < 300;) {
      const uint32_t n = pos % 5 == 3 ? 3 : 1;
      std::vector<uint32_t> tokens, seqs(n, 0), positions, rows;
      for (uint32_t i = 0; i < n; ++i) {
        tokens.push_back((pos + i) * 7919 % V);
        positions.push_back(pos + i);
        rows.push_back(i);
      }
      const model::StepBatch batch{tokens, seqs, positions, rows};
      gpu::CommandList* list = replay ? model->replay_step(batch) : nullptr;
      if (list) {
        ++replayed;
        gpu_context().wait(gpu_context().submit(*list));
      } else {
        cmd->begin();
        model->record_step(*cmd, batch);
        gpu_context().wait(gpu_context().submit(*cmd));
      }
      std::vector<float> logits(uint64_t{n} * V);
      gpu_context().download(model->logits(), 0, std::as_writable_bytes(std::span<float>(logits)));
      all.insert(all.end(), logits.begin(), logits.end());
      pos += n;
      ++steps;
    }
    kv.release(0);
    // Recorded: each shape's first step, each block-table change (every 16 positions) and the split change.
    if (replay) EXPECT_GT(replayed, steps * 3 / 4) << steps << " steps";
    return all;
  };
  const std::vector<float> replayed = run(true);
  const std::vector<float> recorded = run(false);
  ASSERT_EQ(replayed.size(), recorded.size());
  EXPECT_EQ(std::memcmp(replayed.data(), recorded.data(), replayed.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenQwen3Moe, ::testing::Values("qwen3_moe", "qwen3_moe_fused"));

// q4 decode steps on the int8-x kernels (ops::uses_q4_dot: q/k/v with its tail, o, the router without the q4h
// packing, gate/up + SwiGLU, down + combine) against the float kernels: the same logits up to x's int8
// rounding, over single-token and 3-token steps that cross KV blocks. On `mach synth`'s mini shape (the
// fixtures' widths of 32 cannot be q4). Forced on with $MACH_Q4_DOT=1 where the device only runs them
// (lavapipe); the default where it accelerates them.
TEST(Q4Decode, Int8DotKernelsFollowFloatKernels) {
  if (!gpu_context().info().int_dot || !gpu::Context::has_shader("mul_mat_vec_q4_dot"))
    GTEST_SKIP() << "no shaderIntegerDotProduct";
  mach::testing::TempDir tmp("q4dot");
  experts::SynthOptions so;
  so.shape = "qwen3-moe-mini";
  so.output = tmp / "model";
  so.quant = ops::WeightType::q4;
  ASSERT_TRUE(experts::synthesize(so).ok());
  model::LoadOptions options;
  options.weight_type = ops::WeightType::q4;
  options.max_context = 64;
  auto model = std::move(model::load_model(tmp / "model", gpu_context(), options)).value_or_throw();
  const uint32_t V = model->config().vocab_size;
  auto cmd = gpu_context().begin_commands();
  const auto run = [&](const char* dot) {
    const mach::testing::ScopedEnv force("MACH_Q4_DOT", dot);
    auto& kv = model->kv_cache();
    EXPECT_TRUE(kv.reserve(0, 42));
    std::vector<float> all;
    for (uint32_t pos = 0; pos < 40;) {
      const uint32_t n = pos % 5 == 3 ? 3 : 1;  // and verify-sized steps
      std::vector<uint32_t> tokens, seqs(n, 0), positions, rows;
      for (uint32_t i = 0; i < n; ++i) {
        tokens.push_back((pos + i) * 7919 % V);
        positions.push_back(pos + i);
        rows.push_back(i);
      }
      pos += n;
      cmd->begin();  // recorded afresh: a replayed recording would keep the kernels of the other run
      model->record_step(*cmd, {tokens, seqs, positions, rows});
      gpu_context().wait(gpu_context().submit(*cmd));
      std::vector<float> logits(uint64_t{n} * V);
      gpu_context().download(model->logits(), 0, std::as_writable_bytes(std::span<float>(logits)));
      all.insert(all.end(), logits.begin(), logits.end());
    }
    kv.release(0);
    return all;
  };
  const std::vector<float> dot = run("1"), flt = run("0");
  double err = 0, energy = 0;
  for (size_t i = 0; i < flt.size(); ++i) {
    err += (double{dot[i]} - flt[i]) * (double{dot[i]} - flt[i]);
    energy += double{flt[i]} * flt[i];
  }
  EXPECT_GT(err, 0.0) << "the int8-x kernels did not run";
  // Observed 4.3e-4 on lavapipe (x's rounding in 5 products per layer, 4 layers); a wrongly wired input or a
  // missing norm gives O(1).
  EXPECT_LE(err / energy, 5e-3);
}

}  // namespace
}  // namespace mach::test
