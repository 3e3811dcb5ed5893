#include "text/chat_template.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "text/read_file.hpp"

namespace mach::text {

namespace {

}  // namespace

Result<ChatTemplate> ChatTemplate::load(const std::filesystem::path& dir) {
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (const auto path = dir / "tokenizer_config.json"; std::filesystem::exists(path)) {
    auto text = read_file(path);
    if (!text) return text.error();
    try {
      config = nlohmann::ordered_json::parse(*text);
    } catch (const nlohmann::json::exception& e) {
      return Error{Errc::parse, fmt::format("{} is not valid JSON: {}", path.string(), e.what())};
    }
  }
  std::string source;
  if (const auto path = dir / "chat_template.jinja"; std::filesystem::exists(path)) {
    auto text = read_file(path);
    if (!text) return text.error();
    source = std::move(*text);
  } else if (config.contains("chat_template") && config["chat_template"].is_string()) {
    source = config["chat_template"].get<std::string>();
  } else if (config.contains("chat_template") && config["chat_template"].is_array()) {
    for (const auto& named : config["chat_template"]) {
      if (source.empty() || named.value("name", "") == "default") source = named.value("template", "");
    }
  }
  if (source.empty()) {
    return Error{Errc::not_found, fmt::format("{} has no chat template (chat_template.jinja, or chat_template in "
                                              "tokenizer_config.json)",
                                              dir.string())};
  }
  return from_source(source, config);
}

Result<ChatTemplate> ChatTemplate::from_source(std::string_view source, const nlohmann::ordered_json& config) {
  auto parsed = jinja::Template::parse(source);
  if (!parsed) return parsed.error();
  ChatTemplate t;
  t.template_ = std::move(*parsed);
  // transformers passes the special tokens map: every *_token entry of the config, as a string.
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (!it.key().ends_with("_token")) continue;
    if (it.value().is_string()) t.special_tokens_[it.key()] = it.value();
    if (it.value().is_object() && it.value().contains("content")) t.special_tokens_[it.key()] = it.value()["content"];
  }
  return t;
}

nlohmann::ordered_json ChatTemplate::context(const ChatRequest& request) const {
  nlohmann::ordered_json context = special_tokens_;
  context["messages"] = request.messages;
  if (!request.tools.is_null()) context["tools"] = request.tools;
  context["add_generation_prompt"] = request.add_generation_prompt;
  for (auto it = request.kwargs.begin(); it != request.kwargs.end(); ++it) context[it.key()] = it.value();
  return context;
}

Result<std::string> ChatTemplate::render(const ChatRequest& request) const { return template_.render(context(request)); }

}  // namespace mach::text
