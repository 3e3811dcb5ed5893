// The harmony formatter against the published format: the complete function-calling example of the
// openai-cookbook article "OpenAI harmony response format", byte for byte, and its rule for dropping old
// chain of thought.
#include "text/harmony.hpp"

#include <gtest/gtest.h>

#include "text/output_parser.hpp"

namespace mach::text {
namespace {

using nlohmann::ordered_json;

const char* const kCookbookTools = R"([
  {"type": "function", "function": {"name": "get_location", "description": "Gets the location of the user.",
    "parameters": {"type": "object", "properties": {}}}},
  {"type": "function", "function": {"name": "get_current_weather",
    "description": "Gets the current weather in the provided location.",
    "parameters": {"type": "object", "properties": {
      "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
      "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}},
      "required": ["location"]}}},
  {"type": "function", "function": {"name": "get_multiple_weathers",
    "description": "Gets the current weather in the provided list of locations.",
    "parameters": {"type": "object", "properties": {
      "locations": {"type": "array", "items": {"type": "string"},
                    "description": "List of city and state, e.g. [\"San Francisco, CA\", \"New York, NY\"]"},
      "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}},
      "required": ["locations"]}}}])";

// The article's "complete content" after one tool call, verbatim.
const char* const kCookbookPrompt =
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: "
    "2024-06\nCurrent date: 2025-06-28\n\nReasoning: high\n\n# Valid channels: analysis, commentary, final. Channel "
    "must be included for every message.\nCalls to these tools must go to the commentary channel: "
    "'functions'.<|end|><|start|>developer<|message|># Instructions\n\nUse a friendly tone.\n\n# Tools\n\n## "
    "functions\n\nnamespace functions {\n\n// Gets the location of the user.\ntype get_location = () => any;\n\n// "
    "Gets the current weather in the provided location.\ntype get_current_weather = (_: {\n// The city and state, "
    "e.g. San Francisco, CA\nlocation: string,\nformat?: \"celsius\" | \"fahrenheit\", // default: celsius\n}) => "
    "any;\n\n// Gets the current weather in the provided list of locations.\ntype get_multiple_weathers = (_: {\n// "
    "List of city and state, e.g. [\"San Francisco, CA\", \"New York, NY\"]\nlocations: string[],\nformat?: "
    "\"celsius\" | \"fahrenheit\", // default: celsius\n}) => any;\n\n} // namespace "
    "functions<|end|><|start|>user<|message|>What is the weather like in SF?<|end|><|start|>assistant<|channel|>"
    "analysis<|message|>Need to use function get_weather.<|end|><|start|>assistant<|channel|>commentary "
    "to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"San "
    "Francisco\"}<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{\"sunny\": true, "
    "\"temperature\": 20}<|end|><|start|>assistant";

TEST(Harmony, RendersTheCookbookExampleExactly) {
  ChatRequest request;
  request.tools = ordered_json::parse(kCookbookTools);
  request.messages = ordered_json::parse(R"([
    {"role": "system", "content": "Use a friendly tone."},
    {"role": "user", "content": "What is the weather like in SF?"},
    {"role": "assistant", "content": "", "reasoning_content": "Need to use function get_weather.",
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"sunny\": true, \"temperature\": 20}"}])");
  request.add_generation_prompt = true;
  request.kwargs = {{"reasoning_effort", "high"}};
  const auto prompt = render_harmony(request, {.current_date = "2025-06-28"});
  ASSERT_TRUE(prompt.ok()) << prompt.error().message;
  EXPECT_EQ(prompt.value(), kCookbookPrompt);
}

TEST(Harmony, DropsChainOfThoughtOfFinishedTurns) {
  ChatRequest request;
  request.messages = ordered_json::parse(R"([
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4.", "reasoning_content": "Simple arithmetic."},
    {"role": "user", "content": "What about 9 / 2?"}])");
  request.add_generation_prompt = true;
  const auto prompt = render_harmony(request, {.current_date = "2025-06-28"});
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->find("Simple arithmetic"), std::string::npos);
  EXPECT_NE(prompt->find("<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant<|channel|>final<|message|>"
                         "2 + 2 = 4.<|end|><|start|>user<|message|>What about 9 / 2?<|end|><|start|>assistant"),
            std::string::npos);
  EXPECT_EQ(prompt->find("<|start|>developer"), std::string::npos);  // no instructions, no tools
}

TEST(Harmony, OutputOfTheFormatParsesBack) {
  const auto parsed = parse_output(OutputFormat::harmony,
                                   "<|channel|>analysis<|message|>Need to use function get_weather.<|end|><|start|>"
                                   "assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                                   "<|message|>{\"location\":\"San Francisco\"}<|call|>");
  EXPECT_EQ(parsed.reasoning, "Need to use function get_weather.");
  ASSERT_EQ(parsed.tool_calls.size(), 1u);
  EXPECT_EQ(parsed.tool_calls[0].name, "get_weather");
  EXPECT_EQ(parsed.tool_calls[0].arguments, R"({"location":"San Francisco"})");
}

TEST(Harmony, RejectsUnknownRoles) {
  ChatRequest request;
  request.messages = ordered_json::parse(R"([{"role": "narrator", "content": "x"}])");
  const auto prompt = render_harmony(request);
  ASSERT_FALSE(prompt.ok());
  EXPECT_NE(prompt.error().message.find("narrator"), std::string::npos);
}

}  // namespace
}  // namespace mach::text
