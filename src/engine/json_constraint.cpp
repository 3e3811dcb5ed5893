#include "engine/json_constraint.hpp"

#include <algorithm>

namespace mach::engine {
namespace {

bool is_ws(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
int hex_value(uint8_t b) {
  if (b >= '0' && b <= '9') return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}
constexpr std::string_view kLiterals[] = {"true", "false", "null"};

}  // namespace

bool JsonMachine::feed(uint8_t byte) {
  JsonMachine next = *this;
  if (!next.step(byte)) return false;
  *this = next;
  return true;
}

bool JsonMachine::feed(std::string_view bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

bool JsonMachine::push(bool array) {
  if (depth_ >= kMaxDepth) return false;
  const uint64_t bit = uint64_t{1} << (depth_ % 64);
  if (array) stack_[depth_ / 64] |= bit;
  else stack_[depth_ / 64] &= ~bit;
  ++depth_;
  return true;
}

void JsonMachine::end_value() {
  mode_ = depth_ == 0 ? Mode::done : Mode::after_value;
  ws_ = 0;
}

void JsonMachine::close() {
  --depth_;
  end_value();
}

void JsonMachine::open_string(bool key) {
  mode_ = Mode::string, key_ = key, esc_ = Esc::none, utf8_left_ = 0;
}

bool JsonMachine::whitespace() {
  if (ws_ >= kMaxWhitespace) return false;
  ++ws_;
  return true;
}

bool JsonMachine::begin_value(uint8_t b) {
  ws_ = 0;
  switch (b) {
    case '"': open_string(false); return true;
    case '{': mode_ = Mode::key_or_close; return push(false);
    case '[': mode_ = Mode::value_or_close; return push(true);
    case '-': mode_ = Mode::number, num_ = Num::minus; return true;
    case '0': mode_ = Mode::number, num_ = Num::zero; return true;
    case 't': case 'f': case 'n':
      mode_ = Mode::literal, literal_ = b == 't' ? 0 : b == 'f' ? 1 : 2, literal_at_ = 1;
      return true;
    default:
      if (b >= '1' && b <= '9') {
        mode_ = Mode::number, num_ = Num::int_digits;
        return true;
      }
      return false;
  }
}

bool JsonMachine::number_byte(uint8_t b) {
  const bool digit = is_digit(b), e = b == 'e' || b == 'E';
  switch (num_) {
    case Num::minus:
      if (b == '0') return num_ = Num::zero, true;
      if (digit) return num_ = Num::int_digits, true;
      return false;
    case Num::zero:
      if (b == '.') return num_ = Num::dot, true;
      if (e) return num_ = Num::exp, true;
      return false;
    case Num::int_digits:
      if (digit) return true;
      if (b == '.') return num_ = Num::dot, true;
      if (e) return num_ = Num::exp, true;
      return false;
    case Num::dot:
      if (digit) return num_ = Num::frac_digits, true;
      return false;
    case Num::frac_digits:
      if (digit) return true;
      if (e) return num_ = Num::exp, true;
      return false;
    case Num::exp:
      if (b == '+' || b == '-') return num_ = Num::exp_sign, true;
      if (digit) return num_ = Num::exp_digits, true;
      return false;
    case Num::exp_sign:
      if (digit) return num_ = Num::exp_digits, true;
      return false;
    case Num::exp_digits:
      return digit;
  }
  return false;
}

bool JsonMachine::string_byte(uint8_t b) {
  switch (esc_) {
    case Esc::backslash:
      if (b == 'u') {
        esc_ = Esc::hex, hex_left_ = 4, hex_ = 0;
        return true;
      }
      if (b == '"' || b == '\\' || b == '/' || b == 'b' || b == 'f' || b == 'n' || b == 'r' || b == 't') {
        esc_ = Esc::none;
        return true;
      }
      return false;
    case Esc::hex:
    case Esc::low_hex: {
      const int v = hex_value(b);
      if (v < 0) return false;
      hex_ = static_cast<uint16_t>(hex_ * 16 + v);
      if (--hex_left_ > 0) return true;
      const bool high = hex_ >= 0xD800 && hex_ <= 0xDBFF, low = hex_ >= 0xDC00 && hex_ <= 0xDFFF;
      if (esc_ == Esc::low_hex) {  // the second half of a surrogate pair
        if (!low) return false;
        esc_ = Esc::none;
        return true;
      }
      if (low) return false;  // a low surrogate alone
      esc_ = high ? Esc::want_backslash : Esc::none;
      return true;
    }
    case Esc::want_backslash:
      if (b != '\\') return false;
      esc_ = Esc::want_u;
      return true;
    case Esc::want_u:
      if (b != 'u') return false;
      esc_ = Esc::low_hex, hex_left_ = 4, hex_ = 0;
      return true;
    case Esc::none:
      break;
  }
  if (utf8_left_ > 0) {
    if (b < utf8_lo_ || b > utf8_hi_) return false;
    --utf8_left_, utf8_lo_ = 0x80, utf8_hi_ = 0xBF;
    return true;
  }
  if (b == '"') {
    if (key_) {
      mode_ = Mode::colon;
      ws_ = 0;
    } else {
      end_value();
    }
    return true;
  }
  if (b == '\\') return esc_ = Esc::backslash, true;
  if (b < 0x20) return false;
  if (b < 0x80) return true;
  // UTF-8 as RFC 3629 allows it: no overlong forms, no surrogates, nothing past U+10FFFF.
  if (b >= 0xC2 && b <= 0xDF) utf8_left_ = 1;
  else if (b == 0xE0) utf8_left_ = 2, utf8_lo_ = 0xA0;
  else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) utf8_left_ = 2;
  else if (b == 0xED) utf8_left_ = 2, utf8_hi_ = 0x9F;
  else if (b == 0xF0) utf8_left_ = 3, utf8_lo_ = 0x90;
  else if (b >= 0xF1 && b <= 0xF3) utf8_left_ = 3;
  else if (b == 0xF4) utf8_left_ = 3, utf8_hi_ = 0x8F;
  else return false;
  return true;
}

bool JsonMachine::step(uint8_t b) {
  switch (mode_) {
    case Mode::string:
      return string_byte(b);
    case Mode::number:
      if (number_byte(b)) return true;
      if (num_ != Num::zero && num_ != Num::int_digits && num_ != Num::frac_digits && num_ != Num::exp_digits)
        return false;
      end_value();  // a number inside a container: the byte must continue after it
      return step(b);
    case Mode::literal: {
      const std::string_view lit = kLiterals[literal_];
      if (b != static_cast<uint8_t>(lit[literal_at_])) return false;
      if (++literal_at_ == lit.size()) end_value();
      return true;
    }
    case Mode::done:
      return false;
    default:
      break;
  }
  if (mode_ == Mode::start) {  // the reply starts with its object: no leading whitespace to loop on
    if (b != '{') return false;
    mode_ = Mode::key_or_close;
    return push(false);
  }
  if (is_ws(b)) return whitespace();
  ws_ = 0;
  switch (mode_) {
    case Mode::key_or_close:
      if (b == '}') {
        close();
        return true;
      }
      [[fallthrough]];
    case Mode::key:
      if (b != '"') return false;
      open_string(true);
      return true;
    case Mode::colon:
      if (b != ':') return false;
      mode_ = Mode::value;
      return true;
    case Mode::value_or_close:
      if (b == ']') {
        close();
        return true;
      }
      return begin_value(b);
    case Mode::value:
      return begin_value(b);
    case Mode::after_value: {
      const bool array = top_is_array();
      if (b == ',') {
        mode_ = array ? Mode::value : Mode::key;
        return true;
      }
      if (b != (array ? ']' : '}')) return false;
      close();
      return true;
    }
    default:
      return false;
  }
}

void JsonTokenTable::Walk::build(const std::vector<std::string>& bytes, std::vector<uint32_t> ids) {
  order = std::move(ids);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return bytes[a] < bytes[b]; });
  lcp.assign(order.size(), 0);
  for (size_t i = 1; i < order.size(); ++i) {
    const std::string &a = bytes[order[i - 1]], &b = bytes[order[i]];
    const size_t n = std::min(a.size(), b.size());
    uint32_t l = 0;
    while (l < n && a[l] == b[l]) ++l;
    lcp[i] = l;
  }
}

JsonTokenTable::JsonTokenTable(std::vector<std::string> bytes, std::vector<uint32_t> stop_ids)
    : bytes_(std::move(bytes)), stop_ids_(std::move(stop_ids)) {
  JsonMachine in_string;
  in_string.feed(std::string_view("{\""));
  std::vector<uint32_t> all, not_plain;
  for (uint32_t id = 0; id < bytes_.size(); ++id) {
    const std::string& b = bytes_[id];
    if (b.empty() || std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) continue;
    all.push_back(id);
    JsonMachine m = in_string;
    const bool plain = b.find_first_of("\"\\") == std::string::npos && m.feed(b) && m.in_plain_string();
    (plain ? plain_ : not_plain).push_back(id);
  }
  all_.build(bytes_, std::move(all));
  not_plain_.build(bytes_, std::move(not_plain));
}

void JsonTokenTable::allowed(const JsonMachine& machine, std::vector<uint8_t>& allowed) const {
  allowed.assign(bytes_.size(), 0);
  if (machine.complete()) {
    for (uint32_t id : stop_ids_)
      if (id < allowed.size()) allowed[id] = 1;
    return;
  }
  if (machine.in_plain_string()) {
    for (uint32_t id : plain_) allowed[id] = 1;
    walk(not_plain_, machine, allowed);
  } else {
    walk(all_, machine, allowed);
  }
}

void JsonTokenTable::walk(const Walk& w, const JsonMachine& machine, std::vector<uint8_t>& allowed) const {
  // states[d]: the machine after the first d bytes of the current token; valid for d <= valid.
  std::vector<JsonMachine> states{machine};
  size_t valid = 0;
  size_t refused = SIZE_MAX;  // the byte of the previous token that was refused
  for (size_t i = 0; i < w.order.size(); ++i) {
    const std::string& tok = bytes_[w.order[i]];
    if (refused != SIZE_MAX && w.lcp[i] > refused) continue;  // it shares the refused prefix
    refused = SIZE_MAX;
    size_t d = std::min<size_t>(w.lcp[i], valid);
    for (; d < tok.size(); ++d) {
      JsonMachine m = states[d];
      if (!m.step(static_cast<uint8_t>(tok[d]))) {  // on the copy: dropped when refused
        refused = d;
        break;
      }
      if (states.size() <= d + 1) states.push_back(m);
      else states[d + 1] = m;
    }
    valid = d;
    if (refused == SIZE_MAX) allowed[w.order[i]] = 1;
  }
}

}  // namespace mach::engine
