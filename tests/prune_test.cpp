// mach prune: the engine layout it writes (non-expert safetensors, config, sidecar), keep plans, and the
// atomic, resumable write.
#include <gtest/gtest.h>

#include <fstream>

#include "experts/prune.hpp"
#include "experts/sidecar.hpp"
#include "model/config.hpp"
#include "model/safetensors.hpp"
#include "temp_dir.hpp"

namespace mach::experts {
namespace {
namespace fs = std::filesystem;
using mach::testing::TempDir;

const fs::path kFixtures = fs::path(MACH_SOURCE_DIR) / "tests/fixtures";

PruneOptions options(const std::string& fixture, const fs::path& out, ops::WeightType quant = ops::WeightType::q8_0) {
  PruneOptions o;
  o.source = kFixtures / fixture;
  o.output = out;
  o.quant = quant;
  return o;
}

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Every regular file under `dir`, relative path -> bytes.
std::map<std::string, std::vector<char>> tree(const fs::path& dir) {
  std::map<std::string, std::vector<char>> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = read_bytes(e.path());
  return files;
}

TEST(Prune, WritesTheEngineLayout) {
  TempDir tmp("prune");
  std::vector<PruneProgress> progress;
  auto o = options("qwen3_moe", tmp / "out");
  o.on_layer = [&](const PruneProgress& p) { progress.push_back(p); };
  auto r = prune(o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->moe_layers, 3u);
  EXPECT_EQ(r->experts, 24u);
  ASSERT_EQ(progress.size(), 3u);
  EXPECT_EQ(progress[2].done, 3u);
  EXPECT_FALSE(progress[0].resumed);
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
  EXPECT_FALSE(fs::exists(tmp / "out" / ".prune"));
  EXPECT_TRUE(fs::exists(tmp / "out" / "generation_config.json"));
  EXPECT_FALSE(fs::exists(tmp / "out" / "logits.npy"));

  // The strict reader accepts the non-expert file; every non-expert tensor is there, bit for bit.
  auto out = model::SafetensorsFile::open(tmp / "out" / "model.safetensors");
  ASSERT_TRUE(out.ok()) << out.error().message;
  auto src = model::Checkpoint::open(kFixtures / "qwen3_moe");
  ASSERT_TRUE(src.ok());
  size_t non_expert = 0;
  for (const auto& name : src->tensor_names()) {
    const auto* t = out->find(name);
    if (name.find(".mlp.experts.") != std::string::npos) {
      EXPECT_EQ(t, nullptr) << name;
      continue;
    }
    ++non_expert;
    ASSERT_NE(t, nullptr) << name;
    auto ref = src->find(name).value();
    EXPECT_EQ(t->dtype, ref.info->dtype);
    EXPECT_EQ(t->shape, ref.info->shape);
    const auto a = out->data(*t), b = ref.file->data(*ref.info);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << name;
  }
  EXPECT_EQ(out->tensors().size(), non_expert);

  auto config = model::load_model_config(tmp / "out");
  ASSERT_TRUE(config.ok());
  auto sidecar = Sidecar::open(tmp / "out" / kSidecarDir);
  ASSERT_TRUE(sidecar.ok()) << sidecar.error().message;
  EXPECT_EQ(sidecar->layout().fingerprint, model_fingerprint(*config, ops::WeightType::q8_0));
  EXPECT_TRUE(sidecar->verify_all().ok());
}

TEST(Prune, KeepPlanBuildsASmallerModel) {
  TempDir tmp("prune");
  std::ofstream(tmp / "plan.jsonl") << "{\"layer\": 0, \"experts\": [6, 1, 4]}\n\n"
                                       "{\"layer\": 1, \"experts\": [0, 1, 2]}\n"
                                       "{\"layer\": 2, \"experts\": [7, 5, 3]}\n";
  auto plan = parse_keep_plan(tmp / "plan.jsonl");
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->at(0), (std::vector<uint32_t>{1, 4, 6}));
  auto o = options("qwen3_moe_fused", tmp / "out");
  o.keep = *plan;
  auto r = prune(o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->experts, 9u);

  auto config = model::load_model_config(tmp / "out");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->num_experts, 3u);
  auto sidecar = Sidecar::open(tmp / "out" / kSidecarDir);
  ASSERT_TRUE(sidecar.ok()) << sidecar.error().message;
  const auto& layer2 = *sidecar->layout().find_layer(2);
  ASSERT_EQ(layer2.experts.size(), 3u);
  EXPECT_EQ(layer2.source_experts, 8u);
  EXPECT_EQ(layer2.experts[1].source_id, 5u);
  EXPECT_EQ(fs::file_size(tmp / "out" / kSidecarDir / "layer_02.bin"), 3 * sidecar->layout().slab_bytes);

  // The kept expert's slab is the full prune's slab of its source id; the router keeps its rows.
  TempDir full("prune");
  ASSERT_TRUE(prune(options("qwen3_moe", full / "out")).ok());
  auto all = Sidecar::open(full / "out" / kSidecarDir).value();
  const auto a = sidecar->read_expert(2, 1).value(), b = all.read_expert(2, 5).value();
  EXPECT_TRUE(std::equal(a.data(), a.data() + a.size(), b.data(), b.data() + b.size()));
  auto router = model::Checkpoint::open(tmp / "out").value().read_f32("model.layers.0.mlp.gate.weight").value();
  auto source = model::Checkpoint::open(kFixtures / "qwen3_moe").value().read_f32("model.layers.0.mlp.gate.weight").value();
  ASSERT_EQ(router.size(), 3u * 64);
  EXPECT_TRUE(std::equal(router.begin() + 64, router.begin() + 128, source.begin() + 4 * 64));
}

TEST(Prune, KeepPlanErrors) {
  TempDir tmp("prune");
  auto parse = [&](const std::string& text) {
    std::ofstream(tmp / "p.jsonl") << text;
    return parse_keep_plan(tmp / "p.jsonl");
  };
  EXPECT_NE(parse("{\"layer\": 0}\n").error().message.find("p.jsonl:1"), std::string::npos);
  EXPECT_NE(parse("{\"layer\": 0, \"experts\": [1]}\n{\"layer\": 0, \"experts\": [2]}\n").error().message.find(":2"),
            std::string::npos);
  EXPECT_FALSE(parse("{\"layer\": 0, \"experts\": [1, 1]}").ok());
  EXPECT_FALSE(parse("{\"layer\": 0, \"experts\": [-1]}").ok());

  auto run = [&](KeepPlan plan) {
    auto o = options("qwen3_moe", tmp / "out");
    o.keep = std::move(plan);
    return prune(o);
  };
  EXPECT_NE(run({{0, {1, 2, 3}}}).error().message.find("same number"), std::string::npos);
  EXPECT_NE(run({{0, {1}}, {1, {1}}, {2, {1}}}).error().message.find("num_experts_per_tok"), std::string::npos);
  EXPECT_NE(run({{5, {1, 2}}}).error().message.find("layer 5 has no experts"), std::string::npos);
  EXPECT_NE(run({{0, {1, 9}}}).error().message.find("0..7"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

TEST(Prune, RefusesWhatItCannotDo) {
  TempDir tmp("prune");
  auto gpt = prune(options("gpt_oss", tmp / "a"));
  ASSERT_FALSE(gpt.ok());
  EXPECT_EQ(gpt.error().code, Errc::unsupported);
  EXPECT_NE(gpt.error().message.find("gpt_oss is not yet supported"), std::string::npos);
  auto q4 = prune(options("qwen3_moe", tmp / "b", ops::WeightType::q4));  // I = 32 is not a multiple of 64
  ASSERT_FALSE(q4.ok());
  EXPECT_NE(q4.error().message.find("multiples of 64"), std::string::npos);
  // A trailing slash still writes OUT.partial beside OUT.
  auto slash = options("qwen3_moe", (tmp / "d").string() + "/");
  slash.continue_after = [](uint32_t) { return false; };
  ASSERT_FALSE(prune(slash).ok());
  EXPECT_TRUE(fs::exists(tmp / "d.partial"));
  fs::create_directories(tmp / "c");
  EXPECT_NE(prune(options("qwen3_moe", tmp / "c")).error().message.find("already exists"), std::string::npos);
}

// Experts are quantized on several threads in batches; the bytes do not depend on how many.
TEST(Prune, ThreadCountDoesNotChangeTheOutput) {
  TempDir one("prune"), three("prune");
  auto a = options("qwen3_moe", one / "out");
  a.threads = 1;
  auto b = options("qwen3_moe", three / "out");
  b.threads = 3;  // 8 experts: batches of 3, 3, 2
  ASSERT_TRUE(prune(a).ok());
  ASSERT_TRUE(prune(b).ok());
  EXPECT_EQ(tree(one / "out"), tree(three / "out"));
}

// A run stopped after layer 1 leaves only OUT.partial; the rerun keeps layers 0 and 1, redoes the rest,
// and produces exactly the files of an uninterrupted run.
TEST(Prune, InterruptedRunResumes) {
  TempDir tmp("prune"), clean("prune");
  ASSERT_TRUE(prune(options("qwen3_moe", clean / "out")).ok());

  auto o = options("qwen3_moe", tmp / "out");
  o.continue_after = [](uint32_t layer) { return layer < 1; };
  auto stopped = prune(o);
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.error().code, Errc::cancelled);
  EXPECT_FALSE(fs::exists(tmp / "out"));
  EXPECT_TRUE(fs::exists(tmp / "out.partial" / kSidecarDir / "layer_01.bin"));
  EXPECT_FALSE(fs::exists(tmp / "out.partial" / kSidecarDir / "layer_02.bin"));

  // Another quant must not mix with this partial run.
  auto other = prune(options("qwen3_moe", tmp / "out", ops::WeightType::bf16));
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message.find("unfinished prune"), std::string::npos);

  std::vector<PruneProgress> progress;
  o.continue_after = nullptr;
  o.on_layer = [&](const PruneProgress& p) { progress.push_back(p); };
  auto resumed = prune(o);
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  EXPECT_EQ(resumed->resumed_layers, 2u);
  ASSERT_EQ(progress.size(), 3u);
  EXPECT_TRUE(progress[0].resumed && progress[1].resumed && !progress[2].resumed);
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
  EXPECT_EQ(tree(tmp / "out"), tree(clean / "out"));
}

// A layer file damaged in OUT.partial fails its checksums on resume and is written again.
TEST(Prune, ResumeRedoesACorruptLayer) {
  TempDir tmp("prune"), clean("prune");
  ASSERT_TRUE(prune(options("qwen3_moe_fused", clean / "out")).ok());
  auto o = options("qwen3_moe_fused", tmp / "out");
  o.continue_after = [](uint32_t layer) { return layer < 1; };
  ASSERT_FALSE(prune(o).ok());
  {
    std::fstream f(tmp / "out.partial" / kSidecarDir / "layer_00.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.write("\x7f\x7f", 2);
  }
  o.continue_after = nullptr;
  auto resumed = prune(o);
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  EXPECT_EQ(resumed->resumed_layers, 1u);
  EXPECT_EQ(tree(tmp / "out"), tree(clean / "out"));
}

}  // namespace
}  // namespace mach::experts
