// Reasoning and tool-call parsing of model-like outputs for each format, whole and streamed in every way
// (one byte at a time, split at every position, random pieces): streaming must give the same message.
#include "text/output_parser.hpp"

#include <gtest/gtest.h>

#include <random>

namespace mach::text {
namespace {

using nlohmann::ordered_json;

OutputDelta streamed(OutputFormat format, std::string_view text, const std::vector<size_t>& cuts,
                     const ordered_json& tools, bool starts_in_reasoning) {
  OutputParser parser(format, tools, starts_in_reasoning);
  OutputDelta all;
  size_t prev = 0;
  for (size_t cut : cuts) {
    all.append(parser.push(text.substr(prev, cut - prev)));
    prev = cut;
  }
  all.append(parser.push(text.substr(prev)));
  all.append(parser.finish());
  return all;
}

void expect_equal(const OutputDelta& got, const OutputDelta& want, const std::string& how) {
  EXPECT_EQ(got.reasoning, want.reasoning) << how;
  EXPECT_EQ(got.content, want.content) << how;
  EXPECT_EQ(got.tool_calls, want.tool_calls) << how;
}

// Parses `text` whole and streamed every way, checks all agree with `want`.
void check(OutputFormat format, std::string_view text, const OutputDelta& want, const ordered_json& tools = nullptr,
           bool starts_in_reasoning = false) {
  expect_equal(parse_output(format, text, tools, starts_in_reasoning), want, "whole");
  std::vector<size_t> bytes;
  for (size_t i = 1; i < text.size(); ++i) bytes.push_back(i);
  expect_equal(streamed(format, text, bytes, tools, starts_in_reasoning), want, "byte by byte");
  for (size_t i = 1; i < text.size(); ++i) {
    expect_equal(streamed(format, text, {i}, tools, starts_in_reasoning), want, "split at " + std::to_string(i));
  }
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<size_t> cuts;
    for (size_t i = 1 + rng() % 7; i < text.size(); i += 1 + rng() % 7) cuts.push_back(i);
    expect_equal(streamed(format, text, cuts, tools, starts_in_reasoning), want, "random pieces");
  }
}

OutputDelta message(std::string reasoning, std::string content, std::vector<ToolCall> calls = {}) {
  return {std::move(content), std::move(reasoning), std::move(calls)};
}

TEST(Qwen3Output, ReasoningThenAnswer) {
  check(OutputFormat::qwen3, "<think>\nLet me add: 2+2.\n\n</think>\n\nThe answer is 4.",
        message("Let me add: 2+2.", "The answer is 4."));
}

TEST(Qwen3Output, PromptOpenedReasoning) {
  check(OutputFormat::qwen3, "Thinking about <b>tags</b>\n</think>\n\nDone.", message("Thinking about <b>tags</b>", "Done."),
        nullptr, /*starts_in_reasoning=*/true);
}

TEST(Qwen3Output, ToolCalls) {
  check(OutputFormat::qwen3,
        "<think>\nNeed weather.\n</think>\n\nChecking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
        "{\"city\": \"Paris\", \"days\": 2}}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": "
        "\"{\\\"q\\\": \\\"x\\\"}\"}\n</tool_call>",
        message("Need weather.", "Checking.\n\n",
                {{"get_weather", R"({"city":"Paris","days":2})"}, {"search", R"({"q":"x"})"}}));
}

TEST(Qwen3Output, MalformedDegradesToContent) {
  // Bad JSON: the text is kept as content.
  check(OutputFormat::qwen3, "<tool_call>\n{\"name\": get_weather}\n</tool_call>",
        message("", "<tool_call>\n{\"name\": get_weather}\n</tool_call>"));
  // Unclosed tool call at the end of generation.
  check(OutputFormat::qwen3, "ok <tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
        message("", "ok <tool_call>\n{\"name\": \"f\", \"arguments\": {}}"));
  // Duplicated closing tag: one call, the stray tag stays text.
  check(OutputFormat::qwen3, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call></tool_call>",
        message("", "</tool_call>", {{"f", "{}"}}));
  // Unclosed reasoning (max_tokens inside <think>) is reasoning.
  check(OutputFormat::qwen3, "<think>\nstill thinking", message("still thinking", ""));
  // A lone closing tag or a tag-like prefix is just text.
  check(OutputFormat::qwen3, "a </think> b <thin c <tool", message("", "a </think> b <thin c <tool"));
}

TEST(Qwen3CoderOutput, XmlToolCallsTypedBySchema) {
  const ordered_json tools = ordered_json::parse(R"([{"type": "function", "function": {"name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
    "zip": {"type": "string"}, "opts": {"type": "object"}}}}}])");
  check(OutputFormat::qwen3_coder,
        "Let me look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n<parameter=zip>\n10001\n</parameter>\n<parameter=opts>\n{\"a\": [1]}\n"
        "</parameter>\n</function>\n</tool_call>",
        message("", "Let me look.\n",
                {{"get_weather", R"({"city":"New York","days":3,"zip":"10001","opts":{"a":[1]}})"}}),
        tools);
  // Without a schema, values that parse as JSON are JSON.
  check(OutputFormat::qwen3_coder, "<tool_call><function=f><parameter=n>\n7\n</parameter><parameter=s>\nhi\n</parameter></function></tool_call>",
        message("", "", {{"f", R"({"n":7,"s":"hi"})"}}));
  check(OutputFormat::qwen3_coder, "<tool_call><function=f><parameter=n>7</function></tool_call>",
        message("", "<tool_call><function=f><parameter=n>7</function></tool_call>"));
}

TEST(HarmonyOutput, AnalysisFinalAndToolCalls) {
  check(OutputFormat::harmony,
        "<|channel|>analysis<|message|>User wants weather. Call tool.<|end|><|start|>assistant<|channel|>commentary "
        "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>",
        message("User wants weather. Call tool.", "", {{"get_weather", R"({"city":"Paris"})"}}));
  check(OutputFormat::harmony,
        "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final<|message|>Hello, <world>!<|return|>",
        message("Simple.", "Hello, <world>!"));
  // The <|call|> stop token stripped by the caller: still a call when the arguments are valid JSON.
  check(OutputFormat::harmony, "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}",
        message("", "", {{"f", R"({"a":1})"}}));
  // Bad arguments degrade to content; a preamble on commentary without a recipient is content.
  check(OutputFormat::harmony,
        "<|channel|>commentary<|message|>Checking now.<|end|><|start|>assistant<|channel|>commentary to=functions.f<|message|>{oops<|call|>",
        message("", "Checking now.{oops"));
  // No harmony markers at all: plain content.
  check(OutputFormat::harmony, "just text", message("", "just text"));
}

TEST(OutputFormat, Names) {
  EXPECT_EQ(output_format_from_name("qwen3"), OutputFormat::qwen3);
  EXPECT_EQ(output_format_from_name("harmony"), OutputFormat::harmony);
  EXPECT_FALSE(output_format_from_name("nope").has_value());
}

}  // namespace
}  // namespace mach::text
