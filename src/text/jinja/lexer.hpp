// Jinja lexing with the settings Hugging Face renders chat templates with: trim_blocks (the newline after a
// block tag goes) and lstrip_blocks (indentation before a block tag goes), plus the -/+ whitespace control
// markers. Produces text, {{ expression }} and {% statement %} chunks; comments disappear.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mach/error.hpp"

namespace mach::text::jinja {

struct Chunk {
  enum class Kind { text, expression, statement } kind;
  std::string text;  // the literal text, or the tag's inside without delimiters and -/+ markers
  int line = 1;      // where the chunk starts in the template
};

Result<std::vector<Chunk>> split_template(std::string_view source);

struct Token {
  enum class Kind { name, string, integer, floating, op, end } kind;
  std::string text;  // names and operators as written; strings unescaped
  int64_t integer = 0;
  double floating = 0;
};

// The tokens of one tag's inside; line is for error messages.
Result<std::vector<Token>> tokenize_expression(std::string_view text, int line);

}  // namespace mach::text::jinja
