// libFuzzer target for the Jinja interpreter: parse arbitrary bytes as a template and render it with a
// chat-like context. Invariants: no crash, no hang (step, size and depth limits), errors as values.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "text/jinja/template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi <think>"},
                 {"role": "assistant", "content": "<think>\nr\n</think>\n\nok", "tool_calls": [
                   {"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, null, true]}}}]},
                 {"role": "tool", "content": "42"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false})");
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  auto parsed = mach::text::jinja::Template::parse(source);
  if (parsed.ok()) (void)parsed->render(context);
  return 0;
}
