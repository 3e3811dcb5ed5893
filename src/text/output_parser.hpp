// Generated text → OpenAI message parts: reasoning_content, content and tool_calls, incrementally.
//
// Formats:
//   qwen3        <think>…</think> reasoning; <tool_call>{"name": …, "arguments": {…}}</tool_call>
//   qwen3_coder  as qwen3, but tool calls as XML: <tool_call><function=NAME><parameter=K>V</parameter>
//                </function></tool_call> (values typed by the tool's JSON schema when tools are given)
//   harmony      gpt-oss: <|channel|>analysis<|message|>… is reasoning, final is content,
//                commentary to=functions.NAME <|message|>{json}<|call|> is a tool call
//   gemma4       <|channel>thought\n…<channel|> reasoning; <|tool_call>call:NAME{key:<|"|>text<|"|>,n:1}<tool_call|>
//                (bare keys, <|"|>-delimited strings) converted to JSON arguments; <turn|> and <|tool_response>
//                end markers dropped
//   deepseek_v4  <think>…</think> reasoning (the thinking-mode prompt opens it: starts_in_reasoning); calls in a DSML
//                block \n\n<｜DSML｜tool_calls><｜DSML｜invoke name="F"><｜DSML｜parameter name="K" string="true|false">V
//                </｜DSML｜parameter></｜DSML｜invoke></｜DSML｜tool_calls>; <｜end▁of▁sentence｜> dropped
// Text arrives in arbitrary pieces (tags split across pieces are held back until they resolve). Malformed
// output (unclosed tags, bad JSON, stray closing tags) degrades to content text; nothing throws and no
// text is lost. Feed the decoded text with special tokens kept (harmony's markers are special tokens).
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mach::text {

enum class OutputFormat { qwen3, qwen3_coder, harmony, gemma4, deepseek_v4 };
inline constexpr int kOutputFormatCount = 5;

// "qwen3", "qwen3_coder", "harmony", "gemma4", "deepseek_v4"; nullopt for anything else.
std::optional<OutputFormat> output_format_from_name(std::string_view name);
std::string_view output_format_name(OutputFormat format);

struct ToolCall {
  std::string name;       // valid UTF-8
  std::string arguments;  // a JSON object, compact (OpenAI's tool_calls[].function.arguments)
  friend bool operator==(const ToolCall&, const ToolCall&) = default;
};

// What one push() or finish() adds to the message.
struct OutputDelta {
  std::string content;
  std::string reasoning;
  std::vector<ToolCall> tool_calls;  // calls completed by this piece, whole
  bool empty() const { return content.empty() && reasoning.empty() && tool_calls.empty(); }
  void append(OutputDelta&& other);
};

class OutputParser {
 public:
  // tools: the request's OpenAI tools list (qwen3_coder types parameter values with it; may be null).
  // starts_in_reasoning: the prompt already opened the reasoning block (templates that end in "<think>\n").
  OutputParser(OutputFormat format, nlohmann::ordered_json tools = nullptr, bool starts_in_reasoning = false);
  ~OutputParser();
  OutputParser(OutputParser&&) noexcept;
  OutputParser& operator=(OutputParser&&) noexcept;

  OutputDelta push(std::string_view text);
  // End of generation: flushes held text; an unfinished tool call becomes content (harmony: a call whose
  // <|call|> stop token was stripped is still a call when its arguments are valid JSON).
  OutputDelta finish();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The whole output at once.
OutputDelta parse_output(OutputFormat format, std::string_view text, const nlohmann::ordered_json& tools = nullptr,
                         bool starts_in_reasoning = false);

}  // namespace mach::text
