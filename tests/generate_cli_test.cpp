// `mach generate` end to end through the command line: text prompts through the checkpoint's tokenizer,
// several prompts from a file as concurrent sequences, and an engine layout streamed through 2 slots per layer.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "experts/prune.hpp"
#include "text/bpe.hpp"
#include "text/utf8.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string run(const std::string& args) {
  const std::string cmd = std::string(MACH_BINARY_DIR) + "/mach generate " + args;
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << cmd;
  return out;
}

// The qwen3_moe fixture plus a byte-level tokenizer whose 256 ids are the bytes (the fixture's vocabulary is
// 512 random ids, so any byte-level map is as good as another).
class GenerateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mach_generate_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const fs::path src = fs::path(MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dir_ / f);
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) {
      std::string s;
      mach::text::append_utf8(s, mach::text::byte_to_unicode()[b]);
      vocab[s] = b;
    }
    const json tok = {{"added_tokens", json::array()},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
                      {"post_processor", nullptr},
                      {"decoder", {{"type", "ByteLevel"}}},
                      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
    std::ofstream(dir_ / "tokenizer.json") << tok.dump();
    std::ofstream(dir_ / "tokenizer_config.json") << "{}";
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(GenerateCli, TextPromptGoesThroughTheTokenizer) {
  const json by_text = json::parse(run(dir_.string() + " --prompt 'hello' --max-tokens 6 --temperature 0 --json"));
  const json by_ids = json::parse(run(dir_.string() + " --prompt-ids 104,101,108,108,111 --max-tokens 6 --temperature 0 --json"));
  EXPECT_EQ(by_text.at("prompt_tokens"), 5);
  EXPECT_EQ(by_text.at("tokens"), by_ids.at("tokens"));
  // The generated ids < 256 are bytes; the decoded text holds at least those that form valid UTF-8.
  EXPECT_TRUE(by_text.contains("text"));
}

TEST_F(GenerateCli, PromptFileRunsEveryPromptInOrder) {
  std::ofstream(dir_ / "prompts.txt") << "324,179,211,128,327,144,451\n\n1,2,3,4,5,6,7,8,9\n";
  std::stringstream lines(run(dir_.string() + " --prompt-ids-file " + (dir_ / "prompts.txt").string() +
                              " --max-tokens 12 --temperature 0 --json --speculation ngram"));
  std::string first, second, extra;
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_FALSE(std::getline(lines, extra) && !extra.empty());
  EXPECT_EQ(json::parse(first).at("tokens"), json::parse("[253,253,38,38,38,38,38,337,38,452,84,45]"));
  EXPECT_EQ(json::parse(second).at("prompt_tokens"), 9);
  EXPECT_TRUE(json::parse(first).at("speculation").contains("accepted"));
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST_F(GenerateCli, StreamingTwoSlotsMatchesResident) {
  mach::experts::PruneOptions o;
  o.source = fs::path(MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
  o.output = dir_ / "pruned";
  o.quant = mach::ops::WeightType::q8_0;
  ASSERT_TRUE(mach::experts::prune(o).ok());
  const std::string model = o.output.string() + " --quant q8_0 --temperature 0 --max-tokens 10 ";
  std::ofstream(dir_ / "prompts.txt") << "324,179,211,128,327,144,451\n1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18\n";
  const std::string prompts = "--json --prompt-ids-file " + (dir_ / "prompts.txt").string();
  std::stringstream resident(run(model + prompts)), streamed(run(model + "--streaming --expert-slots 2 " + prompts));
  for (int i = 0; i < 2; ++i) {
    std::string a, b;
    ASSERT_TRUE(std::getline(resident, a) && std::getline(streamed, b));
    const json r = json::parse(a), s = json::parse(b);
    EXPECT_EQ(s.at("tokens"), r.at("tokens")) << "prompt " << i;
    EXPECT_FALSE(r.contains("experts"));
    const json& total = s.at("experts").at("total");
    EXPECT_EQ(s.at("experts").at("slots_per_layer"), 2);
    EXPECT_GT(total.at("misses").get<int>(), 0);
    EXPECT_GT(total.at("bytes_read").get<int>(), 0);
    EXPECT_EQ(total.at("errors"), 0);
  }
  // --dump-logits: the prompt's logits (to float rounding: the 18-token prompt runs its layers' experts in
  // passes through 2 slots, each added into the residual on its own).
  const std::string one = "--prompt-ids 5,17,99,3,250,11,42,7,8,9,10,300,301,302,303,304,305,306 ";
  run(model + one + "--dump-logits " + (dir_ / "resident.npy").string());
  run(model + one + "--streaming --expert-slots 2 --dump-logits " + (dir_ / "streamed.npy").string());
  {
    const std::string a = read_bytes(dir_ / "resident.npy"), b = read_bytes(dir_ / "streamed.npy");
    ASSERT_EQ(a.size(), b.size());
    ASSERT_GT(a.size(), 18u * 512 * 4);
    const size_t header = a.size() - 18u * 512 * 4;
    EXPECT_EQ(a.substr(0, header), b.substr(0, header));
    float worst = 0;
    for (size_t i = header; i + 4 <= a.size(); i += 4) {
      float x, y;
      std::memcpy(&x, a.data() + i, 4);
      std::memcpy(&y, b.data() + i, 4);
      worst = std::max(worst, std::fabs(x - y));
    }
    EXPECT_LE(worst, 1e-4f);
  }

  // mach bench runs the streamed model (its greedy check included) and ends with the streaming counters.
  const std::string bench = std::string(MACH_BINARY_DIR) + "/mach bench " + o.output.string() +
                            " --quick --quant q8_0 --max-batch 4 --kv-cache-gb 0.01 --streaming --expert-slots 2";
  std::string out;
  FILE* p = popen(bench.c_str(), "r");
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << bench;
  std::stringstream lines(out);
  json stats;
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) stats = json::parse(line);
  ASSERT_EQ(stats.value("test", ""), "expert_streaming") << out;
  EXPECT_GT(stats.at("total").at("misses").get<int>(), 0);
  EXPECT_EQ(stats.at("residency"), "streaming");
}

}  // namespace
