// gpt-oss prompts in OpenAI's harmony format, rendered by our own formatter (the checkpoints' Jinja template is
// not always shipped). Follows the published format (openai-cookbook "OpenAI harmony response format"): a
// system message with model identity, dates, reasoning effort and channels; a developer message with the
// instructions (the chat's system message) and the function tools as a TypeScript-like namespace; then the
// conversation. Chain of thought (reasoning_content) is kept only for assistant messages after the last
// user message, as the format asks.
#pragma once

#include <string>

#include "mach/error.hpp"
#include "text/chat_template.hpp"

namespace mach::text {

struct HarmonyOptions {
  std::string reasoning_effort = "medium";  // low | medium | high; request.kwargs["reasoning_effort"] overrides
  std::string knowledge_cutoff = "2024-06";
  std::string current_date;                 // YYYY-MM-DD; empty: today (UTC)
};

Result<std::string> render_harmony(const ChatRequest& request, const HarmonyOptions& options = {});

// One function tool's TypeScript-like declaration ("// description\ntype name = (_: {...}) => any;").
std::string harmony_tool_declaration(const nlohmann::ordered_json& function);

}  // namespace mach::text
