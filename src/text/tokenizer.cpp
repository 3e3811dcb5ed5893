#include "text/tokenizer.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "text/tokenizer_json.hpp"
#include "text/utf8.hpp"

#include "text/read_file.hpp"

namespace mach::text {

namespace {

// tokenizer_config.json spells tokens as strings or as {"__type": "AddedToken", "content": ...}.
std::string token_string(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return {};
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

// The Hugging Face "clean_up_tokenization" pass: spaces before punctuation and English contractions.
std::string clean_up_tokenization(std::string s) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (auto [from, to] : kRules) {
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
      s.replace(pos, from.size(), to);
    }
  }
  return s;
}

struct DecoderStep {
  enum class Kind { replace, byte_fallback, fuse, strip, metaspace, byte_level } kind;
  std::optional<Regex> regex;  // replace: what; metaspace: the replacement character
  std::string content;         // replace: with what; strip: the character to strip
  size_t start = 0, stop = 0;  // strip
};

Result<void> parse_decoder(const nlohmann::json& config, std::vector<DecoderStep>& steps, bool& strip_first_space) {
  const std::string type = config.value("type", "");
  DecoderStep step{};
  if (type == "Sequence") {
    for (const auto& child : config.at("decoders")) {
      if (auto r = parse_decoder(child, steps, strip_first_space); !r) return r;
    }
    return {};
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::byte_level;
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::byte_fallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::fuse;
  } else if (type == "Replace") {
    step.kind = DecoderStep::Kind::replace;
    const auto& pattern = config.at("pattern");
    auto regex = pattern.contains("Regex") ? Regex::compile(pattern["Regex"].get<std::string>())
                                           : Regex::literal(pattern.at("String").get<std::string>());
    if (!regex) return regex.error();
    step.regex = std::move(*regex);
    step.content = config.at("content").get<std::string>();
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::strip;
    step.content = config.value("content", " ");
    step.start = config.value("start", 0);
    step.stop = config.value("stop", 0);
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Kind::metaspace;
    const std::string replacement = config.value("replacement", "\u2581");
    step.regex = Regex::literal(replacement).value_or_throw();
    const bool add_prefix = config.value("add_prefix_space", true);
    strip_first_space = config.value("prepend_scheme", add_prefix ? "always" : "never") != "never";
  } else {
    return Error{Errc::unsupported, fmt::format("tokenizer.json: decoder type '{}' is not supported (supported: "
                                                "ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence)",
                                                type)};
  }
  steps.push_back(std::move(step));
  return {};
}

std::string replace_matches(const Regex& regex, std::string_view s, std::string_view with) {
  std::vector<std::pair<size_t, size_t>> matches;
  regex.find_all(s, matches);
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : matches) {
    out.append(s.substr(prev, b - prev));
    out.append(with);
    prev = e;
  }
  out.append(s.substr(prev));
  return out;
}

// The bytes one token decodes to. added: the token is an added token, which ByteLevel passes through as is.
std::string decode_token(std::string token, bool added, const std::vector<DecoderStep>& steps) {
  for (const DecoderStep& step : steps) {
    switch (step.kind) {
      case DecoderStep::Kind::replace: token = replace_matches(*step.regex, token, step.content); break;
      case DecoderStep::Kind::metaspace: token = replace_matches(*step.regex, token, " "); break;
      case DecoderStep::Kind::byte_level:
        if (!added) token = byte_level_to_bytes(token);
        break;
      case DecoderStep::Kind::fuse: break;
      case DecoderStep::Kind::byte_fallback: {
        const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
        if (token.size() == 6 && token.starts_with("<0x") && token[5] == '>' && hex(token[3]) && hex(token[4])) {
          token = std::string(1, static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16)));
        }
        break;
      }
      case DecoderStep::Kind::strip: {
        size_t begin = 0, end = token.size();
        for (size_t k = 0; k < step.start && token.compare(begin, step.content.size(), step.content) == 0; ++k) {
          begin += step.content.size();
        }
        for (size_t k = 0; k < step.stop && end >= begin + step.content.size() &&
                           token.compare(end - step.content.size(), step.content.size(), step.content) == 0;
             ++k) {
          end -= step.content.size();
        }
        token = token.substr(begin, end - begin);
        break;
      }
    }
  }
  return token;
}

}  // namespace

Result<Tokenizer> Tokenizer::load(const std::filesystem::path& dir) {
  const auto tokenizer_path = dir / "tokenizer.json";
  if (!std::filesystem::exists(tokenizer_path)) {
    return Error{Errc::not_found, fmt::format("{} not found: pass the model directory that holds tokenizer.json and "
                                              "tokenizer_config.json",
                                              tokenizer_path.string())};
  }
  auto tokenizer_json = read_file(tokenizer_path);
  if (!tokenizer_json) return tokenizer_json.error();
  std::string config_json = "{}";
  if (const auto config_path = dir / "tokenizer_config.json"; std::filesystem::exists(config_path)) {
    auto text = read_file(config_path);
    if (!text) return text.error();
    config_json = std::move(*text);
  }
  auto tokenizer = from_json(*tokenizer_json, config_json);
  if (!tokenizer) return tokenizer;
  if (const auto template_path = dir / "chat_template.jinja"; std::filesystem::exists(template_path)) {
    auto text = read_file(template_path);
    if (!text) return text.error();
    tokenizer->chat_template_ = std::move(*text);
  }
  return tokenizer;
}

Result<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json) {
  auto tokenizer = read_tokenizer_json(tokenizer_json);
  if (!tokenizer) return tokenizer.error();
  nlohmann::json config;
  try {
    config = config_json.empty() ? nlohmann::json::object() : nlohmann::json::parse(config_json);
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("tokenizer_config.json is not valid JSON: {}", e.what())};
  }
  Tokenizer t;
  try {
    if (auto r = t.init(*tokenizer, std::move(config)); !r) return r.error();
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("tokenizer.json is malformed: {}", e.what())};
  }
  return t;
}

Result<void> Tokenizer::init(TokenizerJson& file, nlohmann::json config) {
  const nlohmann::json& tokenizer = file.rest;
  if (!tokenizer.is_object()) return Error{Errc::parse, "tokenizer.json is not a JSON object"};
  const auto section = [&](const char* key) { return tokenizer.contains(key) ? tokenizer[key] : nlohmann::json(); };
  auto normalizer = Normalizer::from_json(section("normalizer"));
  if (!normalizer) return normalizer.error();
  normalizer_ = std::move(*normalizer);
  auto pre_tokenizer = PreTokenizer::from_json(section("pre_tokenizer"));
  if (!pre_tokenizer) return pre_tokenizer.error();
  pre_tokenizer_ = std::move(*pre_tokenizer);
  auto model = file.has_vocab && file.has_merges
                   ? BpeModel::from_parts(tokenizer.at("model"), std::move(file.parts), pre_tokenizer_.byte_level())
                   : BpeModel::from_json(tokenizer.at("model"), pre_tokenizer_.byte_level());
  if (!model) return model.error();
  model_ = std::move(*model);

  size_t size = model_.id_to_bytes().size();
  for (const auto& a : section("added_tokens")) {
    AddedToken token;
    token.content = a.at("content").get<std::string>();
    token.id = a.at("id").get<TokenId>();
    token.special = a.value("special", false);
    token.lstrip = a.value("lstrip", false);
    token.rstrip = a.value("rstrip", false);
    // With no normalizer both kinds match the same text; one pass over the raw input is enough.
    token.normalized = a.value("normalized", false) && !normalizer_.empty();
    token.single_word = a.value("single_word", false);
    if (token.id < 0) return Error{Errc::parse, fmt::format("tokenizer.json: added token {:?} has a negative id", token.content)};
    size = std::max(size, static_cast<size_t>(token.id) + 1);
    added_.push_back(std::move(token));
  }
  std::vector<std::string> patterns;
  std::vector<bool> raw, normalized;
  for (const AddedToken& token : added_) {
    patterns.push_back(token.normalized ? normalizer_.apply(token.content) : token.content);
    raw.push_back(!token.normalized);
    normalized.push_back(token.normalized);
  }
  raw_matcher_ = AddedTokenMatcher(added_, patterns, raw);
  normalized_matcher_ = AddedTokenMatcher(added_, patterns, normalized);

  pieces_.assign(size, std::string());
  special_.assign(size, false);
  if (auto r = init_decoder(section("decoder")); !r) return r;
  for (const AddedToken& token : added_) special_[token.id] = token.special;
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
    for (const auto& s : config["additional_special_tokens"]) {
      const std::string name = s.is_string() ? s.get<std::string>() : s.value("content", "");
      if (const TokenId id = token_id(name); id >= 0) special_[id] = true;
    }
  }

  const auto post = section("post_processor");
  std::vector<nlohmann::json> processors;
  if (!post.is_null()) {
    if (post.value("type", "") == "Sequence") {
      for (const auto& p : post.at("processors")) processors.push_back(p);
    } else {
      processors.push_back(post);
    }
  }
  for (const auto& p : processors) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") continue;  // only adjusts offsets
    if (type == "TemplateProcessing") {
      bool after = false;
      for (const auto& item : p.at("single")) {
        if (item.contains("Sequence")) {
          after = true;
          continue;
        }
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        for (const auto& id : p.at("special_tokens").at(name).at("ids")) {
          (after ? suffix_ids_ : prefix_ids_).push_back(id.get<TokenId>());
        }
      }
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
      prefix_ids_.push_back(p.at("cls").at(1).get<TokenId>());
      suffix_ids_.push_back(p.at("sep").at(1).get<TokenId>());
    } else {
      return Error{Errc::unsupported, fmt::format("tokenizer.json: post_processor type '{}' is not supported", type)};
    }
  }

  bos_token_ = token_string(config, "bos_token");
  eos_token_ = token_string(config, "eos_token");
  bos_id_ = bos_token_.empty() ? -1 : token_id(bos_token_);
  eos_id_ = eos_token_.empty() ? -1 : token_id(eos_token_);
  if (config.contains("chat_template")) {
    const auto& ct = config["chat_template"];
    if (ct.is_string()) {
      chat_template_ = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& named : ct) {
        if (named.value("name", "") == "default" || chat_template_.empty()) {
          chat_template_ = named.value("template", "");
        }
      }
    }
  }
  // transformers.js defaults to true when the key is absent, Python transformers (4.45+) to false; every
  // tokenizer we target states it (false), and false keeps streaming exact.
  clean_up_spaces_ = config.value("clean_up_tokenization_spaces", false);
  config_ = std::move(config);
  return {};
}

Result<void> Tokenizer::init_decoder(const nlohmann::json& decoder) {
  std::vector<DecoderStep> steps;
  if (decoder.is_null()) {
    return Error{Errc::unsupported, "tokenizer.json has no decoder; tokenizers that join tokens with spaces are not "
                                    "supported"};
  }
  if (auto r = parse_decoder(decoder, steps, strip_first_space_); !r) return r;
  const auto& vocab = model_.id_to_bytes();
  if (pre_tokenizer_.byte_level()) {
    // The vocabulary is already stored as raw bytes: the ByteLevel decoder's work is done.
    for (const DecoderStep& step : steps) {
      if (step.kind != DecoderStep::Kind::byte_level && step.kind != DecoderStep::Kind::fuse) {
        return Error{Errc::unsupported, "tokenizer.json: a byte-level model with decoders other than ByteLevel is "
                                        "not supported"};
      }
    }
    for (size_t id = 0; id < vocab.size(); ++id) pieces_[id] = vocab[id];
  } else {
    for (size_t id = 0; id < vocab.size(); ++id) {
      if (!vocab[id].empty()) pieces_[id] = decode_token(vocab[id], false, steps);
    }
  }
  for (const AddedToken& token : added_) pieces_[token.id] = decode_token(token.content, true, steps);
  return {};
}

std::string_view Tokenizer::token_bytes(TokenId id) const {
  return valid_id(id) ? std::string_view(pieces_[id]) : std::string_view();
}

bool Tokenizer::is_special(TokenId id) const { return valid_id(id) && special_[id]; }

TokenId Tokenizer::token_id(std::string_view token) const {
  for (const AddedToken& a : added_) {
    if (a.content == token) return a.id;
  }
  return model_.find(token);
}

std::vector<TokenId> Tokenizer::encode(std::string_view input, const EncodeOptions& options) const {
  const std::string text = sanitize_utf8(input);
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 8);
  if (options.add_special_tokens) out.insert(out.end(), prefix_ids_.begin(), prefix_ids_.end());
  thread_local std::vector<Segment> segments;
  segments.clear();
  raw_matcher_.split(text, options.match_special, segments);
  for (const Segment& s : segments) {
    if (s.token >= 0) {
      out.push_back(added_[s.token].id);
      continue;
    }
    const std::string_view section = std::string_view(text).substr(s.begin, s.end - s.begin);
    if (normalizer_.empty()) {
      encode_normalized(section, s.begin == 0, options.match_special, out);
    } else {
      encode_normalized(normalizer_.apply(section), s.begin == 0, options.match_special, out);
    }
  }
  if (options.add_special_tokens) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

void Tokenizer::encode_normalized(std::string_view text, bool first_section, bool match_special,
                                  std::vector<TokenId>& out) const {
  if (normalized_matcher_.empty()) return encode_section(text, first_section, out);
  std::vector<Segment> segments;
  normalized_matcher_.split(text, match_special, segments);
  for (const Segment& s : segments) {
    if (s.token >= 0) {
      out.push_back(added_[s.token].id);
    } else {
      encode_section(text.substr(s.begin, s.end - s.begin), first_section && s.begin == 0, out);
    }
  }
}

void Tokenizer::encode_section(std::string_view text, bool first_section, std::vector<TokenId>& out) const {
  if (text.empty()) return;
  thread_local Words words;
  words.buffer.assign(text);
  words.spans.assign(1, WordSpan{0, static_cast<uint32_t>(text.size())});
  pre_tokenizer_.split(words, first_section);
  for (WordSpan span : words.spans) model_.encode_word(words.view(span), out);
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::string raw;
  bool first = true;
  for (TokenId id : ids) {
    if (!valid_id(id) || (skip_special_tokens && special_[id])) continue;
    std::string_view piece = pieces_[id];
    if (first && strip_first_space_ && piece.starts_with(' ')) piece.remove_prefix(1);
    first = false;
    raw.append(piece);
  }
  std::string text = sanitize_utf8(raw);
  return clean_up_spaces_ ? clean_up_tokenization(std::move(text)) : text;
}

std::string StreamDecoder::push(TokenId id) {
  if (!tokenizer_->valid_id(id) || (skip_special_ && tokenizer_->special_[id])) return {};
  std::string_view piece = tokenizer_->pieces_[id];
  if (first_ && tokenizer_->strip_first_space_ && piece.starts_with(' ')) piece.remove_prefix(1);
  first_ = false;
  pending_.append(piece);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const Utf8Step step = utf8_step(pending_, i);
    if (step.status == Utf8Status::incomplete) break;
    if (step.status == Utf8Status::ok) {
      out.append(pending_, i, step.length);
    } else {
      append_utf8(out, 0xFFFD);
    }
    i += step.length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace mach::text
