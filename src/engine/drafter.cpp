#include "engine/drafter.hpp"

#include <algorithm>
#include <cassert>

namespace mach::engine {

std::optional<Speculation> parse_speculation(std::string_view name) {
  for (Speculation s : {Speculation::none, Speculation::ngram, Speculation::summarization, Speculation::classification})
    if (speculation_name(s) == name) return s;
  return std::nullopt;
}

std::string_view speculation_name(Speculation s) {
  switch (s) {
    case Speculation::none: return "none";
    case Speculation::ngram: return "ngram";
    case Speculation::summarization: return "summarization";
    case Speculation::classification: return "classification";
  }
  return "?";
}

uint32_t default_draft_max(Speculation s) {
  switch (s) {
    case Speculation::none: return 0;
    case Speculation::ngram: return 4;
    case Speculation::summarization: return 8;
    case Speculation::classification: return 2;
  }
  return 0;
}

NgramDrafter NgramDrafter::for_preset(Speculation s) {
  switch (s) {
    case Speculation::summarization: return NgramDrafter(2, 4);
    case Speculation::classification: return NgramDrafter(1, 2);
    default: return NgramDrafter(1, 3);
  }
}

std::vector<uint32_t> NgramDrafter::draft(std::span<const uint32_t> tokens, uint32_t max) {
  const size_t n_tokens = tokens.size();
  if (n_tokens < 2 || max == 0) return {};
  for (uint32_t n = std::min<uint32_t>(max_match_, static_cast<uint32_t>(n_tokens) - 1); n >= min_match_ && n > 0; --n) {
    const auto suffix = tokens.subspan(n_tokens - n, n);
    // The most recent earlier occurrence whose continuation is known (it ends before the suffix starts).
    for (size_t start = n_tokens - n; start-- > 0;) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + start)) continue;
      const size_t from = start + n;
      const size_t len = std::min<size_t>(max, n_tokens - from);
      return std::vector<uint32_t>(tokens.begin() + from, tokens.begin() + from + len);
    }
  }
  return {};
}

}  // namespace mach::engine
