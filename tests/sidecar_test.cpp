// The expert sidecar: checksums, slab contents against quantize() of the source, and that every malformed
// or truncated sidecar is a one-line error, never a crash.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "experts/checksum.hpp"
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

uint64_t xxh(std::string_view s) { return xxh64(std::as_bytes(std::span(s.data(), s.size()))); }

TEST(Checksum, Xxh64KnownVectors) {
  EXPECT_EQ(xxh(""), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(xxh("a"), 0xD24EC4F1A98C6E5Bull);
  EXPECT_EQ(xxh("abc"), 0x44BC2CF5AD770999ull);
  EXPECT_EQ(xxh("Nobody inspects the spammish repetition"), 0xFBCEA83C8A378BF1ull);
}

TEST(Checksum, HexRoundTrip) {
  EXPECT_EQ(hex64(0x00ab), "00000000000000ab");
  EXPECT_EQ(parse_hex64("fbcea83c8a378bf1"), 0xFBCEA83C8A378BF1ull);
  EXPECT_FALSE(parse_hex64("fbcea83c8a378bf"));
  EXPECT_FALSE(parse_hex64("fbcea83c8a378bfg"));
}

fs::path prune_fixture(const TempDir& tmp, const std::string& fixture, ops::WeightType quant) {
  PruneOptions o;
  o.source = kFixtures / fixture;
  o.output = tmp / "out";
  o.quant = quant;
  auto r = prune(o);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return o.output;
}

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == std::string::npos; }

struct SlabCase {
  std::string fixture;
  ops::WeightType quant;
};

class SlabContents : public ::testing::TestWithParam<SlabCase> {};

// Every slab equals quantize() of the source expert's matrices (read here independently, per-expert
// tensors of the qwen3_moe fixture: the fused fixture holds the same weights), padded with zeros.
TEST_P(SlabContents, EqualQuantizedSource) {
  TempDir tmp("sidecar");
  const fs::path out = prune_fixture(tmp, GetParam().fixture, GetParam().quant);
  auto sidecar = Sidecar::open(out / kSidecarDir);
  ASSERT_TRUE(sidecar.ok()) << sidecar.error().message;
  const SidecarLayout& l = sidecar->layout();
  EXPECT_EQ(l.quant, GetParam().quant);
  EXPECT_EQ(l.slab_bytes % kSlabAlignment, 0u);
  ASSERT_EQ(l.tensors.size(), 2u);
  EXPECT_EQ(l.tensors[1].offset % kTensorAlignment, 0u);
  auto ck = model::Checkpoint::open(kFixtures / "qwen3_moe");
  ASSERT_TRUE(ck.ok());
  ASSERT_EQ(l.layers.size(), 3u);
  for (const auto& layer : l.layers) {
    ASSERT_EQ(layer.experts.size(), 8u);
    for (uint32_t e = 0; e < 8; ++e) {
      const std::string p = "model.layers." + std::to_string(layer.layer) + ".mlp.experts." + std::to_string(e) + ".";
      auto gu = ck->read_f32(p + "gate_proj.weight").value();
      auto up = ck->read_f32(p + "up_proj.weight").value();
      gu.insert(gu.end(), up.begin(), up.end());
      const auto dn = ck->read_f32(p + "down_proj.weight").value();
      std::vector<std::byte> want(l.slab_bytes);
      const auto qgu = ops::quantize(l.quant, gu, 64, 64), qdn = ops::quantize(l.quant, dn, 64, 32);
      std::copy(qgu.begin(), qgu.end(), want.begin() + l.tensors[0].offset);
      std::copy(qdn.begin(), qdn.end(), want.begin() + l.tensors[1].offset);
      auto slab = sidecar->read_expert(layer.layer, e);
      ASSERT_TRUE(slab.ok()) << slab.error().message;
      ASSERT_EQ(slab->size(), want.size());
      EXPECT_TRUE(std::equal(want.begin(), want.end(), slab->data())) << "layer " << layer.layer << " expert " << e;
      EXPECT_EQ(layer.experts[e].source_id, e);
      EXPECT_EQ(layer.experts[e].offset % kSlabAlignment, 0u);
    }
  }
  EXPECT_TRUE(sidecar->verify_all().ok());
  const auto ref = tensor_ref(l, 1, nullptr, 8192, 4);
  EXPECT_EQ(ref.offset, 8192 + l.tensors[1].offset);
  EXPECT_EQ(ref.expert_stride, l.slab_bytes);
  EXPECT_EQ(ref.rows, 64u);
  EXPECT_EQ(ref.cols, 32u);
}

INSTANTIATE_TEST_SUITE_P(Sidecar, SlabContents,
                         ::testing::Values(SlabCase{"qwen3_moe", ops::WeightType::bf16},
                                           SlabCase{"qwen3_moe_fused", ops::WeightType::bf16},
                                           SlabCase{"qwen3_moe", ops::WeightType::q8_0},
                                           SlabCase{"qwen3_moe_fused", ops::WeightType::q8_0}));

TEST(Sidecar, BothSourceLayoutsGiveTheSameBytes) {
  TempDir a("sidecar"), b("sidecar");
  const fs::path x = prune_fixture(a, "qwen3_moe", ops::WeightType::q8_0);
  const fs::path y = prune_fixture(b, "qwen3_moe_fused", ops::WeightType::q8_0);
  for (const char* f : {"layer_00.bin", "layer_01.bin", "layer_02.bin", "layout.json"})
    EXPECT_EQ(read_bytes(x / kSidecarDir / f), read_bytes(y / kSidecarDir / f)) << f;
}

class BrokenSidecar : public ::testing::Test {
 protected:
  void SetUp() override { out_ = prune_fixture(tmp_, "qwen3_moe", ops::WeightType::q8_0); }
  fs::path dir() const { return out_ / kSidecarDir; }
  nlohmann::json layout() const {
    std::ifstream in(dir() / kLayoutFile);
    return nlohmann::json::parse(in);
  }
  void write_layout(const nlohmann::json& j) const { std::ofstream(dir() / kLayoutFile) << j.dump(); }
  // Opening fails with one line that contains `part`.
  void expect_open_error(const std::string& part) const {
    auto s = Sidecar::open(dir());
    ASSERT_FALSE(s.ok()) << "expected an error containing: " << part;
    EXPECT_TRUE(one_line(s.error().message)) << s.error().message;
    EXPECT_NE(s.error().message.find(part), std::string::npos) << s.error().message;
  }
  TempDir tmp_{"sidecar"};
  fs::path out_;
};

TEST_F(BrokenSidecar, CorruptedSlabByteIsDetected) {
  auto s = Sidecar::open(dir());
  ASSERT_TRUE(s.ok());
  const auto& e = s->layout().layers[1].experts[3];
  {
    std::fstream f(dir() / "layer_01.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(e.offset + 100));
    char c;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(e.offset + 100));
    c ^= 0x10;
    f.write(&c, 1);
  }
  auto v = s->verify_expert(1, 3);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(one_line(v.error().message));
  EXPECT_NE(v.error().message.find("layer_01.bin: layer 1 expert 3: checksum"), std::string::npos) << v.error().message;
  EXPECT_TRUE(s->verify_expert(1, 2).ok());
  EXPECT_TRUE(s->verify_expert(0, 3).ok());
  EXPECT_FALSE(s->verify_all().ok());
}

TEST_F(BrokenSidecar, TruncatedLayerFile) {
  fs::resize_file(dir() / "layer_02.bin", fs::file_size(dir() / "layer_02.bin") - 1);
  expect_open_error("layer_02.bin: layer 2:");
}

TEST_F(BrokenSidecar, MissingLayerFile) {
  fs::remove(dir() / "layer_00.bin");
  expect_open_error("layer_00.bin");
}

TEST_F(BrokenSidecar, NotJson) {
  std::ofstream(dir() / kLayoutFile) << "{\"format\": ";
  expect_open_error("not valid JSON");
}

TEST_F(BrokenSidecar, MissingLayout) {
  fs::remove(dir() / kLayoutFile);
  expect_open_error("cannot open");
}

TEST_F(BrokenSidecar, EachFieldIsChecked) {
  struct Mutation {
    std::function<void(nlohmann::json&)> apply;
    std::string error;
  };
  const std::vector<Mutation> cases = {
      {[](auto& j) { j["version"] = 2; }, "format version 2 is not supported"},
      {[](auto& j) { j["format"] = "gguf"; }, "\"format\""},
      {[](auto& j) { j["quant"] = "q3"; }, "unknown quant"},
      {[](auto& j) { j["slab_bytes"] = 4000; }, "slab_bytes 4000"},
      {[](auto& j) { j["slab_alignment"] = 512; }, "slab_alignment"},
      {[](auto& j) { j.erase("tensors"); }, "missing \"tensors\""},
      {[](auto& j) { j["tensors"][1]["offset"] = 8; }, "tensor 'down': offset 8"},
      {[](auto& j) { j["tensors"][1]["bytes"] = 16; }, "tensor 'down': bytes 16"},
      {[](auto& j) { j["tensors"][0]["rows"] = -1; }, "\"rows\" must be a non-negative integer"},
      {[](auto& j) { j["layers"][1]["experts"][3]["offset"] = 4097; }, "layer 1 expert 3: offset 4097"},
      {[](auto& j) { j["layers"][1]["experts"][7]["offset"] = 1ull << 40; }, "layer 1 expert 7: slab at"},
      {[](auto& j) { j["layers"][1]["experts"][7]["offset"] = 0xFFFFFFFFFFFFF000ull; }, "runs past file_bytes"},
      {[](auto& j) { j["tensors"][1]["offset"] = 0xFFFFFFFFFFFFFFF0ull; }, "runs past slab_bytes"},
      {[](auto& j) { j["layers"][1]["experts"][2]["offset"] = 0; }, "layer 1 expert 2: offset 0 overlaps"},
      {[](auto& j) { j["layers"][0]["experts"][1]["bytes"] = 4096; }, "layer 0 expert 1: bytes 4096"},
      {[](auto& j) { j["layers"][2]["experts"][0]["xxh64"] = "xyz"; }, "layer 2 expert 0: \"xxh64\""},
      {[](auto& j) { j["layers"][2]["experts"][1]["source_id"] = 0; }, "layer 2 expert 1: source_id 0"},
      {[](auto& j) { j["layers"][2]["file"] = "../../etc/passwd"; }, "should be \"layer_02.bin\""},
      {[](auto& j) { j["layers"][2]["file_bytes"] = 12; }, "layer 2 expert 0: slab at 0 runs past"},
      {[](auto& j) { j["layers"][1]["layer"] = 0; }, "not in ascending order"},
      {[](auto& j) { j["layers"] = nlohmann::json::array(); }, "no layers"},
      {[](auto& j) { j["layers"] = 3; }, "\"layers\" must be an array"},
  };
  const nlohmann::json good = layout();
  for (const auto& c : cases) {
    nlohmann::json j = good;
    c.apply(j);
    write_layout(j);
    SCOPED_TRACE(c.error);
    expect_open_error(c.error);
  }
  write_layout(good);
  EXPECT_TRUE(Sidecar::open(dir()).ok());
}

// Random byte edits of layout.json: every outcome is a value, either a sidecar or an error.
TEST_F(BrokenSidecar, RandomEditsNeverCrash) {
  const std::string good = layout().dump();
  std::mt19937 rng(7);
  int errors = 0;
  for (int i = 0; i < 300; ++i) {
    std::string text = good;
    for (int k = 0; k < 3; ++k) text[rng() % text.size()] = static_cast<char>("0123456789\"{}[],:x-"[rng() % 19]);
    std::ofstream(dir() / kLayoutFile) << text;
    auto s = Sidecar::open(dir());
    if (!s.ok()) {
      ++errors;
      EXPECT_TRUE(one_line(s.error().message)) << s.error().message;
    }
  }
  EXPECT_GT(errors, 100);
}

}  // namespace
}  // namespace mach::experts
