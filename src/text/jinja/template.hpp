// A Jinja template, parsed once and rendered many times: the subset of Jinja (with Hugging Face's
// chat-template environment: trim_blocks, lstrip_blocks, loop controls, tojson, raise_exception,
// strftime_now) that the official chat templates of our model families use. Rendering matches Python's
// jinja2 byte for byte on them (tests/template_test.cpp). Unsupported constructs fail with the template line.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

#include "mach/error.hpp"
#include "text/jinja/ast.hpp"

namespace mach::text::jinja {

class Template {
 public:
  Template() = default;  // renders nothing
  static Result<Template> parse(std::string_view source);
  // context: the template's variables (messages, tools, add_generation_prompt, bos_token, ...).
  // Thread-safe: rendering does not modify the template.
  Result<std::string> render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace mach::text::jinja
