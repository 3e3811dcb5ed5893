// libFuzzer target for the OpenAI request decoders: arbitrary request bodies. Invariants: no crash, no
// exception escapes, every refusal is a 4xx with a message, and an accepted request is within its bounds.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/openai/request.hpp"

using namespace mach::server::openai;

namespace {
void check(const ApiError& e) {
  if (e.status < 400 || e.status >= 500 || e.message.empty()) std::abort();
}
void check(const SamplingFields& s) {
  if (s.n < 1 || s.n > kMaxChoices || s.stop.size() > kMaxStopStrings || s.temperature < 0 || s.temperature > 2 ||
      s.top_p <= 0 || s.top_p > 1 || s.top_logprobs > 20)
    std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const auto chat = decode_chat_request(body);
  if (const auto* e = std::get_if<ApiError>(&chat)) check(*e);
  else {
    const auto& r = std::get<ChatCompletionRequest>(chat);
    check(r.sampling);
    if (!r.messages.is_array() || r.messages.empty()) std::abort();
    for (const auto& m : r.messages)
      if (!m.contains("role") || !m.contains("content")) std::abort();
  }
  const auto completion = decode_completion_request(body);
  if (const auto* e = std::get_if<ApiError>(&completion)) check(*e);
  else check(std::get<CompletionRequest>(completion).sampling);
  const auto warm = decode_warm_prefix_request(body);
  if (const auto* e = std::get_if<ApiError>(&warm)) check(*e);
  return 0;
}
