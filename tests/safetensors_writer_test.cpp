// write_safetensors: what it writes passes the strict reader and reads back bit for bit.
#include <gtest/gtest.h>

#include "model/safetensors.hpp"
#include "model/safetensors_writer.hpp"
#include "temp_dir.hpp"

namespace mach::model {
namespace {

TEST(SafetensorsWriter, RoundTripsThroughTheStrictReader) {
  mach::testing::TempDir tmp("st_writer");
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  const std::vector<uint8_t> b = {1, 2, 3};  // odd size: the next tensor starts unaligned
  const std::vector<uint16_t> c = {0x3f80, 0xc000};
  std::vector<TensorToWrite> tensors = {
      {"z.first", DType::f32, {2, 3}, std::as_bytes(std::span(a))},
      {"a.odd", DType::u8, {3}, std::as_bytes(std::span(b))},
      {"m.bf16", DType::bf16, {2}, std::as_bytes(std::span(c))},
      {"empty", DType::f32, {0, 4}, {}},
  };
  const auto path = tmp / "t.safetensors";
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->metadata().at("format"), "pt");
  ASSERT_EQ(f->tensors().size(), 4u);
  EXPECT_EQ(f->to_f32(*f->find("z.first")).value(), a);
  EXPECT_EQ(f->to_f32(*f->find("m.bf16")).value(), (std::vector<float>{1.0f, -2.0f}));
  const auto odd = f->data(*f->find("a.odd"));
  EXPECT_TRUE(std::equal(odd.begin(), odd.end(), std::as_bytes(std::span(b)).begin()));
  EXPECT_EQ(f->find("empty")->shape, (std::vector<uint64_t>{0, 4}));
  // The data region starts 8-aligned.
  EXPECT_EQ(f->tensors().front().offset % 8, 0u);
}

TEST(SafetensorsWriter, RejectsSizeMismatchAndRepeatedNames) {
  mach::testing::TempDir tmp("st_writer");
  const std::vector<float> a = {1, 2, 3};
  auto r = write_safetensors(tmp / "x.safetensors", {{"w", DType::f32, {2, 2}, std::as_bytes(std::span(a))}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("tensor 'w'"), std::string::npos);
  r = write_safetensors(tmp / "y.safetensors", {{"w", DType::f32, {3}, std::as_bytes(std::span(a))},
                                                {"w", DType::f32, {3}, std::as_bytes(std::span(a))}});
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace mach::model
