// conv2d: FP32 NCHW convolution with zero padding (kernels.h conv2d_f32).
#include "layer.h"
#include "ops.h"

namespace fbck::rt {

TimeMap conv_time_map(const std::vector<int>& t, const size_t kernel[2], const size_t stride[2],
                      const size_t pad[2], const size_t dilation[2]) {
  TimeMap m;
  if (t.empty() || t[0] < 2) return m;  // time on the batch or channel axis: whole utterance
  const int d = t[0] - 2;
  m.out_axis = t[0];
  m.stride = stride[d];
  m.lo = static_cast<ptrdiff_t>(pad[d]);
  m.hi = static_cast<ptrdiff_t>(dilation[d] * (kernel[d] - 1)) - static_cast<ptrdiff_t>(pad[d]);
  m.window = true;
  return m;
}

S1Mode s1_mode(const OpSpec& s) {
  const std::string& m = s.strs.at("scale1");
  return m == "none" ? S1Mode::none : m == "mean_abs" ? S1Mode::mean_abs : S1Mode::constant;
}

namespace {

class Conv2d : public Layer {
 public:
  size_t O = 0, C = 0, kernel[2] = {1, 1}, stride[2] = {1, 1}, pad[2] = {0, 0}, dilation[2] = {1, 1}, groups = 1;
  std::vector<float> w, bias, wp;
  const Kernels* kern = nullptr;

  void prepare() override {
    if (kern->pack_f32_weights && groups == 1) wp = kern->pack_f32_weights(w.data(), O, C * kernel[0] * kernel[1]);
  }
  int channel_axis_out() const override { return 1; }
  void run_post(const Args& a, float* y, const PlanesOut* planes) const override {
    const Dims& xd = a.in_dims[0];
    Conv2dF32Args g;
    g.x = a.in[0], g.B = xd[0], g.C = xd[1], g.H = xd[2], g.W = xd[3];
    g.w = w.data(), g.O = O, g.KH = kernel[0], g.KW = kernel[1];
    g.wp = wp.empty() ? nullptr : wp.data();
    g.stride_h = stride[0], g.stride_w = stride[1];
    g.pad_h = pad[0], g.pad_w = pad[1];
    g.dil_h = dilation[0], g.dil_w = dilation[1], g.groups = groups;
    if (a.window.on) (a.time_axis == 2 ? g.pad_h : g.pad_w) = 0;  // the window holds the padding
    g.ep.bias = bias.data();
    PostOps buf;
    g.post = post_ops(a, planes, buf);
    g.y = y;
    a.k->conv2d_f32(g);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    return conv_time_map(t, kernel, stride, pad, dilation);
  }
};

}  // namespace

std::unique_ptr<Op> make_conv2d(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels& k) {
  auto op = std::make_unique<Conv2d>();
  for (int i = 0; i < 2; ++i) {
    op->kernel[i] = s.lists.at("kernel")[i], op->stride[i] = s.lists.at("stride")[i];
    op->pad[i] = s.lists.at("padding")[i], op->dilation[i] = s.lists.at("dilation")[i];
  }
  op->groups = static_cast<size_t>(s.ints.at("groups"));
  op->O = y[1];
  op->C = x[0][1];
  op->kern = &k;
  op->w = f32(s, "weight");
  op->bias = f32(s, "bias");
  return op;
}

}  // namespace fbck::rt
