// JSON mode (response_format {"type": "json_object"}): a byte-level recognizer of JSON text (RFC 8259, strict
// UTF-8, surrogate pairs checked as nlohmann::json checks them) whose top value is an object, and the
// vocabulary's tokens that may come next from a recognizer's state, so that sampling only ever draws a
// token that keeps the output a prefix of some JSON object.
//
// JsonMachine is small and trivially copyable (its container stack is a bitset), because finding the
// allowed tokens copies it once per token prefix. The text starts with '{' (no leading whitespace);
// whitespace between tokens of the JSON text is allowed in runs of at most kMaxWhitespace bytes (a model
// that only emits whitespace would otherwise never finish); after the top-level object closes nothing more
// is accepted. Nesting deeper than kMaxDepth is refused.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mach::engine {

class JsonMachine {
 public:
  static constexpr uint32_t kMaxDepth = 128;
  static constexpr uint32_t kMaxWhitespace = 64;

  // Consumes one byte; false (and the machine unchanged) when no JSON object text continues with it.
  bool feed(uint8_t byte);
  bool feed(std::string_view bytes);  // every byte, stopping at the first refused (the machine then is unusable)
  // The top-level object is closed: the text is complete JSON and nothing may follow.
  bool complete() const { return mode_ == Mode::done; }
  // Inside a string with no escape or UTF-8 sequence pending: any text without '"', '\' or control bytes
  // that is whole UTF-8 continues the string.
  bool in_plain_string() const { return mode_ == Mode::string && esc_ == Esc::none && utf8_left_ == 0; }

 private:
  enum class Mode : uint8_t {
    start,          // before the top-level '{'
    key_or_close,   // after '{': a key or '}'
    key,            // after ',' in an object
    colon,          // after a key
    value,          // after ':' or ',' in an array
    value_or_close, // after '['
    after_value,    // ',' or the container's close
    string,         // inside a string (key_ says which kind)
    number,
    literal,        // true, false, null
    done,
  };
  enum class Num : uint8_t { minus, zero, int_digits, dot, frac_digits, exp, exp_sign, exp_digits };
  enum class Esc : uint8_t { none, backslash, hex, want_backslash, want_u, low_hex };

  bool step(uint8_t byte);  // feed() on a copy: may leave the machine half changed when it refuses
  bool begin_value(uint8_t byte);
  friend class JsonTokenTable;  // walks with step() on copies it drops when refused
  bool push(bool array);
  bool top_is_array() const { return (stack_[(depth_ - 1) / 64] >> ((depth_ - 1) % 64)) & 1; }
  void end_value();  // a value ended: after_value, or done at the top
  void close();      // the innermost container closed: it was a value
  void open_string(bool key);
  bool whitespace();  // a whitespace byte between tokens: false past kMaxWhitespace in a row
  bool string_byte(uint8_t byte);
  bool number_byte(uint8_t byte);  // false: the byte does not continue the number (the caller decides)

  uint64_t stack_[kMaxDepth / 64] = {};  // bit d: the container at depth d is an array
  uint32_t depth_ = 0;
  Mode mode_ = Mode::start;
  bool key_ = false;       // the string is an object key
  Num num_ = Num::minus;
  Esc esc_ = Esc::none;
  uint8_t hex_left_ = 0;   // hex digits of a \u escape still to come
  uint16_t hex_ = 0;       // the escape's value so far
  uint8_t utf8_left_ = 0;  // continuation bytes still to come
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xBF;  // the next continuation byte's range
  uint8_t literal_ = 0;    // which literal (0 true, 1 false, 2 null) and how far
  uint8_t literal_at_ = 0;
  uint8_t ws_ = 0;         // whitespace bytes in the current run
};

// A vocabulary's token bytes, sorted so that tokens sharing a prefix are neighbours: the allowed tokens of a
// state are found by feeding each distinct prefix once and skipping every token under a refused one. Inside
// a string, where nearly every token is allowed, the tokens that are plain string text (most of a
// vocabulary) are allowed without a walk, and only the others are walked.
class JsonTokenTable {
 public:
  // `bytes[id]`: what token id adds to the text ("" for tokens that add none or that must not appear, e.g.
  // control tokens: never allowed). `stop_ids`: end-of-turn tokens, allowed exactly when the machine is
  // complete (never as text, whatever their bytes).
  JsonTokenTable(std::vector<std::string> bytes, std::vector<uint32_t> stop_ids);

  uint32_t vocab_size() const { return static_cast<uint32_t>(bytes_.size()); }
  const std::string& bytes(uint32_t id) const { return bytes_[id]; }
  // allowed[id] = 1 for each token that the machine accepts whole (or a stop id when complete), else 0.
  void allowed(const JsonMachine& machine, std::vector<uint8_t>& allowed) const;

 private:
  std::vector<std::string> bytes_;
  std::vector<uint32_t> stop_ids_;
  // Non-empty tokens by their bytes, and lcp[i]: the common prefix of order[i - 1] and order[i] (0 for i = 0).
  struct Walk {
    std::vector<uint32_t> order, lcp;
    void build(const std::vector<std::string>& bytes, std::vector<uint32_t> ids);
  };
  void walk(const Walk& w, const JsonMachine& machine, std::vector<uint8_t>& allowed) const;
  Walk all_;           // every non-empty token
  Walk not_plain_;     // those that are not plain string text
  std::vector<uint32_t> plain_;  // those that are
};

}  // namespace mach::engine
