// .npy writing and reading, against numpy's own files (the golden fixtures' logits.npy).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/npy.hpp"

namespace mach::model {
namespace {

std::string header_text(const std::vector<std::byte>& bytes) {
  size_t len = std::to_integer<size_t>(bytes[8]) | (std::to_integer<size_t>(bytes[9]) << 8);
  return std::string(reinterpret_cast<const char*>(bytes.data() + 10), len);
}

TEST(Npy, RoundTrip2D) {
  std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7e20f};
  std::vector<uint64_t> shape = {2, 3};
  auto bytes = encode_npy_f32(v, shape);
  EXPECT_EQ(std::memcmp(bytes.data(), "\x93NUMPY\x01\x00", 8), 0);
  EXPECT_EQ((bytes.size() - v.size() * 4) % 64, 0u);  // data start 64-byte aligned, as numpy writes
  std::string h = header_text(bytes);
  EXPECT_EQ(h.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u) << h;
  EXPECT_EQ(h.back(), '\n');
  auto a = decode_npy_f32(bytes).value_or_throw();
  EXPECT_EQ(a.shape, shape);
  EXPECT_EQ(a.data, v);
}

TEST(Npy, OneDimAndScalarShapes) {
  std::vector<float> v = {4.0f};
  std::vector<uint64_t> one = {1};
  auto bytes = encode_npy_f32(v, one);
  EXPECT_NE(header_text(bytes).find("'shape': (1,)"), std::string::npos);
  EXPECT_EQ(decode_npy_f32(bytes).value_or_throw().shape, one);
  auto scalar = encode_npy_f32(v, std::span<const uint64_t>());
  EXPECT_NE(header_text(scalar).find("'shape': ()"), std::string::npos);
  auto s = decode_npy_f32(scalar).value_or_throw();
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.data, v);
}

TEST(Npy, FileRoundTrip) {
  auto path = std::filesystem::temp_directory_path() / ("mach_npy_" + std::to_string(::getpid()) + ".npy");
  std::vector<float> v(3 * 512);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i));
  std::vector<uint64_t> shape = {3, 512};
  ASSERT_TRUE(write_npy_f32(path, v, shape).ok());
  auto a = read_npy_f32(path).value_or_throw();
  std::filesystem::remove(path);
  EXPECT_EQ(a.shape, shape);
  EXPECT_EQ(a.data, v);
  EXPECT_FALSE(write_npy_f32("/nonexistent/dir/x.npy", v, shape).ok());
  auto missing = read_npy_f32("/nonexistent/x.npy");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

TEST(Npy, RejectsMalformed) {
  std::vector<float> v = {1, 2, 3, 4};
  std::vector<uint64_t> shape = {2, 2};
  const auto good = encode_npy_f32(v, shape);
  auto with_header = [&](const std::string& dict) {
    std::vector<std::byte> b(good.begin(), good.begin() + 8);
    std::string h = dict + "\n";
    b.push_back(std::byte(h.size() & 0xff));
    b.push_back(std::byte(h.size() >> 8));
    for (char c : h) b.push_back(std::byte(c));
    b.insert(b.end(), good.end() - 16, good.end());
    return b;
  };
  auto expect_bad = [](const std::vector<std::byte>& b, const char* what) {
    auto r = decode_npy_f32(b, "bad.npy");
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.error().message.find("bad.npy"), std::string::npos);
  };
  expect_bad(std::vector<std::byte>(good.begin(), good.begin() + 5), "short");
  expect_bad(std::vector<std::byte>(good.begin(), good.end() - 1), "truncated data");
  auto magic = good;
  magic[1] = std::byte('X');
  expect_bad(magic, "magic");
  auto version = good;
  version[6] = std::byte(9);
  expect_bad(version, "version");
  auto len = good;
  len[9] = std::byte(0xff);
  expect_bad(len, "header length");
  expect_bad(with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }"), "big endian");
  expect_bad(with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }"), "int");
  expect_bad(with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"), "fortran");
  expect_bad(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), "size");
  expect_bad(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }"), "shape");
  expect_bad(with_header("{'descr': '<f4', 'shape': (2, 2), }"), "no fortran_order");
  EXPECT_TRUE(decode_npy_f32(with_header("{'shape': (2, 2), 'fortran_order': False, 'descr': '<f4'}")).ok());
}

// numpy 2.5 wrote these (tools/make_fixtures.py): shape [T, vocab] and the max |logit| recorded beside them.
TEST(Npy, ReadsGoldenFixtureLogits) {
  const std::string root = std::string(MACH_SOURCE_DIR) + "/tests/fixtures/";
  for (const char* family : {"qwen3_moe", "qwen3_5_moe", "gpt_oss", "gemma4", "deepseek_v4"}) {
    auto a = read_npy_f32(root + family + "/logits.npy").value_or_throw();
    std::ifstream in(root + family + "/reference.json");
    auto ref = nlohmann::json::parse(in);
    ASSERT_EQ(a.shape.size(), 2u) << family;
    EXPECT_EQ(a.shape[0], ref["prompt_ids"].size()) << family;
    EXPECT_EQ(a.shape[1], 512u) << family;
    float max_abs = 0;
    for (float x : a.data) max_abs = std::max(max_abs, std::fabs(x));
    EXPECT_FLOAT_EQ(max_abs, ref["max_abs_logit"].get<float>()) << family;
    // the last prompt position's argmax is the first greedy token
    const float* last = a.data.data() + (a.shape[0] - 1) * a.shape[1];
    EXPECT_EQ(std::max_element(last, last + a.shape[1]) - last, ref["continuation_ids"][0].get<long>()) << family;
  }
}

}  // namespace
}  // namespace mach::model
