// Reasoning and tool-call parsing of model-like outputs for each format, whole and streamed in every way
// (one byte at a time, split at every position, random pieces): streaming must give the same message.
#include "text/output_parser.hpp"

#include <gtest/gtest.h>

#include "text/chat_template.hpp"

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

// Gemma 4 outputs as its chat template writes them: the thought channel, then calls with bare keys and
// <|"|>-delimited strings, then <|tool_response> (the model's end-of-generation marker after calls).
TEST(Gemma4Output, ThoughtThenToolCall) {
  check(OutputFormat::gemma4,
        "<|channel>thought\nThe user wants Paris weather; call the tool.<channel|><|tool_call>call:get_weather{city:"
        "<|\"|>Paris<|\"|>,days:3,units:<|\"|>metric<|\"|>}<tool_call|><|tool_response>",
        message("The user wants Paris weather; call the tool.", "",
                {{"get_weather", R"({"city":"Paris","days":3,"units":"metric"})"}}));
}

TEST(Gemma4Output, AnswerAfterEmptyThought) {
  check(OutputFormat::gemma4, "<|channel>thought\n<channel|>The capital of France is Paris.<turn|>",
        message("", "The capital of France is Paris."));
  // Thinking disabled: the prompt holds the empty thought, the output is the answer alone.
  check(OutputFormat::gemma4, "Paris, <b>of course</b>: {\"a\": 1} call:x{}<turn|>",
        message("", "Paris, <b>of course</b>: {\"a\": 1} call:x{}"));
}

TEST(Gemma4Output, NestedArgumentsAndSeveralCalls) {
  check(OutputFormat::gemma4,
        "I'll create it and notify.\n<|tool_call>call:create_event{attendees:[<|\"|>ann@x.org<|\"|>,<|\"|>bob@y.org"
        "<|\"|>],details:{all_day:false,location:<|\"|>Room {4}, \"B\" <tool_call|><|\"|>,priority:-1.5e2},notes:null,"
        "title:<|\"|>Sync: Q3 — 日本 🙂<|\"|>}<tool_call|><|tool_call>call:notify{}<tool_call|>",
        message("", "I'll create it and notify.\n",
                {{"create_event", R"({"attendees":["ann@x.org","bob@y.org"],"details":{"all_day":false,)"
                                  R"("location":"Room {4}, \"B\" <tool_call|>","priority":-150.0},"notes":null,)"
                                  R"("title":"Sync: Q3 — 日本 🙂"})"},
                 {"notify", "{}"}}));
  // Keys quoted with <|"|>, JSON strings and Python's None (older templates' null) are read too.
  check(OutputFormat::gemma4, "<|tool_call>call:f{<|\"|>k<|\"|>:\"a\\\"b\", n : None , xs:[]}<tool_call|>",
        message("", "", {{"f", R"({"k":"a\"b","n":null,"xs":[]})"}}));
}

TEST(Gemma4Output, MalformedDegradesToContent) {
  // A bare word is not a value.
  check(OutputFormat::gemma4, "<|tool_call>call:f{a:b}<tool_call|>", message("", "<|tool_call>call:f{a:b}<tool_call|>"));
  // No call: prefix, no braces, trailing text after the object, unclosed string.
  check(OutputFormat::gemma4, "<|tool_call>f{a:1}<tool_call|>", message("", "<|tool_call>f{a:1}<tool_call|>"));
  check(OutputFormat::gemma4, "<|tool_call>call:f<tool_call|>", message("", "<|tool_call>call:f<tool_call|>"));
  check(OutputFormat::gemma4, "<|tool_call>call:f{a:1}x<tool_call|>", message("", "<|tool_call>call:f{a:1}x<tool_call|>"));
  check(OutputFormat::gemma4, "<|tool_call>call:f{a:<|\"|>open}<tool_call|>",
        message("", "<|tool_call>call:f{a:<|\"|>open}<tool_call|>"));
  // Unclosed call at the end of generation.
  check(OutputFormat::gemma4, "ok <|tool_call>call:f{a:1}", message("", "ok <|tool_call>call:f{a:1}"));
  // Duplicated closing tag: one call, the stray tag stays text.
  check(OutputFormat::gemma4, "<|tool_call>call:f{a:1}<tool_call|><tool_call|>",
        message("", "<tool_call|>", {{"f", R"({"a":1})"}}));
  // Unclosed thought (max_tokens inside the channel) is reasoning; stray and partial markers are text.
  check(OutputFormat::gemma4, "<|channel>thought\nstill thinking", message("still thinking", ""));
  check(OutputFormat::gemma4, "a <channel|> b <|chan c <|tool", message("", "a <channel|> b <|chan c <|tool"));
  check(OutputFormat::gemma4, "<|channel>tho", message("tho", ""));
}

// What the official Gemma 4 template writes for a call is what the parser reads back: arguments of every
// JSON type, rendered by the template (tests/fixtures/templates/gemma4) and parsed into the same JSON.
TEST(Gemma4Output, ReadsWhatTheTemplateWrites) {
  auto chat = ChatTemplate::load(MACH_SOURCE_DIR "/tests/fixtures/templates/gemma4");
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  const ordered_json args = ordered_json::parse(R"({"title": "Sync: Q3 — 日本 {x}, [y]", "n": 3, "ratio": -0.25,
    "big": 1e+20, "ok": true, "no": false, "tags": ["a", "b c", []], "where": {"room": "B \"4\"", "floors": [1, 2],
    "inner": {"deep": "yes"}}, "empty": {}, "text": "line1\nline2: {k:v}"})");
  ChatRequest request;
  request.messages = ordered_json::array(
      {{{"role", "user"}, {"content", "go"}},
       {{"role", "assistant"},
        {"content", ""},
        {"tool_calls", {{{"type", "function"}, {"function", {{"name", "make_event"}, {"arguments", args}}}}}}}});
  auto prompt = chat->render(request);
  ASSERT_TRUE(prompt.ok()) << prompt.error().message;
  const size_t begin = prompt->find("<|tool_call>"), end = prompt->find("<tool_call|>");
  ASSERT_NE(begin, std::string::npos) << *prompt;
  ASSERT_NE(end, std::string::npos) << *prompt;
  const std::string call = prompt->substr(begin, end + 12 - begin);
  const OutputDelta got = parse_output(OutputFormat::gemma4, call);
  ASSERT_EQ(got.tool_calls.size(), 1u) << call << "\ncontent: " << got.content;
  EXPECT_EQ(got.tool_calls[0].name, "make_event");
  EXPECT_EQ(nlohmann::json::parse(got.tool_calls[0].arguments), nlohmann::json::parse(args.dump())) << call;
  EXPECT_EQ(got.content, "");
}

// DeepSeek-V4's DSML blocks (well-formed ones are checked against the published parser in deepseek_v4_test).
TEST(DeepSeekV4Output, ToolCallsAndReasoning) {
  const std::string block =
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" "
      "string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  check(OutputFormat::deepseek_v4, "Weather first.</think>Checking." + block + "<｜end▁of▁sentence｜>",
        message("Weather first.", "Checking.", {{"get_weather", R"({"city":"Paris","days":2})"}}), nullptr, true);
  // Newlines at the end of content stay content when no block follows.
  check(OutputFormat::deepseek_v4, "A\n\n", message("", "A\n\n"));
  check(OutputFormat::deepseek_v4, "A\n" + block, message("", "A\n", {{"get_weather", R"({"city":"Paris","days":2})"}}));
}

TEST(DeepSeekV4Output, MalformedDegradesToContent) {
  const std::string open = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n";
  const std::string close = "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  // A non-string value that is not JSON.
  const std::string bad_json = open + "<｜DSML｜parameter name=\"n\" string=\"false\">{oops</｜DSML｜parameter>\n" + close;
  check(OutputFormat::deepseek_v4, "x\n\n" + bad_json, message("", "x\n\n" + bad_json));
  // A duplicated parameter, a bad string flag, an invoke without its closing tag.
  const std::string dup = open + "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n"
                                 "<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n" + close;
  check(OutputFormat::deepseek_v4, dup, message("", dup));
  const std::string flag = open + "<｜DSML｜parameter name=\"a\" string=\"maybe\">1</｜DSML｜parameter>\n" + close;
  check(OutputFormat::deepseek_v4, flag, message("", flag));
  const std::string unclosed_invoke = open + "</｜DSML｜tool_calls>";
  check(OutputFormat::deepseek_v4, unclosed_invoke, message("", unclosed_invoke));
  // Unclosed block at the end of generation; duplicated closing tag after a good block.
  check(OutputFormat::deepseek_v4, "ok\n\n" + open, message("", "ok\n\n" + open));
  check(OutputFormat::deepseek_v4, open + close + "</｜DSML｜tool_calls>",
        message("", "</｜DSML｜tool_calls>", {{"f", "{}"}}));
  // Unclosed reasoning; stray markers are text.
  check(OutputFormat::deepseek_v4, "still thinking", message("still thinking", ""), nullptr, true);
  check(OutputFormat::deepseek_v4, "a </think> b <｜DSML｜invoke c <｜DSML｜tool", message("", "a </think> b <｜DSML｜invoke c <｜DSML｜tool"));
}

TEST(OutputFormat, Names) {
  EXPECT_EQ(output_format_from_name("qwen3"), OutputFormat::qwen3);
  EXPECT_EQ(output_format_from_name("harmony"), OutputFormat::harmony);
  EXPECT_EQ(output_format_from_name("gemma4"), OutputFormat::gemma4);
  EXPECT_EQ(output_format_from_name("deepseek_v4"), OutputFormat::deepseek_v4);
  EXPECT_FALSE(output_format_from_name("nope").has_value());
}

}  // namespace
}  // namespace mach::text
