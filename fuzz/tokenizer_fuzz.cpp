// libFuzzer target for the tokenizer: load arbitrary tokenizer.json bytes; encode arbitrary bytes, decode
// arbitrary ids, stream-decode, on two
// small built-in tokenizers (byte-level BPE with Qwen's split regex and added tokens; SentencePiece-style
// BPE with byte fallback), plus a real one when MACH_FUZZ_TOKENIZER_DIR names a model directory.
// Invariants: nothing crashes; byte-level decode(encode(s)) is exactly s after UTF-8 repair; streaming
// decode equals whole decode.
#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "text/bpe.hpp"
#include "text/tokenizer.hpp"
#include "text/utf8.hpp"

using namespace mach::text;
using nlohmann::json;

namespace {

json added_token(const std::string& content, int id, bool special, json flags = json::object()) {
  json t = {{"id", id}, {"content", content}, {"special", special}, {"lstrip", false}, {"rstrip", false},
            {"normalized", false}, {"single_word", false}};
  t.update(flags);
  return t;
}

Tokenizer byte_level() {
  json vocab = json::object();
  std::vector<std::string> chars;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, byte_to_unicode()[b]);
    vocab[s] = b;
    chars.push_back(s);
  }
  json merges = json::array();
  for (const char* pair : {" t", "th", "he", "in", "er", "an", " a", "  ", "\n\n"}) {
    const std::string a = chars[static_cast<unsigned char>(pair[0])], b = chars[static_cast<unsigned char>(pair[1])];
    merges.push_back(json::array({a, b}));
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
  }
  const json added = json::array({added_token("<|im_end|>", 400, true), added_token("<think>", 401, false),
                                  added_token("<l>", 402, true, {{"lstrip", true}}),
                                  added_token("<r>", 403, true, {{"rstrip", true}}),
                                  added_token("w", 404, false, {{"single_word", true}})});
  const json t = {
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"},
                       {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                       {"behavior", "Isolated"}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  return Tokenizer::from_json(t.dump(), "{}").value_or_throw();
}

Tokenizer sentencepiece() {
  json vocab = {{"<unk>", 0}, {"<bos>", 1}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 2 + b;
  int next = 258;
  for (const char* s : {"\u2581", "a", "b", "\u2581a", "ab", "\u2581ab"}) vocab[s] = next++;
  const json t = {
      {"added_tokens", json::array({added_token("<unk>", 0, true), added_token("<bos>", 1, true),
                                    added_token("\n", 264, false)})},
      {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}},
      {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                  {{"type", "ByteFallback"}},
                                  {{"type", "Fuse"}}})}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab},
        {"merges", json::array({json::array({"\u2581", "a"}), json::array({"a", "b"}), json::array({"\u2581a", "b"})})},
        {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true}}}};
  return Tokenizer::from_json(t.dump(), "{}").value_or_throw();
}

void check_stream(const Tokenizer& t, const std::vector<TokenId>& ids) {
  StreamDecoder stream(t);
  std::string streamed;
  for (TokenId id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  if (streamed != t.decode(ids)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer bl = byte_level();
  static const Tokenizer sp = sentencepiece();
  static const std::unique_ptr<Tokenizer> real = [] {
    const char* dir = std::getenv("MACH_FUZZ_TOKENIZER_DIR");
    return dir ? std::make_unique<Tokenizer>(Tokenizer::load(dir).value_or_throw()) : nullptr;
  }();
  if (size == 0) return 0;
  const EncodeOptions options{.match_special = (data[0] & 1) != 0, .add_special_tokens = (data[0] & 2) != 0};
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 0x0C) == 0x0C) {  // a quarter of the inputs: the bytes as a tokenizer.json; errors, no crash
    (void)Tokenizer::from_json(text, "{}");
    return 0;
  }

  for (const Tokenizer* t : {&bl, &sp, static_cast<const Tokenizer*>(real.get())}) {
    if (!t) continue;
    const auto ids = t->encode(text, options);
    for (TokenId id : ids) {
      if (!t->valid_id(id)) std::abort();
    }
    check_stream(*t, ids);
    // Arbitrary ids (in range or not) decode without crashing.
    std::vector<TokenId> raw(text.size() / 4);
    if (!raw.empty()) std::memcpy(raw.data(), text.data(), raw.size() * 4);
    for (TokenId& id : raw) id = static_cast<TokenId>(static_cast<uint32_t>(id) % (t->vocab_size() + 8));
    check_stream(*t, raw);
  }
  // The byte-level tokenizer loses nothing but NFC differences; compare on NFC-stable ASCII.
  bool ascii = true;
  for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii && bl.decode(bl.encode(text, options)) != text) std::abort();
  return 0;
}
