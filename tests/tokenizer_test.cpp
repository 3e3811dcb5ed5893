// Tokenizer building blocks on small hand-made tokenizer.json files (no downloads): merge order, added-token
// flags, byte fallback, UTF-8 repair, streaming decode and load errors. tokenizer_oracle_test covers the real
// tokenizers.
#include "text/tokenizer.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "text/regex.hpp"
#include "text/text_profile.hpp"
#include "text/utf8.hpp"

namespace mach::text {
namespace {

using nlohmann::json;

std::string byte_char(unsigned char b) {
  std::string s;
  append_utf8(s, byte_to_unicode()[b]);
  return s;
}

// A byte-level tokenizer: the 256 bytes, then `extra` merges in rank order (each merge's result is added to
// the vocabulary), with Qwen's split regex and the given added tokens.
json byte_level_tokenizer(const std::vector<std::pair<std::string, std::string>>& extra, json added = json::array()) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(static_cast<unsigned char>(b))] = b;
  json merges = json::array();
  for (const auto& [a, b] : extra) {
    merges.push_back({a, b});
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
  }
  return {{"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer make(const json& tokenizer, const json& config = json::object()) {
  return Tokenizer::from_json(tokenizer.dump(), config.dump()).value_or_throw();
}

json added_token(const std::string& content, int id, bool special, json flags = json::object()) {
  json t = {{"id", id}, {"content", content}, {"special", special}, {"lstrip", false}, {"rstrip", false},
            {"normalized", false}, {"single_word", false}};
  t.update(flags);
  return t;
}

TEST(Utf8, RepairsInvalidAndTruncatedSequencesLikeTextDecoder) {
  EXPECT_EQ(sanitize_utf8("ok"), "ok");
  EXPECT_EQ(sanitize_utf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(sanitize_utf8("\xE4\xBD"), "\xEF\xBF\xBD");                 // truncated: one replacement
  EXPECT_EQ(sanitize_utf8("\xE4\xBD" "a"), "\xEF\xBF\xBD" "a");         // maximal subpart, then 'a'
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  EXPECT_EQ(utf8_step("\xF0\x9F\xA4", 0).status, Utf8Status::incomplete);
  EXPECT_EQ(utf8_step("\xF0\x9F\xA4\x96", 0).code_point, 0x1F916u);
}

TEST(Regex, RewritesWhitespaceAndContractionsForPcre2) {
  const std::string t = translate_regex_for_pcre2("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\s\\p{L}]+|\\s+(?!\\S)");
  EXPECT_EQ(t.find("(?i:"), std::string::npos);
  EXPECT_EQ(t.find("\\s"), std::string::npos);
  EXPECT_EQ(t.find("\\S"), std::string::npos);
  const Regex re = Regex::compile("\\s+(?!\\S)|\\s+").value_or_throw();
  std::vector<std::pair<size_t, size_t>> m;
  re.find_all("a \u3000 b", m);  // U+3000 is whitespace to JavaScript: one run of 5 bytes, minus the last space
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0], (std::pair<size_t, size_t>{1, 5}));
  EXPECT_EQ(m[1], (std::pair<size_t, size_t>{5, 6}));
}

TEST(Regex, ReportsBadPatterns) {
  const auto re = Regex::compile("(unclosed");
  ASSERT_FALSE(re.ok());
  EXPECT_EQ(re.error().code, Errc::parse);
  EXPECT_NE(re.error().message.find("(unclosed"), std::string::npos);
}

TEST(Bpe, MergesLowestRankFirstAndLeftmostAmongEqualRanks) {
  // "aaa": (a,a) fires at the left pair first → [aa, a], not [a, aa].
  const Tokenizer t = make(byte_level_tokenizer({{"a", "a"}}));
  EXPECT_EQ(t.encode("aaa"), (std::vector<TokenId>{256, 'a'}));
  EXPECT_EQ(t.encode("aaaa"), (std::vector<TokenId>{256, 256}));
  // Rank decides over position: (b,c) is ranked above (a,b), so "abc" → [a, bc].
  const Tokenizer u = make(byte_level_tokenizer({{"b", "c"}, {"a", "b"}}));
  EXPECT_EQ(u.encode("abc"), (std::vector<TokenId>{'a', 256}));
  EXPECT_EQ(u.encode("ab"), (std::vector<TokenId>{257}));
}

TEST(Bpe, ByteLevelRoundTripsArbitraryBytesAndSpaces) {
  const Tokenizer t = make(byte_level_tokenizer({{byte_char(' '), "a"}}));
  const std::string text = "a a  a\t\n🤖 \xC3\xA9";
  const auto ids = t.encode(text);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 256), ids.end());  // " a" merged
  EXPECT_EQ(t.decode(t.encode("bad \xff byte")), "bad \xEF\xBF\xBD byte");  // invalid input is repaired first
}

TEST(AddedTokens, LongestMatchWinsAndSpecialsCanBeSwitchedOff) {
  json added = json::array({added_token("<a>", 300, true), added_token("<a><b>", 301, true),
                            added_token("<t>", 302, false)});
  const Tokenizer t = make(byte_level_tokenizer({}, added));
  EXPECT_EQ(t.encode("<a><b>"), (std::vector<TokenId>{301}));
  EXPECT_EQ(t.encode("x<a>y<t>"), (std::vector<TokenId>{'x', 300, 'y', 302}));
  const auto plain = t.encode("x<a>y<t>", {.match_special = false});
  EXPECT_EQ(plain.back(), 302);  // non-special added tokens still match
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 300), 0);
  EXPECT_TRUE(t.is_special(300));
  EXPECT_FALSE(t.is_special(302));
  EXPECT_EQ(t.decode(std::vector<TokenId>{'x', 300, 'y'}, /*skip_special_tokens=*/true), "xy");
}

TEST(AddedTokens, StripAndSingleWordFlags) {
  json added = json::array({added_token("<l>", 300, true, {{"lstrip", true}}),
                            added_token("<r>", 301, true, {{"rstrip", true}}),
                            added_token("w", 302, false, {{"single_word", true}})});
  const Tokenizer t = make(byte_level_tokenizer({}, added));
  EXPECT_EQ(t.encode("x  <l>y"), (std::vector<TokenId>{'x', 300, 'y'}));
  EXPECT_EQ(t.encode("x<r> \t y"), (std::vector<TokenId>{'x', 301, 'y'}));
  EXPECT_EQ(t.encode("a w b"), (std::vector<TokenId>{'a', ' ', 302, ' ', 'b'}));
  const auto inside_word = t.encode("awb");
  EXPECT_EQ(std::count(inside_word.begin(), inside_word.end(), 302), 0);
}

// SentencePiece-style BPE as Gemma writes it: spaces become "▁", unknown characters fall back to <0xNN>.
json sentencepiece_tokenizer() {
  json vocab = {{"<unk>", 0}, {"<bos>", 1}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 2 + b;
  int next = 258;
  for (const char* s : {"\u2581", "h", "i", "\u2581h", "\u2581hi", "hi"}) vocab[s] = next++;
  return {{"added_tokens", json::array({added_token("<unk>", 0, true), added_token("<bos>", 1, true)})},
          {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}},
          {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens", {{"<bos>", {{"id", "<bos>"}, {"ids", {1}}, {"tokens", {"<bos>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}}}}}},
          {"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({json::array({"\u2581", "h"}), json::array({"\u2581h", "i"}), json::array({"h", "i"})})},
            {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true}}}};
}

TEST(SentencePieceBpe, SpacesBecomeMetaspaceAndUnknownsFallBackToBytes) {
  const Tokenizer t = make(sentencepiece_tokenizer());
  const TokenId hi = 263, space_hi = 262, h = 259;
  EXPECT_EQ(t.encode("hi hi"), (std::vector<TokenId>{hi, space_hi}));
  EXPECT_EQ(t.encode("hi hi", {.add_special_tokens = true}), (std::vector<TokenId>{1, hi, space_hi}));
  // 'é' is not in the vocabulary: its two UTF-8 bytes C3 A9 become <0xC3><0xA9>.
  EXPECT_EQ(t.encode("h\u00e9"), (std::vector<TokenId>{h, 2 + 0xC3, 2 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("hi h\u00e9 hi")), "hi h\u00e9 hi");
}

TEST(StreamDecoder, HoldsPartialCodePointsUntilComplete) {
  const Tokenizer t = make(sentencepiece_tokenizer());
  const std::vector<TokenId> ids = t.encode("h\U0001F916i");  // the robot is four byte tokens
  ASSERT_EQ(ids.size(), 6u);
  StreamDecoder stream(t);
  EXPECT_EQ(stream.push(ids[0]), "h");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "");
  EXPECT_EQ(stream.push(ids[3]), "");
  EXPECT_EQ(stream.push(ids[4]), "\U0001F916");
  EXPECT_EQ(stream.push(ids[5]), "i");
  EXPECT_EQ(stream.finish(), "");
  // A sequence cut short: held, then replaced at finish (or as soon as the next byte proves it invalid).
  EXPECT_EQ(stream.push(2 + 0xF0), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.push(2 + 0xF0), "");
  EXPECT_EQ(stream.push(t.token_id("h")), "\xEF\xBF\xBDh");
}

TEST(TokenizerLoad, ErrorsSayWhatIsWrong) {
  const auto missing = Tokenizer::load("/nonexistent/model");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_NE(missing.error().message.find("tokenizer.json"), std::string::npos);

  json unigram = byte_level_tokenizer({});
  unigram["model"]["type"] = "Unigram";
  const auto bad_model = Tokenizer::from_json(unigram.dump(), "{}");
  ASSERT_FALSE(bad_model.ok());
  EXPECT_EQ(bad_model.error().code, Errc::unsupported);
  EXPECT_NE(bad_model.error().message.find("Unigram"), std::string::npos);

  const auto not_json = Tokenizer::from_json("{not json", "{}");
  ASSERT_FALSE(not_json.ok());
  EXPECT_EQ(not_json.error().code, Errc::parse);
}

// Gemma 4 and DeepSeek-V4 are told by their special tokens (DeepSeek-V4 also by having no chat template, which
// tells it from DeepSeek-V3); their end markers stop generation.
TEST(TextProfile, Gemma4AndDeepSeekV4) {
  json gemma_added = json::array();
  int id = 256;
  for (const char* t : {"<bos>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>",
                        "<|tool_response>", "<tool_response|>", "<|\"|>"}) {
    gemma_added.push_back(added_token(t, id++, true));
  }
  const Tokenizer gemma = make(byte_level_tokenizer({}, gemma_added), {{"eos_token", "<turn|>"}});
  const TextProfile g = detect_text_profile(gemma, "{{ bos_token }}...");
  EXPECT_EQ(g.output_format, OutputFormat::gemma4);
  for (const char* stop : {"<turn|>", "<|tool_response>"}) {
    EXPECT_NE(std::find(g.stop_ids.begin(), g.stop_ids.end(), gemma.token_id(stop)), g.stop_ids.end()) << stop;
  }

  json ds_added = json::array();
  id = 256;
  for (const char* t : {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"}) {
    ds_added.push_back(added_token(t, id++, true));
  }
  const Tokenizer ds = make(byte_level_tokenizer({}, ds_added), {{"eos_token", "<｜end▁of▁sentence｜>"}});
  const TextProfile d = detect_text_profile(ds, "");
  EXPECT_EQ(d.output_format, OutputFormat::deepseek_v4);
  EXPECT_EQ(d.stop_ids, std::vector<TokenId>{ds.token_id("<｜end▁of▁sentence｜>")});
  // The same tokens with a Jinja template: a DeepSeek-V3-style checkpoint, not V4.
  EXPECT_NE(detect_text_profile(ds, "{{ bos_token }}").output_format, OutputFormat::deepseek_v4);
  EXPECT_TRUE(prompt_opens_reasoning("<｜User｜>hi<｜Assistant｜><think>"));
}

}  // namespace
}  // namespace mach::text
