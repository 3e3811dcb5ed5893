// `mach template DIR --messages conv.json [--tools tools.json] [--add-generation-prompt] [--kwargs '{...}']`
// prints the prompt the model's chat template renders, exactly (no newline added).
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.hpp"
#include "text/chat_template.hpp"
#include "text/deepseek_v4.hpp"
#include "text/harmony.hpp"

namespace mach::cli {

namespace {

struct TemplateArgs {
  std::string dir, messages, tools, kwargs;
  bool add_generation_prompt = false;
  bool harmony = false;
  bool deepseek_v4 = false;
};

// gpt-oss checkpoints whose tokenizer_config.json carries no template: their special tokens say harmony.
bool looks_like_harmony(const std::string& dir) {
  std::ifstream in(dir + "/tokenizer_config.json", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str().find("<|channel|>") != std::string::npos;
}

// DeepSeek-V4 checkpoints ship encoding/encoding_dsv4.py instead of a template.
bool looks_like_deepseek_v4(const std::string& dir) {
  if (std::filesystem::exists(dir + "/encoding/encoding_dsv4.py")) return true;
  std::ifstream in(dir + "/config.json", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  const auto config = nlohmann::ordered_json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  return config.is_object() && config.value("model_type", "") == "deepseek_v4";
}

Result<nlohmann::ordered_json> read_json(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{Errc::not_found, fmt::format("{}: cannot open {}", option, path)};
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("{}: {} is not valid JSON: {}", option, path, e.what())};
  }
}

Result<void> run(const TemplateArgs& args) {
  if (args.harmony && args.deepseek_v4) return Error{Errc::invalid_argument, "give --harmony or --deepseek-v4, not both"};
  const bool builtin = args.harmony || args.deepseek_v4;
  auto chat = builtin ? Result<text::ChatTemplate>(Error{Errc::not_found, ""}) : text::ChatTemplate::load(args.dir);
  const bool no_template = !chat && chat.error().code == Errc::not_found;
  const bool deepseek_v4 = args.deepseek_v4 || (!builtin && no_template && looks_like_deepseek_v4(args.dir));
  const bool harmony = args.harmony || (!builtin && !deepseek_v4 && no_template && looks_like_harmony(args.dir));
  if (!chat && !harmony && !deepseek_v4) return chat.error();
  text::ChatRequest request;
  auto messages = read_json(args.messages, "--messages");
  if (!messages) return messages.error();
  // Either a bare list of messages or an object with "messages" (and optionally "tools"), as in requests.
  if (messages->is_object()) {
    if (messages->contains("tools")) request.tools = (*messages)["tools"];
    request.messages = messages->value("messages", nlohmann::ordered_json::array());
  } else {
    request.messages = std::move(*messages);
  }
  if (!request.messages.is_array()) return Error{Errc::invalid_argument, "--messages: expected a JSON list of messages"};
  if (!args.tools.empty()) {
    auto tools = read_json(args.tools, "--tools");
    if (!tools) return tools.error();
    request.tools = std::move(*tools);
  }
  if (!args.kwargs.empty()) {
    try {
      request.kwargs = nlohmann::ordered_json::parse(args.kwargs);
    } catch (const nlohmann::json::exception& e) {
      return Error{Errc::parse, fmt::format("--kwargs: not valid JSON: {}", e.what())};
    }
    if (!request.kwargs.is_object()) return Error{Errc::invalid_argument, "--kwargs: expected a JSON object"};
  }
  request.add_generation_prompt = args.add_generation_prompt;
  auto prompt = harmony ? text::render_harmony(request)
                : deepseek_v4 ? text::render_deepseek_v4(request)
                              : chat->render(request);
  if (!prompt) return prompt.error();
  fmt::print("{}", *prompt);
  return {};
}

}  // namespace

void add_template_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("template", "render a conversation with the model's chat template");
  static TemplateArgs args;
  cmd->add_option("dir", args.dir, "directory with tokenizer_config.json (or chat_template.jinja)")->required();
  cmd->add_option("--messages", args.messages, "JSON file: a list of messages (or {\"messages\": [...]})")->required();
  cmd->add_option("--tools", args.tools, "JSON file: a list of tool definitions");
  cmd->add_flag("--add-generation-prompt", args.add_generation_prompt, "end with the assistant turn's opening");
  cmd->add_option("--kwargs", args.kwargs, "JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'");
  cmd->add_flag("--harmony", args.harmony,
                "render with the built-in harmony formatter (gpt-oss; automatic when the model has no template "
                "and harmony tokens)");
  cmd->add_flag("--deepseek-v4", args.deepseek_v4,
                "render with the built-in DeepSeek-V4 encoder (automatic when the model has no template and ships "
                "encoding/encoding_dsv4.py or says model_type deepseek_v4); kwargs: thinking, reasoning_effort, "
                "drop_thinking");
  cmd->callback([&exit_code] {
    if (auto r = run(args); !r) {
      fmt::print(stderr, "mach template: {}\n", r.error().message);
      exit_code = 1;
    }
  });
}

}  // namespace mach::cli
