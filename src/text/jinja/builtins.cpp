#include "text/jinja/builtins.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "text/utf8.hpp"

namespace mach::text::jinja {

void render_fail(std::string message) { throw RenderError{std::move(message)}; }

namespace {

// Positional argument `index`, else keyword argument `name`, else fallback. By value: fallbacks are temporaries.
Value arg(List& args, Kwargs& kwargs, size_t index, const char* name, const Value& fallback) {
  if (index < args.size()) return args[index];
  for (auto& [k, v] : kwargs) {
    if (k == name) return v;
  }
  return fallback;
}

std::string need_string(const Value& v, const char* what) {
  if (!v.is_string()) render_fail(fmt::format("{} needs a string, got {}", what, v.type_name()));
  return v.as_string();
}

std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::max<size_t>(1, utf8_length_at(s, i));
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Python's str.isspace().
bool is_py_space(char32_t c) { return (is_js_whitespace(c) && c != 0xFEFF) || (c >= 0x1C && c <= 0x1F) || c == 0x85; }

// Python's str.strip family: chars == nullptr strips whitespace.
std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  const auto cps = code_points(s);
  const auto set = chars.is_string() ? code_points(chars.as_string()) : std::vector<std::string>{};
  const auto strip_me = [&](const std::string& cp) {
    if (chars.is_string()) return std::find(set.begin(), set.end(), cp) != set.end();
    const Utf8Step step = utf8_step(cp, 0);
    return step.status == Utf8Status::ok && is_py_space(step.code_point);
  };
  size_t b = 0, e = cps.size();
  if (left) while (b < e && strip_me(cps[b])) ++b;
  if (right) while (e > b && strip_me(cps[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) out += cps[i];
  return out;
}

List split(const std::string& s, const Value& sep, int64_t maxsplit) {
  List out;
  if (sep.is_none() || sep.is_undefined()) {  // runs of whitespace, no empty strings
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = s.size();
        while (e > i && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
        out.push_back(Value(s.substr(i, e - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back(Value(s.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  const std::string& d = need_string(sep, "split");
  if (d.empty()) render_fail("split: empty separator");
  size_t start = 0;
  for (size_t pos; (pos = s.find(d, start)) != std::string::npos;) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    out.push_back(Value(s.substr(start, pos - start)));
    start = pos + d.size();
  }
  out.push_back(Value(s.substr(start)));
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  int64_t done = 0;
  for (size_t pos = s.find(from); pos != std::string::npos && (count < 0 || done < count);
       pos = s.find(from, pos + to.size()), ++done) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

std::string title_case(const std::string& s, bool only_first) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    const bool alpha = std::isalpha(static_cast<unsigned char>(c));
    if (alpha) c = static_cast<char>(start ? std::toupper(c) : std::tolower(c));
    if (only_first) {
      if (!start && alpha) c = static_cast<char>(std::tolower(c));
      start = false;
    } else {
      start = !alpha;
    }
  }
  return out;
}

// jinja2's title filter (not str.title): words begin after runs of '-', whitespace, '(', '{', '[' or '<', and a
// word's first character is upper-cased whatever it is ("{'a': 1}" stays "{'a': 1}").
std::string jinja_title(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    if (std::string_view("-({[< \t\n\r\f\v").find(c) != std::string_view::npos) {
      start = true;
    } else {
      c = static_cast<char>(start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
      start = false;
    }
  }
  return out;
}

Value bound(std::string name, std::function<Value(List&, Kwargs&)> fn) { return Value(Callable{std::move(name), std::move(fn)}); }

Value string_method(const std::string& s, const std::string& name) {
  static const Value kNone(nullptr);
  const auto text = s;
  if (name == "startswith" || name == "endswith") {
    return bound(name, [text, name](List& a, Kwargs& k) {
      const Value p = arg(a, k, 0, "prefix", kNone);
      const auto check = [&](const std::string& x) {
        return name == "startswith" ? text.starts_with(x) : text.ends_with(x);
      };
      if (p.is_list()) {
        for (const auto& x : p.as_list()) {
          if (check(need_string(x, name.c_str()))) return Value(true);
        }
        return Value(false);
      }
      return Value(check(need_string(p, name.c_str())));
    });
  }
  if (name == "split" || name == "rsplit") {
    return bound(name, [text, name](List& a, Kwargs& k) {
      const Value sep = arg(a, k, 0, "sep", kNone);
      const Value max = arg(a, k, 1, "maxsplit", Value(-1));
      if (name == "rsplit" && max.as_int() >= 0) render_fail("rsplit with maxsplit is not supported");
      return Value(split(text, sep, max.as_int()));
    });
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return bound(name, [text, name](List& a, Kwargs& k) {
      return Value(strip(text, arg(a, k, 0, "chars", kNone), name != "rstrip", name != "lstrip"));
    });
  }
  if (name == "upper" || name == "lower") {
    return bound(name, [text, name](List&, Kwargs&) {
      std::string out = text;
      for (char& c : out) c = static_cast<char>(name == "upper" ? std::toupper(c) : std::tolower(c));
      return Value(out);
    });
  }
  if (name == "title" || name == "capitalize") {
    return bound(name, [text, name](List&, Kwargs&) { return Value(title_case(text, name == "capitalize")); });
  }
  if (name == "replace") {
    return bound(name, [text](List& a, Kwargs& k) {
      return Value(replace_all(text, need_string(arg(a, k, 0, "old", kNone), "replace"),
                               need_string(arg(a, k, 1, "new", kNone), "replace"), arg(a, k, 2, "count", Value(-1)).as_int()));
    });
  }
  if (name == "find" || name == "count") {
    return bound(name, [text, name](List& a, Kwargs& k) {
      const std::string& sub = need_string(arg(a, k, 0, "sub", kNone), name.c_str());
      if (name == "find") {
        const size_t pos = text.find(sub);
        return Value(pos == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(text.substr(0, pos)).size()));
      }
      int64_t n = 0;
      for (size_t pos = text.find(sub); pos != std::string::npos && !sub.empty(); pos = text.find(sub, pos + sub.size())) ++n;
      return Value(n);
    });
  }
  if (name == "join") {
    return bound(name, [text](List& a, Kwargs& k) {
      std::string out;
      const List items = iterate(arg(a, k, 0, "iterable", kNone));
      for (size_t i = 0; i < items.size(); ++i) out += (i ? text : "") + need_string(items[i], "join");
      return Value(out);
    });
  }
  if (name == "splitlines") {
    return bound(name, [text](List&, Kwargs&) {
      List out;
      size_t start = 0;
      for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n' || text[i] == '\r') {
          out.push_back(Value(text.substr(start, i - start)));
          if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < text.size()) out.push_back(Value(text.substr(start)));
      return Value(out);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum") {
    return bound(name, [text, name](List&, Kwargs&) {
      if (text.empty()) return Value(false);
      for (unsigned char c : text) {
        const bool ok = name == "isdigit" ? std::isdigit(c) : name == "isalpha" ? std::isalpha(c)
                        : name == "isspace" ? std::isspace(c) : std::isalnum(c);
        if (!ok) return Value(false);
      }
      return Value(true);
    });
  }
  return Value::undefined(name);
}

Value dict_method(const Value& obj, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values") {
    return bound(name, [obj, name](List&, Kwargs&) {
      List out;
      for (const auto& [k, v] : obj.as_dict().items) {
        if (name == "items") out.push_back(Value::tuple(List{Value(k), v}));
        else out.push_back(name == "keys" ? Value(k) : v);
      }
      return Value(out);
    });
  }
  if (name == "get") {
    return bound(name, [obj](List& a, Kwargs& k) {
      static const Value kNone(nullptr);
      const Value key = arg(a, k, 0, "key", kNone);
      const Value* found = key.is_string() ? obj.as_dict().find(key.as_string()) : nullptr;
      return found ? *found : arg(a, k, 1, "default", kNone);
    });
  }
  return Value::undefined(name);
}

}  // namespace

List iterate(const Value& v) {
  if (v.is_list()) return v.as_list();
  if (v.is_dict()) {
    List keys;
    for (const auto& [k, unused] : v.as_dict().items) keys.push_back(Value(k));
    return keys;
  }
  if (v.is_string()) {
    List chars;
    for (auto& cp : code_points(v.as_string())) chars.push_back(Value(cp));
    return chars;
  }
  if (v.is_undefined() || v.is_none()) {
    if (v.is_none()) render_fail("'NoneType' object is not iterable");
    return {};
  }
  render_fail(fmt::format("'{}' object is not iterable", v.type_name()));
}

Value get_attribute(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) render_fail(fmt::format("'{}' is undefined (reading .{})", obj.undefined_name(), name));
  if (obj.is_string()) return string_method(obj.as_string(), name);
  if (obj.is_dict()) {
    if (!obj.as_dict().is_namespace) {
      Value method = dict_method(obj, name);
      if (!method.is_undefined()) return method;
    }
    const Value* v = obj.as_dict().find(name);
    return v ? *v : Value::undefined(name);
  }
  return Value::undefined(name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) render_fail(fmt::format("'{}' is undefined (reading [{}])", obj.undefined_name(), key.repr()));
  if (obj.is_dict()) {
    const Value* v = key.is_string() ? obj.as_dict().find(key.as_string()) : nullptr;
    return v ? *v : Value::undefined(key.str());
  }
  if ((obj.is_list() || obj.is_string()) && key.is_int()) {
    const List items = obj.is_list() ? obj.as_list() : iterate(obj);
    int64_t i = key.as_int();
    if (i < 0) i += static_cast<int64_t>(items.size());
    if (i < 0 || i >= static_cast<int64_t>(items.size())) return Value::undefined(key.str());
    return items[static_cast<size_t>(i)];
  }
  if (key.is_string()) return get_attribute(obj, key.as_string());
  return Value::undefined(key.str());
}

bool apply_test(const std::string& name, const Value& v, List& args) {
  const auto need = [&](size_t n) {
    if (args.size() < n) render_fail(fmt::format("test '{}' needs {} argument(s)", name, n));
    return args[n - 1];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number() || v.is_bool();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "sequence" || name == "iterable") return v.is_list() || v.is_string() || v.is_dict();
  if (name == "callable") return v.is_callable();
  if (name == "even" || name == "odd") {
    if (!v.is_int()) render_fail(fmt::format("test '{}' needs an integer", name));
    return (v.as_int() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") return v.is_int() && need(1).is_int() && need(1).as_int() && v.as_int() % need(1).as_int() == 0;
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") return v == need(1);
  if (name == "ne" || name == "!=") return !(v == need(1));
  bool ok = true;
  if (name == "lt" || name == "lessthan") return less_than(v, need(1), ok);
  if (name == "gt" || name == "greaterthan") return less_than(need(1), v, ok);
  if (name == "le") return !less_than(need(1), v, ok);
  if (name == "ge") return !less_than(v, need(1), ok);
  if (name == "in") {
    const Value& c = need(1);
    if (c.is_string() && v.is_string()) return c.as_string().find(v.as_string()) != std::string::npos;
    for (const auto& x : iterate(c)) {
      if (x == v) return true;
    }
    return false;
  }
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    for (char c : v.as_string()) {
      if (name == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c))) return false;
    }
    return true;
  }
  render_fail(fmt::format("unknown test '{}'", name));
}

namespace {

Value attribute_path(const Value& v, const Value& path) {
  Value cur = v;
  for (const auto& part : split(path.str(), Value("."), -1)) {
    const std::string& p = part.as_string();
    const bool numeric = !p.empty() && p.size() < 18 && std::all_of(p.begin(), p.end(), ::isdigit);
    cur = numeric ? get_item(cur, Value(static_cast<int64_t>(std::stoll(p)))) : get_item(cur, Value(p));
  }
  return cur;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

Value apply_filter(const std::string& name, Value v, List& args, Kwargs& kwargs) {
  static const Value kNone(nullptr);
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value(static_cast<int64_t>(code_points(v.as_string()).size()));
    if (v.is_list()) return Value(static_cast<int64_t>(v.as_list().size()));
    if (v.is_dict()) return Value(static_cast<int64_t>(v.as_dict().items.size()));
    if (v.is_undefined()) return Value(int64_t{0});
    render_fail(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
  if (name == "tojson") {
    const Value indent = arg(args, kwargs, 0, "indent", kNone);
    return Value(v.to_json(indent.is_int() ? static_cast<int>(indent.as_int()) : -1));
  }
  if (name == "string") return Value(v.str());
  if (name == "safe") return v;
  if (name == "e" || name == "escape") return Value(html_escape(v.str()));
  // jinja2's string filters work on str(value): ['a', None] | upper is "['A', NONE]" (Gemma 4's template upper-cases
  // JSON schema types, which may be lists).
  if (name == "trim") return Value(strip(v.str(), arg(args, kwargs, 0, "chars", kNone), true, true));
  if (name == "title") return Value(jinja_title(v.str()));
  if (name == "upper" || name == "lower" || name == "capitalize") {
    List none;
    Kwargs nokw;
    return string_method(v.str(), name).as_callable().call(none, nokw);
  }
  if (name == "replace") {
    return Value(replace_all(v.str(), arg(args, kwargs, 0, "old", kNone).str(), arg(args, kwargs, 1, "new", kNone).str(),
                             arg(args, kwargs, 2, "count", Value(-1)).as_int()));
  }
  if (name == "default" || name == "d") {
    const bool boolean = arg(args, kwargs, 1, "boolean", Value(false)).truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return arg(args, kwargs, 0, "default_value", Value(""));
    return v;
  }
  if (name == "join") {
    const std::string sep = arg(args, kwargs, 0, "d", Value("")).str();
    const Value attribute = arg(args, kwargs, 1, "attribute", kNone);
    std::string out;
    const List items = iterate(v);
    for (size_t i = 0; i < items.size(); ++i) {
      out += (i ? sep : "") + (attribute.is_none() ? items[i] : attribute_path(items[i], attribute)).str();
    }
    return Value(out);
  }
  if (name == "first" || name == "last") {
    const List items = iterate(v);
    if (items.empty()) return Value::undefined(name);
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value(iterate(v));
  if (name == "reverse") {
    if (v.is_string()) {
      auto cps = code_points(v.as_string());
      std::reverse(cps.begin(), cps.end());
      std::string out;
      for (auto& c : cps) out += c;
      return Value(out);
    }
    List items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value(items);
  }
  if (name == "int") {
    if (v.is_int()) return v;
    if (v.is_float()) {
      const double d = std::trunc(v.as_number());
      // Python raises on inf/nan and has big integers; out of int64 range falls back to the default.
      if (std::isfinite(d) && d >= -9.2233720368547758e18 && d < 9.2233720368547758e18) return Value(static_cast<int64_t>(d));
    }
    if (v.is_bool()) return Value(static_cast<int64_t>(v.as_bool()));
    if (v.is_string()) {
      try {
        return Value(static_cast<int64_t>(std::stoll(v.as_string())));
      } catch (...) {
      }
    }
    return arg(args, kwargs, 0, "default", Value(int64_t{0}));
  }
  if (name == "float") {
    if (v.is_number()) return Value(v.as_number());
    if (v.is_string()) {
      try {
        return Value(std::stod(v.as_string()));
      } catch (...) {
      }
    }
    return arg(args, kwargs, 0, "default", Value(0.0));
  }
  if (name == "abs") {
    if (v.is_int()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    return Value(std::fabs(v.as_number()));
  }
  if (name == "round") {
    const int64_t precision = arg(args, kwargs, 0, "precision", Value(0)).as_int();
    const double scale = std::pow(10.0, static_cast<double>(precision));
    return Value(std::round(v.as_number() * scale) / scale);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value(List{});
    List none;
    Kwargs nokw;
    return dict_method(v, "items").as_callable().call(none, nokw);
  }
  if (name == "unique") {
    List out;
    for (const auto& x : iterate(v)) {
      if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
    }
    return Value(out);
  }
  if (name == "sort" || name == "dictsort") {
    List items = name == "dictsort" ? apply_filter("items", v, args, kwargs).as_list() : iterate(v);
    const bool reverse = arg(args, kwargs, 0, "reverse", Value(false)).truthy();
    const Value attribute = arg(args, kwargs, 2, "attribute", kNone);
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      bool ok = true;
      const Value ka = attribute.is_none() ? a : attribute_path(a, attribute);
      const Value kb = attribute.is_none() ? b : attribute_path(b, attribute);
      const bool lt = reverse ? less_than(kb, ka, ok) : less_than(ka, kb, ok);
      if (!ok) render_fail(fmt::format("cannot sort {} and {}", ka.type_name(), kb.type_name()));
      return lt;
    });
    return Value(items);
  }
  if (name == "map") {
    List out;
    const Value attribute = arg(args, kwargs, 99, "attribute", kNone);
    for (const auto& x : iterate(v)) {
      if (!attribute.is_none()) {
        out.push_back(attribute_path(x, attribute));
      } else {
        if (args.empty()) render_fail("map needs a filter name or attribute=");
        List rest(args.begin() + 1, args.end());
        out.push_back(apply_filter(args[0].str(), x, rest, kwargs));
      }
    }
    return Value(out);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name.ends_with("attr");
    const bool keep = name.starts_with("select");
    List out;
    for (const auto& x : iterate(v)) {
      size_t next = 0;
      const Value subject = by_attr ? attribute_path(x, args.at(next++)) : x;
      bool pass;
      if (next < args.size()) {
        List rest(args.begin() + static_cast<ptrdiff_t>(next) + 1, args.end());
        pass = apply_test(args[next].str(), subject, rest);
      } else {
        pass = subject.truthy();
      }
      if (pass == keep) out.push_back(x);
    }
    return Value(out);
  }
  if (name == "sum") {
    const Value attribute = arg(args, kwargs, 0, "attribute", kNone);
    Value total = arg(args, kwargs, 1, "start", Value(int64_t{0}));
    for (const auto& x : iterate(v)) {
      const Value item = attribute.is_none() ? x : attribute_path(x, attribute);
      total = total.is_int() && item.is_int() ? Value(total.as_int() + item.as_int()) : Value(total.as_number() + item.as_number());
    }
    return total;
  }
  if (name == "min" || name == "max") {
    const List items = iterate(v);
    if (items.empty()) return Value::undefined(name);
    Value best = items[0];
    for (const auto& x : items) {
      bool ok = true;
      if (name == "min" ? less_than(x, best, ok) : less_than(best, x, ok)) best = x;
    }
    return best;
  }
  if (name == "indent") {
    const Value width = arg(args, kwargs, 0, "width", Value(4));
    const bool first = arg(args, kwargs, 1, "first", Value(false)).truthy();
    const bool blank = arg(args, kwargs, 2, "blank", Value(false)).truthy();
    const std::string pad = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(width.as_int()), ' ');
    const List lines = split(v.str(), Value("\n"), -1);
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string& l = lines[i].as_string();
      if (i) out += '\n';
      if ((i > 0 || first) && (blank || !l.empty())) out += pad;
      out += l;
    }
    return Value(out);
  }
  if (name == "wordcount") return Value(static_cast<int64_t>(split(v.str(), kNone, -1).size()));
  render_fail(fmt::format("unknown filter '{}'", name));
}

}  // namespace mach::text::jinja
