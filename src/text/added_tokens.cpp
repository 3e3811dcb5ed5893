#include "text/added_tokens.hpp"

#include <unicode/uchar.h>

#include <algorithm>

#include "text/utf8.hpp"

namespace mach::text {

namespace {

bool is_word_char(char32_t c) { return c == '_' || u_isalnum(static_cast<UChar32>(c)); }

// The code point that ends just before text[pos], or 0 at the start.
char32_t code_point_before(std::string_view text, size_t pos) {
  if (pos == 0) return 0;
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  const Utf8Step step = utf8_step(text, start);
  return step.status == Utf8Status::ok ? step.code_point : 0;
}

char32_t code_point_at(std::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  const Utf8Step step = utf8_step(text, pos);
  return step.status == Utf8Status::ok ? step.code_point : 0;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens, const std::vector<std::string>& patterns,
                                     const std::vector<bool>& include)
    : tokens_(tokens), nodes_(1) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!include[i] || patterns[i].empty()) continue;
    int32_t node = 0;
    for (unsigned char byte : patterns[i]) {
      int32_t next = child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        auto& kids = nodes_[node].children;
        kids.insert(std::lower_bound(kids.begin(), kids.end(), std::pair<unsigned char, int32_t>{byte, -1}),
                    {byte, next});
        nodes_.emplace_back();
      }
      node = next;
    }
    nodes_[node].token = static_cast<int32_t>(i);
    first_bytes_.set(static_cast<unsigned char>(patterns[i][0]));
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char byte) const {
  const auto& kids = nodes_[node].children;
  const auto it = std::lower_bound(kids.begin(), kids.end(), std::pair<unsigned char, int32_t>{byte, -1});
  return it != kids.end() && it->first == byte ? it->second : -1;
}

void AddedTokenMatcher::split(std::string_view text, bool match_special, std::vector<Segment>& out) const {
  const auto n = static_cast<uint32_t>(text.size());
  uint32_t text_start = 0;  // start of the pending text segment
  for (uint32_t i = 0; i < n;) {
    if (!first_bytes_.test(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    int32_t best = -1;
    uint32_t best_end = 0;
    for (int32_t node = 0, j = static_cast<int32_t>(i); j < static_cast<int32_t>(n);) {
      node = child(node, static_cast<unsigned char>(text[j++]));
      if (node < 0) break;
      const int32_t t = nodes_[node].token;
      if (t < 0) continue;
      const AddedToken& token = tokens_[t];
      if (token.special && !match_special) continue;
      if (token.single_word &&
          (is_word_char(code_point_before(text, i)) || is_word_char(code_point_at(text, static_cast<size_t>(j))))) {
        continue;
      }
      best = t, best_end = static_cast<uint32_t>(j);
    }
    if (best < 0) {
      ++i;
      continue;
    }
    const AddedToken& token = tokens_[best];
    uint32_t begin = i, end = best_end;
    if (token.lstrip) {
      while (begin > text_start) {
        size_t start = begin - 1;
        while (start > text_start && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        const Utf8Step step = utf8_step(text, start);
        if (step.status != Utf8Status::ok || !is_js_whitespace(step.code_point)) break;
        begin = static_cast<uint32_t>(start);
      }
    }
    if (token.rstrip) {
      while (end < n) {
        const Utf8Step step = utf8_step(text, end);
        if (step.status != Utf8Status::ok || !is_js_whitespace(step.code_point)) break;
        end += static_cast<uint32_t>(step.length);
      }
    }
    if (begin > text_start) out.push_back({text_start, begin, -1});
    out.push_back({begin, end, best});
    i = text_start = end;
  }
  if (n > text_start) out.push_back({text_start, n, -1});
}

}  // namespace mach::text
