#include "text/jinja/lexer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "text/utf8.hpp"

namespace mach::text::jinja {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

int count_lines(std::string_view s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

// The end of a tag that starts at `from`: the offset of `close`, skipping quoted strings.
size_t find_close(std::string_view src, size_t from, std::string_view close) {
  char quote = 0;
  for (size_t i = from; i + 1 < src.size() + 1; ++i) {
    const char c = src[i];
    if (quote) {
      if (c == '\\') ++i;
      else if (c == quote) quote = 0;
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      continue;
    }
    if (src.substr(i, close.size()) == close) return i;
  }
  return std::string_view::npos;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::vector<Chunk>> split_template(std::string_view src) {
  // jinja2's default keep_trailing_newline=False: one final newline of the template is not output.
  if (src.ends_with("\r\n")) src.remove_suffix(2);
  else if (src.ends_with('\n')) src.remove_suffix(1);
  std::vector<Chunk> chunks;
  size_t pos = 0;
  int line = 1;
  bool strip_next_text = false;  // the previous tag ended with -%} / -}} / -#}
  bool trim_next_newline = false;  // the previous tag was a block or comment (trim_blocks)
  while (pos <= src.size()) {
    size_t start = src.find('{', pos);
    while (start != std::string_view::npos && start + 1 < src.size() && src[start + 1] != '{' &&
           src[start + 1] != '%' && src[start + 1] != '#') {
      start = src.find('{', start + 1);
    }
    if (start != std::string_view::npos && start + 1 >= src.size()) start = std::string_view::npos;
    const size_t text_end = start == std::string_view::npos ? src.size() : start;
    std::string text(src.substr(pos, text_end - pos));
    const int text_line = line;
    line += count_lines(text);
    if (strip_next_text) {
      text.erase(0, std::find_if(text.begin(), text.end(), [](char c) { return !is_space(c); }) - text.begin());
    } else if (trim_next_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
    }
    strip_next_text = trim_next_newline = false;
    if (start == std::string_view::npos) {
      if (!text.empty()) chunks.push_back({Chunk::Kind::text, std::move(text), text_line});
      break;
    }
    const char kind = src[start + 1];
    const char marker = start + 2 < src.size() ? src[start + 2] : 0;
    if (marker == '-') {
      while (!text.empty() && is_space(text.back())) text.pop_back();
    } else if (kind != '{' && marker != '+') {
      // lstrip_blocks: indentation between the line start and a block tag goes.
      size_t b = text_end;
      while (b > pos && (src[b - 1] == ' ' || src[b - 1] == '\t')) --b;
      if (b == 0 || src[b - 1] == '\n') text.erase(text.size() - std::min(text.size(), text_end - b));
    }
    if (!text.empty()) chunks.push_back({Chunk::Kind::text, std::move(text), text_line});

    const std::string_view close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    const size_t inner = start + 2 + ((marker == '-' || marker == '+') ? 1 : 0);
    const size_t end = kind == '#' ? src.find(close, inner) : find_close(src, inner, close);
    if (end == std::string_view::npos) {
      return Error{Errc::parse, fmt::format("template line {}: '{{{}' is never closed with '{}'", line, kind, close)};
    }
    size_t inner_end = end;
    if (inner_end > inner && (src[inner_end - 1] == '-' || src[inner_end - 1] == '+')) {
      strip_next_text = src[inner_end - 1] == '-';
      --inner_end;
    }
    const std::string_view body = src.substr(inner, inner_end - inner);
    const int tag_line = line;
    line += count_lines(src.substr(start, end + 2 - start));
    pos = end + 2;
    if (kind != '{') trim_next_newline = !strip_next_text;
    if (kind == '#') continue;
    if (kind == '{') {
      chunks.push_back({Chunk::Kind::expression, std::string(body), tag_line});
      continue;
    }
    if (trim(body) == "raw") {  // {% raw %}...{% endraw %}: the text between is literal
      size_t search = pos;
      for (;;) {
        const size_t open = src.find("{%", search);
        if (open == std::string_view::npos) {
          return Error{Errc::parse, fmt::format("template line {}: {{% raw %}} without {{% endraw %}}", tag_line)};
        }
        const size_t close_at = src.find("%}", open);
        std::string_view tag = src.substr(open + 2, close_at == std::string_view::npos ? 0 : close_at - open - 2);
        if (!tag.empty() && (tag.front() == '-' || tag.front() == '+')) tag.remove_prefix(1);
        if (!tag.empty() && (tag.back() == '-' || tag.back() == '+')) tag.remove_suffix(1);
        if (trim(tag) == "endraw") {
          std::string raw(src.substr(pos, open - pos));
          if (strip_next_text) raw.erase(0, raw.find_first_not_of(" \t\r\n"));
          if (src[open + 2] == '-') {
            while (!raw.empty() && is_space(raw.back())) raw.pop_back();
          }
          if (!raw.empty()) chunks.push_back({Chunk::Kind::text, raw, tag_line});
          line += count_lines(src.substr(pos, close_at + 2 - pos));
          strip_next_text = src[close_at - 1] == '-';
          trim_next_newline = !strip_next_text;
          pos = close_at + 2;
          break;
        }
        search = open + 2;
      }
      continue;
    }
    chunks.push_back({Chunk::Kind::statement, std::string(body), tag_line});
  }
  return chunks;
}

Result<std::vector<Token>> tokenize_expression(std::string_view s, int line) {
  std::vector<Token> tokens;
  size_t i = 0;
  const auto fail = [&](std::string what) {
    return Error{Errc::parse, fmt::format("template line {}: {} in '{}'", line, what, std::string(s))};
  };
  while (i < s.size()) {
    const char c = s[i];
    if (is_space(c)) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      tokens.push_back({Token::Kind::name, std::string(s.substr(i, j - i))});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string text(s.substr(i, j - i));
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      Token t{is_float ? Token::Kind::floating : Token::Kind::integer, text};
      try {
        if (is_float) t.floating = std::stod(text);
        else t.integer = std::stoll(text);
      } catch (const std::exception&) {
        return fail(fmt::format("number '{}' out of range", text));
      }
      tokens.push_back(std::move(t));
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          value += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': value += '\n'; break;
          case 't': value += '\t'; break;
          case 'r': value += '\r'; break;
          case '0': value += '\0'; break;
          case 'a': value += '\a'; break;
          case 'b': value += '\b'; break;
          case 'f': value += '\f'; break;
          case 'v': value += '\v'; break;
          case '\\': case '\'': case '"': value += e; break;
          case '\n': break;
          case 'x': case 'u': case 'U': {
            const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (j + n >= s.size()) return fail("truncated escape");
            char32_t cp = 0;
            for (size_t k = 1; k <= n; ++k) {
              const char h = s[j + k];
              if (!std::isxdigit(static_cast<unsigned char>(h))) return fail("bad \\x/\\u escape");
              cp = cp * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
            append_utf8(value, cp);
            j += n;
            break;
          }
          default: value += '\\'; value += e;
        }
      }
      if (j >= s.size()) return fail("unterminated string");
      tokens.push_back({Token::Kind::string, std::move(value)});
      i = j + 1;
      continue;
    }
    static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                       "=", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|"};
    bool matched = false;
    for (const char* op : kOps) {
      const std::string_view o(op);
      if (s.substr(i, o.size()) == o) {
        tokens.push_back({Token::Kind::op, std::string(o)});
        i += o.size();
        matched = true;
        break;
      }
    }
    if (!matched) return fail(fmt::format("unexpected character '{}'", c));
  }
  tokens.push_back({Token::Kind::end, ""});
  return tokens;
}

}  // namespace mach::text::jinja
