// The syntax tree of a parsed template: expressions and statements, each with its template line.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/value.hpp"

namespace mach::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    literal,    // value
    name,       // name
    list,       // args
    tuple,      // args
    dict,       // kwargs-style pairs in dict_items
    attribute,  // args[0].name
    subscript,  // args[0][args[1]]
    slice,      // args[0][args[1]:args[2]:args[3]] (null parts omitted)
    call,       // args[0](args[1..], kwargs)
    filter,     // args[0] | name(args[1..], kwargs)
    test,       // args[0] is [not] name(args[1..])
    unary,      // name args[0]  (not, -, +)
    binary,     // args[0] name args[1]
    compare,    // args[0] ops[0] args[1] ops[1] args[2] ...
    ternary,    // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;
  std::vector<std::string> ops;  // compare
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::pair<ExprPtr, ExprPtr>> dict_items;
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind { text, output, if_, for_, set, set_block, macro, call_macro, break_, continue_ };
  Kind kind;
  int line = 0;
  std::string text;                      // text
  ExprPtr expr;                          // output; set value; for iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // if/elif/else (else: null condition)
  std::vector<std::string> targets;      // for / set names; set "ns.attr" as {"ns", "attr"} with attribute=true
  bool attribute_target = false;
  ExprPtr condition;                     // for ... if condition
  Body body, else_body;                  // for body / else; set_block body; macro body
  std::string name;                      // macro name
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters with defaults (null: required)
};

}  // namespace mach::text::jinja
