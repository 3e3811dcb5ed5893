// Parses Jinja chunks into a syntax tree. Supported statements: if/elif/else, for (with else, tuple targets,
// an if filter, loop.*), set (names, tuples, namespace attributes, block form), macro, break and continue;
// raw blocks are handled by the lexer. Anything else fails naming the template line.
#pragma once

#include <string_view>

#include "mach/error.hpp"
#include "text/jinja/ast.hpp"

namespace mach::text::jinja {

Result<Body> parse_template(std::string_view source);

}  // namespace mach::text::jinja
