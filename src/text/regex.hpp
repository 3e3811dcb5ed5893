// Pre-tokenizer regexes from tokenizer.json, run with PCRE2 (JIT when available).
//
// Patterns are written for Rust's onig and exported by Hugging Face tokenizers; the reference we test
// against (transformers.js) runs them as JavaScript regexes. Before compiling we rewrite the few
// constructs whose meaning differs so that PCRE2 matches exactly what JavaScript matches:
//   - \s and \S become JavaScript's whitespace set (PCRE2 without UCP only knows ASCII whitespace);
//   - the contraction group (?i:'s|'t|...) becomes explicit [sS] classes, as transformers.js does, so
//     that Unicode case folding (U+017F LATIN SMALL LETTER LONG S folds to s) does not apply.
// \p{L}, \p{N}, lookahead and the rest are PCRE2-native in UTF mode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mach/error.hpp"

namespace mach::text {

class Regex {
 public:
  // pattern: the tokenizer.json "Regex" string. Fails with Errc::parse naming the offset PCRE2 reports.
  static Result<Regex> compile(std::string_view pattern);
  // A literal string (tokenizer.json "String" patterns).
  static Result<Regex> literal(std::string_view text);

  // Every non-overlapping match, left to right, as [begin, end) byte offsets into text, with JavaScript
  // matchAll semantics (an empty match advances by one code point and is not reported). text must be
  // valid UTF-8. Thread-safe: match state is per thread.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pcre2_pattern() const { return translated_; }

 private:
  static Result<Regex> compile_pcre2(std::string_view pattern, std::string translated, uint32_t options);
  struct Code;
  struct CodeDeleter {
    void operator()(Code* code) const;
  };
  std::unique_ptr<Code, CodeDeleter> code_;
  std::string translated_;
};

// The rewrite described above, exposed for tests.
std::string translate_regex_for_pcre2(std::string_view pattern);

}  // namespace mach::text
