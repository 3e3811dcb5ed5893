#include "text/jinja/parser.hpp"

#include <fmt/format.h>

#include "text/jinja/lexer.hpp"

namespace mach::text::jinja {

namespace {

struct ParseError {
  std::string message;
};

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : t_(std::move(tokens)), line_(line) {}

  ExprPtr parse_expr(bool allow_ternary = true) {
    ExprPtr e = parse_or();
    if (allow_ternary && is_name("if")) {
      ++i_;
      auto node = make(Expr::Kind::ternary);
      node->args.push_back(std::move(e));
      node->args.push_back(parse_or());
      if (is_name("else")) {
        ++i_;
        node->args.push_back(parse_expr());
      } else {
        node->args.push_back(nullptr);
      }
      return node;
    }
    return e;
  }
  // expr (',' expr)* as a tuple when there is a comma.
  ExprPtr parse_tuple_or_expr(bool allow_ternary = true) {
    ExprPtr first = parse_expr(allow_ternary);
    if (!is_op(",")) return first;
    auto tuple = make(Expr::Kind::tuple);
    tuple->args.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      if (at_end()) break;
      tuple->args.push_back(parse_expr(allow_ternary));
    }
    return tuple;
  }

  bool at_end() const { return t_[i_].kind == Token::Kind::end; }
  bool is_name(std::string_view n) const { return t_[i_].kind == Token::Kind::name && t_[i_].text == n; }
  bool is_op(std::string_view o) const { return t_[i_].kind == Token::Kind::op && t_[i_].text == o; }
  const Token& peek(size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
  std::string expect_name() {
    if (t_[i_].kind != Token::Kind::name) fail(fmt::format("expected a name, found '{}'", t_[i_].text));
    return next().text;
  }
  void expect_op(std::string_view o) {
    if (!is_op(o)) fail(fmt::format("expected '{}', found '{}'", o, at_end() ? "end of tag" : t_[i_].text));
    ++i_;
  }
  void expect_end() {
    if (!at_end()) fail(fmt::format("unexpected '{}'", t_[i_].text));
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw ParseError{fmt::format("template line {}: {}", line_, what)};
  }

 private:
  ExprPtr make(Expr::Kind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line_;
    return e;
  }
  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Kind::binary);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }
  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      ++i_;
      e = binary("or", std::move(e), parse_and());
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      ++i_;
      e = binary("and", std::move(e), parse_not());
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      ++i_;
      auto e = make(Expr::Kind::unary);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    ExprPtr chain;
    for (;;) {
      std::string op;
      if (t_[i_].kind == Token::Kind::op &&
          (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">="))) {
        op = next().text;
      } else if (is_name("in")) {
        ++i_;
        op = "in";
      } else if (is_name("not") && peek(1).kind == Token::Kind::name && peek(1).text == "in") {
        i_ += 2;
        op = "not in";
      } else {
        return chain ? std::move(chain) : std::move(first);
      }
      if (!chain) {
        chain = make(Expr::Kind::compare);
        chain->args.push_back(std::move(first));
      }
      chain->ops.push_back(op);
      chain->args.push_back(parse_math1());
    }
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      ++i_;
      e = binary("~", std::move(e), parse_math2());
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      e = binary(op, std::move(e), parse_pow());
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      ++i_;
      e = binary("**", std::move(e), parse_unary(true));
    }
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = make(Expr::Kind::unary);
      e->name = next().text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filter ? parse_filters(std::move(e)) : std::move(e);
  }
  ExprPtr parse_primary() {
    // Nesting depth bound: a template is data we did not write, and recursion must not overflow the stack.
    struct Depth {
      int& d;
      explicit Depth(int& depth) : d(++depth) {}
      ~Depth() { --d; }
    } depth(depth_);
    if (depth_ > 200) fail("expression nested too deeply");
    const Token& tok = peek();
    if (tok.kind == Token::Kind::name) {
      const std::string n = next().text;
      auto e = make(Expr::Kind::literal);
      if (n == "true" || n == "True") e->value = Value(true);
      else if (n == "false" || n == "False") e->value = Value(false);
      else if (n == "none" || n == "None") e->value = Value(nullptr);
      else {
        e->kind = Expr::Kind::name;
        e->name = n;
      }
      return e;
    }
    if (tok.kind == Token::Kind::string) {
      std::string s;
      while (peek().kind == Token::Kind::string) s += next().text;  // adjacent literals concatenate
      auto e = make(Expr::Kind::literal);
      e->value = Value(std::move(s));
      return e;
    }
    if (tok.kind == Token::Kind::integer || tok.kind == Token::Kind::floating) {
      auto e = make(Expr::Kind::literal);
      e->value = tok.kind == Token::Kind::integer ? Value(tok.integer) : Value(tok.floating);
      ++i_;
      return e;
    }
    if (is_op("(")) {
      ++i_;
      if (is_op(")")) {
        ++i_;
        return make(Expr::Kind::tuple);
      }
      ExprPtr e = parse_tuple_or_expr();
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      ++i_;
      auto e = make(Expr::Kind::list);
      while (!is_op("]")) {
        e->args.push_back(parse_expr());
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      ++i_;
      auto e = make(Expr::Kind::dict);
      while (!is_op("}")) {
        ExprPtr key = parse_expr();
        expect_op(":");
        e->dict_items.emplace_back(std::move(key), parse_expr());
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op("}");
      return e;
    }
    fail(fmt::format("unexpected '{}'", at_end() ? "end of tag" : tok.text));
  }
  void parse_call_args(Expr& call) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().kind == Token::Kind::name && peek(1).kind == Token::Kind::op && peek(1).text == "=") {
        std::string key = next().text;
        ++i_;
        call.kwargs.emplace_back(std::move(key), parse_expr());
      } else {
        call.args.push_back(parse_expr());
      }
      if (!is_op(",")) break;
      ++i_;
    }
    expect_op(")");
  }
  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      if (is_op(".")) {
        ++i_;
        if (peek().kind == Token::Kind::integer) {
          auto s = make(Expr::Kind::subscript);
          s->args.push_back(std::move(e));
          auto index = make(Expr::Kind::literal);
          index->value = Value(next().integer);
          s->args.push_back(std::move(index));
          e = std::move(s);
          continue;
        }
        auto a = make(Expr::Kind::attribute);
        a->name = expect_name();
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (is_op("[")) {
        ++i_;
        ExprPtr start = is_op(":") ? nullptr : parse_expr();
        if (is_op(":")) {
          ++i_;
          auto s = make(Expr::Kind::slice);
          s->args.push_back(std::move(e));
          s->args.push_back(std::move(start));
          s->args.push_back(is_op(":") || is_op("]") ? nullptr : parse_expr());
          ExprPtr step;
          if (is_op(":")) {
            ++i_;
            if (!is_op("]")) step = parse_expr();
          }
          s->args.push_back(std::move(step));
          e = std::move(s);
        } else {
          auto s = make(Expr::Kind::subscript);
          s->args.push_back(std::move(e));
          s->args.push_back(std::move(start));
          e = std::move(s);
        }
        expect_op("]");
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::call);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_filters(ExprPtr e) {
    for (;;) {
      if (is_op("|")) {
        ++i_;
        auto f = make(Expr::Kind::filter);
        f->name = expect_name();
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        ++i_;
        auto t = make(Expr::Kind::test);
        if (is_name("not")) {
          ++i_;
          t->negated = true;
        }
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if (starts_test_argument()) {
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }
  bool starts_test_argument() const {
    const Token& tok = peek();
    if (tok.kind == Token::Kind::string || tok.kind == Token::Kind::integer || tok.kind == Token::Kind::floating) {
      return true;
    }
    if (tok.kind != Token::Kind::name) return is_op("[") || is_op("{");
    static const char* const kStop[] = {"else", "and", "or", "if", "not", "in", "is"};
    for (const char* k : kStop) {
      if (tok.text == k) return false;
    }
    return true;
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int line_;
  int depth_ = 0;
};

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, end);
    return body;
  }

 private:
  ExprParser tag_parser(const Chunk& c) {
    auto tokens = tokenize_expression(c.text, c.line);
    if (!tokens) throw ParseError{tokens.error().message};
    return ExprParser(std::move(*tokens), c.line);
  }

  // Parses nodes until a statement whose keyword is in `ends` (returned in `end`, its parser left after the
  // keyword in `end_parser_`), or the end of the template when `ends` is empty.
  Body parse_body(const std::vector<std::string>& ends, std::string& end) {
    if (++depth_ > 200) throw ParseError{"template line " + std::to_string(chunks_[pos_ - 1].line) + ": blocks nested too deeply"};
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    Body body;
    while (pos_ < chunks_.size()) {
      const Chunk& c = chunks_[pos_++];
      if (c.kind == Chunk::Kind::text) {
        body.push_back(Node{Node::Kind::text, c.line, c.text});
        continue;
      }
      if (c.kind == Chunk::Kind::expression) {
        ExprParser p = tag_parser(c);
        Node n{Node::Kind::output, c.line};
        n.expr = p.parse_tuple_or_expr();
        p.expect_end();
        body.push_back(std::move(n));
        continue;
      }
      ExprParser p = tag_parser(c);
      const std::string keyword = p.expect_name();
      for (const auto& e : ends) {
        if (keyword == e) {
          end = keyword;
          end_parser_ = std::make_unique<ExprParser>(std::move(p));
          return body;
        }
      }
      parse_statement(keyword, p, c, body);
    }
    if (!ends.empty()) {
      throw ParseError{fmt::format("template ends inside a block: expected {{% {} %}}", ends.back())};
    }
    return body;
  }

  void parse_statement(const std::string& keyword, ExprParser& p, const Chunk& c, Body& body) {
    Node n{Node::Kind::text, c.line};
    std::string end;
    if (keyword == "if") {
      n.kind = Node::Kind::if_;
      ExprPtr cond = p.parse_expr();
      p.expect_end();
      for (;;) {
        Body branch = parse_body({"elif", "else", "endif"}, end);
        n.branches.emplace_back(std::move(cond), std::move(branch));
        if (end == "endif") break;
        if (end == "elif") {
          cond = end_parser_->parse_expr();
          end_parser_->expect_end();
        } else {
          end_parser_->expect_end();
          n.branches.emplace_back(nullptr, parse_body({"endif"}, end));
          break;
        }
      }
    } else if (keyword == "for") {
      n.kind = Node::Kind::for_;
      n.targets.push_back(p.expect_name());
      while (p.is_op(",")) {
        p.next();
        n.targets.push_back(p.expect_name());
      }
      if (!p.is_name("in")) p.fail("expected 'in' in for loop");
      p.next();
      n.expr = p.parse_tuple_or_expr(false);
      if (p.is_name("if")) {
        p.next();
        n.condition = p.parse_expr();
      }
      if (p.is_name("recursive")) p.fail("recursive for loops are not supported");
      p.expect_end();
      n.body = parse_body({"else", "endfor"}, end);
      if (end == "else") n.else_body = parse_body({"endfor"}, end);
    } else if (keyword == "set") {
      n.kind = Node::Kind::set;
      n.targets.push_back(p.expect_name());
      if (p.is_op(".")) {
        p.next();
        n.targets.push_back(p.expect_name());
        n.attribute_target = true;
      }
      while (!n.attribute_target && p.is_op(",")) {
        p.next();
        n.targets.push_back(p.expect_name());
      }
      if (p.is_op("=")) {
        p.next();
        n.expr = p.parse_tuple_or_expr();
        p.expect_end();
      } else {
        p.expect_end();
        n.kind = Node::Kind::set_block;
        n.body = parse_body({"endset"}, end);
      }
    } else if (keyword == "macro") {
      n.kind = Node::Kind::macro;
      n.name = p.expect_name();
      p.expect_op("(");
      while (!p.is_op(")")) {
        std::string param = p.expect_name();
        ExprPtr def;
        if (p.is_op("=")) {
          p.next();
          def = p.parse_expr();
        }
        n.params.emplace_back(std::move(param), std::move(def));
        if (!p.is_op(",")) break;
        p.next();
      }
      p.expect_op(")");
      p.expect_end();
      n.body = parse_body({"endmacro"}, end);
    } else if (keyword == "break" || keyword == "continue") {
      n.kind = keyword == "break" ? Node::Kind::break_ : Node::Kind::continue_;
      p.expect_end();
    } else if (keyword == "generation" || keyword == "endgeneration") {
      return;  // transformers' marker for assistant-token masks; renders nothing
    } else {
      p.fail(fmt::format("unsupported tag '{{% {} %}}'", keyword));
    }
    if (end_parser_) end_parser_->expect_end();
    body.push_back(std::move(n));
  }

  std::vector<Chunk> chunks_;
  size_t pos_ = 0;
  int depth_ = 0;
  std::unique_ptr<ExprParser> end_parser_;
};

}  // namespace

Result<Body> parse_template(std::string_view source) {
  auto chunks = split_template(source);
  if (!chunks) return chunks.error();
  try {
    TemplateParser parser(std::move(*chunks));
    return parser.parse_all();
  } catch (const ParseError& e) {
    return Error{Errc::parse, e.message};
  }
}

}  // namespace mach::text::jinja
