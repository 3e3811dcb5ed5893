// Values of the Jinja interpreter, with Python's semantics where templates can observe them: truthiness,
// str() and repr() spelling (None, True, 'quoted'), float formatting, equality and ordering, and
// json.dumps output for the tojson filter (Hugging Face's: ensure_ascii=False, ", " and ": " separators).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace mach::text::jinja {

class Value;
using List = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;

// Insertion-ordered string-keyed map (Python dicts keep order, and tojson output depends on it).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // {% set ns.attr = ... %} is only allowed on namespace() objects
  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
};

struct Callable {
  std::string name;
  std::function<Value(List& args, Kwargs& kwargs)> call;
};

struct Undefined {
  std::string name;  // what was looked up, for error messages
};

class Value {
 public:
  using Data = std::variant<Undefined, std::nullptr_t, bool, int64_t, double, std::string, std::shared_ptr<List>,
                            std::shared_ptr<Dict>, std::shared_ptr<Callable>>;
  Value() : data_(Undefined{}) {}
  Value(std::nullptr_t) : data_(nullptr) {}
  Value(bool b) : data_(b) {}
  Value(int v) : data_(static_cast<int64_t>(v)) {}
  Value(int64_t v) : data_(v) {}
  Value(double v) : data_(v) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(List l) : data_(std::make_shared<List>(std::move(l))) {}
  Value(std::shared_ptr<Dict> d) : data_(std::move(d)) {}
  Value(Callable c) : data_(std::make_shared<Callable>(std::move(c))) {}
  static Value undefined(std::string name) { return Value(Data(Undefined{std::move(name)})); }
  // A tuple: a list that prints as (a, b) (tuple literals, dict.items() pairs).
  static Value tuple(List items) {
    Value v(std::move(items));
    v.tuple_ = true;
    return v;
  }
  bool is_tuple() const { return tuple_; }
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return data_.index() == 0; }
  bool is_none() const { return data_.index() == 1; }
  bool is_bool() const { return data_.index() == 2; }
  bool is_int() const { return data_.index() == 3; }
  bool is_float() const { return data_.index() == 4; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return data_.index() == 5; }
  bool is_list() const { return data_.index() == 6; }
  bool is_dict() const { return data_.index() == 7; }
  bool is_callable() const { return data_.index() == 8; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_number() const { return is_int() ? static_cast<double>(as_int()) : std::get<double>(data_); }
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const List& as_list() const { return *std::get<std::shared_ptr<List>>(data_); }
  const Dict& as_dict() const { return *std::get<std::shared_ptr<Dict>>(data_); }
  Dict& as_mutable_dict() const { return *std::get<std::shared_ptr<Dict>>(data_); }
  const Callable& as_callable() const { return *std::get<std::shared_ptr<Callable>>(data_); }
  const std::string& undefined_name() const { return std::get<Undefined>(data_).name; }

  bool truthy() const;
  // Python's str(): what {{ value }} prints (undefined prints nothing).
  std::string str() const;
  // Python's repr(): how values print inside lists and dicts.
  std::string repr() const;
  // Python's json.dumps(value, ensure_ascii=False, indent=indent); indent < 0 means none.
  std::string to_json(int indent = -1) const;
  // Python type names for error messages ("str", "int", "list", "dict", "NoneType", "undefined").
  const char* type_name() const;

  friend bool operator==(const Value& a, const Value& b);

 private:
  explicit Value(Data d) : data_(std::move(d)) {}
  Data data_;
  bool tuple_ = false;
};

// Python's < for numbers, strings and lists; false (with ok=false) for other combinations.
bool less_than(const Value& a, const Value& b, bool& ok);
std::string python_float_repr(double v);

}  // namespace mach::text::jinja
