// Decoding and validating OpenAI request bodies (/v1/chat/completions, /v1/completions) into plain structs.
// No I/O and no coroutines: the JSON request fuzzer drives it directly.
//
// Fields OpenAI defines and mach does not implement are refused with a 400 naming the parameter
// (response_format json_object/json_schema and forced tool_choice need grammar-constrained decoding;
// image/audio content parts need a vision tower); unknown fields are ignored, as OpenAI's own server and
// vLLM do, because clients send extras.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/drafter.hpp"

namespace mach::server::openai {

// An OpenAI-shaped error: status, message, type, param, code.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
  std::string code;
};

template <class T>
using Decoded = std::variant<T, ApiError>;

inline constexpr uint32_t kMaxChoices = 16;   // n
inline constexpr size_t kMaxStopStrings = 16;  // OpenAI allows 4; vLLM more
inline constexpr size_t kMaxLogitBias = 1024;  // logit_bias entries (OpenAI documents none; this bounds the work)

struct SamplingFields {
  std::string model;                      // "" when absent
  std::optional<uint32_t> max_tokens;     // max_tokens or max_completion_tokens
  float temperature = 1.0f;
  float top_p = 1.0f;
  uint32_t top_k = 0;
  float min_p = 0.0f;
  std::optional<uint64_t> seed;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::pair<uint32_t, float>> logit_bias;  // (token id, bias in [-100, 100]), ids not yet checked
  bool json_object = false;                            // response_format {"type": "json_object"}
  uint32_t n = 1;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;             // stream_options.include_usage
  bool logprobs = false;
  uint32_t top_logprobs = 0;
  std::optional<engine::Speculation> speculation;  // "speculation": a preset; nullopt: the server's default
  uint32_t draft_max = 0;                          // "draft_max": 0 is the preset's default
};

struct ChatCompletionRequest {
  SamplingFields sampling;
  nlohmann::ordered_json messages;        // normalized: content parts joined into strings
  nlohmann::ordered_json tools;           // null when none (or tool_choice "none")
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs, reasoning_effort
  bool continue_final_message = false;    // the last (assistant) message is continued, no generation prompt
};

struct CompletionRequest {
  SamplingFields sampling;
  std::variant<std::string, std::vector<uint32_t>> prompt;
  bool echo = false;
};

// body: the raw request body. Errors carry the offending parameter.
Decoded<ChatCompletionRequest> decode_chat_request(std::string_view body);
Decoded<CompletionRequest> decode_completion_request(std::string_view body);

// Messages and tools for POST /v1/cache/warm_prefix: {"messages": [...], "tools": [...]}.
struct WarmPrefixRequest {
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;
};
Decoded<WarmPrefixRequest> decode_warm_prefix_request(std::string_view body);

}  // namespace mach::server::openai
