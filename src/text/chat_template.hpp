// Chat prompts from a model's chat template, built the way transformers' apply_chat_template builds them:
// the template sees messages, tools (when given), add_generation_prompt, the special tokens of
// tokenizer_config.json (bos_token, eos_token, ...) and any extra keyword arguments (enable_thinking, ...).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

#include "mach/error.hpp"
#include "text/jinja/template.hpp"

namespace mach::text {

struct ChatRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: no tools (the template sees `tools` undefined)
  bool add_generation_prompt = false;
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();  // extra template variables
};

class ChatTemplate {
 public:
  // dir: chat_template.jinja if present, else tokenizer_config.json's chat_template ("default" when it is a
  // list of named templates). Special tokens come from tokenizer_config.json.
  static Result<ChatTemplate> load(const std::filesystem::path& dir);
  // config: tokenizer_config.json's object; source: the template text.
  static Result<ChatTemplate> from_source(std::string_view source, const nlohmann::ordered_json& config);

  // The variables the template renders with.
  nlohmann::ordered_json context(const ChatRequest& request) const;
  // The prompt, exactly as the template writes it.
  Result<std::string> render(const ChatRequest& request) const;

 private:
  jinja::Template template_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
};

}  // namespace mach::text
