#include "text/normalizer.hpp"

#include <fmt/format.h>
#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <nlohmann/json.hpp>

#include "text/utf8.hpp"

namespace mach::text {

namespace {

const icu::Normalizer2* icu_normalizer(std::string_view form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (form == "NFC") n = icu::Normalizer2::getNFCInstance(status);
  if (form == "NFD") n = icu::Normalizer2::getNFDInstance(status);
  if (form == "NFKC") n = icu::Normalizer2::getNFKCInstance(status);
  if (form == "NFKD") n = icu::Normalizer2::getNFKDInstance(status);
  return U_SUCCESS(status) ? n : nullptr;
}

std::string unicode_normalize(std::string_view text, std::string_view form) {
  bool ascii = true;
  for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(text);  // ASCII is invariant under all four forms
  const icu::Normalizer2* n = icu_normalizer(form);
  assert(n && "ICU normalizer data is part of libicu; missing data is a broken install");
  UErrorCode status = U_ZERO_ERROR;
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(text);
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  status = U_ZERO_ERROR;
  n->normalizeUTF8(0, piece, sink, nullptr, status);
  return U_SUCCESS(status) ? out : std::string(text);
}

std::string lowercase(std::string_view text) {
  icu::UnicodeString s = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  s.toLower(icu::Locale::getRoot());
  std::string out;
  s.toUTF8String(out);
  return out;
}

std::string strip(std::string_view text, bool left, bool right) {
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end) {
      const Utf8Step step = utf8_step(text, begin);
      if (step.status != Utf8Status::ok || !is_js_whitespace(step.code_point)) break;
      begin += step.length;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      const Utf8Step step = utf8_step(text, start);
      if (step.status != Utf8Status::ok || !is_js_whitespace(step.code_point)) break;
      end = start;
    }
  }
  return std::string(text.substr(begin, end - begin));
}

Result<Regex> pattern_regex(const nlohmann::json& pattern) {
  if (pattern.contains("Regex")) return Regex::compile(pattern["Regex"].get<std::string>());
  if (pattern.contains("String")) return Regex::literal(pattern["String"].get<std::string>());
  return Error{Errc::parse, fmt::format("tokenizer.json: pattern {} has neither Regex nor String", pattern.dump())};
}

}  // namespace

Result<void> Normalizer::add_steps(const nlohmann::json& config, std::vector<Step>& steps) {
  if (config.is_null()) return {};
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    for (const auto& child : config.at("normalizers")) {
      if (auto r = add_steps(child, steps); !r) return r;
    }
    return {};
  }
  if (type == "NFC") return steps.push_back({Kind::nfc}), Result<void>{};
  if (type == "NFD") return steps.push_back({Kind::nfd}), Result<void>{};
  if (type == "NFKC") return steps.push_back({Kind::nfkc}), Result<void>{};
  if (type == "NFKD") return steps.push_back({Kind::nfkd}), Result<void>{};
  if (type == "Lowercase") return steps.push_back({Kind::lowercase}), Result<void>{};
  if (type == "Prepend") {
    steps.push_back({Kind::prepend, config.at("prepend").get<std::string>()});
    return {};
  }
  if (type == "Strip") {
    Step step{Kind::strip};
    step.strip_left = config.value("strip_left", true);
    step.strip_right = config.value("strip_right", true);
    steps.push_back(std::move(step));
    return {};
  }
  if (type == "Replace") {
    auto regex = pattern_regex(config.at("pattern"));
    if (!regex) return regex.error();
    Step step{Kind::replace, config.at("content").get<std::string>()};
    step.regex = std::move(*regex);
    steps.push_back(std::move(step));
    return {};
  }
  return Error{Errc::unsupported, fmt::format("tokenizer.json: normalizer type '{}' is not supported (supported: "
                                              "NFC, NFD, NFKC, NFKD, Replace, Prepend, Lowercase, Strip, Sequence)",
                                              type)};
}

Result<Normalizer> Normalizer::from_json(const nlohmann::json& config) {
  Normalizer n;
  try {
    if (auto r = add_steps(config, n.steps_); !r) return r.error();
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("tokenizer.json: malformed normalizer: {}", e.what())};
  }
  return n;
}

std::string Normalizer::apply(std::string_view text) const {
  std::string s(text);
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::nfc: s = unicode_normalize(s, "NFC"); break;
      case Kind::nfd: s = unicode_normalize(s, "NFD"); break;
      case Kind::nfkc: s = unicode_normalize(s, "NFKC"); break;
      case Kind::nfkd: s = unicode_normalize(s, "NFKD"); break;
      case Kind::lowercase: s = lowercase(s); break;
      case Kind::strip: s = strip(s, step.strip_left, step.strip_right); break;
      case Kind::prepend:
        if (!s.empty()) s = step.text + s;
        break;
      case Kind::replace: {
        matches.clear();
        step.regex->find_all(s, matches);
        if (matches.empty()) break;
        std::string out;
        size_t prev = 0;
        for (auto [b, e] : matches) {
          out.append(s, prev, b - prev);
          out += step.text;
          prev = e;
        }
        out.append(s, prev);
        s = std::move(out);
        break;
      }
    }
  }
  return s;
}

}  // namespace mach::text
