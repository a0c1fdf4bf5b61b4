// linear: FP32 y = W x + b along `axis` (Linear, 1x1 convolutions).
#include "ops.h"

namespace fbck::rt {
namespace {

class Linear : public Op {
 public:
  int axis = 1;
  size_t K = 0, N = 0;
  std::vector<float> w, bias;

  void run(const Args& a) const override {
    const Split sp = split(a.in_dims[0], axis);
    LinearF32Args g;
    g.x = a.in[0], g.outer = sp.outer, g.K = sp.mid, g.inner = sp.inner, g.w = w.data(), g.N = N;
    g.ep.bias = bias.data();
    g.y = a.out;
    a.k->linear_f32(g);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m = Op::time_map(t);
    if (m.out_axis == axis) m.out_axis = -1;
    return m;
  }
};

}  // namespace

std::unique_ptr<Op> make_linear(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels&) {
  auto op = std::make_unique<Linear>();
  op->axis = static_cast<int>(s.ints.at("axis"));
  op->K = x[0][op->axis];
  op->N = y[op->axis];
  op->w = f32(s, "weight");
  op->bias = f32(s, "bias");
  return op;
}

}  // namespace fbck::rt
