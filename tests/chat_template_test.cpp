// Chat templates rendered by our Jinja interpreter against Python's jinja2 (tests/oracle/render_templates.py,
// run by the ctest fixture chat_template_reference): the official templates of the tokenizer packages on the
// conversations of tests/oracle/conversations.json, and the constructs of tests/oracle/jinja_features.json.
// Byte-for-byte equal output, or an error on both sides.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "text/chat_template.hpp"

namespace mach::text {
namespace {

const nlohmann::ordered_json& reference() {
  static const nlohmann::ordered_json ref = [] {
    std::ifstream in(MACH_TEMPLATE_REFERENCE);
    return in ? nlohmann::ordered_json::parse(in) : nlohmann::ordered_json();
  }();
  return ref;
}

const nlohmann::ordered_json& conversations() {
  static const nlohmann::ordered_json cases = [] {
    std::ifstream in(MACH_ORACLE_DIR "/conversations.json");
    return nlohmann::ordered_json::parse(in)["cases"];
  }();
  return cases;
}

const nlohmann::ordered_json& features() {
  static const nlohmann::ordered_json cases = [] {
    std::ifstream in(MACH_ORACLE_DIR "/jinja_features.json");
    return nlohmann::ordered_json::parse(in)["features"];
  }();
  return cases;
}

void expect_same(const Result<std::string>& ours, const nlohmann::ordered_json& want, const std::string& what) {
  if (want.contains("error")) {
    EXPECT_FALSE(ours.ok()) << what << ": jinja2 failed (" << want["error"].get<std::string>()
                            << ") but we rendered:\n" << ours.value();
    return;
  }
  ASSERT_TRUE(ours.ok()) << what << ": " << ours.error().message;
  EXPECT_EQ(ours.value(), want["text"].get<std::string>()) << what;
}

void require_reference() {
  ASSERT_FALSE(reference().is_null())
      << MACH_TEMPLATE_REFERENCE << " is missing: run the tests with ctest (the chat_template_reference fixture "
      << "makes it) after scripts/setup.sh has installed tests/oracle/node_modules";
}

class ChatTemplateOracle : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateOracle, RendersLikeJinja2) {
  require_reference();
  const auto& model = reference()["models"][GetParam()];
  auto chat = ChatTemplate::load(model["dir"].get<std::string>());
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  const auto& cases = model["cases"];
  ASSERT_EQ(cases.size(), conversations().size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = conversations()[i];
    ChatRequest request;
    request.messages = c["messages"];
    if (c.contains("tools")) request.tools = c["tools"];
    request.add_generation_prompt = c.value("add_generation_prompt", false);
    if (c.contains("kwargs")) request.kwargs = c["kwargs"];
    expect_same(chat->render(request), cases[i], GetParam() + "/" + c["name"].get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ChatTemplateOracle, ::testing::Values("qwen3", "gemma3", "deepseek_v3", "gpt_oss", "qwen3_coder", "gemma4"));

TEST(JinjaFeatures, RenderLikeJinja2) {
  require_reference();
  const auto& want = reference()["features"];
  ASSERT_EQ(want.size(), features().size());
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& f = features()[i];
    auto parsed = jinja::Template::parse(f["template"].get<std::string>());
    const std::string name = f["name"].get<std::string>();
    if (!parsed.ok()) {
      EXPECT_TRUE(want[i].contains("error")) << name << ": we failed to parse: " << parsed.error().message;
      continue;
    }
    expect_same(parsed->render(f.value("context", nlohmann::ordered_json::object())), want[i], name);
  }
}

TEST(Jinja, ErrorsNameTheTemplateLine) {
  const auto unknown_tag = jinja::Template::parse("line one\n{% if x %}\n{% frobnicate %}\n{% endif %}");
  ASSERT_FALSE(unknown_tag.ok());
  EXPECT_NE(unknown_tag.error().message.find("line 3"), std::string::npos) << unknown_tag.error().message;
  EXPECT_NE(unknown_tag.error().message.find("frobnicate"), std::string::npos);

  const auto unknown_filter = jinja::Template::parse("a\nb {{ x | frobnicate }}");
  ASSERT_TRUE(unknown_filter.ok());
  const auto rendered = unknown_filter->render({{"x", 1}});
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.error().message.find("line 2"), std::string::npos) << rendered.error().message;

  const auto unclosed = jinja::Template::parse("{% for x in y %}no end");
  ASSERT_FALSE(unclosed.ok());
  EXPECT_NE(unclosed.error().message.find("endfor"), std::string::npos) << unclosed.error().message;
}

// Python's integers are unbounded and ours are 64-bit: results that do not fit are an error, never a
// wrapped value (found by the template fuzzer: 3**33333 converted inf to int64).
TEST(Jinja, IntegerOverflowIsAnError) {
  const auto render = [](const char* src) {
    auto t = jinja::Template::parse(src);
    EXPECT_TRUE(t.ok()) << src;
    return t->render(nlohmann::ordered_json::object());
  };
  for (const char* src : {"{{ 3**33333 }}", "{{ 9223372036854775807 + 1 }}", "{{ -9223372036854775807 - 2 }}",
                          "{{ 4294967296 * 4294967296 }}", "{{ -(-9223372036854775807 - 1) }}",
                          "{{ (-9223372036854775807 - 1) // -1 }}"}) {
    const auto r = render(src);
    ASSERT_FALSE(r.ok()) << src << " rendered " << *r;
    EXPECT_NE(r.error().message.find("overflow"), std::string::npos) << r.error().message;
  }
  EXPECT_EQ(*render("{{ 2**62 }} {{ (-2)**63 }} {{ 3**0 }} {{ 2**-1 }}"), "4611686018427387904 -9223372036854775808 1 0.5");
  EXPECT_EQ(*render("{{ 1e300 * 1e300 }}|{{ (1e300 * 1e300) | int }}|{{ 2.9 | int }}"), "inf|0|2");
  EXPECT_EQ(*render("{{ range(9223372036854775806, 9223372036854775807, 100) | list }}"), "[9223372036854775806]");
  EXPECT_FALSE(render("{{ range('a') }}").ok());
}

// String repetition is bounded by the output limit and never loops over a huge count of empty strings
// (found by the template fuzzer: an undefined value's default, '', times ~10^17 hung the renderer).
TEST(Jinja, StringRepetitionIsBounded) {
  const auto render = [](const char* src) {
    auto t = jinja::Template::parse(src);
    EXPECT_TRUE(t.ok()) << src;
    return t->render(nlohmann::ordered_json::object());
  };
  EXPECT_EQ(*render("[{{ '' * 9223372036854775807 }}][{{ (m | d) * 100000000000000000 }}]"), "[][]");
  EXPECT_EQ(*render("{{ 'ab' * 3 }}|{{ 2 * 'c' }}|{{ 'x' * 0 }}|{{ 'x' * -5 }}"), "ababab|cc||");
  for (const char* src : {"{{ 'ab' * 9223372036854775807 }}", "{{ 'ab' * 4611686018427387904 }}"}) {
    const auto r = render(src);
    ASSERT_FALSE(r.ok()) << src;
    EXPECT_NE(r.error().message.find("repetition too large"), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace mach::text
