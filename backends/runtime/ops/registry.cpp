// Schema kind -> the op that runs it (one file per op family under ops/).
#include <cstring>

#include "elementwise.h"
#include "ops.h"

namespace fbck::rt {
namespace {

std::unique_ptr<Op> elementwise(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels&) {
  return make_elementwise(s, x, y);
}

struct Entry {
  const char* kind;
  MakeOp make;
};

const Entry kRegistry[] = {
    {"linear", make_linear},         {"conv2d", make_conv2d},
    {"binary_linear", make_binary_linear}, {"binary_conv2d", make_binary_conv2d},
    {"memory", make_memory},         {"binary_memory", make_binary_memory},
    {"affine", elementwise},         {"prelu", elementwise},
    {"channel_add", elementwise},    {"channel_sub", elementwise},
    {"relu", elementwise},           {"hardtanh", elementwise},
    {"leaky_relu", elementwise},     {"tanh", elementwise},
    {"sigmoid", elementwise},        {"scalar", elementwise},
    {"add", elementwise},            {"permute", make_permute},
    {"mean", make_mean},             {"softmax", make_softmax},
    {"log_softmax", make_softmax},
};

}  // namespace

std::unique_ptr<Op> make_op(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels& k) {
  for (const Entry& e : kRegistry)
    if (s.kind == e.kind) {
      std::unique_ptr<Op> op = e.make(s, x, y, k);
      op->kind = s.kind;
      op->name = s.name;
      op->in = s.inputs;
      op->out = s.output;
      return op;
    }
  bad_op(s, "no runtime op for this kind");
}

}  // namespace fbck::rt
