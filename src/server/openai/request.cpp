#include "server/openai/request.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace mach::server::openai {
namespace {

using json = nlohmann::ordered_json;

// Thrown inside the decoders only; turned into ApiError at their boundary.
struct Refusal {
  ApiError error;
};

[[noreturn]] void refuse(std::string param, std::string message, std::string code = {}) {
  throw Refusal{{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)}};
}

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number(const json& body, const char* name, double dflt, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return dflt;
  if (!v->is_number()) refuse(name, fmt::format("'{}' must be a number", name));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) refuse(name, fmt::format("'{}' must be between {} and {}; got {}", name, lo, hi, x));
  return x;
}

std::optional<uint64_t> integer(const json& body, const char* name, uint64_t lo, uint64_t hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (d != std::floor(d)) refuse(name, fmt::format("'{}' must be an integer", name));
  } else if (!v->is_number_integer()) {
    refuse(name, fmt::format("'{}' must be an integer", name));
  }
  if (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0)
    refuse(name, fmt::format("'{}' must be between {} and {}; got {}", name, lo, hi, v->get<int64_t>()));
  const double d = v->get<double>();
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    refuse(name, fmt::format("'{}' must be between {} and {}; got {}", name, lo, hi, v->dump()));
  return v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(d);
}

bool boolean(const json& body, const char* name, bool dflt) {
  const json* v = field(body, name);
  if (!v) return dflt;
  if (!v->is_boolean()) refuse(name, fmt::format("'{}' must be true or false", name));
  return v->get<bool>();
}

json parse_body(std::string_view body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded())
    throw Refusal{{400, "the request body is not valid JSON", "invalid_request_error", "", "invalid_json"}};
  if (!parsed.is_object())
    throw Refusal{{400, "the request body must be a JSON object", "invalid_request_error", "", "invalid_json"}};
  return parsed;
}

SamplingFields sampling_fields(const json& body, bool chat) {
  SamplingFields s;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) refuse("model", "'model' must be a string");
    s.model = m->get<std::string>();
  }
  // max_completion_tokens is the chat API's newer name; either works, the newer wins.
  auto max_tokens = integer(body, "max_tokens", 0, 1u << 30);
  if (auto mct = integer(body, "max_completion_tokens", 0, 1u << 30)) max_tokens = mct;
  if (max_tokens) s.max_tokens = static_cast<uint32_t>(*max_tokens);
  s.temperature = static_cast<float>(number(body, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(number(body, "top_p", 1.0, 0.0, 1.0));
  if (s.top_p == 0.0f) refuse("top_p", "'top_p' must be greater than 0 (use temperature 0 for greedy decoding)");
  s.top_k = static_cast<uint32_t>(integer(body, "top_k", 0, 1u << 30).value_or(0));
  if (const json* v = field(body, "top_k"); v && v->is_number_integer() && v->get<int64_t>() == -1) s.top_k = 0;
  s.min_p = static_cast<float>(number(body, "min_p", 0.0, 0.0, 1.0));
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer()) refuse("seed", "'seed' must be an integer");
    s.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }
  s.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  s.n = static_cast<uint32_t>(integer(body, "n", 1, kMaxChoices).value_or(1));
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      s.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > kMaxStopStrings) refuse("stop", fmt::format("'stop' takes at most {} strings", kMaxStopStrings));
      for (const auto& x : *stop) {
        if (!x.is_string()) refuse("stop", "'stop' must be a string or a list of strings");
        s.stop.push_back(x.get<std::string>());
      }
    } else {
      refuse("stop", "'stop' must be a string or a list of strings");
    }
    for (const auto& x : s.stop)
      if (x.empty()) refuse("stop", "'stop' strings must not be empty");
  }
  s.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) refuse("stream_options", "'stream_options' must be an object");
    if (!s.stream) refuse("stream_options", "'stream_options' is only allowed when 'stream' is true");
    s.include_usage = boolean(*so, "include_usage", false);
  }
  if (chat) {
    s.logprobs = boolean(body, "logprobs", false);
    if (auto top = integer(body, "top_logprobs", 0, 20)) {
      if (!s.logprobs) refuse("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      s.top_logprobs = static_cast<uint32_t>(*top);
    }
  } else if (auto lp = integer(body, "logprobs", 0, 5)) {  // completions: an integer, the top count
    s.logprobs = true;
    s.top_logprobs = static_cast<uint32_t>(*lp);
  }
  if (const json* v = field(body, "logit_bias")) {
    if (!v->is_object()) refuse("logit_bias", "'logit_bias' must be an object of token ids to biases");
    if (v->size() > kMaxLogitBias)
      refuse("logit_bias", fmt::format("'logit_bias' takes at most {} tokens", kMaxLogitBias));
    for (const auto& [key, bias] : v->items()) {
      uint32_t id = 0;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (key.empty() || ec != std::errc{} || end != key.data() + key.size())
        refuse("logit_bias", fmt::format("'logit_bias' key '{}' is not a token id (a non-negative integer)", key));
      if (!bias.is_number() || !(bias.get<double>() >= -100.0 && bias.get<double>() <= 100.0))
        refuse("logit_bias", fmt::format("'logit_bias' of token {} must be a number from -100 to 100", key));
      s.logit_bias.emplace_back(id, static_cast<float>(bias.get<double>()));
    }
  }
  if (const json* v = field(body, "best_of"); v && !(v->is_number_integer() && v->get<int64_t>() == 1))
    refuse("best_of", "'best_of' is not supported; use 'n'", "unsupported_parameter");
  if (const json* v = field(body, "speculation")) {
    if (!v->is_string()) refuse("speculation", "'speculation' must be a string");
    const auto preset = engine::parse_speculation(v->get<std::string>());
    if (!preset)
      refuse("speculation", fmt::format("unknown speculation preset '{}'; use none, ngram, summarization or classification",
                                        v->get<std::string>()));
    s.speculation = *preset;
  }
  s.draft_max = static_cast<uint32_t>(integer(body, "draft_max", 0, 64).value_or(0));
  return s;
}

// True for JSON mode ({"type": "json_object"}).
bool json_object_format(const json& body) {
  const json* rf = field(body, "response_format");
  if (!rf) return false;
  if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
    refuse("response_format", "'response_format' must be an object with a 'type'");
  const std::string type = (*rf)["type"].get<std::string>();
  if (type == "text") return false;
  if (type == "json_object") return true;
  if (type == "json_schema")
    refuse("response_format",
           "response_format 'json_schema' needs decoding constrained by the schema, which mach does not have yet; "
           "'json_object' (any JSON object) works: describe the schema in the prompt and validate the reply",
           "unsupported_parameter");
  refuse("response_format", fmt::format("unknown response_format type '{}'", type));
}

// Content as the chat templates expect it: a string (text parts joined), or null.
json normalize_content(const json& content, size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  if (content.is_null() || content.is_string()) return content;
  if (!content.is_array()) refuse(param, "content must be a string, null or a list of content parts");
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      refuse(param, "each content part must be an object with a 'type'");
    const std::string type = part["type"].get<std::string>();
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string()) refuse(param, "a text part needs a string 'text'");
      text += part["text"].get<std::string>();
    } else {
      refuse(param, fmt::format("content parts of type '{}' are not supported: this model takes text only", type),
             "unsupported_content");
    }
  }
  return text;
}

json normalize_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) refuse("messages", "'messages' is required");
  if (!messages->is_array() || messages->empty()) refuse("messages", "'messages' must be a non-empty list");
  json out = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) refuse(param, "each message must be an object");
    if (!m.contains("role") || !m["role"].is_string()) refuse(param + ".role", "each message needs a string 'role'");
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" && role != "tool")
      refuse(param + ".role", fmt::format("unknown role '{}'; use system, developer, user, assistant or tool", role));
    json n = m;
    if (role == "developer") n["role"] = "system";  // the open models' templates know system only
    // Null content (an assistant turn that only calls tools) becomes "": the open models' templates
    // apply string methods to it, which jinja2 refuses on None as well.
    n["content"] = m.contains("content") ? normalize_content(m["content"], i) : json(nullptr);
    if (n["content"].is_null()) n["content"] = "";
    if (role != "assistant" && (!m.contains("content") || m["content"].is_null()))
      refuse(param + ".content", fmt::format("a {} message needs content", role));
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (role != "assistant") refuse(param + ".tool_calls", "only assistant messages carry tool_calls");
      if (!m["tool_calls"].is_array()) refuse(param + ".tool_calls", "'tool_calls' must be a list");
      for (const auto& call : m["tool_calls"]) {
        if (!call.is_object() || !call.contains("function") || !call["function"].is_object() ||
            !call["function"].contains("name") || !call["function"]["name"].is_string())
          refuse(param + ".tool_calls", "each tool call needs function.name");
      }
    }
    if (role == "tool" && m.contains("tool_call_id") && !m["tool_call_id"].is_string())
      refuse(param + ".tool_call_id", "'tool_call_id' must be a string");
    out.push_back(std::move(n));
  }
  return out;
}

json validate_tools(const json& body) {
  const json* tools = field(body, "tools");
  if (!tools) return nullptr;
  if (!tools->is_array()) refuse("tools", "'tools' must be a list");
  if (tools->empty()) return nullptr;
  for (size_t i = 0; i < tools->size(); ++i) {
    const json& t = (*tools)[i];
    const std::string param = fmt::format("tools[{}]", i);
    if (!t.is_object() || t.value("type", "") != "function")
      refuse(param, "each tool must be {\"type\": \"function\", \"function\": {...}}");
    if (!t.contains("function") || !t["function"].is_object() || !t["function"].contains("name") ||
        !t["function"]["name"].is_string() || t["function"]["name"].get<std::string>().empty())
      refuse(param + ".function.name", "each tool needs a function name");
    if (t["function"].contains("parameters") && !t["function"]["parameters"].is_object() &&
        !t["function"]["parameters"].is_null())
      refuse(param + ".function.parameters", "'parameters' must be a JSON schema object");
  }
  return *tools;
}

template <class T, class F>
Decoded<T> decode(F&& f) {
  try {
    return f();
  } catch (const Refusal& r) {
    return r.error;
  } catch (const nlohmann::json::exception& e) {
    return ApiError{400, fmt::format("malformed request: {}", e.what()), "invalid_request_error", "", ""};
  }
}

}  // namespace

Decoded<ChatCompletionRequest> decode_chat_request(std::string_view body_text) {
  return decode<ChatCompletionRequest>([&] {
    const json body = parse_body(body_text);
    ChatCompletionRequest r;
    r.sampling = sampling_fields(body, true);
    r.sampling.json_object = json_object_format(body);
    r.messages = normalize_messages(body);
    r.tools = validate_tools(body);
    if (const json* choice = field(body, "tool_choice")) {
      if (choice->is_string()) {
        const std::string c = choice->get<std::string>();
        if (c == "none") r.tools = nullptr;
        else if (c == "required")
          refuse("tool_choice", "tool_choice 'required' needs grammar-constrained decoding, which mach does not have "
                                "yet; use 'auto'", "unsupported_parameter");
        else if (c != "auto") refuse("tool_choice", fmt::format("unknown tool_choice '{}'", c));
      } else if (choice->is_object()) {
        refuse("tool_choice", "forcing a named tool needs grammar-constrained decoding, which mach does not have yet; "
                              "use 'auto'", "unsupported_parameter");
      } else {
        refuse("tool_choice", "'tool_choice' must be a string or an object");
      }
    }
    if (const json* kw = field(body, "chat_template_kwargs")) {
      if (!kw->is_object()) refuse("chat_template_kwargs", "'chat_template_kwargs' must be an object");
      r.template_kwargs = *kw;
    }
    if (const json* effort = field(body, "reasoning_effort")) {
      if (!effort->is_string()) refuse("reasoning_effort", "'reasoning_effort' must be a string");
      r.template_kwargs["reasoning_effort"] = *effort;
    }
    r.continue_final_message = boolean(body, "continue_final_message", false);
    if (r.continue_final_message && r.messages.back()["role"] != "assistant")
      refuse("continue_final_message", "'continue_final_message' needs the last message to be the assistant's");
    return r;
  });
}

Decoded<CompletionRequest> decode_completion_request(std::string_view body_text) {
  return decode<CompletionRequest>([&] {
    const json body = parse_body(body_text);
    CompletionRequest r;
    r.sampling = sampling_fields(body, false);
    const json* prompt = field(body, "prompt");
    if (!prompt) refuse("prompt", "'prompt' is required");
    if (prompt->is_string()) {
      r.prompt = prompt->get<std::string>();
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
      std::vector<uint32_t> ids;
      for (const auto& x : *prompt) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > UINT32_MAX)
          refuse("prompt", "a token-id prompt must be a list of non-negative integers");
        ids.push_back(static_cast<uint32_t>(x.get<int64_t>()));
      }
      r.prompt = std::move(ids);
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      r.prompt = (*prompt)[0].get<std::string>();
    } else {
      refuse("prompt", "'prompt' must be a string or a list of token ids (batches of prompts: send one request each)");
    }
    r.echo = boolean(body, "echo", false);
    if (const json* suffix = field(body, "suffix"); suffix && !(suffix->is_string() && suffix->get<std::string>().empty()))
      refuse("suffix", "'suffix' (fill-in-the-middle) is not supported", "unsupported_parameter");
    r.sampling.json_object = json_object_format(body);
    return r;
  });
}

Decoded<WarmPrefixRequest> decode_warm_prefix_request(std::string_view body_text) {
  return decode<WarmPrefixRequest>([&] {
    const json body = parse_body(body_text);
    WarmPrefixRequest r;
    r.messages = normalize_messages(body);
    r.tools = validate_tools(body);
    return r;
  });
}

}  // namespace mach::server::openai
