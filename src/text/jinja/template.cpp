#include "text/jinja/template.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <ctime>
#include <unordered_map>

#include "text/jinja/builtins.hpp"
#include "text/jinja/parser.hpp"

namespace mach::text::jinja {

namespace {

enum class Flow { normal, break_, continue_ };

// Bounds that keep a hostile or broken template from exhausting memory or the stack.
constexpr size_t kMaxItems = 1 << 20;         // range() length
constexpr size_t kMaxOutput = 64 << 20;       // bytes rendered
constexpr int kMaxMacroDepth = 64;
constexpr size_t kMaxSteps = 10'000'000;     // statements executed

struct Macro {
  const Node* node;
};

class Renderer {
 public:
  explicit Renderer(const nlohmann::ordered_json& context) {
    scopes_.emplace_back();
    auto& globals = scopes_.back();
    globals["namespace"] = Value(Callable{"namespace", [](List& args, Kwargs& kwargs) {
      auto ns = std::make_shared<Dict>();
      ns->is_namespace = true;
      for (const auto& a : args) {
        if (a.is_dict()) {
          for (const auto& [k, v] : a.as_dict().items) ns->set(k, v);
        }
      }
      for (auto& [k, v] : kwargs) ns->set(k, v);
      return Value(ns);
    }});
    globals["dict"] = Value(Callable{"dict", [](List&, Kwargs& kwargs) {
      auto d = std::make_shared<Dict>();
      for (auto& [k, v] : kwargs) d->set(k, v);
      return Value(d);
    }});
    globals["range"] = Value(Callable{"range", [](List& args, Kwargs&) {
      int64_t start = 0, stop = 0, step = 1;
      if (args.empty() || args.size() > 3) render_fail("range() takes 1 to 3 integer arguments");
      for (const auto& x : args) {
        if (!x.is_int()) render_fail(fmt::format("range() arguments must be integers, not '{}'", x.type_name()));
      }
      if (args.size() == 1) stop = args[0].as_int();
      if (args.size() >= 2) start = args[0].as_int(), stop = args[1].as_int();
      if (args.size() >= 3) step = args[2].as_int();
      if (step == 0) render_fail("range() step must not be zero");
      List out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (out.size() >= kMaxItems) render_fail(fmt::format("range() longer than {} items", kMaxItems));
        out.push_back(Value(i));
        if (__builtin_add_overflow(i, step, &i)) break;
      }
      return Value(out);
    }});
    globals["raise_exception"] = Value(Callable{"raise_exception", [](List& args, Kwargs&) -> Value {
      render_fail(fmt::format("the template raised: {}", args.empty() ? "" : args[0].str()));
    }});
    globals["strftime_now"] = Value(Callable{"strftime_now", [](List& args, Kwargs&) {
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), args.empty() ? "%Y-%m-%d" : args[0].str().c_str(), &tm);
      return Value(std::string(buf, n));
    }});
    for (auto it = context.begin(); it != context.end(); ++it) globals[it.key()] = Value::from_json(it.value());
  }

  void render(const Body& body, std::string& out) { exec(body, out); }

 private:
  [[noreturn]] void fail(int line, const std::string& what) const { render_fail(fmt::format("template line {}: {}", line, what)); }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (auto f = it->find(name); f != it->end()) return f->second;
    }
    return Value::undefined(name);
  }

  Flow exec(const Body& body, std::string& out) {
    for (const Node& n : body) {
      const Flow flow = exec(n, out);
      if (flow != Flow::normal) return flow;
    }
    return Flow::normal;
  }

  Flow exec(const Node& n, std::string& out) {
    if (out.size() > kMaxOutput) fail(n.line, fmt::format("output larger than {} bytes", kMaxOutput));
    if (++steps_ > kMaxSteps) fail(n.line, fmt::format("more than {} statements executed", kMaxSteps));
    try {
      switch (n.kind) {
        case Node::Kind::text: out += n.text; break;
        case Node::Kind::output: out += eval(*n.expr).str(); break;
        case Node::Kind::if_:
          for (const auto& [cond, branch] : n.branches) {
            if (!cond || eval(*cond).truthy()) return exec(branch, out);
          }
          break;
        case Node::Kind::for_: return exec_for(n, out);
        case Node::Kind::set: assign(n, eval(*n.expr)); break;
        case Node::Kind::set_block: {
          std::string captured;
          exec(n.body, captured);
          assign(n, Value(captured));
          break;
        }
        case Node::Kind::macro: define_macro(n); break;
        case Node::Kind::call_macro: break;
        case Node::Kind::break_: return Flow::break_;
        case Node::Kind::continue_: return Flow::continue_;
      }
    } catch (const RenderError& e) {
      if (e.message.starts_with("template line ")) throw;
      fail(n.line, e.message);
    } catch (const std::bad_variant_access&) {
      fail(n.line, "a value of the wrong type (e.g. a string where a number is needed)");
    }
    return Flow::normal;
  }

  void assign(const Node& n, Value v) {
    if (n.attribute_target) {
      const Value ns = lookup(n.targets[0]);
      if (!ns.is_dict() || !ns.as_dict().is_namespace) {
        fail(n.line, fmt::format("cannot assign to '{}.{}': only namespace() objects take attributes", n.targets[0],
                                 n.targets[1]));
      }
      ns.as_mutable_dict().set(n.targets[1], std::move(v));
      return;
    }
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return;
    }
    const List items = iterate(v);
    if (items.size() != n.targets.size()) fail(n.line, fmt::format("cannot unpack {} values into {}", items.size(), n.targets.size()));
    for (size_t i = 0; i < items.size(); ++i) scopes_.back()[n.targets[i]] = items[i];
  }

  Flow exec_for(const Node& n, std::string& out) {
    const List all = iterate(eval(*n.expr));
    scopes_.emplace_back();
    List items;
    for (const auto& item : all) {
      if (n.condition) {
        bind_targets(n, item);
        if (!eval(*n.condition).truthy()) continue;
      }
      items.push_back(item);
    }
    const auto size = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < size; ++i) {
      bind_targets(n, items[static_cast<size_t>(i)]);
      auto loop = std::make_shared<Dict>();
      loop->set("index0", Value(i));
      loop->set("index", Value(i + 1));
      loop->set("revindex0", Value(size - i - 1));
      loop->set("revindex", Value(size - i));
      loop->set("first", Value(i == 0));
      loop->set("last", Value(i == size - 1));
      loop->set("length", Value(size));
      loop->set("previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("previtem"));
      loop->set("nextitem", i + 1 < size ? items[static_cast<size_t>(i + 1)] : Value::undefined("nextitem"));
      loop->set("cycle", Value(Callable{"cycle", [i](List& args, Kwargs&) {
        if (args.empty()) render_fail("loop.cycle needs arguments");
        return args[static_cast<size_t>(i) % args.size()];
      }}));
      scopes_.back()["loop"] = Value(loop);
      if (exec(n.body, out) == Flow::break_) break;
    }
    if (items.empty()) exec(n.else_body, out);
    scopes_.pop_back();
    return Flow::normal;
  }

  void bind_targets(const Node& n, const Value& item) {
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = item;
      return;
    }
    const List parts = iterate(item);
    if (parts.size() != n.targets.size()) fail(n.line, fmt::format("cannot unpack {} values into {}", parts.size(), n.targets.size()));
    for (size_t i = 0; i < parts.size(); ++i) scopes_.back()[n.targets[i]] = parts[i];
  }

  void define_macro(const Node& n) {
    const Node* node = &n;
    scopes_.back()[n.name] = Value(Callable{n.name, [this, node](List& args, Kwargs& kwargs) {
      std::unordered_map<std::string, Value> frame;
      for (size_t i = 0; i < node->params.size(); ++i) {
        const auto& [pname, def] = node->params[i];
        Value v = i < args.size() ? args[i] : Value::undefined(pname);
        for (auto& [k, kv] : kwargs) {
          if (k == pname) v = kv;
        }
        if (v.is_undefined() && def) v = eval(*def);
        frame[pname] = v;
      }
      if (++macro_depth_ > kMaxMacroDepth) render_fail(fmt::format("macro calls nested deeper than {}", kMaxMacroDepth));
      scopes_.push_back(std::move(frame));
      std::string out;
      exec(node->body, out);
      scopes_.pop_back();
      --macro_depth_;
      return Value(out);
    }});
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::literal: return e.value;
      case Expr::Kind::name: return lookup(e.name);
      case Expr::Kind::list:
      case Expr::Kind::tuple: {
        List items;
        for (const auto& a : e.args) items.push_back(eval(*a));
        return e.kind == Expr::Kind::tuple ? Value::tuple(std::move(items)) : Value(std::move(items));
      }
      case Expr::Kind::dict: {
        auto d = std::make_shared<Dict>();
        for (const auto& [k, v] : e.dict_items) d->set(eval(*k).str(), eval(*v));
        return Value(d);
      }
      case Expr::Kind::attribute: return get_attribute(eval(*e.args[0]), e.name);
      case Expr::Kind::subscript: return get_item(eval(*e.args[0]), eval(*e.args[1]));
      case Expr::Kind::slice: return slice(e);
      case Expr::Kind::call: {
        const Value callee = eval(*e.args[0]);
        if (!callee.is_callable()) {
          fail(e.line, callee.is_undefined() ? fmt::format("'{}' is undefined (called as a function)", callee.undefined_name())
                                             : fmt::format("'{}' object is not callable", callee.type_name()));
        }
        List args;
        for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
        Kwargs kwargs;
        for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v));
        return callee.as_callable().call(args, kwargs);
      }
      case Expr::Kind::filter: {
        List args;
        for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
        Kwargs kwargs;
        for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v));
        return apply_filter(e.name, eval(*e.args[0]), args, kwargs);
      }
      case Expr::Kind::test: {
        List args;
        for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
        return Value(apply_test(e.name, eval(*e.args[0]), args) != e.negated);
      }
      case Expr::Kind::unary: {
        const Value v = eval(*e.args[0]);
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number()) fail(e.line, fmt::format("bad operand type for unary {}: '{}'", e.name, v.type_name()));
        if (e.name == "+") return v;
        if (v.is_int() && v.as_int() == std::numeric_limits<int64_t>::min()) fail(e.line, "integer overflow in unary -");
        return v.is_int() ? Value(-v.as_int()) : Value(-v.as_number());
      }
      case Expr::Kind::binary: return binary(e);
      case Expr::Kind::compare: return compare_chain(e);
      case Expr::Kind::ternary:
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined("ternary");
    }
    return Value();
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.args[0]);
    const List items = iterate(obj);
    const auto n = static_cast<int64_t>(items.size());
    const auto bound = [&](const ExprPtr& x) -> std::optional<int64_t> {
      if (!x) return std::nullopt;
      const Value v = eval(*x);
      if (v.is_none()) return std::nullopt;
      if (!v.is_int()) fail(e.line, "slice indices must be integers");
      return v.as_int();
    };
    const int64_t step = bound(e.args[3]).value_or(1);
    if (step == 0) fail(e.line, "slice step cannot be zero");
    const auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = clamp(bound(e.args[1]), step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bound(e.args[2]), step > 0 ? n : -1);
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
      out.push_back(items[static_cast<size_t>(i)]);
      if (__builtin_add_overflow(i, step, &i)) break;
    }
    if (obj.is_string()) {
      std::string s;
      for (const auto& c : out) s += c.as_string();
      return Value(s);
    }
    return Value(out);
  }

  // a < b < c: Python's chain, (a < b) and (b < c) with b evaluated once.
  Value compare_chain(const Expr& e) {
    Value left = eval(*e.args[0]);
    for (size_t i = 0; i < e.ops.size(); ++i) {
      Value right = eval(*e.args[i + 1]);
      if (!compare(e, e.ops[i], left, right)) return Value(false);
      left = std::move(right);
    }
    return Value(true);
  }

  bool compare(const Expr& e, const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return a == b;
    if (op == "!=") return !(a == b);
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.is_string()) {
        if (!a.is_string()) fail(e.line, fmt::format("'in <string>' requires string as left operand, not {}", a.type_name()));
        found = b.as_string().find(a.as_string()) != std::string::npos;
      } else if (b.is_dict()) {
        found = a.is_string() && b.as_dict().find(a.as_string());
      } else if (b.is_list()) {
        found = std::find(b.as_list().begin(), b.as_list().end(), a) != b.as_list().end();
      } else if (!b.is_undefined()) {
        fail(e.line, fmt::format("argument of type '{}' is not iterable", b.type_name()));
      }
      return found == (op == "in");
    }
    bool ok = true;
    const bool r = op == "<" ? less_than(a, b, ok) : op == ">" ? less_than(b, a, ok)
                   : op == "<=" ? !less_than(b, a, ok) : !less_than(a, b, ok);
    if (!ok) fail(e.line, fmt::format("'{}' not supported between '{}' and '{}'", op, a.type_name(), b.type_name()));
    return r;
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? a : eval(*e.args[1]);
    }
    const Value a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "~") return Value(a.str() + b.str());
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
      if (a.is_list() && b.is_list()) {
        List out = a.as_list();
        out.insert(out.end(), b.as_list().begin(), b.as_list().end());
        return Value(out);
      }
    }
    if (op == "*" && ((a.is_string() && b.is_int()) || (a.is_int() && b.is_string()))) {
      const std::string& s = a.is_string() ? a.as_string() : b.as_string();
      const int64_t times = a.is_int() ? a.as_int() : b.as_int();
      // An empty string repeated any number of times is empty: return before looping `times` times.
      if (times <= 0 || s.empty()) return Value(std::string());
      if (static_cast<uint64_t>(times) > kMaxOutput / s.size()) fail(e.line, "string repetition too large");
      std::string out;
      out.reserve(s.size() * static_cast<size_t>(times));
      for (int64_t i = 0; i < times; ++i) out += s;
      return Value(out);
    }
    const auto number = [](const Value& v) { return v.is_number() || v.is_bool(); };
    if (!number(a) || !number(b)) {
      if (a.is_undefined() || b.is_undefined()) {
        fail(e.line, fmt::format("'{}' is undefined", a.is_undefined() ? a.undefined_name() : b.undefined_name()));
      }
      fail(e.line, fmt::format("unsupported operand types for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
    }
    const auto as_int = [](const Value& v) { return v.is_bool() ? static_cast<int64_t>(v.as_bool()) : v.as_int(); };
    const auto as_num = [](const Value& v) { return v.is_bool() ? (v.as_bool() ? 1.0 : 0.0) : v.as_number(); };
    const bool ints = !a.is_float() && !b.is_float();
    // Python integers do not overflow; ours are 64-bit, so an overflowing integer result is an error
    // rather than a wrapped (undefined) value.
    const auto checked = [&](bool overflow, const int64_t& r) {
      if (overflow) fail(e.line, fmt::format("integer overflow in '{}'", op));
      return Value(r);
    };
    int64_t r = 0;
    if (ints && (op == "+" || op == "-" || op == "*")) {
      const bool overflow = op == "+"   ? __builtin_add_overflow(as_int(a), as_int(b), &r)
                            : op == "-" ? __builtin_sub_overflow(as_int(a), as_int(b), &r)
                                        : __builtin_mul_overflow(as_int(a), as_int(b), &r);
      return checked(overflow, r);
    }
    if (op == "+") return Value(as_num(a) + as_num(b));
    if (op == "-") return Value(as_num(a) - as_num(b));
    if (op == "*") return Value(as_num(a) * as_num(b));
    if (op == "**") {
      if (!ints || as_int(b) < 0) return Value(std::pow(as_num(a), as_num(b)));
      int64_t base = as_int(a), result = 1;
      for (int64_t n = as_int(b); n > 0; n >>= 1) {
        if ((n & 1) && __builtin_mul_overflow(result, base, &result)) return checked(true, 0);
        if (n > 1 && __builtin_mul_overflow(base, base, &base)) return checked(true, 0);
      }
      return Value(result);
    }
    if (as_num(b) == 0) fail(e.line, "division by zero");
    if (op == "/") return Value(as_num(a) / as_num(b));
    if (ints && as_int(b) == -1 && as_int(a) == std::numeric_limits<int64_t>::min()) return checked(true, 0);
    if (op == "//") {
      if (ints) {
        const int64_t q = as_int(a) / as_int(b);
        return Value((as_int(a) % as_int(b) != 0 && ((as_int(a) < 0) != (as_int(b) < 0))) ? q - 1 : q);
      }
      return Value(std::floor(as_num(a) / as_num(b)));
    }
    if (op == "%") {
      if (ints) {
        const int64_t r = as_int(a) % as_int(b);
        return Value(r != 0 && ((r < 0) != (as_int(b) < 0)) ? r + as_int(b) : r);
      }
      const double r = std::fmod(as_num(a), as_num(b));
      return Value(r != 0 && ((r < 0) != (as_num(b) < 0)) ? r + as_num(b) : r);
    }
    fail(e.line, fmt::format("unknown operator '{}'", op));
  }

  std::vector<std::unordered_map<std::string, Value>> scopes_;
  int macro_depth_ = 0;
  size_t steps_ = 0;
};

}  // namespace

Result<Template> Template::parse(std::string_view source) {
  auto body = parse_template(source);
  if (!body) return body.error();
  Template t;
  t.body_ = std::make_shared<const Body>(std::move(*body));
  return t;
}

Result<std::string> Template::render(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) return Error{Errc::invalid_argument, "template context must be a JSON object"};
  try {
    Renderer renderer(context);
    std::string out;
    if (body_) renderer.render(*body_, out);
    return out;
  } catch (const RenderError& e) {
    return Error{Errc::invalid_argument, e.message};
  } catch (const std::exception& e) {
    return Error{Errc::invalid_argument, fmt::format("template rendering failed: {}", e.what())};
  }
}

}  // namespace mach::text::jinja
