#include "text/output_parser.hpp"

#include <algorithm>
#include <array>
#include <span>

#include "text/utf8.hpp"

namespace mach::text {

namespace {

// Length of the longest suffix of `text` that is a proper prefix of one of `tags`: bytes that must be held
// back because the next piece may complete a tag.
size_t partial_tag_suffix(std::string_view text, std::span<const std::string_view> tags) {
  size_t hold = 0;
  for (std::string_view tag : tags) {
    for (size_t n = std::min(text.size(), tag.size() - 1); n > hold; --n) {
      if (text.substr(text.size() - n) == tag.substr(0, n)) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

// The earliest complete tag in text: {position, tag index}, or {npos, -1}.
std::pair<size_t, int> find_first_tag(std::string_view text, std::span<const std::string_view> tags) {
  std::pair<size_t, int> best{std::string_view::npos, -1};
  int i = 0;
  for (std::string_view tag : tags) {
    const size_t pos = text.find(tag);
    if (pos < best.first) best = {pos, i};
    ++i;
  }
  return best;
}

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// Compact JSON; invalid UTF-8 in strings (models emit any bytes) becomes U+FFFD instead of throwing.
std::string compact(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::optional<nlohmann::ordered_json> parse_json(std::string_view text) {
  auto j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// Qwen3's body: {"name": "...", "arguments": {...}} (arguments may also arrive as a JSON string).
std::optional<ToolCall> parse_json_tool_call(std::string_view body) {
  auto j = parse_json(trim(body));
  if (!j || !j->is_object() || !j->contains("name") || !(*j)["name"].is_string()) return std::nullopt;
  nlohmann::ordered_json args = j->value("arguments", nlohmann::ordered_json::object());
  if (args.is_string()) {
    auto inner = parse_json(args.get<std::string>());
    if (!inner) return std::nullopt;
    args = std::move(*inner);
  }
  if (!args.is_object()) return std::nullopt;
  return ToolCall{(*j)["name"].get<std::string>(), compact(args)};
}

// The JSON schema type of parameter `param` of tool `name`, or "" when unknown.
std::string schema_type(const nlohmann::ordered_json& tools, const std::string& name, const std::string& param) {
  if (!tools.is_array()) return {};
  for (const auto& tool : tools) {
    const auto& fn = tool.contains("function") ? tool["function"] : tool;
    if (!fn.is_object() || fn.value("name", "") != name) continue;
    const auto props = fn.value("parameters", nlohmann::ordered_json::object()).value("properties", nlohmann::ordered_json::object());
    if (!props.contains(param) || !props[param].is_object()) return {};
    const auto& type = props[param].value("type", nlohmann::ordered_json());
    return type.is_string() ? type.get<std::string>() : std::string();
  }
  return {};
}

// Qwen3-Coder's body: <function=NAME> <parameter=K>\nV\n</parameter> ... </function>.
std::optional<ToolCall> parse_xml_tool_call(std::string_view body, const nlohmann::ordered_json& tools) {
  std::string_view s = trim(body);
  constexpr std::string_view kOpen = "<function=", kClose = "</function>";
  if (!s.starts_with(kOpen) || !s.ends_with(kClose)) return std::nullopt;
  const size_t name_end = s.find('>');
  if (name_end == std::string_view::npos) return std::nullopt;
  const std::string name(trim(s.substr(kOpen.size(), name_end - kOpen.size())));
  if (name.empty()) return std::nullopt;
  std::string_view rest = s.substr(name_end + 1, s.size() - kClose.size() - name_end - 1);
  nlohmann::ordered_json args = nlohmann::ordered_json::object();
  for (rest = trim(rest); !rest.empty(); rest = trim(rest)) {
    constexpr std::string_view kParam = "<parameter=", kEnd = "</parameter>";
    if (!rest.starts_with(kParam)) return std::nullopt;
    const size_t key_end = rest.find('>');
    const size_t value_end = rest.find(kEnd);
    if (key_end == std::string_view::npos || value_end == std::string_view::npos || value_end < key_end) return std::nullopt;
    const std::string key(trim(rest.substr(kParam.size(), key_end - kParam.size())));
    std::string_view value = rest.substr(key_end + 1, value_end - key_end - 1);
    if (value.starts_with('\n')) value.remove_prefix(1);  // the format puts values on their own lines
    if (value.ends_with('\n')) value.remove_suffix(1);
    const std::string type = schema_type(tools, name, key);
    if (type == "string") {
      args[key] = std::string(value);
    } else if (auto parsed = parse_json(value); parsed && (type.empty() || type != "string")) {
      args[key] = std::move(*parsed);
    } else {
      args[key] = std::string(value);
    }
    rest.remove_prefix(value_end + kEnd.size());
  }
  return ToolCall{sanitize_utf8(name), compact(args)};
}

}  // namespace

std::optional<OutputFormat> output_format_from_name(std::string_view name) {
  if (name == "qwen3") return OutputFormat::qwen3;
  if (name == "qwen3_coder") return OutputFormat::qwen3_coder;
  if (name == "harmony") return OutputFormat::harmony;
  return std::nullopt;
}

void OutputDelta::append(OutputDelta&& o) {
  content += o.content;
  reasoning += o.reasoning;
  for (auto& call : o.tool_calls) tool_calls.push_back(std::move(call));
}

class OutputParser::Impl {
 public:
  virtual ~Impl() = default;
  virtual OutputDelta push(std::string_view text) = 0;
  virtual OutputDelta finish() = 0;
};

namespace {

// Qwen3 and Qwen3-Coder: <think>…</think> and <tool_call>…</tool_call> in plain text.
class QwenParser final : public OutputParser::Impl {
 public:
  QwenParser(bool xml, nlohmann::ordered_json tools, bool starts_in_reasoning)
      : xml_(xml), tools_(std::move(tools)), mode_(starts_in_reasoning ? Mode::reasoning : Mode::content) {}

  OutputDelta push(std::string_view text) override {
    buf_ += text;
    OutputDelta out;
    for (bool progress = true; progress;) progress = step(out, false);
    return out;
  }

  OutputDelta finish() override {
    OutputDelta out;
    while (step(out, true)) {
    }
    if (mode_ == Mode::tool) {
      emit_content("<tool_call>" + tool_body_, out);
      tool_body_.clear();
    }
    if (mode_ == Mode::reasoning) out.reasoning += held_newlines_;
    held_newlines_.clear();
    mode_ = Mode::content;
    return out;
  }

 private:
  enum class Mode { content, reasoning, tool };
  static constexpr std::string_view kThink = "<think>", kEndThink = "</think>", kTool = "<tool_call>",
                                    kEndTool = "</tool_call>";
  static constexpr std::array<std::string_view, 2> kContentTags{kThink, kTool};  // index = which tag
  static constexpr std::array<std::string_view, 1> kReasoningTags{kEndThink};
  static constexpr std::array<std::string_view, 1> kToolEndTags{kEndTool};

  void emit_content(std::string_view s, OutputDelta& out) {
    if (strip_content_newlines_) {
      while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
      if (!s.empty()) strip_content_newlines_ = false;
    }
    out.content += s;
  }

  // Reasoning text with one newline after <think> dropped and newlines before </think> held back.
  void emit_reasoning(std::string_view s, OutputDelta& out) {
    if (strip_reasoning_newline_ && !s.empty()) {
      if (s.front() == '\n') s.remove_prefix(1);
      strip_reasoning_newline_ = false;
    }
    size_t keep = s.size();
    while (keep > 0 && s[keep - 1] == '\n') --keep;
    if (keep > 0) {
      out.reasoning += held_newlines_;
      held_newlines_.clear();
      out.reasoning += s.substr(0, keep);
    }
    held_newlines_ += s.substr(keep);
  }

  // Consumes what it can of buf_; false when it needs more text (or, at the end, when nothing is left).
  bool step(OutputDelta& out, bool at_end) {
    if (buf_.empty()) return false;
    if (mode_ == Mode::tool) {
      const size_t pos = buf_.find(kEndTool);
      if (pos == std::string::npos) {
        const size_t hold = at_end ? 0 : partial_tag_suffix(buf_, kToolEndTags);
        tool_body_ += buf_.substr(0, buf_.size() - hold);
        buf_.erase(0, buf_.size() - hold);
        return false;
      }
      tool_body_ += buf_.substr(0, pos);
      buf_.erase(0, pos + kEndTool.size());
      auto call = xml_ ? parse_xml_tool_call(tool_body_, tools_) : parse_json_tool_call(tool_body_);
      if (call) {
        out.tool_calls.push_back(std::move(*call));
      } else {
        emit_content(std::string(kTool) + tool_body_ + std::string(kEndTool), out);
      }
      tool_body_.clear();
      mode_ = Mode::content;
      return true;
    }
    const bool reasoning = mode_ == Mode::reasoning;
    const std::span<const std::string_view> tags = reasoning ? std::span<const std::string_view>(kReasoningTags)
                                                             : std::span<const std::string_view>(kContentTags);
    const auto [pos, which] = find_first_tag(buf_, tags);
    if (pos == std::string::npos) {
      const size_t hold = at_end ? 0 : partial_tag_suffix(buf_, tags);
      const std::string_view ready = std::string_view(buf_).substr(0, buf_.size() - hold);
      if (reasoning) emit_reasoning(ready, out);
      else emit_content(ready, out);
      buf_.erase(0, ready.size());
      return false;
    }
    const std::string_view before = std::string_view(buf_).substr(0, pos);
    if (reasoning) {
      emit_reasoning(before, out);
      held_newlines_.clear();  // newlines right before </think> are layout, not reasoning
      mode_ = Mode::content;
      strip_content_newlines_ = true;
      buf_.erase(0, pos + kEndThink.size());
    } else if (which == 0) {
      emit_content(before, out);
      mode_ = Mode::reasoning;
      strip_reasoning_newline_ = true;
      buf_.erase(0, pos + kThink.size());
    } else {
      emit_content(before, out);
      mode_ = Mode::tool;
      buf_.erase(0, pos + kTool.size());
    }
    return true;
  }

  bool xml_;
  nlohmann::ordered_json tools_;
  Mode mode_;
  std::string buf_, tool_body_, held_newlines_;
  bool strip_content_newlines_ = false;
  bool strip_reasoning_newline_ = true;
};

// gpt-oss harmony: messages of the form [<|start|>assistant]<|channel|>C [to=R] [<|constrain|>json]<|message|>
// BODY (<|end|> | <|call|> | <|return|>).
class HarmonyParser final : public OutputParser::Impl {
 public:
  OutputDelta push(std::string_view text) override {
    buf_ += text;
    OutputDelta out;
    while (step(out, false)) {
    }
    return out;
  }

  OutputDelta finish() override {
    OutputDelta out;
    while (step(out, true)) {
    }
    if (in_header_) {
      out.content += header_;  // never got to <|message|>: plain text
    } else if (!recipient_.empty()) {
      end_tool_call(out);  // <|call|> is a stop token the caller may have stripped
    }
    header_.clear();
    in_header_ = true;
    return out;
  }

 private:
  static constexpr std::string_view kMessage = "<|message|>", kEnd = "<|end|>", kCall = "<|call|>",
                                    kReturn = "<|return|>", kStart = "<|start|>";
  static constexpr std::array<std::string_view, 4> kBodyEnds{kEnd, kCall, kReturn, kStart};  // <|start|> last
  static constexpr size_t kMaxHeader = 512;  // a header longer than this is not a header: treat as content

  void begin_body() {
    channel_.clear();
    recipient_.clear();
    const auto field = [&](std::string_view key) {
      const size_t at = header_.find(key);
      if (at == std::string::npos) return std::string();
      size_t b = at + key.size(), e = b;
      while (e < header_.size() && header_[e] != ' ' && header_[e] != '<' && header_[e] != '\n') ++e;
      return header_.substr(b, e - b);
    };
    channel_ = field("<|channel|>");
    const std::string to = field("to=");
    if (to.starts_with("functions.")) recipient_ = to.substr(10);
    header_.clear();
    body_.clear();
    in_header_ = false;
  }

  void end_tool_call(OutputDelta& out) {
    auto args = parse_json(trim(body_));
    if (args && args->is_object()) {
      out.tool_calls.push_back({sanitize_utf8(recipient_), compact(*args)});
    } else {
      out.content += body_;
    }
    body_.clear();
    recipient_.clear();
  }

  bool step(OutputDelta& out, bool at_end) {
    if (buf_.empty()) return false;
    if (in_header_) {
      header_ += buf_;  // the <|message|> marker may have arrived in pieces
      buf_.clear();
      // A header is short: <|message|> must start within the first kMaxHeader bytes. The decision looks only at
      // those bytes, so it is the same however the text was split.
      const size_t window = kMaxHeader + kMessage.size();
      const size_t pos = std::string_view(header_).substr(0, window).find(kMessage);
      if (pos == std::string::npos) {
        if (header_.size() >= window) {
          // Not a header: its first kMaxHeader bytes (cut at a code point boundary) are plain content, and
          // a header is looked for again after them.
          size_t cut = kMaxHeader;
          while (cut > 0 && (static_cast<unsigned char>(header_[cut]) & 0xC0) == 0x80) --cut;
          out.content.append(header_, 0, cut);
          buf_ = header_.substr(cut);
          header_.clear();
          return true;
        }
        return false;
      }
      buf_ = header_.substr(pos + kMessage.size());
      header_.erase(pos);
      begin_body();
      return true;
    }
    const auto [pos, which] = find_first_tag(buf_, kBodyEnds);
    const size_t ready = pos != std::string::npos ? pos : buf_.size() - (at_end ? 0 : partial_tag_suffix(buf_, kBodyEnds));
    const std::string_view text = std::string_view(buf_).substr(0, ready);
    if (!recipient_.empty()) body_ += text;
    else if (channel_ == "analysis") out.reasoning += text;
    else out.content += text;
    if (pos == std::string::npos) {
      buf_.erase(0, ready);
      return false;
    }
    if (!recipient_.empty()) end_tool_call(out);
    buf_.erase(0, pos + (which == 3 ? 0 : kBodyEnds[which].size()));  // <|start|> stays: it opens the next header
    in_header_ = true;
    return true;
  }

  std::string buf_, header_, body_, channel_, recipient_;
  bool in_header_ = true;
};

}  // namespace

OutputParser::OutputParser(OutputFormat format, nlohmann::ordered_json tools, bool starts_in_reasoning) {
  if (format == OutputFormat::harmony) {
    impl_ = std::make_unique<HarmonyParser>();
  } else {
    impl_ = std::make_unique<QwenParser>(format == OutputFormat::qwen3_coder, std::move(tools), starts_in_reasoning);
  }
}

OutputParser::~OutputParser() = default;
OutputParser::OutputParser(OutputParser&&) noexcept = default;
OutputParser& OutputParser::operator=(OutputParser&&) noexcept = default;

OutputDelta OutputParser::push(std::string_view text) { return impl_->push(text); }
OutputDelta OutputParser::finish() { return impl_->finish(); }

OutputDelta parse_output(OutputFormat format, std::string_view text, const nlohmann::ordered_json& tools,
                         bool starts_in_reasoning) {
  OutputParser parser(format, tools, starts_in_reasoning);
  OutputDelta out = parser.push(text);
  out.append(parser.finish());
  return out;
}

}  // namespace mach::text
