#include "text/text_profile.hpp"

#include <algorithm>

namespace mach::text {

TextProfile detect_text_profile(const Tokenizer& tokenizer, std::string_view chat_template) {
  TextProfile profile;
  const auto has = [&](std::string_view token) { return tokenizer.token_id(token) >= 0; };
  if (has("<|channel|>") && has("<|message|>") && has("<|call|>")) {
    profile.output_format = OutputFormat::harmony;
  } else if (has("<|tool_call>") && has("<tool_call|>") && has("<|channel>")) {
    profile.output_format = OutputFormat::gemma4;
  } else if (chat_template.empty() && has("<｜User｜>") && has("<｜Assistant｜>") && has("</think>")) {
    // DeepSeek-V4 ships an encoder script instead of a template (DeepSeek-V3 checkpoints ship a template).
    profile.output_format = OutputFormat::deepseek_v4;
  } else if (has("<tool_call>") || has("<think>")) {
    const bool xml_calls = chat_template.find("<function=") != std::string_view::npos;
    profile.output_format = xml_calls ? OutputFormat::qwen3_coder : OutputFormat::qwen3;
  }
  const auto add_stop = [&](TokenId id) {
    if (id >= 0 && std::find(profile.stop_ids.begin(), profile.stop_ids.end(), id) == profile.stop_ids.end()) {
      profile.stop_ids.push_back(id);
    }
  };
  add_stop(tokenizer.eos_id());
  // End-of-turn markers of the families we serve; a turn can end on them even when eos_token names another.
  for (std::string_view token : {"<|im_end|>", "<|endoftext|>", "<|return|>", "<|call|>", "<end_of_turn>", "<eos>", "<turn|>",
                                 "<|tool_response>",
                                 "<｜end▁of▁sentence｜>"}) {
    const TokenId id = tokenizer.token_id(token);
    if (id >= 0 && tokenizer.is_special(id)) add_stop(id);
  }
  return profile;
}

bool prompt_opens_reasoning(std::string_view prompt) {
  while (!prompt.empty() && (prompt.back() == '\n' || prompt.back() == ' ')) prompt.remove_suffix(1);
  return prompt.ends_with("<think>");
}

}  // namespace mach::text
