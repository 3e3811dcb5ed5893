#include "text/deepseek_v4.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <optional>

#include "text/jinja/value.hpp"

namespace mach::text {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>", kEos = "<｜end▁of▁sentence｜>", kThinkStart = "<think>",
                           kThinkEnd = "</think>", kUser = "<｜User｜>", kAssistant = "<｜Assistant｜>",
                           kLatestReminder = "<｜latest_reminder｜>";
constexpr std::array<std::pair<std::string_view, std::string_view>, 6> kTaskTokens{{{"action", "<｜action｜>"},
                                                                                     {"query", "<｜query｜>"},
                                                                                     {"authority", "<｜authority｜>"},
                                                                                     {"domain", "<｜domain｜>"},
                                                                                     {"title", "<｜title｜>"},
                                                                                     {"read_url", "<｜read_url｜>"}}};

constexpr std::string_view kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

std::string tools_section(const std::string& schemas) {
  return "## Tools\n\n"
         "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "
         "\"<｜DSML｜tool_calls>\" block like the following:\n\n"
         "<｜DSML｜tool_calls>\n"
         "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
         "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
         "...\n"
         "</｜DSML｜invoke>\n"
         "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
         "...\n"
         "</｜DSML｜invoke>\n"
         "</｜DSML｜tool_calls>\n\n"
         "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
         "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
         "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
         "<think>...</think> BEFORE any tool calls or final response.\n\n"
         "Otherwise, output directly after </think> with tool calls or final response.\n\n"
         "### Available Tool Schemas\n\n" +
         schemas +
         "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
}

// Python semantics the encoder relies on: str(x) as str.format writes it, truthiness, json.dumps.
std::string py_str(const Json& v) { return v.is_string() ? v.get<std::string>() : jinja::Value::from_json(v).str(); }
bool truthy(const Json& v) { return jinja::Value::from_json(v).truthy(); }
std::string py_json(const Json& v) { return jinja::Value::from_json(v).to_json(); }

// dict.get(key): null when absent.
const Json& get(const Json& object, std::string_view key) {
  static const Json null;
  if (!object.is_object()) return null;
  const auto it = object.find(key);
  return it == object.end() ? null : *it;
}
std::string role_of(const Json& m) { return get(m, "role").is_string() ? get(m, "role").get<std::string>() : ""; }

// The text of OpenAI content parts (the request normalization a server applies before encoding).
Json flatten_content(const Json& content) {
  if (!content.is_array()) return content;
  std::string text;
  for (const auto& part : content) {
    if (part.is_object() && get(part, "type") == "text" && get(part, "text").is_string()) {
      text += part["text"].get<std::string>();
    }
  }
  return text;
}

class Encoder {
 public:
  Encoder(bool thinking, bool drop_thinking, Json effort) : thinking_(thinking), drop_thinking_(drop_thinking), effort_(std::move(effort)) {}

  Result<std::string> encode(Json messages, bool add_bos) {
    messages = merge_tool_messages(messages);
    sort_tool_results_by_call_order(messages);
    bool drop = drop_thinking_;
    for (const auto& m : messages) drop = drop && !truthy(get(m, "tools"));
    if (thinking_ && drop) messages = drop_thinking_messages(messages);
    std::string prompt = add_bos ? std::string(kBos) : std::string();
    for (size_t i = 0; i < messages.size() && !error_; ++i) prompt += render_message(i, messages, drop);
    if (error_) return *error_;
    return prompt;
  }

 private:
  std::string fail(std::string message) {
    if (!error_) error_ = Error{Errc::invalid_argument, "deepseek_v4 prompt: " + std::move(message)};
    return {};
  }

  // A string the encoder concatenates (Python's str + x needs x to be a str).
  std::string need_str(const Json& v, std::string_view what) {
    if (v.is_string()) return v.get<std::string>();
    return fail(fmt::format("{} must be a string, got {}", what, v.dump()));
  }

  static int last_user_index(const Json& messages) {
    for (int i = static_cast<int>(messages.size()) - 1; i >= 0; --i) {
      const std::string role = role_of(messages[i]);
      if (role == "user" || role == "developer") return i;
    }
    return -1;
  }

  static Json merge_tool_messages(const Json& messages) {
    Json merged = Json::array();
    const auto last_is_merged_user = [&] {
      return !merged.empty() && role_of(merged.back()) == "user" && merged.back().contains("content_blocks");
    };
    for (const auto& msg : messages) {
      const std::string role = role_of(msg);
      if (role == "tool") {
        Json block = {{"type", "tool_result"},
                      {"tool_use_id", msg.contains("tool_call_id") ? msg["tool_call_id"] : Json("")},
                      {"content", msg.contains("content") ? msg["content"] : Json("")}};
        if (last_is_merged_user()) {
          merged.back()["content_blocks"].push_back(std::move(block));
        } else {
          merged.push_back({{"role", "user"}, {"content_blocks", Json::array({std::move(block)})}});
        }
      } else if (role == "user") {
        const Json content = msg.contains("content") ? msg["content"] : Json("");
        Json block = {{"type", "text"}, {"text", content}};
        if (last_is_merged_user() && get(merged.back(), "task").is_null()) {
          merged.back()["content_blocks"].push_back(std::move(block));
        } else {
          Json user = {{"role", "user"}, {"content", content}, {"content_blocks", Json::array({std::move(block)})}};
          for (const char* key : {"task", "wo_eos", "mask"}) {
            if (msg.contains(key)) user[key] = msg[key];
          }
          merged.push_back(std::move(user));
        }
      } else {
        merged.push_back(msg);
      }
    }
    return merged;
  }

  // Tool results of one user turn follow the order of the calls of the assistant turn before them.
  static void sort_tool_results_by_call_order(Json& messages) {
    std::map<std::string, int> order;  // the call id's JSON text → position
    const auto key_of = [](const Json& block) { return block.contains("tool_use_id") ? block["tool_use_id"].dump() : Json("").dump(); };
    for (auto& msg : messages) {
      const std::string role = role_of(msg);
      if (role == "assistant" && truthy(get(msg, "tool_calls")) && msg["tool_calls"].is_array()) {
        order.clear();
        int idx = 0;
        for (const auto& call : msg["tool_calls"]) {
          Json id = get(call, "id");
          if (!truthy(id)) id = get(get(call, "function"), "id");
          if (truthy(id)) order[id.dump()] = idx;
          ++idx;
        }
      } else if (role == "user" && truthy(get(msg, "content_blocks")) && msg["content_blocks"].is_array()) {
        Json& blocks = msg["content_blocks"];
        std::vector<Json> tool_blocks;
        for (const auto& b : blocks) {
          if (get(b, "type") == "tool_result") tool_blocks.push_back(b);
        }
        if (tool_blocks.size() <= 1 || order.empty()) continue;
        const auto rank = [&](const Json& b) {
          const auto it = order.find(key_of(b));
          return it == order.end() ? 0 : it->second;
        };
        std::stable_sort(tool_blocks.begin(), tool_blocks.end(), [&](const Json& a, const Json& b) { return rank(a) < rank(b); });
        size_t next = 0;
        for (auto& b : blocks) {
          if (get(b, "type") == "tool_result") b = tool_blocks[next++];
        }
      }
    }
  }

  // Thinking mode without tools: reasoning of assistant turns before the last user turn goes, and so do the
  // developer (and unknown-role) messages before it.
  static Json drop_thinking_messages(const Json& messages) {
    const int last_user = last_user_index(messages);
    Json result = Json::array();
    for (int i = 0; i < static_cast<int>(messages.size()); ++i) {
      const Json& msg = messages[i];
      const std::string role = role_of(msg);
      if (role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
          role == "direct_search_results" || i >= last_user) {
        result.push_back(msg);
      } else if (role == "assistant") {
        Json copy = msg;
        copy.erase("reasoning_content");
        result.push_back(std::move(copy));
      }
    }
    return result;
  }

  std::string render_tools(const Json& tools) {
    if (!tools.is_array()) return fail("tools must be a list");
    std::string schemas;
    for (const auto& tool : tools) {
      if (!tool.is_object() || !tool.contains("function")) return fail("each tool needs a \"function\" object");
      schemas += (schemas.empty() ? "" : "\n") + py_json(tool["function"]);
    }
    return tools_section(schemas);
  }

  std::string dsml_arguments(const Json& arguments_field, const std::string& name) {
    Json arguments;
    if (arguments_field.is_string()) {
      arguments = Json::parse(arguments_field.get<std::string>(), nullptr, /*allow_exceptions=*/false);
    }
    if (!arguments_field.is_string() || arguments.is_discarded()) {
      arguments = Json{{"arguments", arguments_field}};  // the encoder's fallback for arguments that are not JSON text
    }
    if (!arguments.is_object()) return fail(fmt::format("the arguments of tool call '{}' are JSON but not an object", name));
    std::string out;
    for (auto it = arguments.begin(); it != arguments.end(); ++it) {
      const bool is_str = it.value().is_string();
      out += fmt::format("{}<｜DSML｜parameter name=\"{}\" string=\"{}\">{}</｜DSML｜parameter>", out.empty() ? "" : "\n",
                         it.key(), is_str ? "true" : "false", is_str ? it.value().get<std::string>() : py_json(it.value()));
    }
    return out;
  }

  std::string tool_calls_block(const Json& tool_calls) {
    if (!tool_calls.is_array()) return fail("tool_calls must be a list");
    std::string invokes;
    for (const auto& call : tool_calls) {
      const Json& fn = get(call, "function");
      if (!fn.is_object() || !fn.contains("name") || !fn.contains("arguments")) {
        return fail("each tool call needs function.name and function.arguments");
      }
      const std::string name = py_str(fn["name"]);
      invokes += fmt::format("{}<｜DSML｜invoke name=\"{}\">\n{}\n</｜DSML｜invoke>", invokes.empty() ? "" : "\n", name,
                             dsml_arguments(fn["arguments"], name));
    }
    return "\n\n<｜DSML｜tool_calls>\n" + invokes + "\n</｜DSML｜tool_calls>";
  }

  std::string user_turn(const Json& msg) {
    const Json& blocks = get(msg, "content_blocks");
    if (!truthy(blocks)) {
      const Json& content = get(msg, "content");
      return truthy(content) ? need_str(content, "user content") : std::string();
    }
    std::string out;
    bool first = true;
    for (const auto& block : blocks) {
      if (!block.is_object()) return fail("content blocks must be objects");
      const Json& type = get(block, "type");
      std::string part;
      if (type == "text") {
        part = need_str(block.contains("text") ? block["text"] : Json(""), "user content");
      } else if (type == "tool_result") {
        Json content = block.contains("content") ? block["content"] : Json("");
        if (content.is_array()) {
          std::string joined;
          for (size_t i = 0; i < content.size(); ++i) {
            const Json& b = content[i];
            if (!b.is_object()) return fail("tool result parts must be objects");
            joined += i ? "\n\n" : "";
            joined += get(b, "type") == "text" ? need_str(b.contains("text") ? b["text"] : Json(""), "tool result text")
                                               : "[Unsupported " + py_str(get(b, "type")) + "]";
          }
          content = joined;
        }
        part = "<tool_result>" + py_str(content) + "</tool_result>";
      } else {
        part = "[Unsupported " + py_str(type) + "]";
      }
      out += (first ? "" : "\n\n") + part;
      first = false;
    }
    return out;
  }

  std::string assistant_turn(size_t index, const Json& messages, int last_user, bool drop) {
    const Json& msg = messages[index];
    std::string tool_calls;
    if (truthy(get(msg, "tool_calls"))) tool_calls = tool_calls_block(msg["tool_calls"]);
    const Json& content = get(msg, "content");
    const Json& reasoning = get(msg, "reasoning_content");
    const bool prev_has_task = index > 0 && !get(messages[index - 1], "task").is_null();
    std::string thinking;
    if (thinking_ && !prev_has_task && (!drop || static_cast<int>(index) > last_user)) {
      thinking = (truthy(reasoning) ? py_str(reasoning) : std::string()) + std::string(kThinkEnd);
    }
    std::string out = thinking + (truthy(content) ? py_str(content) : std::string()) + tool_calls;
    if (!truthy(get(msg, "wo_eos"))) out += kEos;
    return out;
  }

  std::string render_message(size_t index, const Json& messages, bool drop) {
    const Json& msg = messages[index];
    const int last_user = last_user_index(messages);
    const std::string role = role_of(msg);
    const Json& content = get(msg, "content");
    const Json& tools = get(msg, "tools");
    const Json& response_format = get(msg, "response_format");
    if (!(effort_.is_null() || effort_ == "max" || effort_ == "high")) {
      return fail(fmt::format("reasoning_effort must be \"high\", \"max\" or null, not {}", effort_.dump()));
    }
    std::string prompt;
    if (index == 0 && thinking_ && effort_ == "max") prompt += kReasoningEffortMax;
    const auto extras = [&] {
      std::string out;
      if (truthy(tools)) out += "\n\n" + render_tools(tools);
      if (truthy(response_format)) {
        out += "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" + py_json(response_format);
      }
      return out;
    };
    if (role == "system") {
      prompt += (truthy(content) ? py_str(content) : std::string()) + extras();
    } else if (role == "developer") {
      if (!truthy(content)) return fail("a developer message needs content");
      prompt += std::string(kUser) + need_str(content, "developer content") + extras();
    } else if (role == "user") {
      prompt += std::string(kUser) + user_turn(msg);
    } else if (role == "latest_reminder") {
      prompt += std::string(kLatestReminder) + py_str(content);
    } else if (role == "assistant") {
      prompt += assistant_turn(index, messages, last_user, drop);
    } else {
      return fail(fmt::format("messages[{}] has role {}, not one of system, developer, user, assistant, tool, "
                              "latest_reminder", index, get(msg, "role").dump()));
    }

    // What follows the message: the opening of the assistant turn after the last user turn, or a task token.
    if (index + 1 < messages.size()) {
      const std::string next = role_of(messages[index + 1]);
      if (next != "assistant" && next != "latest_reminder") return prompt;
    }
    const Json& task = get(msg, "task");
    if (!task.is_null()) {
      const auto it = std::find_if(kTaskTokens.begin(), kTaskTokens.end(), [&](const auto& t) { return task == t.first; });
      if (it == kTaskTokens.end()) {
        return fail(fmt::format("task {} is not one of action, query, authority, domain, title, read_url", task.dump()));
      }
      if (it->first != "action") return prompt + std::string(it->second);
      return prompt + std::string(kAssistant) + std::string(thinking_ ? kThinkStart : kThinkEnd) + std::string(it->second);
    }
    if (role == "user" || role == "developer") {
      prompt += kAssistant;
      const bool open_thinking = thinking_ && (!drop || static_cast<int>(index) >= last_user);
      prompt += open_thinking ? kThinkStart : kThinkEnd;
    }
    return prompt;
  }

  bool thinking_;
  bool drop_thinking_;
  Json effort_;
  std::optional<Error> error_;
};

Result<bool> bool_kwarg(const Json& kwargs, const char* key, bool fallback) {
  if (!kwargs.contains(key) || kwargs[key].is_null()) return fallback;
  if (!kwargs[key].is_boolean()) return Error{Errc::invalid_argument, fmt::format("deepseek_v4 prompt: {} must be true or false", key)};
  return kwargs[key].get<bool>();
}

}  // namespace

Result<std::string> render_deepseek_v4(const ChatRequest& request) {
  if (!request.messages.is_array()) return Error{Errc::invalid_argument, "deepseek_v4 prompt: messages must be a list"};
  const Json& kwargs = request.kwargs.is_object() ? request.kwargs : Json::object();
  bool thinking = false;
  if (kwargs.contains("thinking_mode")) {
    const Json& mode = kwargs["thinking_mode"];
    if (mode != "chat" && mode != "thinking") {
      return Error{Errc::invalid_argument, fmt::format("deepseek_v4 prompt: thinking_mode must be \"chat\" or \"thinking\", not {}", mode.dump())};
    }
    thinking = mode == "thinking";
  } else {
    for (const char* key : {"thinking", "enable_thinking"}) {
      auto on = bool_kwarg(kwargs, key, false);
      if (!on) return on.error();
      thinking = thinking || *on;
    }
  }
  auto drop = bool_kwarg(kwargs, "drop_thinking", true);
  if (!drop) return drop.error();
  auto bos = bool_kwarg(kwargs, "add_default_bos_token", true);
  if (!bos) return bos.error();

  Json messages = Json::array();
  for (size_t i = 0; i < request.messages.size(); ++i) {
    Json m = request.messages[i];
    if (!m.is_object()) return Error{Errc::invalid_argument, fmt::format("deepseek_v4 prompt: messages[{}] is not an object", i)};
    if (m.contains("content")) m["content"] = flatten_content(m["content"]);
    messages.push_back(std::move(m));
  }
  if (truthy(request.tools)) {
    if (!messages.empty() && role_of(messages[0]) == "system") {
      messages[0]["tools"] = request.tools;
    } else {
      messages.insert(messages.begin(), Json{{"role", "system"}, {"tools", request.tools}});
    }
  }
  Encoder encoder(thinking, *drop, kwargs.contains("reasoning_effort") ? kwargs["reasoning_effort"] : Json());
  return encoder.encode(std::move(messages), *bos);
}

}  // namespace mach::text
