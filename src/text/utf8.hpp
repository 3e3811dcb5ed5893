// UTF-8 helpers for the text layer: decoding one code point at a time with the WHATWG error policy
// (what JavaScript's TextDecoder and Python's "replace" produce), so that invalid input never reaches
// PCRE2 (which we run with PCRE2_NO_UTF_CHECK) and streamed output never splits a code point.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mach::text {

enum class Utf8Status { ok, invalid, incomplete };

struct Utf8Step {
  char32_t code_point = 0;  // valid only when status == ok
  size_t length = 0;        // bytes consumed: the sequence (ok), the maximal invalid subpart (invalid),
                            // or the bytes present of a truncated but so far valid sequence (incomplete)
  Utf8Status status = Utf8Status::ok;
};

// Decodes the sequence that starts at s[pos] (pos < s.size()).
Utf8Step utf8_step(std::string_view s, size_t pos);

// Length in bytes of the valid sequence at s[pos], or 0 when it is invalid or truncated.
inline size_t utf8_length_at(std::string_view s, size_t pos) {
  const Utf8Step step = utf8_step(s, pos);
  return step.status == Utf8Status::ok ? step.length : 0;
}

void append_utf8(std::string& out, char32_t code_point);

// Every invalid or truncated sequence replaced by U+FFFD, one per maximal subpart (WHATWG).
std::string sanitize_utf8(std::string_view s);

bool is_valid_utf8(std::string_view s);

// Whitespace as JavaScript's \s and String.prototype.trim define it; the reference tokenizer
// (transformers.js) splits with JavaScript regexes, so we match its notion exactly.
bool is_js_whitespace(char32_t c);

}  // namespace mach::text
