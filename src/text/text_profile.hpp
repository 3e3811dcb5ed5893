// What the rest of the engine needs to know about a model's text conventions, derived from its tokenizer and
// chat template: which output parser applies, which tokens end a turn, and whether a rendered prompt left
// the model inside a reasoning block.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "text/output_parser.hpp"
#include "text/tokenizer.hpp"

namespace mach::text {

struct TextProfile {
  std::optional<OutputFormat> output_format;  // nullopt: plain text, no reasoning or tool-call markup known
  std::vector<TokenId> stop_ids;              // generation ends at any of these (EOS and end-of-turn tokens)
};

// chat_template: the model's template source ("" if none); Qwen3-Coder is told from Qwen3 by its XML calls, and
// DeepSeek-V4 (no template, DeepSeek's role tokens) from DeepSeek-V3 (which has one). Gemma 4's <|tool_response>
// is a stop token: the model writes it after its calls, where the tool's answer would follow.
TextProfile detect_text_profile(const Tokenizer& tokenizer, std::string_view chat_template);

// True when the prompt ends inside an opened <think> block (templates that prefill "<think>\n").
bool prompt_opens_reasoning(std::string_view prompt);

}  // namespace mach::text
