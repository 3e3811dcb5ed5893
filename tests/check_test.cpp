// mach check: the static report on source checkpoints, pruned engine layouts and unsupported families, and
// the `mach check --json` command line.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "experts/check.hpp"
#include "experts/prune.hpp"
#include "experts/sidecar.hpp"
#include "temp_dir.hpp"

namespace mach::experts {
namespace {
namespace fs = std::filesystem;
using mach::testing::TempDir;

const fs::path kFixtures = fs::path(MACH_SOURCE_DIR) / "tests/fixtures";

std::map<std::string, PathVerdict> by_path(const CheckReport& r) {
  std::map<std::string, PathVerdict> m;
  for (const auto& p : r.paths) m[p.path] = p;
  return m;
}

CheckReport check(const fs::path& model, std::optional<uint64_t> gpu = std::nullopt, bool verify = false) {
  CheckOptions o;
  o.model = model;
  o.gpu_memory_bytes = gpu;
  o.verify_checksums = verify;
  return check_model(o);
}

TEST(Check, SourceCheckpoint) {
  const auto r = check(kFixtures / "qwen3_moe", 1ull << 30);
  EXPECT_TRUE(r.supported);
  EXPECT_EQ(r.model_type, "qwen3_moe");
  EXPECT_EQ(r.layout, "per-expert");
  EXPECT_EQ(r.quantization, "BF16");
  EXPECT_EQ(r.sidecar, "absent");
  EXPECT_TRUE(r.artifacts.at("config.json"));
  EXPECT_TRUE(r.artifacts.at("weights"));
  EXPECT_FALSE(r.artifacts.at("expert_sidecar"));
  ASSERT_TRUE(r.memory);
  // 3 layers x 8 experts x (bf16 [64, 64] + [64, 32]); KV: 3 layers x 2 x 4096 tokens x 2 heads x 16 x f16.
  EXPECT_EQ(r.memory->expert_bytes, 3u * 8 * (64 * 64 + 64 * 32) * 2);
  EXPECT_EQ(r.memory->kv_bytes, 3u * 2 * 4096 * 2 * 16 * 2);
  EXPECT_GT(r.memory->non_expert_bytes, 0u);
  EXPECT_EQ(r.memory->verdict, "fits");
  const auto paths = by_path(r);
  ASSERT_EQ(paths.size(), 6u);
  EXPECT_EQ(paths.at("resident_stacked").status, "ok");
  EXPECT_EQ(paths.at("openai_http").status, "ok");
  EXPECT_EQ(paths.at("prefix_kv_reuse").status, "ok");
  EXPECT_EQ(paths.at("expert_streaming").status, "needs_artifact");
  EXPECT_NE(paths.at("expert_streaming").reason.find("mach prune"), std::string::npos);
  EXPECT_NE(r.suggested_command.find("mach serve"), std::string::npos);
  EXPECT_EQ(check(kFixtures / "qwen3_moe_fused").layout, "fused");
}

TEST(Check, MemoryVerdicts) {
  const fs::path m = kFixtures / "qwen3_moe";
  EXPECT_EQ(check(m).memory->verdict, "unknown");
  const auto tiny = check(m, 1000);
  EXPECT_EQ(tiny.memory->verdict, "wont_fit");
  EXPECT_EQ(by_path(tiny).at("resident_stacked").status, "blocked");
  const uint64_t ws = tiny.memory->working_set_bytes;
  EXPECT_EQ(check(m, ws + 1).memory->verdict, "tight");
  CheckOptions o;
  o.model = m;
  o.expert_cache_gb = 0;
  o.gpu_memory_bytes = ws;
  const auto streaming = check_model(o);
  EXPECT_EQ(streaming.memory->mode, "streaming");
  EXPECT_EQ(streaming.memory->working_set_bytes, ws - streaming.memory->expert_bytes);
  // The host: unknown unless given; the RAM tier takes what the host spares, every expert at most.
  EXPECT_FALSE(streaming.memory->host_spare_bytes);
  EXPECT_EQ(streaming.memory->host_tier_bytes, 0u);
  const uint64_t experts = streaming.memory->expert_bytes;
  o.host_spare_bytes = experts / 3;
  EXPECT_EQ(check_model(o).memory->host_tier_bytes, experts / 3);
  o.host_spare_bytes = 4 * experts;
  const auto roomy = check_model(o);
  EXPECT_EQ(roomy.memory->host_tier_bytes, experts);
  EXPECT_EQ(report_to_json(roomy)["memory"]["host_spare_bytes"], 4 * experts);
  EXPECT_EQ(report_to_json(roomy)["memory"]["host_tier_bytes"], experts);
  o.expert_cache_gb.reset();  // resident: the host holds no experts
  const auto resident = check_model(o);
  EXPECT_EQ(resident.memory->host_tier_bytes, 0u);
  EXPECT_FALSE(report_to_json(resident)["memory"].contains("host_tier_bytes"));
}

TEST(Check, PrunedEngineLayout) {
  TempDir tmp("check");
  PruneOptions p;
  p.source = kFixtures / "qwen3_moe";
  p.output = tmp / "out";
  p.quant = ops::WeightType::q8_0;
  ASSERT_TRUE(prune(p).ok());
  auto r = check(tmp / "out", std::nullopt, true);
  EXPECT_TRUE(r.supported);
  EXPECT_EQ(r.layout, "engine+sidecar");
  EXPECT_EQ(r.quantization, "q8_0");
  EXPECT_EQ(r.sidecar, "verified");
  EXPECT_EQ(r.memory->expert_bytes, Sidecar::open(tmp / "out" / kSidecarDir)->layout().expert_bytes());
  const auto paths = by_path(r);
  EXPECT_EQ(paths.at("resident_stacked").status, "ok");
  EXPECT_EQ(paths.at("expert_streaming").status, "ok");
  EXPECT_NE(paths.at("expert_streaming").reason.find("sidecar is ready"), std::string::npos);
  // Too little GPU memory for every expert: resident is blocked and streaming is suggested.
  const auto small = check(tmp / "out", 1000);
  EXPECT_EQ(by_path(small).at("resident_stacked").status, "blocked");
  EXPECT_NE(small.suggested_command.find("--streaming"), std::string::npos);

  // A corrupt slab is found by --verify and makes the model unsupported; without it only the structure is read.
  {
    std::fstream f(tmp / "out" / kSidecarDir / "layer_00.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.write("\x55\xaa", 2);
  }
  EXPECT_TRUE(check(tmp / "out").supported);
  r = check(tmp / "out", std::nullopt, true);
  EXPECT_FALSE(r.supported);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("checksum"), std::string::npos);

  // layout.json edited to drop an expert: structurally valid, but no longer what config.json describes.
  const fs::path layout_path = tmp / "out" / kSidecarDir / kLayoutFile;
  const auto layout = nlohmann::json::parse(std::ifstream(layout_path));
  auto fewer = layout;
  fewer["layers"][0]["experts"].erase(7);
  std::ofstream(layout_path) << fewer.dump();
  r = check(tmp / "out");
  EXPECT_FALSE(r.supported);
  EXPECT_NE(r.sidecar.find("layer 0 has 7 experts"), std::string::npos) << r.sidecar;
  std::ofstream(layout_path) << layout.dump();

  // A sidecar of another model: the fingerprint no longer matches config.json.
  std::ifstream in(tmp / "out" / "config.json");
  auto config = nlohmann::json::parse(in);
  config["num_hidden_layers"] = 4;
  std::ofstream(tmp / "out" / "config.json") << config.dump();
  r = check(tmp / "out");
  EXPECT_FALSE(r.supported);
  EXPECT_NE(r.sidecar.find("fingerprint"), std::string::npos);
}

TEST(Check, UnsupportedFamilyAndMissingConfig) {
  const auto gpt = check(kFixtures / "gpt_oss");
  EXPECT_EQ(gpt.model_type, "gpt_oss");
  EXPECT_FALSE(gpt.supported);
  EXPECT_EQ(gpt.layout, "fused");
  EXPECT_EQ(by_path(gpt).at("resident_stacked").status, "blocked");
  TempDir tmp("check");
  const auto none = check(tmp.path());
  EXPECT_FALSE(none.supported);
  ASSERT_FALSE(none.problems.empty());
}

TEST(Check, AllArchsTable) {
  for (const auto& arch : model::all_archs()) {
    const auto paths = arch_paths(arch);
    ASSERT_EQ(paths.size(), 6u);
    EXPECT_EQ(paths[0].path, "openai_http");
    const bool runs = arch.status == model::SupportStatus::runs;
    for (const auto& p : paths) {
      EXPECT_FALSE(p.reason.empty());
      if (p.path == "resident_stacked") EXPECT_EQ(p.status, runs ? "ok" : "blocked") << arch.model_type;
    }
  }
}

// Runs `mach ARGS`, returning its exit status and stdout.
std::pair<int, std::string> run_mach(const std::string& args) {
  const std::string cmd = std::string(MACH_BINARY_DIR) + "/mach " + args + " 2>/dev/null";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = ::pclose(pipe);
  return {WEXITSTATUS(status), out};
}

TEST(CheckCli, JsonOnFixturesAndPrunedDir) {
  auto [rc, out] = run_mach("check --json --context-length 128 " + (kFixtures / "qwen3_moe").string());
  EXPECT_EQ(rc, 0);
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["model_type"], "qwen3_moe");
  EXPECT_EQ(j["supported"], true);
  EXPECT_EQ(j["memory"]["kv_bytes"], 3u * 2 * 128 * 2 * 16 * 2);
  EXPECT_EQ(j["paths"]["resident_stacked"]["status"], "ok");
  EXPECT_EQ(j["paths"]["openai_http"]["status"], "ok");

  std::tie(rc, out) = run_mach("check --json " + (kFixtures / "gemma4").string());
  EXPECT_EQ(rc, 1);
  EXPECT_EQ(nlohmann::json::parse(out)["supported"], false);

  TempDir tmp("check");
  const std::string dir = (tmp / "out").string();
  std::tie(rc, out) = run_mach("prune --quant q8_0 --source " + (kFixtures / "qwen3_moe_fused").string() + " --output " + dir);
  ASSERT_EQ(rc, 0);
  std::tie(rc, out) = run_mach("check --json --verify " + dir);
  EXPECT_EQ(rc, 0);
  j = nlohmann::json::parse(out);
  EXPECT_EQ(j["layout"], "engine+sidecar");
  EXPECT_EQ(j["sidecar"], "verified");

  std::tie(rc, out) = run_mach("check --all-archs --json");
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(nlohmann::json::parse(out)["qwen3_moe"]["resident_stacked"]["status"], "ok");
}

}  // namespace
}  // namespace mach::experts
