// Token ids of the Qwen3, gpt-oss, Gemma 3 and DeepSeek-V3 tokenizers against transformers.js on the corpus
// of tests/oracle/corpus.mjs. The ctest fixture tokenizer_reference runs tests/oracle/encode.mjs first; it
// needs tests/oracle/node_modules, which scripts/setup.sh installs with npm ci.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "text/text_profile.hpp"
#include "text/tokenizer.hpp"
#include "text/utf8.hpp"

namespace mach::text {
namespace {

const nlohmann::json& reference() {
  static const nlohmann::json ref = [] {
    std::ifstream in(MACH_TOKENIZER_REFERENCE);
    if (!in) return nlohmann::json();
    return nlohmann::json::parse(in);
  }();
  return ref;
}

class TokenizerOracle : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const auto& ref = reference();
    ASSERT_FALSE(ref.is_null()) << MACH_TOKENIZER_REFERENCE
                                << " is missing: run the tests with ctest (the tokenizer_reference fixture makes it) "
                                   "after scripts/setup.sh has installed tests/oracle/node_modules";
    ASSERT_TRUE(ref.contains(GetParam()));
    auto loaded = Tokenizer::load(ref[GetParam()]["dir"].get<std::string>());
    ASSERT_TRUE(loaded.ok()) << loaded.error().message << " (run scripts/setup.sh to install tests/oracle/node_modules)";
    tokenizer_ = std::make_unique<Tokenizer>(std::move(*loaded));
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

std::string show(const std::string& s) { return nlohmann::json(s).dump(); }
const nlohmann::json& lines() { return reference()["lines"]; }

void check_ids_match_every_line(const Tokenizer& tokenizer, const std::string& name) {
  size_t mismatches = 0;
  for (size_t i = 0; i < lines().size(); ++i) {
    const std::string line = lines()[i].get<std::string>();
    const auto want = reference()[name]["ids"][i].get<std::vector<TokenId>>();
    const auto got = tokenizer.encode(line);
    if (got != want && ++mismatches <= 10) {
      size_t at = 0;
      while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
      ADD_FAILURE() << "line " << i << " " << show(line) << "\n  first difference at token " << at
                    << "\n  got:  " << nlohmann::json(got).dump() << "\n  want: " << nlohmann::json(want).dump();
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << lines().size() << " lines";
}

void check_decode_restores_text(const Tokenizer& tokenizer, const std::string& name) {
  // decode(encode(s)) == s, except where the normalizer rewrites text (Qwen's NFC, Gemma's literal "▁"):
  // there it must agree with the reference. gpt-oss and DeepSeek-V3 have no normalizer: always exact.
  const bool always_exact = name == "gptoss" || name == "deepseek_v3";
  for (size_t i = 0; i < lines().size(); ++i) {
    const std::string line = lines()[i].get<std::string>();
    const std::string decoded = tokenizer.decode(tokenizer.encode(line));
    EXPECT_EQ(decoded, reference()[name]["decoded"][i].get<std::string>()) << "line " << i << " " << show(line);
    if (always_exact) {
      EXPECT_EQ(decoded, line) << "line " << i;
    }
  }
}

void check_streaming_decode_equals_whole(const Tokenizer& tokenizer) {
  for (size_t i = 0; i < lines().size(); ++i) {
    const auto ids = tokenizer.encode(lines()[i].get<std::string>());
    StreamDecoder stream(tokenizer);
    std::string streamed;
    for (TokenId id : ids) {
      const std::string piece = stream.push(id);
      streamed += piece;
      for (size_t k = 0; k < piece.size();) {  // every piece is whole code points
        const Utf8Step step = utf8_step(piece, k);
        ASSERT_EQ(step.status, Utf8Status::ok) << "line " << i;
        k += step.length;
      }
    }
    streamed += stream.finish();
    EXPECT_EQ(streamed, tokenizer.decode(ids)) << "line " << i;
  }
}

void check_post_processor_tokens(const Tokenizer& tokenizer, const std::string& name) {
  const auto got = tokenizer.encode(lines()[0].get<std::string>(), {.add_special_tokens = true});
  EXPECT_EQ(got, reference()[name]["with_special"].get<std::vector<TokenId>>());
}

void check_no_special_encodes_specials_as_text(const Tokenizer& tokenizer) {
  for (const std::string& special : {tokenizer.eos_token(), tokenizer.bos_token()}) {
    if (special.empty()) continue;
    const std::string text = "a" + special + "b";
    const auto matched = tokenizer.encode(text);
    const auto plain = tokenizer.encode(text, {.match_special = false});
    EXPECT_NE(std::find(matched.begin(), matched.end(), tokenizer.token_id(special)), matched.end()) << special;
    EXPECT_EQ(std::find(plain.begin(), plain.end(), tokenizer.token_id(special)), plain.end()) << special;
    EXPECT_EQ(tokenizer.decode(plain), tokenizer.decode(matched));
  }
}

// One test per tokenizer: loading one takes a second or two, so the checks share it.
TEST_P(TokenizerOracle, MatchesReference) {
  const Tokenizer& tokenizer = *tokenizer_;
  {
    SCOPED_TRACE("ids");
    check_ids_match_every_line(tokenizer, GetParam());
  }
  {
    SCOPED_TRACE("decode");
    check_decode_restores_text(tokenizer, GetParam());
  }
  {
    SCOPED_TRACE("streaming decode");
    check_streaming_decode_equals_whole(tokenizer);
  }
  {
    SCOPED_TRACE("post-processor");
    check_post_processor_tokens(tokenizer, GetParam());
  }
  {
    SCOPED_TRACE("match_special=false");
    check_no_special_encodes_specials_as_text(tokenizer);
  }
}

TEST_P(TokenizerOracle, TextProfile) {
  const auto& t = *tokenizer_;
  const TextProfile profile = detect_text_profile(t, t.chat_template());
  const auto stops = [&](std::string_view token) {
    return std::find(profile.stop_ids.begin(), profile.stop_ids.end(), t.token_id(token)) != profile.stop_ids.end();
  };
  if (GetParam() == "qwen3") {
    EXPECT_EQ(profile.output_format, OutputFormat::qwen3);
    EXPECT_TRUE(stops("<|im_end|>") && stops("<|endoftext|>"));
  } else if (GetParam() == "gptoss") {
    EXPECT_EQ(profile.output_format, OutputFormat::harmony);
    EXPECT_TRUE(stops("<|return|>") && stops("<|call|>"));
  } else if (GetParam() == "gemma3") {
    EXPECT_FALSE(profile.output_format.has_value());
    EXPECT_TRUE(stops("<end_of_turn>") && stops("<eos>"));
  } else {
    EXPECT_FALSE(profile.output_format.has_value());
    EXPECT_TRUE(stops("<｜end▁of▁sentence｜>"));
  }
  EXPECT_TRUE(prompt_opens_reasoning("<|im_start|>assistant\n<think>\n"));
  EXPECT_FALSE(prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
}

INSTANTIATE_TEST_SUITE_P(Models, TokenizerOracle, ::testing::Values("qwen3", "gptoss", "gemma3", "deepseek_v3"));

}  // namespace
}  // namespace mach::text
