#include "text/jinja/value.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace mach::text::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value(nullptr);
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List list;
      for (const auto& item : j) list.push_back(from_json(item));
      return Value(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto dict = std::make_shared<Dict>();
      for (auto it = j.begin(); it != j.end(); ++it) dict->items.emplace_back(it.key(), from_json(it.value()));
      return Value(std::move(dict));
    }
    default: return Value();
  }
}

bool Value::truthy() const {
  switch (data_.index()) {
    case 0: case 1: return false;
    case 2: return as_bool();
    case 3: return as_int() != 0;
    case 4: return std::get<double>(data_) != 0.0;
    case 5: return !as_string().empty();
    case 6: return !as_list().empty();
    case 7: return !as_dict().items.empty();
    default: return true;
  }
}

const char* Value::type_name() const {
  static const char* const kNames[] = {"undefined", "NoneType", "bool", "int", "float", "str", "list", "dict",
                                       "function"};
  return kNames[data_.index()];
}

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);  // "-1.2345e+02": shortest digits that round-trip
  const size_t e = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  const int exp = std::stoi(sci.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exp >= -4 && exp < 16) {  // Python's repr switches to exponent form below 1e-4 and from 1e16
    if (exp < 0) return out + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    const size_t int_len = static_cast<size_t>(exp) + 1;
    if (digits.size() <= int_len) return out + digits + std::string(int_len - digits.size(), '0') + ".0";
    return out + digits.substr(0, int_len) + "." + digits.substr(int_len);
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) {
    out += '.';
    out.append(digits, 1);
  }
  return out + fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
}

namespace {

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

void json_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void json_dump(const Value& v, int indent, int depth, std::string& out) {
  const auto newline = [&](int d) {
    if (indent >= 0) {
      out += '\n';
      out.append(static_cast<size_t>(indent * d), ' ');
    }
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  if (v.is_list()) {
    const List& list = v.as_list();
    if (list.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < list.size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      json_dump(list[i], indent, depth + 1, out);
    }
    newline(depth);
    out += ']';
  } else if (v.is_dict()) {
    const Dict& dict = v.as_dict();
    if (dict.items.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    for (size_t i = 0; i < dict.items.size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      json_string(dict.items[i].first, out);
      out += ": ";
      json_dump(dict.items[i].second, indent, depth + 1, out);
    }
    newline(depth);
    out += '}';
  } else if (v.is_string()) {
    json_string(v.as_string(), out);
  } else if (v.is_none() || v.is_undefined()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    const double d = v.as_number();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : python_float_repr(d);
  } else {
    out += "null";
  }
}

}  // namespace

std::string Value::repr() const {
  if (is_string()) return repr_string(as_string());
  if (is_list()) {
    std::string out = tuple_ ? "(" : "[";
    for (size_t i = 0; i < as_list().size(); ++i) out += (i ? ", " : "") + as_list()[i].repr();
    if (tuple_ && as_list().size() == 1) out += ",";
    return out + (tuple_ ? ")" : "]");
  }
  if (is_dict()) {
    std::string out = "{";
    for (size_t i = 0; i < as_dict().items.size(); ++i) {
      out += (i ? ", " : "") + repr_string(as_dict().items[i].first) + ": " + as_dict().items[i].second.repr();
    }
    return out + "}";
  }
  return str();
}

std::string Value::str() const {
  switch (data_.index()) {
    case 0: return "";
    case 1: return "None";
    case 2: return as_bool() ? "True" : "False";
    case 3: return std::to_string(as_int());
    case 4: return python_float_repr(std::get<double>(data_));
    case 5: return as_string();
    case 6: case 7: return repr();
    default: return fmt::format("<function {}>", as_callable().name);
  }
}

std::string Value::to_json(int indent) const {
  std::string out;
  json_dump(*this, indent, 0, out);
  return out;
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_number() == b.as_number();
  }
  if (a.is_bool() && b.is_number()) return (a.as_bool() ? 1.0 : 0.0) == b.as_number();
  if (a.is_number() && b.is_bool()) return b == a;
  if (a.data_.index() != b.data_.index()) return false;
  switch (a.data_.index()) {
    case 0: case 1: return true;
    case 2: return a.as_bool() == b.as_bool();
    case 5: return a.as_string() == b.as_string();
    case 6: return a.as_list() == b.as_list();
    case 7: {
      const Dict &x = a.as_dict(), &y = b.as_dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* w = y.find(k);
        if (!w || !(*w == v)) return false;
      }
      return true;
    }
    case 8: return a.as_callable().name == b.as_callable().name;
    default: return a.as_number() == b.as_number();
  }
}

bool less_than(const Value& a, const Value& b, bool& ok) {
  ok = true;
  const auto num = [](const Value& v) { return v.is_bool() ? (v.as_bool() ? 1.0 : 0.0) : v.as_number(); };
  if ((a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool())) return num(a) < num(b);
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const List &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i] == y[i]) continue;
      return less_than(x[i], y[i], ok);
    }
    return x.size() < y.size();
  }
  ok = false;
  return false;
}

}  // namespace mach::text::jinja
