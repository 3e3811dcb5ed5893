// Safetensors reading: valid single and sharded checkpoints, and every kind of malformed file ending in an
// error that names the file and the tensor, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "model/safetensors.hpp"
#include "ops/weight_format.hpp"

namespace mach::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Spec {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> image_from_header(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<ptrdiff_t>(header.size()));
  return out;
}

// A well-formed file image holding `specs` back to back.
std::vector<uint8_t> make_image(const std::vector<Spec>& specs, json metadata = nullptr) {
  json header = json::object();
  std::vector<uint8_t> data;
  for (const auto& s : specs) {
    header[s.name] = {{"dtype", s.dtype}, {"shape", s.shape}, {"data_offsets", {data.size(), data.size() + s.bytes.size()}}};
    data.insert(data.end(), s.bytes.begin(), s.bytes.end());
  }
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  return image_from_header(header.dump(), data);
}

std::vector<uint8_t> f32_bytes(std::vector<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> bf16_bytes(std::vector<float> v) {
  std::vector<uint8_t> b;
  for (float f : v) {
    uint16_t h = ops::float_to_bf16(f);
    b.push_back(h & 0xff);
    b.push_back(h >> 8);
  }
  return b;
}

std::vector<uint8_t> f16_bytes(std::vector<float> v) {
  std::vector<uint8_t> b;
  for (float f : v) {
    uint16_t h = ops::float_to_half(f);
    b.push_back(h & 0xff);
    b.push_back(h >> 8);
  }
  return b;
}

std::vector<Spec> sample_specs() {
  return {{"a.weight", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
          {"b.weight", "BF16", {4}, bf16_bytes({0.5f, -1.0f, 2.0f, 3.0f})},
          {"c.weight", "F16", {1, 2}, f16_bytes({0.25f, -8.0f})},
          {"d.table", "I64", {2}, std::vector<uint8_t>(16, 1)},
          {"e.blocks", "U8", {3}, {1, 2, 3}},
          {"f.scale", "F8_E4M3", {2}, {0x38, 0x40}}};
}

Result<SafetensorsFile> parse_bytes(const std::vector<uint8_t>& image, const std::string& name = "mem.safetensors") {
  return SafetensorsFile::parse(std::span(reinterpret_cast<const std::byte*>(image.data()), image.size()), name);
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("mach_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::ofstream out(path_ / name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path_ / name;
  }
  fs::path write_text(const std::string& name, const std::string& text) const {
    return write(name, std::vector<uint8_t>(text.begin(), text.end()));
  }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// The error must name the file and, where given, the tensor.
void expect_error(const Error& e, const std::string& file, const std::string& tensor = "") {
  EXPECT_NE(e.message.find(file), std::string::npos) << e.message;
  if (!tensor.empty()) {
    EXPECT_NE(e.message.find("'" + tensor + "'"), std::string::npos) << e.message;
  }
  EXPECT_EQ(e.message.find('\n'), std::string::npos) << "one line: " << e.message;
}

TEST(Safetensors, ValidSingleFile) {
  TempDir dir;
  auto path = dir.write("model.safetensors", make_image(sample_specs(), {{"format", "pt"}}));
  auto f = SafetensorsFile::open(path).value_or_throw();
  EXPECT_EQ(f.tensors().size(), 6u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const TensorInfo* a = f.find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(a->numel(), 6u);
  EXPECT_EQ(f.to_f32(*a).value_or_throw(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.to_f32(*f.find("b.weight")).value_or_throw(), (std::vector<float>{0.5f, -1.0f, 2.0f, 3.0f}));
  EXPECT_EQ(f.to_f32(*f.find("c.weight")).value_or_throw(), (std::vector<float>{0.25f, -8.0f}));
  EXPECT_EQ(f.find("d.table")->dtype, DType::i64);
  EXPECT_EQ(f.data(*f.find("e.blocks")).size(), 3u);
  EXPECT_EQ(f.find("f.scale")->dtype, DType::f8_e4m3);
  EXPECT_EQ(f.find("nope"), nullptr);
  auto bad = f.to_f32(*f.find("d.table"));
  ASSERT_FALSE(bad.ok());
  expect_error(bad.error(), "model.safetensors", "d.table");

  auto ck = Checkpoint::open(dir.path()).value_or_throw();
  EXPECT_EQ(ck.tensor_names().size(), 6u);
  EXPECT_EQ(ck.read_f32("a.weight").value_or_throw()[5], 6.0f);
}

TEST(Safetensors, SubByteAndFp8Dtypes) {
  // DeepSeek-V4 experts: packed FP4 in I8 with E8M0 scales; F4 packs two values per byte, F6 four per 3 bytes.
  const auto image = make_image({{"w", "I8", {2, 8}, std::vector<uint8_t>(16, 0x42)},
                                 {"s", "F8_E8M0", {2, 1}, {127, 128}},
                                 {"p", "F4", {2, 4}, std::vector<uint8_t>(4, 0x21)},
                                 {"q", "F6_E2M3", {4}, std::vector<uint8_t>(3, 0)}});
  auto f = parse_bytes(image).value_or_throw();
  EXPECT_EQ(f.find("p")->nbytes, 4u);
  EXPECT_EQ(f.find("q")->nbytes, 3u);
  EXPECT_EQ(dtype_bits(DType::f4), 4u);
  auto odd = parse_bytes(make_image({{"p", "F4", {3}, std::vector<uint8_t>(2, 0)}}), "odd.safetensors");
  ASSERT_FALSE(odd.ok());
  expect_error(odd.error(), "odd.safetensors", "p");
}

TEST(Safetensors, EmptyAndZeroSizedTensors) {
  EXPECT_TRUE(parse_bytes(make_image({})).ok());
  const auto image = make_image({{"z", "F32", {0, 4}, {}}, {"s", "F32", {}, f32_bytes({7})}});  // parse borrows it
  auto f = parse_bytes(image).value_or_throw();
  EXPECT_EQ(f.find("z")->nbytes, 0u);
  EXPECT_EQ(f.to_f32(*f.find("s")).value_or_throw(), std::vector<float>{7});
}

TEST(Safetensors, ShardedCheckpoint) {
  TempDir dir;
  auto specs = sample_specs();
  std::vector<Spec> first(specs.begin(), specs.begin() + 3), second(specs.begin() + 3, specs.end());
  dir.write("model-00001-of-00002.safetensors", make_image(first));
  dir.write("model-00002-of-00002.safetensors", make_image(second));
  json index = {{"metadata", {{"total_size", 100}}}, {"weight_map", json::object()}};
  for (const auto& s : first) index["weight_map"][s.name] = "model-00001-of-00002.safetensors";
  for (const auto& s : second) index["weight_map"][s.name] = "model-00002-of-00002.safetensors";
  dir.write_text("model.safetensors.index.json", index.dump());
  auto ck = Checkpoint::open(dir.path()).value_or_throw();
  EXPECT_EQ(ck.files().size(), 2u);
  EXPECT_EQ(ck.tensor_names().size(), 6u);
  auto ref = ck.find("e.blocks").value_or_throw();
  EXPECT_NE(ref.file->source().find("00002"), std::string::npos);
  EXPECT_EQ(ck.read_f32("b.weight").value_or_throw()[1], -1.0f);
  auto missing = ck.find("model.layers.0.mlp.gate.weight");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::not_found);
  expect_error(missing.error(), dir.path().string(), "model.layers.0.mlp.gate.weight");
}

TEST(Safetensors, IndexPointingAtMissingShard) {
  TempDir dir;
  dir.write("model-00001-of-00002.safetensors", make_image(sample_specs()));
  json index = {{"weight_map", {{"a.weight", "model-00001-of-00002.safetensors"},
                                {"x.weight", "model-00002-of-00002.safetensors"}}}};
  dir.write_text("model.safetensors.index.json", index.dump());
  auto ck = Checkpoint::open(dir.path());
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.error().code, Errc::not_found);
  expect_error(ck.error(), "model-00002-of-00002.safetensors");
}

TEST(Safetensors, IndexProblems) {
  TempDir dir;
  dir.write("model-00001-of-00001.safetensors", make_image(sample_specs()));
  // weight_map names a tensor its shard lacks
  dir.write_text("model.safetensors.index.json",
                 json({{"weight_map", {{"ghost.weight", "model-00001-of-00001.safetensors"}}}}).dump());
  auto ck = Checkpoint::open(dir.path());
  ASSERT_FALSE(ck.ok());
  expect_error(ck.error(), "index.json", "ghost.weight");
  // a shard path that escapes the model directory
  dir.write_text("model.safetensors.index.json", json({{"weight_map", {{"a.weight", "../x.safetensors"}}}}).dump());
  EXPECT_FALSE(Checkpoint::open(dir.path()).ok());
  dir.write_text("model.safetensors.index.json", "{\"weight_map\": [1, 2]}");
  EXPECT_FALSE(Checkpoint::open(dir.path()).ok());
  dir.write_text("model.safetensors.index.json", "{not json");
  EXPECT_FALSE(Checkpoint::open(dir.path()).ok());
  TempDir empty;
  auto none = Checkpoint::open(empty.path());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::not_found);
}

TEST(Safetensors, TensorInTwoShards) {
  TempDir dir;
  dir.write("s1.safetensors", make_image({sample_specs()[0]}));
  dir.write("s2.safetensors", make_image({sample_specs()[0]}));
  dir.write_text("model.safetensors.index.json",
                 json({{"weight_map", {{"a.weight", "s1.safetensors"}, {"b", "s2.safetensors"}}}}).dump());
  auto ck = Checkpoint::open(dir.path());
  ASSERT_FALSE(ck.ok());
  expect_error(ck.error(), "s", "a.weight");
}

TEST(Safetensors, Truncated) {
  TempDir dir;
  auto image = make_image(sample_specs());
  for (size_t keep : {size_t(0), size_t(5), size_t(8), size_t(20), image.size() - 1}) {
    std::vector<uint8_t> cut(image.begin(), image.begin() + keep);
    auto path = dir.write("cut.safetensors", cut);
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f.ok()) << keep;
    EXPECT_EQ(f.error().code, Errc::parse);
    expect_error(f.error(), "cut.safetensors");
  }
  // Cut inside the data: the error names the tensor whose data is missing.
  std::vector<uint8_t> cut(image.begin(), image.end() - 2);
  auto f = parse_bytes(cut, "cut.safetensors");
  ASSERT_FALSE(f.ok());
  expect_error(f.error(), "cut.safetensors", "f.scale");
}

TEST(Safetensors, HeaderLiesAboutSizes) {
  // shape x dtype disagrees with data_offsets
  std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})";
  auto f = parse_bytes(image_from_header(header, std::vector<uint8_t>(12)), "lie.safetensors");
  ASSERT_FALSE(f.ok());
  expect_error(f.error(), "lie.safetensors", "w");
  EXPECT_NE(f.error().message.find("16 bytes"), std::string::npos) << f.error().message;
  // header length larger than the file
  auto image = make_image(sample_specs());
  image[0] = 0xff;
  image[1] = 0xff;
  EXPECT_FALSE(parse_bytes(image).ok());
  // header length beyond the sanity bound
  std::vector<uint8_t> huge(16, 0);
  huge[7] = 0x7f;
  auto h = parse_bytes(huge, "huge.safetensors");
  ASSERT_FALSE(h.ok());
  expect_error(h.error(), "huge.safetensors");
  // shape whose byte size overflows u64
  header = R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})";
  EXPECT_FALSE(parse_bytes(image_from_header(header, {})).ok());
  header = R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})";
  EXPECT_FALSE(parse_bytes(image_from_header(header, std::vector<uint8_t>(4))).ok());
}

TEST(Safetensors, OffsetsOutOfRangeOrOverlapping) {
  std::string header = R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  auto f = parse_bytes(image_from_header(header, std::vector<uint8_t>(6)), "range.safetensors");
  ASSERT_FALSE(f.ok());
  expect_error(f.error(), "range.safetensors", "w");
  header = R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})";
  EXPECT_FALSE(parse_bytes(image_from_header(header, std::vector<uint8_t>(8))).ok());
  header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})";
  auto o = parse_bytes(image_from_header(header, std::vector<uint8_t>(6)), "overlap.safetensors");
  ASSERT_FALSE(o.ok());
  expect_error(o.error(), "overlap.safetensors", "b");
  // a hole between tensors, and trailing bytes nobody indexes
  header = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
  EXPECT_FALSE(parse_bytes(image_from_header(header, std::vector<uint8_t>(6))).ok());
  header = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  EXPECT_FALSE(parse_bytes(image_from_header(header, std::vector<uint8_t>(3))).ok());
}

TEST(Safetensors, UnknownDtypeAndBadEntries) {
  std::string header = R"({"w":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}})";
  auto f = parse_bytes(image_from_header(header, std::vector<uint8_t>(4)), "dtype.safetensors");
  ASSERT_FALSE(f.ok());
  expect_error(f.error(), "dtype.safetensors", "w");
  EXPECT_NE(f.error().message.find("Q4_K"), std::string::npos);
  for (std::string bad : {R"({"w":{"shape":[4],"data_offsets":[0,4]}})", R"({"w":{"dtype":"U8","data_offsets":[0,4]}})",
                          R"({"w":{"dtype":"U8","shape":[4]}})", R"({"w":{"dtype":"U8","shape":4,"data_offsets":[0,4]}})",
                          R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", R"({"w":[1,2]})",
                          R"({"w":{"dtype":7,"shape":[4],"data_offsets":[0,4]}})", R"({"__metadata__":{"a":1}})",
                          R"({"__metadata__":[]})"}) {
    EXPECT_FALSE(parse_bytes(image_from_header(bad, std::vector<uint8_t>(4))).ok()) << bad;
  }
}

TEST(Safetensors, BadJson) {
  for (std::string bad : {"{", "[]", "\"str\"", "{\"a\":", "nul", "", "{\"w\":{\"dtype\":\"U8\"\xff}}"}) {
    auto f = parse_bytes(image_from_header(bad, {}), "json.safetensors");
    ASSERT_FALSE(f.ok()) << bad;
    expect_error(f.error(), "json.safetensors");
  }
}

TEST(Safetensors, MissingFile) {
  auto f = SafetensorsFile::open("/nonexistent/model.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().code, Errc::not_found);
  expect_error(f.error(), "/nonexistent/model.safetensors");
}

// The golden fixtures transformers 5.17 wrote read back, including the I64 hash-routing table.
TEST(Safetensors, GoldenFixturesLoad) {
  const std::string root = std::string(MACH_SOURCE_DIR) + "/tests/fixtures/";
  for (const char* family : {"qwen3_moe", "qwen3_moe_fused", "qwen3_5_moe", "gpt_oss", "gemma4", "deepseek_v4"}) {
    auto ck = Checkpoint::open(root + family).value_or_throw();
    EXPECT_GT(ck.tensor_names().size(), 20u) << family;
    auto embed = ck.read_f32("model.embed_tokens.weight").value_or_throw();
    EXPECT_EQ(embed.size(), 512u * 64u) << family;
  }
  auto fused = Checkpoint::open(root + "qwen3_moe_fused").value_or_throw();
  auto per_expert = Checkpoint::open(root + "qwen3_moe").value_or_throw();
  auto gate_up = fused.read_f32("model.layers.1.mlp.experts.gate_up_proj").value_or_throw();  // [E, 2I, H]
  auto up3 = per_expert.read_f32("model.layers.1.mlp.experts.3.up_proj.weight").value_or_throw();  // [I, H]
  const size_t inter = 32, hidden = 64;
  ASSERT_EQ(gate_up.size(), 8 * 2 * inter * hidden);
  for (size_t i = 0; i < up3.size(); ++i) ASSERT_EQ(gate_up[(3 * 2 * inter + inter) * hidden + i], up3[i]);
  auto ds = Checkpoint::open(root + "deepseek_v4").value_or_throw();
  EXPECT_EQ(ds.find("model.layers.0.ffn.gate.tid2eid").value_or_throw().info->dtype, DType::i64);
}

}  // namespace
}  // namespace mach::model

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);  // fuzz/safetensors_fuzz.cpp

namespace mach::model {
namespace {

// Mutations of a valid file through the fuzz entry point: the no-crash property in every CI run, without
// libFuzzer. Each mutation either parses or is an Error; none may crash or trap.
TEST(SafetensorsFuzzReplay, MutatedFilesNeverCrash) {
  const auto valid = make_image(sample_specs(), {{"format", "pt"}});
  ASSERT_EQ(LLVMFuzzerTestOneInput(valid.data(), valid.size()), 0);
  std::mt19937_64 rng(1234);
  auto pick = [&](size_t n) { return n ? static_cast<size_t>(rng() % n) : 0; };
  int parsed = 0;
  const int kMutations = 600;
  for (int i = 0; i < kMutations; ++i) {
    std::vector<uint8_t> m = valid;
    const int edits = 1 + static_cast<int>(pick(3));
    for (int e = 0; e < edits; ++e) {
      switch (pick(7)) {
        case 0: m[pick(m.size())] ^= static_cast<uint8_t>(1u << pick(8)); break;  // bit flip anywhere
        case 1: m[pick(8)] = static_cast<uint8_t>(rng()); break;                    // header length
        case 2: m.resize(pick(m.size() + 1)); break;                                // truncate
        case 3: {                                                                   // a digit in the header
          std::vector<size_t> digits;
          for (size_t k = 8; k < m.size(); ++k) {
            if (m[k] >= '0' && m[k] <= '9') digits.push_back(k);
          }
          if (!digits.empty()) m[digits[pick(digits.size())]] = static_cast<uint8_t>('0' + pick(10));
          break;
        }
        case 4: m.insert(m.begin() + static_cast<ptrdiff_t>(pick(m.size() + 1)), static_cast<uint8_t>(rng())); break;
        case 5:
          if (!m.empty()) m.erase(m.begin() + static_cast<ptrdiff_t>(pick(m.size())));
          break;
        case 6: {  // structural JSON characters
          static const char kChars[] = "{}[]\":,-0e\\";
          if (m.size() > 8) m[8 + pick(m.size() - 8)] = static_cast<uint8_t>(kChars[pick(sizeof(kChars) - 1)]);
          break;
        }
      }
      if (m.empty()) break;
    }
    ASSERT_EQ(LLVMFuzzerTestOneInput(m.data(), m.size()), 0);
    if (parse_bytes(m).ok()) ++parsed;
  }
  // Some mutations (data bytes) leave a valid file; most must be rejected.
  EXPECT_GT(parsed, 0);
  EXPECT_LT(parsed, kMutations);
}

}  // namespace
}  // namespace mach::model
