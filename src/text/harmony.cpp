#include "text/harmony.hpp"

#include <fmt/format.h>

#include <ctime>

namespace mach::text {

namespace {

using Json = nlohmann::ordered_json;

std::string compact(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string content_text(const Json& message) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {  // OpenAI content parts: the text parts, joined
    std::string text;
    for (const auto& part : *it) {
      if (part.is_object() && part.value("type", "") == "text") text += part.value("text", "");
    }
    return text;
  }
  return compact(*it);
}

// A JSON schema as a TypeScript type.
std::string ts_type(const Json& schema, int depth) {
  if (!schema.is_object()) return "any";
  if (schema.contains("enum") && schema["enum"].is_array()) {
    std::string out;
    for (const auto& v : schema["enum"]) out += (out.empty() ? "" : " | ") + compact(v);
    return out.empty() ? "any" : out;
  }
  const Json type = schema.value("type", Json());
  if (type.is_array()) {
    std::string out;
    for (const auto& t : type) out += (out.empty() ? "" : " | ") + ts_type(Json{{"type", t}}, depth);
    return out;
  }
  const std::string t = type.is_string() ? type.get<std::string>() : "";
  if (t == "string") return "string";
  if (t == "number" || t == "integer") return "number";
  if (t == "boolean") return "boolean";
  if (t == "null") return "null";
  if (t == "array") return ts_type(schema.value("items", Json::object()), depth) + "[]";
  if (t == "object" && schema.contains("properties") && depth < 8) {
    std::string out = "{\n";
    const Json required = schema.value("required", Json::array());
    for (auto it = schema["properties"].begin(); it != schema["properties"].end(); ++it) {
      const Json& prop = it.value();
      if (prop.is_object() && prop.contains("description") && prop["description"].is_string()) {
        out += "// " + prop["description"].get<std::string>() + "\n";
      }
      const bool is_required = std::find(required.begin(), required.end(), Json(it.key())) != required.end();
      out += it.key() + (is_required ? ": " : "?: ") + ts_type(prop, depth + 1) + ",";
      if (prop.is_object() && prop.contains("default")) {
        const Json& d = prop["default"];
        out += " // default: " + (d.is_string() ? d.get<std::string>() : compact(d));
      }
      out += "\n";
    }
    return out + "}";
  }
  return t == "object" ? "object" : "any";
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

}  // namespace

std::string harmony_tool_declaration(const Json& function) {
  std::string out;
  if (function.contains("description") && function["description"].is_string()) {
    out += "// " + function["description"].get<std::string>() + "\n";
  }
  const std::string name = function.value("name", "");
  const Json params = function.value("parameters", Json::object());
  const bool no_args = !params.is_object() || !params.contains("properties") || params["properties"].empty();
  if (no_args) return out + "type " + name + " = () => any;";
  return out + "type " + name + " = (_: " + ts_type(params, 0) + ") => any;";
}

Result<std::string> render_harmony(const ChatRequest& request, const HarmonyOptions& options) {
  if (!request.messages.is_array()) return Error{Errc::invalid_argument, "messages must be a list"};
  const Json& messages = request.messages;
  std::string effort = options.reasoning_effort;
  if (request.kwargs.contains("reasoning_effort") && request.kwargs["reasoning_effort"].is_string()) {
    effort = request.kwargs["reasoning_effort"].get<std::string>();
  }
  const bool has_tools = request.tools.is_array() && !request.tools.empty();

  std::string out = "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n";
  out += "Knowledge cutoff: " + options.knowledge_cutoff + "\n";
  out += "Current date: " + (options.current_date.empty() ? today() : options.current_date) + "\n\n";
  out += "Reasoning: " + effort + "\n\n";
  out += "# Valid channels: analysis, commentary, final. Channel must be included for every message.";
  if (has_tools) out += "\nCalls to these tools must go to the commentary channel: 'functions'.";
  out += "<|end|>";

  size_t first = 0;
  std::string instructions;
  if (!messages.empty() && messages[0].is_object() &&
      (messages[0].value("role", "") == "system" || messages[0].value("role", "") == "developer")) {
    instructions = content_text(messages[0]);
    first = 1;
  }
  if (!instructions.empty() || has_tools) {
    out += "<|start|>developer<|message|>";
    if (!instructions.empty()) out += "# Instructions\n\n" + instructions;
    if (has_tools) {
      if (!instructions.empty()) out += "\n\n";
      out += "# Tools\n\n## functions\n\nnamespace functions {\n\n";
      for (const auto& tool : request.tools) {
        const Json& fn = tool.contains("function") ? tool["function"] : tool;
        out += harmony_tool_declaration(fn) + "\n\n";
      }
      out += "} // namespace functions";
    }
    out += "<|end|>";
  }

  size_t last_user = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].is_object() && messages[i].value("role", "") == "user") last_user = i;
  }
  std::vector<std::pair<std::string, std::string>> call_names;  // tool_call id → function name
  for (size_t i = first; i < messages.size(); ++i) {
    const Json& m = messages[i];
    if (!m.is_object()) return Error{Errc::invalid_argument, fmt::format("messages[{}] is not an object", i)};
    const std::string role = m.value("role", "");
    if (role == "user" || role == "system" || role == "developer") {
      out += "<|start|>" + role + "<|message|>" + content_text(m) + "<|end|>";
    } else if (role == "assistant") {
      const std::string reasoning = m.contains("reasoning_content") && m["reasoning_content"].is_string()
                                        ? m["reasoning_content"].get<std::string>()
                                        : std::string();
      if (!reasoning.empty() && i > last_user) {
        out += "<|start|>assistant<|channel|>analysis<|message|>" + reasoning + "<|end|>";
      }
      const std::string text = content_text(m);
      const bool has_calls = m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty();
      if (!text.empty()) {
        out += std::string("<|start|>assistant<|channel|>") + (has_calls ? "commentary" : "final") + "<|message|>" + text + "<|end|>";
      }
      if (has_calls) {
        for (const auto& call : m["tool_calls"]) {
          const Json& fn = call.contains("function") ? call["function"] : call;
          const std::string name = fn.value("name", "");
          const Json& args = fn.contains("arguments") ? fn["arguments"] : Json::object();
          out += "<|start|>assistant<|channel|>commentary to=functions." + name + " <|constrain|>json<|message|>" +
                 (args.is_string() ? args.get<std::string>() : compact(args)) + "<|call|>";
          call_names.emplace_back(call.value("id", ""), name);
        }
      }
    } else if (role == "tool") {
      std::string name = m.value("name", "");
      const std::string id = m.value("tool_call_id", "");
      for (const auto& [call_id, call_name] : call_names) {
        if (name.empty() && !id.empty() && call_id == id) name = call_name;
      }
      if (name.empty() && !call_names.empty()) name = call_names.back().second;
      out += "<|start|>functions." + name + " to=assistant<|channel|>commentary<|message|>" + content_text(m) + "<|end|>";
    } else {
      return Error{Errc::invalid_argument, fmt::format("messages[{}]: role '{}' is not one harmony knows", i, role)};
    }
  }
  if (request.add_generation_prompt) out += "<|start|>assistant";
  return out;
}

}  // namespace mach::text
