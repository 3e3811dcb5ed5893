#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/regex.hpp"

#include <pcre2.h>

#include <fmt/format.h>

#include "text/utf8.hpp"

namespace mach::text {

struct Regex::Code {
  pcre2_code* code = nullptr;
};

void Regex::CodeDeleter::operator()(Code* c) const {
  if (c->code) pcre2_code_free(c->code);
  delete c;
}

namespace {

// JavaScript's \s: WhiteSpace and LineTerminator code points (ECMA-262 22.2.2.9).
constexpr std::string_view kJsSpaceSet =
    "\\t\\n\\x{0B}\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}\\x{FEFF}";

constexpr std::string_view kContractionsCaseless = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
constexpr std::string_view kContractionsExplicit = "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// Per-thread match state: one ovector pair is all we read, and a JIT stack large enough for long runs
// of whitespace or letters (the default 32 KiB machine stack is not).
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  MatchState() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

std::string translate_regex_for_pcre2(std::string_view pattern) {
  const std::string src = replace_all(std::string(pattern), kContractionsCaseless, kContractionsExplicit);
  std::string out;
  out.reserve(src.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < src.size(); ++i) {
    const char c = src[i];
    if (c == '\\' && i + 1 < src.size()) {
      const char next = src[++i];
      if (next == 's') {
        out += in_class ? std::string(kJsSpaceSet) : fmt::format("[{}]", kJsSpaceSet);
      } else if (next == 'S' && !in_class) {
        out += fmt::format("[^{}]", kJsSpaceSet);
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < src.size() && src[i + 1] == '^') out += src[++i];
      if (i + 1 < src.size() && src[i + 1] == ']') out += src[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

Result<Regex> Regex::compile(std::string_view pattern) {
  return compile_pcre2(pattern, translate_regex_for_pcre2(pattern), PCRE2_DOLLAR_ENDONLY);
}

Result<Regex> Regex::literal(std::string_view text) { return compile_pcre2(text, std::string(text), PCRE2_LITERAL); }

Result<Regex> Regex::compile_pcre2(std::string_view pattern, std::string translated, uint32_t options) {
  Regex re;
  re.translated_ = std::move(translated);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re.translated_.data()), re.translated_.size(),
                                   PCRE2_UTF | options, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return Error{Errc::parse, fmt::format("tokenizer regex {:?} does not compile (PCRE2: {} at offset {})",
                                          std::string(pattern), reinterpret_cast<const char*>(message), offset)};
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  re.code_.reset(new Code{code});
  return re;
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  MatchState& state = match_state();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(code_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, state.data,
                               state.context);
    // No match ends the scan; so does a resource error (match or JIT stack limit), which leaves the rest
    // of the text as one piece: still a faithful round trip, only a coarser split.
    if (rc < 0) return;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    const size_t begin = ov[0], end = ov[1];
    if (end <= begin) {
      const size_t step = utf8_length_at(text, begin);
      pos = begin + (step ? step : 1);
      continue;
    }
    out.emplace_back(begin, end);
    pos = end;
  }
}

}  // namespace mach::text
