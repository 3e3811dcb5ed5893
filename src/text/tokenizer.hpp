// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) for encoding prompts and decoding
// generated tokens.
//
// encode: split out added tokens → normalize each remaining section → pre-tokenize into words → BPE per
// word → post-processor (BOS/EOS) when asked. decode: every id maps to a fixed byte string (the decoder
// applied to that token alone), so decoding is concatenation followed by UTF-8 repair; StreamDecoder does
// the same incrementally. Token ids match transformers' tokenizers (checked against transformers.js on the
// Qwen3, gpt-oss, Gemma 3 and DeepSeek-V3 tokenizers).
//
// Thread-safety: a loaded Tokenizer is immutable apart from an internal word cache guarded by a mutex;
// encode and decode may be called from any thread.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mach/error.hpp"
#include "text/added_tokens.hpp"
#include "text/bpe.hpp"
#include "text/normalizer.hpp"
#include "text/pre_tokenizer.hpp"

namespace mach::text {

struct TokenizerJson;  // text/tokenizer_json.hpp

struct EncodeOptions {
  // Match special added tokens ("<|im_end|>") in the text. false encodes them as plain text, which is what a
  // server wants for user-supplied content (Hugging Face's split_special_tokens).
  bool match_special = true;
  // Add the post-processor's tokens (Gemma's <bos>). Chat templates write BOS themselves, so prompts built
  // from a template are encoded without.
  bool add_special_tokens = false;
};

class Tokenizer {
 public:
  // dir holds tokenizer.json and tokenizer_config.json (and optionally chat_template.jinja).
  static Result<Tokenizer> load(const std::filesystem::path& dir);
  // config_json may be empty ("{}" is assumed).
  static Result<Tokenizer> from_json(std::string_view tokenizer_json, std::string_view config_json);

  Tokenizer(Tokenizer&&) = default;
  Tokenizer& operator=(Tokenizer&&) = default;

  // text: any bytes; invalid UTF-8 is replaced by U+FFFD first.
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // Ids outside the vocabulary decode to nothing. Invalid UTF-8 from byte tokens becomes U+FFFD.
  std::string decode(std::span<const TokenId> ids, bool skip_special_tokens = false) const;

  // The bytes token `id` contributes to decoded text (possibly a partial UTF-8 sequence); "" when unknown.
  std::string_view token_bytes(TokenId id) const;
  // The id of an added token or vocabulary entry given as text ("<|im_end|>", "hello"), or -1.
  TokenId token_id(std::string_view token) const;
  // One past the largest id.
  size_t vocab_size() const { return pieces_.size(); }
  bool is_special(TokenId id) const;
  // tokenizer.json's added tokens (control and markup tokens such as <|im_end|> or <think>).
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  bool valid_id(TokenId id) const { return id >= 0 && static_cast<size_t>(id) < pieces_.size(); }

  TokenId bos_id() const { return bos_id_; }
  TokenId eos_id() const { return eos_id_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  // The default chat template ("" when the model has none).
  const std::string& chat_template() const { return chat_template_; }
  const nlohmann::json& config() const { return config_; }

 private:
  friend class StreamDecoder;
  Tokenizer() = default;
  Result<void> init(TokenizerJson& file, nlohmann::json config);
  Result<void> init_decoder(const nlohmann::json& decoder);
  void encode_section(std::string_view text, bool first_section, std::vector<TokenId>& out) const;
  void encode_normalized(std::string_view text, bool first_section, bool match_special,
                         std::vector<TokenId>& out) const;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  std::vector<AddedToken> added_;
  AddedTokenMatcher raw_matcher_;         // added tokens with normalized == false
  AddedTokenMatcher normalized_matcher_;  // added tokens with normalized == true, by their normalized form
  std::vector<TokenId> prefix_ids_, suffix_ids_;  // the post-processor's single-sequence template

  std::vector<std::string> pieces_;  // decoded bytes of each id
  std::vector<bool> special_;        // skipped by decode(skip_special_tokens)
  bool strip_first_space_ = false;   // Metaspace decoder: the first token loses its leading space
  bool clean_up_spaces_ = false;     // clean_up_tokenization_spaces

  TokenId bos_id_ = -1, eos_id_ = -1;
  std::string bos_token_, eos_token_;
  std::string chat_template_;
  nlohmann::json config_;
};

// Turns generated ids into text as they arrive without ever emitting half a code point: bytes of an
// incomplete UTF-8 sequence are held until the sequence completes (or proves invalid, then U+FFFD).
// The concatenation of every push() and finish() equals Tokenizer::decode of all ids (without
// clean_up_tokenization_spaces, which needs the whole text). Holds a reference: the Tokenizer must outlive it.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {}
  // Text completed by this token (often empty for a byte token in the middle of a character).
  std::string push(TokenId id);
  // Whatever is still held, with a truncated sequence as U+FFFD. Resets the decoder.
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace mach::text
