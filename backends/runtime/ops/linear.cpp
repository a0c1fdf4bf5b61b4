// linear: FP32 y = W x + b along `axis` (Linear, 1x1 convolutions), weights prepacked once for the
// table's GEMM, then the post-ops.
#include "layer.h"
#include "ops.h"

namespace fbck::rt {
namespace {

class Linear : public Layer {
 public:
  int axis = 1;
  size_t K = 0, N = 0;
  std::vector<float> w, bias, wp;
  const Kernels* kern = nullptr;

  void prepare() override {
    if (kern->pack_f32_weights) wp = kern->pack_f32_weights(w.data(), N, K);
  }
  int channel_axis_out() const override { return axis; }
  void run_post(const Args& a, float* y, const PlanesOut* planes) const override {
    const Split sp = split(a.in_dims[0], axis);
    LinearF32Args g;
    g.x = a.in[0], g.outer = sp.outer, g.K = sp.mid, g.inner = sp.inner, g.w = w.data(), g.N = N;
    g.wp = wp.empty() ? nullptr : wp.data();
    g.ep.bias = bias.data();
    PostOps buf;
    g.post = post_ops(a, planes, buf);
    g.y = y;
    a.k->linear_f32(g);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m = Op::time_map(t);
    if (m.out_axis == axis) m.out_axis = -1;
    return m;
  }
};

}  // namespace

std::unique_ptr<Op> make_linear(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels& k) {
  auto op = std::make_unique<Linear>();
  op->axis = static_cast<int>(s.ints.at("axis"));
  op->K = x[0][op->axis];
  op->N = y[op->axis];
  op->w = f32(s, "weight");
  op->bias = f32(s, "bias");
  op->kern = &k;
  return op;
}

}  // namespace fbck::rt
