// Shared by the OpenAI routes (service.cpp) and the generation of their answers (generation.cpp): the state of
// a request being answered, and the JSON pieces of OpenAI responses. Internal to src/server/openai.
#pragma once

#include <fmt/format.h>

#include <asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine_loop.hpp"
#include "server/http/http.hpp"
#include "server/openai/assembler.hpp"
#include "server/openai/request.hpp"
#include "server/openai/service.hpp"

namespace mach::server::openai {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using TokenLogprobs = std::vector<std::pair<uint32_t, engine::TokenLogprob>>;

// Model text may hold anything; invalid UTF-8 (a token's partial bytes) becomes U+FFFD instead of throwing.
inline std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

inline std::string random_id(std::string_view prefix) {
  static std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

inline int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline asio::awaitable<void> send_json(http::Response& res, int status, const json& body) {
  std::string text = dump(body);
  std::string type = "application/json";
  co_await res.send(status, std::move(type), std::move(text));
}

inline asio::awaitable<void> send_api_error(http::Response& res, const ApiError& e) {
  co_await res.send_error(e.status, e.message, e.type, e.code, e.param);
}

inline json tool_call_json(const text::ToolCall& call, uint32_t index, bool with_index) {
  json j = {{"id", random_id("call_")},
            {"type", "function"},
            {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
  if (with_index) j["index"] = index;
  return j;
}

// The text one token contributes, for logprobs (partial UTF-8 shows as U+FFFD; "bytes" has the truth).
inline json token_entry(const text::Tokenizer* tok, uint32_t id, float logprob) {
  const std::string_view bytes = tok ? tok->token_bytes(static_cast<text::TokenId>(id)) : std::string_view{};
  json b = json::array();
  for (unsigned char c : bytes) b.push_back(c);
  return {{"token", std::string(bytes)}, {"logprob", logprob}, {"bytes", b}};
}

// Chat logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
inline json chat_logprobs(const text::Tokenizer* tok, std::span<const std::pair<uint32_t, engine::TokenLogprob>> lps) {
  json content = json::array();
  for (const auto& [id, lp] : lps) {
    json e = token_entry(tok, id, lp.logprob);
    json top = json::array();
    for (const auto& [t, l] : lp.top) top.push_back(token_entry(tok, t, l));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return {{"content", std::move(content)}};
}

// Completions logprobs: parallel arrays, the top tokens as {token: logprob}, and each token's offset in the
// choice's text, the first at `text_offset`.
inline json completion_logprobs(const text::Tokenizer* tok,
                                std::span<const std::pair<uint32_t, engine::TokenLogprob>> lps, size_t text_offset) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const auto& [id, lp] : lps) {
    const std::string token = token_entry(tok, id, lp.logprob)["token"].get<std::string>();
    json top = json::object();
    for (const auto& [t, l] : lp.top) top[token_entry(tok, t, l)["token"].get<std::string>()] = l;
    out["tokens"].push_back(token);
    out["token_logprobs"].push_back(lp.logprob);
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(text_offset);
    text_offset += token.size();
  }
  return out;
}

struct Service::Choice {
  std::shared_ptr<engine::TokenStream> stream;
  std::unique_ptr<ChoiceAssembler> assembler;
  std::string content, reasoning;
  std::vector<text::ToolCall> tool_calls;
  std::vector<uint32_t> ids;                                        // without a tokenizer: the answer
  std::vector<std::pair<uint32_t, engine::TokenLogprob>> logprobs;  // with logprobs: per counted token
  std::string finish_reason;
  std::string error;
  bool done = false;
  bool got_first = false;
  Clock::time_point first_at, last_at;
  uint32_t cached_tokens = 0;
  engine::SpeculationStats speculation;
  // Tokens generated before a stop string matched (the usage's completion tokens).
  uint32_t completion_tokens() const { return assembler ? assembler->tokens() : static_cast<uint32_t>(ids.size()); }
};

struct Service::Job {
  bool chat = true;
  std::string id;
  int64_t created = 0;
  std::string model;
  std::vector<uint32_t> prompt;
  std::string echo;  // completions with echo: the prompt text first
  SamplingFields sampling;
  AssemblerOptions assembler;
  std::vector<Choice> choices;
  Clock::time_point arrived;
};

}  // namespace mach::server::openai
