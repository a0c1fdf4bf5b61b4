// The op schema on the C++ side: the table generated from backends/schema.py
// (schema_table.h) and the evaluator of its expressions, with the same grammar and meaning as the
// Python one (see backends/schema.py). The artifact loader checks every op with it before the
// runtime sees the op.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "printable.h"

namespace fbck::rt::schema {

enum class AttrType { int_, bool_, float_, enum_, ints };
enum class ConstType { f32, bits, i8 };

struct AttrDef {
  const char* name;
  AttrType type;
  int64_t min, max;     // int / ints
  const char* choices;  // enum: "a|b|c"
  int length;           // ints: fixed length, 0 = any
};

struct ConstDef {
  const char* role;
  ConstType dtype;
  int rank;
  const char* shape[4];  // expressions
};

struct OpDef {
  const char* kind;
  int inputs;
  const AttrDef* attrs;
  int n_attrs;
  const ConstDef* consts;
  int n_consts;
  const char* const* checks;
  int n_checks;
};

// The generated table, in schema order (the artifact stores an op's kind as its index).
const OpDef* ops();
int num_ops();
const OpDef* find(const std::string& kind);
// The enum's choices split on '|'.
std::vector<std::string> choices(const AttrDef& a);

// A failed check; the message says which.
struct SchemaError : std::invalid_argument {
  explicit SchemaError(const std::string& why) : std::invalid_argument(printable(why)) {}
};

// A value of an expression: a number, or a list (a shape or a list attribute).
struct Value {
  bool is_list = false;
  int64_t i = 0;
  std::vector<int64_t> list;
};
using Env = std::map<std::string, Value>;

// Evaluates one expression (throws SchemaError on a malformed expression, an unknown name, an
// index out of range or a division by zero).
Value evaluate(const std::string& expr, const Env& env);

}  // namespace fbck::rt::schema
