// Jinja's filters and tests, and the Python methods templates call on strings, dicts and lists.
// Errors are thrown as RenderError (caught by Template::render and turned into an Error with the line).
#pragma once

#include <string>

#include "text/jinja/value.hpp"

namespace mach::text::jinja {

struct RenderError {
  std::string message;
};

[[noreturn]] void render_fail(std::string message);

Value apply_filter(const std::string& name, Value input, List& args, Kwargs& kwargs);
bool apply_test(const std::string& name, const Value& input, List& args);
// obj.name as Jinja resolves it: a method of str/dict/list, else a dict item; Undefined when absent.
Value get_attribute(const Value& obj, const std::string& name);
// obj[key]: list/str index (negative from the end), dict item; Undefined when absent.
Value get_item(const Value& obj, const Value& key);
// The items a for loop visits: list elements, dict keys, string characters.
List iterate(const Value& v);

}  // namespace mach::text::jinja
