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


// Gemma 4's argument syntax, as its chat template writes tool calls (format_argument with escape_keys=False):
// objects {key:value,...} with bare keys, arrays [v,...], strings between <|"|> tokens (verbatim, no escapes),
// true/false, and numbers as Python prints them. Also read, because models drift towards them: keys quoted
// with <|"|> (how the template writes tool declarations), JSON strings, and null/None (templates before the
// null fix printed Python's None). Anything else is not an argument list.
class GemmaArgs {
 public:
  explicit GemmaArgs(std::string_view text) : s_(text) {}

  // The whole text as one object, or nullopt.
  std::optional<nlohmann::ordered_json> object() {
    auto v = value(0);
    skip_space();
    if (!v || !v->is_object() || pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  static constexpr std::string_view kQuote = "<|\"|>";
  static constexpr int kMaxDepth = 64;

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::optional<std::string> quoted() {  // at <|"|>
    pos_ += kQuote.size();
    const size_t end = s_.find(kQuote, pos_);
    if (end == std::string_view::npos) return std::nullopt;
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + kQuote.size();
    return out;
  }

  std::optional<std::string> json_string() {  // at "
    size_t i = pos_ + 1;
    while (i < s_.size() && s_[i] != '"') i += s_[i] == '\\' ? 2 : 1;
    if (i >= s_.size()) return std::nullopt;
    auto j = parse_json(s_.substr(pos_, i + 1 - pos_));
    if (!j || !j->is_string()) return std::nullopt;
    pos_ = i + 1;
    return j->get<std::string>();
  }

  std::optional<std::string> key() {
    skip_space();
    if (s_.substr(pos_).starts_with(kQuote)) return quoted();
    if (pos_ < s_.size() && s_[pos_] == '"') return json_string();
    const size_t start = pos_;
    while (pos_ < s_.size() && std::string_view(":{}[],<\"").find(s_[pos_]) == std::string_view::npos) ++pos_;
    std::string_view k = trim(s_.substr(start, pos_ - start));
    if (k.empty()) return std::nullopt;
    return std::string(k);
  }

  std::optional<nlohmann::ordered_json> value(int depth) {
    if (depth > kMaxDepth) return std::nullopt;
    skip_space();
    if (pos_ >= s_.size()) return std::nullopt;
    if (s_[pos_] == '{') {
      ++pos_;
      nlohmann::ordered_json obj = nlohmann::ordered_json::object();
      if (eat('}')) return obj;
      do {
        auto k = key();
        if (!k || !eat(':')) return std::nullopt;
        auto v = value(depth + 1);
        if (!v) return std::nullopt;
        obj[*k] = std::move(*v);
      } while (eat(','));
      if (!eat('}')) return std::nullopt;
      return obj;
    }
    if (s_[pos_] == '[') {
      ++pos_;
      nlohmann::ordered_json arr = nlohmann::ordered_json::array();
      if (eat(']')) return arr;
      do {
        auto v = value(depth + 1);
        if (!v) return std::nullopt;
        arr.push_back(std::move(*v));
      } while (eat(','));
      if (!eat(']')) return std::nullopt;
      return arr;
    }
    if (s_.substr(pos_).starts_with(kQuote)) {
      auto str = quoted();
      if (!str) return std::nullopt;
      return nlohmann::ordered_json(std::move(*str));
    }
    if (s_[pos_] == '"') {
      auto str = json_string();
      if (!str) return std::nullopt;
      return nlohmann::ordered_json(std::move(*str));
    }
    const size_t start = pos_;
    while (pos_ < s_.size() && std::string_view(",}] \n\r\t").find(s_[pos_]) == std::string_view::npos) ++pos_;
    const std::string_view word = s_.substr(start, pos_ - start);
    if (word == "None") return nlohmann::ordered_json(nullptr);
    auto j = parse_json(word);  // true, false, null or a number; anything else is not a value
    if (!j || !(j->is_number() || j->is_boolean() || j->is_null())) return std::nullopt;
    return j;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

// Gemma 4's call body (between <|tool_call> and <tool_call|>): call:NAME{args}.
std::optional<ToolCall> parse_gemma_tool_call(std::string_view body) {
  std::string_view s = trim(body);
  if (!s.starts_with("call:")) return std::nullopt;
  s.remove_prefix(5);
  const size_t brace = s.find('{');
  if (brace == std::string_view::npos) return std::nullopt;
  const std::string_view name = trim(s.substr(0, brace));
  if (name.empty() || name.find_first_of(" \n\t\r<>\"") != std::string_view::npos) return std::nullopt;
  auto args = GemmaArgs(s.substr(brace)).object();
  if (!args) return std::nullopt;
  return ToolCall{sanitize_utf8(std::string(name)), compact(*args)};
}


// DeepSeek-V4's DSML block body (between <｜DSML｜tool_calls> and </｜DSML｜tool_calls>), as its encoder writes it:
//   <｜DSML｜invoke name="F">\n<｜DSML｜parameter name="K" string="true|false">V</｜DSML｜parameter>\n…</｜DSML｜invoke>
// string="true" values are text, the others JSON. Whitespace between tags is not significant.
std::optional<std::vector<ToolCall>> parse_dsml_tool_calls(std::string_view body) {
  constexpr std::string_view kInvoke = "<｜DSML｜invoke", kEndInvoke = "</｜DSML｜invoke>", kParam = "<｜DSML｜parameter",
                             kEndParam = "</｜DSML｜parameter>";
  std::vector<ToolCall> calls;
  std::string_view s = trim(body);
  const auto eat = [&](std::string_view prefix) {
    s = trim(s);
    if (!s.starts_with(prefix)) return false;
    s.remove_prefix(prefix.size());
    return true;
  };
  const auto until = [&](std::string_view end) -> std::optional<std::string_view> {
    const size_t at = s.find(end);
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view before = s.substr(0, at);
    s.remove_prefix(at + end.size());
    return before;
  };
  while (!trim(s).empty()) {
    if (!eat(kInvoke) || !eat("name=\"")) return std::nullopt;
    const auto name = until("\">");
    if (!name || name->empty()) return std::nullopt;
    nlohmann::ordered_json args = nlohmann::ordered_json::object();
    while (!eat(kEndInvoke)) {
      if (!eat(kParam) || !eat("name=\"")) return std::nullopt;
      const auto key = until("\" string=\"");
      if (!key || args.contains(*key)) return std::nullopt;
      const auto flag = until("\">");
      const auto value = until(kEndParam);
      if (!flag || !value || (*flag != "true" && *flag != "false")) return std::nullopt;
      if (*flag == "true") {
        args[std::string(*key)] = std::string(*value);
      } else if (auto j = parse_json(*value)) {
        args[std::string(*key)] = std::move(*j);
      } else {
        return std::nullopt;
      }
    }
    calls.push_back({sanitize_utf8(std::string(*name)), compact(args)});
  }
  return calls;
}

}  // namespace

std::optional<OutputFormat> output_format_from_name(std::string_view name) {
  if (name == "qwen3") return OutputFormat::qwen3;
  if (name == "qwen3_coder") return OutputFormat::qwen3_coder;
  if (name == "harmony") return OutputFormat::harmony;
  if (name == "gemma4") return OutputFormat::gemma4;
  if (name == "deepseek_v4") return OutputFormat::deepseek_v4;
  return std::nullopt;
}

std::string_view output_format_name(OutputFormat format) {
  switch (format) {
    case OutputFormat::qwen3: return "qwen3";
    case OutputFormat::qwen3_coder: return "qwen3_coder";
    case OutputFormat::harmony: return "harmony";
    case OutputFormat::gemma4: return "gemma4";
    case OutputFormat::deepseek_v4: return "deepseek_v4";
  }
  return "unknown";
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


// Gemma 4: <|channel>thought\n…<channel|> is reasoning; <|tool_call>call:NAME{args}<tool_call|> is a call;
// <turn|> ends the turn and <|tool_response> (which the model writes after its calls, for the tool's answer
// to follow) ends generation: both are markers, not text.
class GemmaParser final : public OutputParser::Impl {
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
    if (mode_ == Mode::tool) out.content += std::string(kCall) + tool_body_;
    tool_body_.clear();
    mode_ = Mode::content;
    return out;
  }

 private:
  enum class Mode { content, reasoning, tool };
  static constexpr std::string_view kChannel = "<|channel>", kEndChannel = "<channel|>", kCall = "<|tool_call>",
                                    kEndCall = "<tool_call|>", kEndTurn = "<turn|>", kToolResponse = "<|tool_response>",
                                    kThought = "thought\n", kQuote = "<|\"|>";
  // Index = which tag; the last two are end markers, dropped wherever they appear.
  static constexpr std::array<std::string_view, 4> kContentTags{kChannel, kCall, kEndTurn, kToolResponse};
  static constexpr std::array<std::string_view, 3> kReasoningTags{kEndChannel, kEndTurn, kToolResponse};
  static constexpr std::array<std::string_view, 2> kToolTags{kEndCall, kQuote};

  bool step(OutputDelta& out, bool at_end) {
    if (buf_.empty()) return false;
    if (mode_ == Mode::tool) return step_tool(out, at_end);
    if (mode_ == Mode::reasoning && channel_name_pending_) {
      // The channel's name ("thought\n") is header, not reasoning.
      if (buf_.starts_with(kThought)) {
        buf_.erase(0, kThought.size());
      } else if (!at_end && kThought.starts_with(buf_)) {
        return false;
      }
      channel_name_pending_ = false;
      return true;
    }
    const bool reasoning = mode_ == Mode::reasoning;
    const std::span<const std::string_view> tags = reasoning ? std::span<const std::string_view>(kReasoningTags)
                                                             : std::span<const std::string_view>(kContentTags);
    const auto [pos, which] = find_first_tag(buf_, tags);
    const size_t ready = pos != std::string::npos ? pos : buf_.size() - (at_end ? 0 : partial_tag_suffix(buf_, tags));
    (reasoning ? out.reasoning : out.content).append(buf_, 0, ready);
    if (pos == std::string::npos) {
      buf_.erase(0, ready);
      return false;
    }
    const std::string_view tag = tags[which];
    buf_.erase(0, pos + tag.size());
    if (tag == kChannel) {
      mode_ = Mode::reasoning;
      channel_name_pending_ = true;
    } else if (tag == kEndChannel) {
      mode_ = Mode::content;
    } else if (tag == kCall) {
      mode_ = Mode::tool;
      in_string_ = false;
    }
    return true;  // <turn|> and <|tool_response>: dropped
  }

  // Inside a call: <tool_call|> ends it unless it sits inside a <|"|>…<|"|> string.
  bool step_tool(OutputDelta& out, bool at_end) {
    const auto [pos, which] = find_first_tag(buf_, kToolTags);
    if (pos == std::string::npos) {
      const size_t hold = at_end ? 0 : partial_tag_suffix(buf_, kToolTags);
      tool_body_.append(buf_, 0, buf_.size() - hold);
      buf_.erase(0, buf_.size() - hold);
      return false;
    }
    if (which == 1 || in_string_) {  // a quote, or <tool_call|> inside a string: body text
      const size_t len = which == 1 ? kQuote.size() : kEndCall.size();
      if (which == 1) in_string_ = !in_string_;
      tool_body_.append(buf_, 0, pos + len);
      buf_.erase(0, pos + len);
      return true;
    }
    tool_body_.append(buf_, 0, pos);
    buf_.erase(0, pos + kEndCall.size());
    if (auto call = parse_gemma_tool_call(tool_body_)) {
      out.tool_calls.push_back(std::move(*call));
    } else {
      out.content += std::string(kCall) + tool_body_ + std::string(kEndCall);
    }
    tool_body_.clear();
    mode_ = Mode::content;
    return true;
  }

  Mode mode_ = Mode::content;
  std::string buf_, tool_body_;
  bool channel_name_pending_ = false;
  bool in_string_ = false;
};


// DeepSeek-V4: <think>…</think> reasoning (the thinking-mode prompt opens it), content, and at most one DSML
// block "\n\n<｜DSML｜tool_calls>…</｜DSML｜tool_calls>" of calls; <｜end▁of▁sentence｜> is a marker, dropped.
// The two newlines before the block belong to it (as the encoder writes and parses them), so newlines at the
// end of content are held until it is known whether a block follows.
class DeepSeekV4Parser final : public OutputParser::Impl {
 public:
  explicit DeepSeekV4Parser(bool starts_in_reasoning) : mode_(starts_in_reasoning ? Mode::reasoning : Mode::content) {}

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
    if (mode_ == Mode::tool) out.content += block_prefix_ + std::string(kBlock) + body_;
    out.content += held_newlines_;
    held_newlines_.clear();
    body_.clear();
    mode_ = Mode::content;
    return out;
  }

 private:
  enum class Mode { content, reasoning, tool };
  static constexpr std::string_view kEndThink = "</think>", kBlock = "<｜DSML｜tool_calls>",
                                    kEndBlock = "</｜DSML｜tool_calls>", kEos = "<｜end▁of▁sentence｜>";
  static constexpr std::array<std::string_view, 2> kContentTags{kBlock, kEos};
  static constexpr std::array<std::string_view, 2> kReasoningTags{kEndThink, kEos};
  static constexpr std::array<std::string_view, 1> kBlockTags{kEndBlock};

  void emit_content(std::string_view s, OutputDelta& out) {
    size_t keep = s.size();
    while (keep > 0 && s[keep - 1] == '\n') --keep;
    if (keep > 0) {
      out.content += held_newlines_;
      held_newlines_.clear();
      out.content += s.substr(0, keep);
    }
    held_newlines_ += s.substr(keep);
  }

  bool step(OutputDelta& out, bool at_end) {
    if (buf_.empty()) return false;
    if (mode_ == Mode::tool) {
      const size_t pos = buf_.find(kEndBlock);
      if (pos == std::string::npos) {
        const size_t hold = at_end ? 0 : partial_tag_suffix(buf_, kBlockTags);
        body_.append(buf_, 0, buf_.size() - hold);
        buf_.erase(0, buf_.size() - hold);
        return false;
      }
      body_.append(buf_, 0, pos);
      buf_.erase(0, pos + kEndBlock.size());
      if (auto calls = parse_dsml_tool_calls(body_)) {
        for (auto& call : *calls) out.tool_calls.push_back(std::move(call));
      } else {
        out.content += block_prefix_ + std::string(kBlock) + body_ + std::string(kEndBlock);
      }
      body_.clear();
      mode_ = Mode::content;
      return true;
    }
    const bool reasoning = mode_ == Mode::reasoning;
    const std::span<const std::string_view> tags = reasoning ? std::span<const std::string_view>(kReasoningTags)
                                                             : std::span<const std::string_view>(kContentTags);
    const auto [pos, which] = find_first_tag(buf_, tags);
    const size_t ready = pos != std::string::npos ? pos : buf_.size() - (at_end ? 0 : partial_tag_suffix(buf_, tags));
    if (reasoning) out.reasoning.append(buf_, 0, ready);
    else emit_content(std::string_view(buf_).substr(0, ready), out);
    if (pos == std::string::npos) {
      buf_.erase(0, ready);
      return false;
    }
    const std::string_view tag = tags[which];
    buf_.erase(0, pos + tag.size());
    if (tag == kEndThink) {
      mode_ = Mode::content;
    } else if (tag == kBlock) {
      block_prefix_ = held_newlines_.size() >= 2 ? "\n\n" : "";
      out.content += held_newlines_.substr(0, held_newlines_.size() - block_prefix_.size());
      held_newlines_.clear();
      mode_ = Mode::tool;
    }
    return true;  // <｜end▁of▁sentence｜>: dropped
  }

  Mode mode_;
  std::string buf_, body_, held_newlines_, block_prefix_;
};

}  // namespace

OutputParser::OutputParser(OutputFormat format, nlohmann::ordered_json tools, bool starts_in_reasoning) {
  if (format == OutputFormat::harmony) {
    impl_ = std::make_unique<HarmonyParser>();
  } else if (format == OutputFormat::gemma4) {
    impl_ = std::make_unique<GemmaParser>();
  } else if (format == OutputFormat::deepseek_v4) {
    impl_ = std::make_unique<DeepSeekV4Parser>(starts_in_reasoning);
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
