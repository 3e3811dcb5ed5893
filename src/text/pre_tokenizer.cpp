#include "text/pre_tokenizer.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace mach::text {

namespace {

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct Piece {
  uint32_t begin, end;
  bool is_match;
};

// Hugging Face's SplitDelimiterBehavior applied to a covering list of pieces.
template <class Behavior>
void apply_behavior(Behavior behavior, const std::vector<Piece>& pieces, std::vector<WordSpan>& out) {
  bool previous_match = false;
  const size_t first_out = out.size();
  switch (behavior) {
    case Behavior::removed:
      for (const Piece& p : pieces) {
        if (!p.is_match) out.push_back({p.begin, p.end});
      }
      return;
    case Behavior::isolated:
      for (const Piece& p : pieces) out.push_back({p.begin, p.end});
      return;
    case Behavior::merged_with_previous:
      for (const Piece& p : pieces) {
        if (p.is_match && !previous_match && out.size() > first_out) {
          out.back().end = p.end;
        } else {
          out.push_back({p.begin, p.end});
        }
        previous_match = p.is_match;
      }
      return;
    case Behavior::merged_with_next: {
      std::vector<WordSpan> reversed;
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        if (it->is_match && !previous_match && !reversed.empty()) {
          reversed.back().begin = it->begin;
        } else {
          reversed.push_back({it->begin, it->end});
        }
        previous_match = it->is_match;
      }
      out.insert(out.end(), reversed.rbegin(), reversed.rend());
      return;
    }
    case Behavior::contiguous:
      for (const Piece& p : pieces) {
        if (p.is_match == previous_match && out.size() > first_out) {
          out.back().end = p.end;
        } else {
          out.push_back({p.begin, p.end});
        }
        previous_match = p.is_match;
      }
      return;
  }
}

// Matches of `regex` in buffer[span] as a covering list of pieces (gaps between matches included).
void find_pieces(const Regex& regex, const std::string& buffer, WordSpan span, bool invert,
                 std::vector<Piece>& pieces) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  matches.clear();
  pieces.clear();
  regex.find_all(std::string_view(buffer).substr(span.begin, span.end - span.begin), matches);
  uint32_t prev = span.begin;
  for (auto [b, e] : matches) {
    const auto begin = static_cast<uint32_t>(span.begin + b), end = static_cast<uint32_t>(span.begin + e);
    if (begin > prev) pieces.push_back({prev, begin, invert});
    pieces.push_back({begin, end, !invert});
    prev = end;
  }
  if (span.end > prev) pieces.push_back({prev, span.end, invert});
}

Result<Regex> pattern_regex(const nlohmann::json& pattern) {
  if (pattern.contains("Regex")) return Regex::compile(pattern["Regex"].get<std::string>());
  if (pattern.contains("String")) return Regex::literal(pattern["String"].get<std::string>());
  return Error{Errc::parse, fmt::format("tokenizer.json: pattern {} has neither Regex nor String", pattern.dump())};
}

}  // namespace

Result<void> PreTokenizer::add_steps(const nlohmann::json& config, std::vector<Step>& steps, bool& byte_level) {
  if (config.is_null()) return {};
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    for (const auto& child : config.at("pretokenizers")) {
      if (auto r = add_steps(child, steps, byte_level); !r) return r;
    }
    return {};
  }
  Step step{};
  if (type == "Split") {
    step.kind = Kind::split;
    auto regex = pattern_regex(config.at("pattern"));
    if (!regex) return regex.error();
    step.regex = std::move(*regex);
    step.invert = config.value("invert", false);
    const std::string behavior = config.value("behavior", "Isolated");
    if (behavior == "Removed") step.behavior = Behavior::removed;
    else if (behavior == "Isolated") step.behavior = Behavior::isolated;
    else if (behavior == "MergedWithPrevious") step.behavior = Behavior::merged_with_previous;
    else if (behavior == "MergedWithNext") step.behavior = Behavior::merged_with_next;
    else if (behavior == "Contiguous") step.behavior = Behavior::contiguous;
    else return Error{Errc::unsupported, fmt::format("tokenizer.json: Split behavior '{}' is unknown", behavior)};
  } else if (type == "ByteLevel") {
    step.kind = Kind::byte_level;
    step.add_prefix_space = config.value("add_prefix_space", false);
    if (config.value("use_regex", true)) step.regex = Regex::compile(kGpt2Pattern).value_or_throw();
    byte_level = true;
  } else if (type == "Metaspace") {
    step.kind = Kind::metaspace;
    step.replacement = config.value("replacement", "\u2581");
    const std::string scheme = config.value("prepend_scheme", config.value("add_prefix_space", true) ? "always" : "never");
    step.add_prefix_space = scheme != "never";
    step.prepend_first_only = scheme == "first";
    step.metaspace_split = config.value("split", true);
    step.regex = Regex::literal(step.replacement).value_or_throw();
  } else if (type == "Digits") {
    step.kind = Kind::digits;
    step.behavior = config.value("individual_digits", false) ? Behavior::isolated : Behavior::contiguous;
    step.regex = Regex::compile("\\p{N}").value_or_throw();
  } else {
    return Error{Errc::unsupported, fmt::format("tokenizer.json: pre_tokenizer type '{}' is not supported "
                                                "(supported: Split, ByteLevel, Metaspace, Digits, Sequence)",
                                                type)};
  }
  steps.push_back(std::move(step));
  return {};
}

Result<PreTokenizer> PreTokenizer::from_json(const nlohmann::json& config) {
  PreTokenizer p;
  try {
    if (auto r = add_steps(config, p.steps_, p.byte_level_); !r) return r.error();
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("tokenizer.json: malformed pre_tokenizer: {}", e.what())};
  }
  return p;
}

void PreTokenizer::split(Words& words, bool first_section) const {
  std::vector<WordSpan> next;
  for (const Step& step : steps_) {
    next.clear();
    apply(step, first_section, words, next);
    words.spans.swap(next);
  }
}

void PreTokenizer::apply(const Step& step, bool first_section, Words& words, std::vector<WordSpan>& out) const {
  thread_local std::vector<Piece> pieces;
  for (WordSpan span : words.spans) {
    switch (step.kind) {
      case Kind::split:
        find_pieces(*step.regex, words.buffer, span, step.invert, pieces);
        apply_behavior(step.behavior, pieces, out);
        break;
      case Kind::digits:
        find_pieces(*step.regex, words.buffer, span, false, pieces);
        apply_behavior(step.behavior, pieces, out);
        break;
      case Kind::byte_level:
        if (step.add_prefix_space && (span.end == span.begin || words.buffer[span.begin] != ' ')) {
          std::string word(1, ' ');
          word.append(words.view(span));
          span = {static_cast<uint32_t>(words.buffer.size()), static_cast<uint32_t>(words.buffer.size() + word.size())};
          words.buffer += word;
        }
        if (step.regex) {
          find_pieces(*step.regex, words.buffer, span, false, pieces);
          apply_behavior(Behavior::isolated, pieces, out);
        } else {
          out.push_back(span);
        }
        break;
      case Kind::metaspace: {
        std::string word;
        const std::string_view text = words.view(span);
        const bool prepend = step.add_prefix_space && (!step.prepend_first_only || first_section) &&
                             text.substr(0, step.replacement.size()) != step.replacement &&
                             !(text.size() > 0 && text[0] == ' ');
        if (prepend) word = step.replacement;
        for (char c : text) {
          if (c == ' ') word += step.replacement;
          else word += c;
        }
        span = {static_cast<uint32_t>(words.buffer.size()), static_cast<uint32_t>(words.buffer.size() + word.size())};
        words.buffer += word;
        if (step.metaspace_split) {
          find_pieces(*step.regex, words.buffer, span, false, pieces);
          apply_behavior(Behavior::merged_with_next, pieces, out);
        } else {
          out.push_back(span);
        }
        break;
      }
    }
  }
}

}  // namespace mach::text
