// The schema expression evaluator: the grammar and functions of backends/schema.py, in C++.
#include "schema.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>

#include "schema_table.h"

namespace fbck::rt::schema {

const OpDef* ops() { return kOps; }
int num_ops() { return kNumOps; }

const OpDef* find(const std::string& kind) {
  for (int i = 0; i < kNumOps; ++i)
    if (kind == kOps[i].kind) return &kOps[i];
  return nullptr;
}

std::vector<std::string> choices(const AttrDef& a) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* c = a.choices; *c; ++c) {
    if (*c == '|') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += *c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

namespace {

[[noreturn]] void fail(const std::string& why, const std::string& expr) {
  throw SchemaError(why + " in `" + expr + "`");
}

std::vector<std::string> tokenize(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back(s.substr(i, j - i));
      i = j;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back(s.substr(i, j - i));
      i = j;
    } else if (i + 1 < s.size() && (s.compare(i, 2, "==") == 0 || s.compare(i, 2, "!=") == 0 ||
                                    s.compare(i, 2, "<=") == 0 || s.compare(i, 2, ">=") == 0)) {
      out.push_back(s.substr(i, 2));
      i += 2;
    } else if (std::strchr("+-*/%<>()[],", c)) {
      out.push_back(std::string(1, c));
      ++i;
    } else {
      fail("bad character", s);
    }
  }
  return out;
}

// The schema's expressions are few: each is tokenized once.
const std::vector<std::string>& tokens(const std::string& text) {
  static std::mutex mu;
  static std::map<std::string, std::vector<std::string>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(text);
  if (it == cache.end()) it = cache.emplace(text, tokenize(text)).first;
  return it->second;  // std::map never moves its nodes
}

Value num(int64_t v) {
  Value r;
  r.i = v;
  return r;
}

int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t floormod(int64_t a, int64_t b) { return a - floordiv(a, b) * b; }

// Arithmetic beyond int64 is an error (Python's integers do not overflow: both sides refuse).
int64_t checked(bool overflow, int64_t v, const std::string& expr) {
  if (overflow) fail("integer overflow", expr);
  return v;
}

class Parser {
 public:
  Parser(const std::string& text, const Env& env) : text_(text), toks_(tokens(text)), env_(env) {}

  Value run() {
    Value v = or_();
    if (i_ != toks_.size()) fail("unexpected '" + toks_[i_] + "'", text_);
    return v;
  }

 private:
  const std::string& text_;
  const std::vector<std::string>& toks_;
  const Env& env_;
  size_t i_ = 0;

  const std::string* peek() const { return i_ < toks_.size() ? &toks_[i_] : nullptr; }
  bool at(const char* t) const { return peek() && *peek() == t; }
  std::string take(const char* want = nullptr) {
    if (!peek() || (want && *peek() != want)) fail(std::string("expected ") + (want ? want : "more"), text_);
    return toks_[i_++];
  }
  int64_t integer(const Value& v) const {
    if (v.is_list) fail("a list where a number is expected", text_);
    return v.i;
  }
  static bool equal(const Value& a, const Value& b) {
    return a.is_list == b.is_list && (a.is_list ? a.list == b.list : a.i == b.i);
  }

  Value or_() {
    Value v = and_();
    while (at("or")) {
      take();
      const Value rhs = and_();
      v = num(integer(v) != 0 || integer(rhs) != 0);
    }
    return v;
  }
  Value and_() {
    Value v = not_();
    while (at("and")) {
      take();
      const Value rhs = not_();
      v = num(integer(v) != 0 && integer(rhs) != 0);
    }
    return v;
  }
  Value not_() {
    if (at("not")) {
      take();
      return num(integer(not_()) == 0);
    }
    return cmp();
  }
  Value cmp() {
    Value v = sum();
    for (const char* op : {"==", "!=", "<=", ">=", "<", ">"}) {
      if (!at(op)) continue;
      take();
      const Value rhs = sum();
      const std::string o = op;
      if (o == "==") return num(equal(v, rhs));
      if (o == "!=") return num(!equal(v, rhs));
      const int64_t a = integer(v), b = integer(rhs);
      return num(o == "<=" ? a <= b : o == ">=" ? a >= b : o == "<" ? a < b : a > b);
    }
    return v;
  }
  Value sum() {
    Value v = term();
    while (at("+") || at("-")) {
      const bool plus = take() == "+";
      const int64_t a = integer(v), b = integer(term());
      int64_t r;
      const bool o = plus ? __builtin_add_overflow(a, b, &r) : __builtin_sub_overflow(a, b, &r);
      v = num(checked(o, r, text_));
    }
    return v;
  }
  Value term() {
    Value v = unary();
    while (at("*") || at("/") || at("%")) {
      const std::string op = take();
      const int64_t a = integer(v), b = integer(unary());
      if (op != "*" && b == 0) fail("division by zero", text_);
      int64_t r = 0;
      const bool o = op == "*" ? __builtin_mul_overflow(a, b, &r) : (a == INT64_MIN && b == -1);
      if (op == "/" && !o) r = floordiv(a, b);
      if (op == "%" && !o) r = floormod(a, b);
      v = num(checked(o, r, text_));
    }
    return v;
  }
  Value unary() {
    if (at("-")) {
      take();
      const int64_t a = integer(unary());
      return num(checked(a == INT64_MIN, -a, text_));
    }
    return atom();
  }
  Value atom() {
    const std::string tok = take();
    if (tok == "(") {
      Value v = or_();
      take(")");
      return v;
    }
    if (std::isdigit(static_cast<unsigned char>(tok[0]))) {
      if (tok.size() > 12) fail("number too large", text_);
      return num(std::stoll(tok));
    }
    if (!(std::isalpha(static_cast<unsigned char>(tok[0])) || tok[0] == '_')) fail("unexpected '" + tok + "'", text_);
    if (at("(")) {
      take("(");
      std::vector<Value> args{or_()};
      while (at(",")) {
        take();
        args.push_back(or_());
      }
      take(")");
      return call(tok, args);
    }
    auto it = env_.find(tok);
    if (it == env_.end()) fail("unknown name '" + tok + "'", text_);
    if (at("[")) {
      take("[");
      const int64_t idx = integer(or_());
      take("]");
      const Value& v = it->second;
      if (!v.is_list || idx < 0 || idx >= (int64_t)v.list.size())
        fail(tok + "[" + std::to_string(idx) + "] is out of range", text_);
      return num(v.list[idx]);
    }
    return it->second;
  }

  const std::vector<int64_t>& list(const Value& v) const {
    if (!v.is_list) fail("a number where a list is expected", text_);
    return v.list;
  }

  Value call(const std::string& fn, const std::vector<Value>& a) {
    auto need = [&](size_t n) {
      if (a.size() != n) fail(fn + " takes " + std::to_string(n) + " arguments", text_);
    };
    if (fn == "row_words") {
      need(1);
      return num(2 * ((integer(a[0]) + 127) / 128));
    }
    if (fn == "conv_out") {
      need(5);
      const int64_t n = integer(a[0]), k = integer(a[1]), s = integer(a[2]), p = integer(a[3]),
                    d = integer(a[4]);
      const int64_t span = d * (k - 1) + 1;
      return num((n + 2 * p < span || s < 1) ? 0 : floordiv(n + 2 * p - span, s) + 1);
    }
    if (fn == "len") {
      need(1);
      return num(static_cast<int64_t>(list(a[0]).size()));
    }
    if (fn == "pick") {
      need(3);
      return integer(a[0]) ? a[1] : a[2];
    }
    if (fn == "same") {
      need(2);
      return num(equal(a[0], a[1]));
    }
    if (fn == "same_except") {
      need(3);
      const auto &x = list(a[0]), &y = list(a[1]);
      const int64_t axis = integer(a[2]);
      bool ok = x.size() == y.size();
      for (size_t i = 0; ok && i < x.size(); ++i) ok = ((int64_t)i == axis) || x[i] == y[i];
      return num(ok);
    }
    if (fn == "is_perm") {
      need(1);
      std::vector<int64_t> p = list(a[0]);
      std::sort(p.begin(), p.end());
      bool ok = true;
      for (size_t i = 0; i < p.size(); ++i) ok = ok && p[i] == (int64_t)i;
      return num(ok);
    }
    if (fn == "permuted") {
      need(3);
      const auto &x = list(a[0]), &y = list(a[1]), &p = list(a[2]);
      bool ok = x.size() == y.size() && y.size() == p.size();
      for (size_t i = 0; ok && i < p.size(); ++i)
        ok = p[i] >= 0 && p[i] < (int64_t)x.size() && y[i] == x[p[i]];
      return num(ok);
    }
    if (fn == "all_between") {
      need(3);
      const int64_t lo = integer(a[1]), hi = integer(a[2]);
      bool ok = true;
      for (int64_t v : list(a[0])) ok = ok && lo <= v && v < hi;
      return num(ok);
    }
    if (fn == "reduced") {
      need(4);
      const auto &x = list(a[0]), &y = list(a[1]), &dims = list(a[2]);
      const bool keep = integer(a[3]) != 0;
      std::vector<int64_t> want;
      for (size_t i = 0; i < x.size(); ++i) {
        const bool r = std::find(dims.begin(), dims.end(), (int64_t)i) != dims.end();
        if (!r) want.push_back(x[i]);
        else if (keep) want.push_back(1);
      }
      return num(want == y);
    }
    fail("unknown function '" + fn + "'", text_);
  }
};

}  // namespace

Value evaluate(const std::string& expr, const Env& env) { return Parser(expr, env).run(); }

}  // namespace fbck::rt::schema
