// DeepSeek-V4 prompts from our formatter against the published encoder (tests/oracle/encoding_dsv4.py, run by
// the ctest fixture chat_template_reference through render_templates.py): every conversation of
// conversations.json and deepseek_v4_cases.json byte for byte, or an error on both sides. And the encoder's own
// parser (parse_message_from_completion_text) on recorded completions against our streaming output parser,
// fed whole, byte by byte and split at every position.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "text/deepseek_v4.hpp"
#include "text/output_parser.hpp"

namespace mach::text {
namespace {

using Json = nlohmann::ordered_json;

const Json& reference() {
  static const Json ref = [] {
    std::ifstream in(MACH_TEMPLATE_REFERENCE);
    return in ? Json::parse(in) : Json();
  }();
  return ref;
}

Json load(const char* name) {
  std::ifstream in(std::string(MACH_ORACLE_DIR) + "/" + name);
  return Json::parse(in);
}

void require_reference() {
  ASSERT_FALSE(reference().is_null() || !reference().contains("deepseek_v4"))
      << MACH_TEMPLATE_REFERENCE << " is missing or old: run the tests with ctest (the chat_template_reference "
      << "fixture makes it with python3)";
}

TEST(DeepSeekV4Prompt, MatchesPublishedEncoder) {
  require_reference();
  Json cases = load("conversations.json")["cases"];
  const Json extra = load("deepseek_v4_cases.json");
  for (const auto& c : extra["cases"]) cases.push_back(c);
  const Json& want = reference()["deepseek_v4"];
  ASSERT_EQ(want.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const Json& c = cases[i];
    const std::string name = c["name"].get<std::string>();
    ASSERT_EQ(want[i]["name"], name);
    ChatRequest request;
    request.messages = c["messages"];
    if (c.contains("tools")) request.tools = c["tools"];
    request.add_generation_prompt = c.value("add_generation_prompt", false);
    if (c.contains("kwargs")) request.kwargs = c["kwargs"];
    const auto ours = render_deepseek_v4(request);
    if (want[i].contains("error")) {
      EXPECT_FALSE(ours.ok()) << name << ": the encoder failed (" << want[i]["error"].get<std::string>()
                              << ") but we rendered:\n" << ours.value();
      continue;
    }
    ASSERT_TRUE(ours.ok()) << name << ": " << ours.error().message;
    EXPECT_EQ(*ours, want[i]["text"].get<std::string>()) << name;
  }
}

OutputDelta parse(std::string_view text, bool thinking, const std::vector<size_t>& cuts) {
  OutputParser parser(OutputFormat::deepseek_v4, nullptr, thinking);
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

TEST(DeepSeekV4Output, MatchesPublishedParser) {
  require_reference();
  const Json completions = load("deepseek_v4_cases.json")["completions"];
  const Json& want = reference()["deepseek_v4_parse"];
  ASSERT_EQ(want.size(), completions.size());
  for (size_t i = 0; i < completions.size(); ++i) {
    const std::string text = completions[i]["text"].get<std::string>();
    const bool thinking = completions[i]["thinking_mode"] == "thinking";
    std::vector<ToolCall> calls;
    for (const auto& call : want[i]["tool_calls"]) calls.push_back({call["name"].get<std::string>(), call["arguments"].dump()});
    std::vector<std::pair<std::string, std::vector<size_t>>> splits{{"whole", {}}};
    std::vector<size_t> bytes;
    for (size_t b = 1; b < text.size(); ++b) {
      bytes.push_back(b);
      splits.push_back({"split at " + std::to_string(b), {b}});
    }
    splits.push_back({"byte by byte", bytes});
    for (const auto& [how, cuts] : splits) {
      const OutputDelta got = parse(text, thinking, cuts);
      const std::string what = want[i]["name"].get<std::string>() + ", " + how;
      EXPECT_EQ(got.reasoning, want[i]["reasoning"].get<std::string>()) << what;
      EXPECT_EQ(got.content, want[i]["content"].get<std::string>()) << what;
      EXPECT_EQ(got.tool_calls, calls) << what;
    }
  }
}

TEST(DeepSeekV4Prompt, BadRequestsSayWhy) {
  ChatRequest request;
  request.messages = Json::parse(R"([{"role": "user", "content": "hi"}])");
  request.kwargs = {{"thinking_mode", "deep"}};
  auto r = render_deepseek_v4(request);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("thinking_mode"), std::string::npos) << r.error().message;
  request.kwargs = {{"thinking", "yes"}};
  r = render_deepseek_v4(request);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("thinking must be true or false"), std::string::npos) << r.error().message;
  request.kwargs = Json::object();
  request.messages = Json::parse(R"(["hi"])");
  r = render_deepseek_v4(request);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("messages[0] is not an object"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace mach::text
