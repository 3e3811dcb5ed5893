// A malformed checkpoint is a one-line error naming the file and the tensor, never a crash: through
// load_model and through `mach generate` (exit code 1).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gpu_fixture.hpp"
#include "model/model.hpp"

namespace mach::test {
namespace {

namespace fs = std::filesystem;

class BrokenCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mach_broken_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const fs::path src = fs::path(MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dir_ / f);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string read(const char* name) {
    std::ifstream f(dir_ / name, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  void write(const char* name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary | std::ios::trunc) << bytes;
  }
  // Replaces the first occurrence of `from` (same length as `to`, so offsets stay valid).
  void patch(const char* name, const std::string& from, const std::string& to) {
    ASSERT_EQ(from.size(), to.size());
    std::string bytes = read(name);
    const size_t at = bytes.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    bytes.replace(at, from.size(), to);
    write(name, bytes);
  }
  Error load_error() {
    auto model = model::load_model(dir_, gpu_context(), {});
    EXPECT_FALSE(model.ok());
    return model.ok() ? Error{} : model.error();
  }
  // Runs `mach generate` on the broken checkpoint; returns (exit code, stderr).
  std::pair<int, std::string> run_cli() {
    const fs::path err = dir_ / "stderr.txt";
    const std::string cmd = std::string(MACH_BINARY_DIR) + "/mach generate " + dir_.string() +
                            " --prompt-ids 1,2,3 --max-tokens 1 2> " + err.string() + " > /dev/null";
    const int status = std::system(cmd.c_str());
    std::ifstream f(err);
    std::stringstream ss;
    ss << f.rdbuf();
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
  }
  void expect_one_line_cli_error(const std::string& must_contain) {
    const auto [code, err] = run_cli();
    EXPECT_EQ(code, 1) << err;
    EXPECT_NE(err.find(must_contain), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  }
  fs::path dir_;
};

TEST_F(BrokenCheckpoint, TruncatedFile) {
  const std::string bytes = read("model.safetensors");
  write("model.safetensors", bytes.substr(0, bytes.size() / 2));
  const Error e = load_error();
  EXPECT_NE(e.message.find("model.safetensors"), std::string::npos) << e.message;
  expect_one_line_cli_error("model.safetensors");
}

TEST_F(BrokenCheckpoint, HeaderLiesAboutASize) {
  // Expert 0's down_proj claims 33 columns: shape x dtype no longer matches its byte range.
  std::string bytes = read("model.safetensors");
  const size_t name = bytes.find("model.layers.0.mlp.experts.0.down_proj.weight");
  ASSERT_NE(name, std::string::npos);
  const size_t shape = bytes.find("[64,32]", name);
  ASSERT_NE(shape, std::string::npos);
  bytes.replace(shape, 7, "[64,33]");
  write("model.safetensors", bytes);
  const Error e = load_error();
  EXPECT_NE(e.message.find("model.layers.0.mlp.experts.0.down_proj.weight"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("model.safetensors"), std::string::npos) << e.message;
  expect_one_line_cli_error("down_proj");
}

TEST_F(BrokenCheckpoint, MissingTensor) {
  patch("model.safetensors", "model.layers.1.self_attn.q_norm.weight", "model.layers.1.self_attn.x_norm.weight");
  const Error e = load_error();
  EXPECT_EQ(e.code, Errc::not_found) << e.message;
  EXPECT_NE(e.message.find("model.layers.1.self_attn.q_norm.weight"), std::string::npos) << e.message;
  expect_one_line_cli_error("q_norm");
}

TEST_F(BrokenCheckpoint, WrongShapeForTheConfig) {
  patch("config.json", "\"moe_intermediate_size\": 32", "\"moe_intermediate_size\": 16");
  const Error e = load_error();
  EXPECT_NE(e.message.find("has shape [32, 64], expected [16, 64]"), std::string::npos) << e.message;
  expect_one_line_cli_error("expected [16, 64]");
}

TEST_F(BrokenCheckpoint, UnsupportedFamilyListsWhatRuns) {
  patch("config.json", "\"model_type\": \"qwen3_moe\"", "\"model_type\": \"qwen9_moe\"");
  const Error e = load_error();
  EXPECT_NE(e.message.find("qwen3_moe"), std::string::npos) << e.message;
  expect_one_line_cli_error("qwen9_moe");
}

}  // namespace
}  // namespace mach::test
