// binary_conv2d: a k x k convolution on a one-plane binarized input (kernels.h binary_conv2d):
// the input's channels packed per position with thresholds t0 (pack_threshold, or the planes the
// layer before emitted), the taps' bits gathered straight from those rows, exact zero padding by
// the plan's integer corrections, then ((d [* s1]) - offset) * sw + bias and the post-ops.
#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "binarizing.h"
#include "layer.h"
#include "ops.h"

namespace fbck::rt {
namespace {

class BinaryConv2d : public Layer, public Binarizing {
 public:
  size_t C = 0, O = 0, kernel[2] = {1, 1}, stride[2] = {1, 1}, pad[2] = {0, 0}, dilation[2] = {1, 1};
  size_t H = 0, W = 0;  // the whole utterance's input size
  S1Mode s1 = S1Mode::none;
  float s1c = 1.0f;
  bool has_t2 = false;
  std::vector<float> t0, t2, sw, bias;
  std::vector<uint64_t> wbits;  // as the GEMM sees them (channels folded with a decreasing
  std::vector<uint64_t> model;  // BatchNorm flip); `model`: the model's signs, for the t2 offsets
  std::vector<uint32_t> w16;
  bool wants_w16 = false;
  BinaryConv2dPlan whole;  // the whole utterance's plan
  mutable std::mutex mu;   // guards the streaming windows' plans
  mutable std::map<std::tuple<size_t, size_t, size_t, size_t, size_t, size_t>, BinaryConv2dPlan> windows;

  // The plan of one input size and padding: the padding corrections from the GEMM's weights, the
  // t2 offsets from the model's signs (they differ only on flipped channels).
  BinaryConv2dPlan plan(size_t h, size_t w, size_t pad_h, size_t pad_w, size_t h_lo, size_t h_hi, size_t w_lo,
                        size_t w_hi) const {
    BinaryConv2dGeometry g;
    g.C = C, g.H = h, g.W = w, g.O = O, g.KH = kernel[0], g.KW = kernel[1];
    g.stride_h = stride[0], g.stride_w = stride[1], g.pad_h = pad_h, g.pad_w = pad_w;
    g.dil_h = dilation[0], g.dil_w = dilation[1];
    g.h_lo = h_lo, g.h_hi = h_hi, g.w_lo = w_lo, g.w_hi = w_hi;
    BinaryConv2dPlan p = plan_binary_conv2d(g, wbits.data(), nullptr);
    if (has_t2) {
      const BinaryConv2dPlan q = plan_binary_conv2d(g, model.data(), t2.data());
      p.off = q.off, p.off_map = q.off_map;
    }
    return p;
  }

  void prepare() override {
    whole = plan(H, W, pad[0], pad[1], 0, SIZE_MAX, 0, SIZE_MAX);
    std::lock_guard<std::mutex> lock(mu);
    windows.clear();
    if (wants_w16) w16 = interleave_rows16(wbits.data(), O, kernel[0] * kernel[1] * C);
  }
  int channel_axis_out() const override { return 1; }

  // A stream's window along time (H: axis 2, W: axis 3): its padding frames are already in it,
  // marked invalid, so their taps add nothing.
  const BinaryConv2dPlan& window_plan(size_t h, size_t w, int time_axis, const Window& win) const {
    const bool on_h = time_axis == 2;
    const size_t pad_h = on_h ? 0 : pad[0], pad_w = on_h ? pad[1] : 0;
    const size_t lo = static_cast<size_t>(std::max<ptrdiff_t>(win.valid_lo, 0));
    const size_t hi = static_cast<size_t>(std::max<ptrdiff_t>(win.valid_hi, 0));
    const auto key = std::make_tuple(h, w, pad_h, pad_w, lo, hi);
    std::lock_guard<std::mutex> lock(mu);
    auto it = windows.find(key);
    if (it == windows.end()) {
      BinaryConv2dPlan p = on_h ? plan(h, w, pad_h, pad_w, lo, hi, 0, SIZE_MAX) : plan(h, w, pad_h, pad_w, 0, SIZE_MAX, lo, hi);
      it = windows.emplace(key, std::move(p)).first;
    }
    return it->second;  // std::map never moves its nodes
  }

  // With `xbits` the input's planes come from the layer before (emit_planes).
  void compute(const Args& a, const uint64_t* xbits, float* y, const PlanesOut* planes) const {
    const Kernels& k = *a.k;
    const Dims& xd = a.in_dims[0];
    const size_t B = xd[0], h = xd[2], w = xd[3];
    thread_local std::vector<uint64_t> pos;  // reused: no allocation per call
    if (!xbits) {
      pos.assign(B * h * w * row_words(C), 0);
      k.pack_threshold(a.in[0], B, C, h * w, t0.data(), pos.data(), nullptr);
      xbits = pos.data();
    }
    const BinaryConv2dPlan* p = &whole;
    if (a.window.on || h != H || w != W) p = &window_plan(h, w, a.time_axis, a.window);
    BinaryConv2dArgs g;
    g.plan = p, g.B = B, g.xbits = xbits, g.w = wbits.data();
    g.w16 = w16.empty() ? nullptr : w16.data();
    g.s1 = s1 == S1Mode::constant ? &s1c : nullptr;
    g.sw = sw.data(), g.bias = bias.data();
    PostOps buf;
    g.post = post_ops(a, planes, buf);
    g.y = y;
    k.binary_conv2d(g);
  }
  void run_post(const Args& a, float* y, const PlanesOut* planes) const override { compute(a, nullptr, y, planes); }
  TimeMap time_map(const std::vector<int>& t) const override {
    return conv_time_map(t, kernel, stride, pad, dilation);
  }

  // -- Binarizing
  bool sign_only() const override { return true; }  // one plane, a constant scale at most
  int channel_axis() const override { return 1; }
  const std::vector<float>& thresholds() const override { return t0; }
  bool can_flip() const override { return true; }
  void rethreshold(const std::vector<float>& t, const std::vector<bool>& flip) override {
    t0 = t;
    const size_t T = kernel[0] * kernel[1], words = row_words(T * C);
    for (size_t o = 0; o < O; ++o)
      for (size_t tap = 0; tap < T; ++tap)
        for (size_t c = 0; c < C; ++c)
          if (flip[c]) wbits[o * words + (tap * C + c) / 64] ^= uint64_t{1} << ((tap * C + c) % 64);
  }
};

}  // namespace

std::unique_ptr<Op> make_binary_conv2d(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels& k) {
  auto op = std::make_unique<BinaryConv2d>();
  for (int i = 0; i < 2; ++i) {
    op->kernel[i] = s.lists.at("kernel")[i], op->stride[i] = s.lists.at("stride")[i];
    op->pad[i] = s.lists.at("padding")[i], op->dilation[i] = s.lists.at("dilation")[i];
  }
  op->C = x[0][1], op->H = x[0][2], op->W = x[0][3];
  op->O = y[1];
  op->s1 = s1_mode(s);
  op->s1c = static_cast<float>(s.floats.at("scale1_value"));
  op->has_t2 = s.ints.at("has_t2") != 0;
  op->t0 = f32(s, "t0"), op->t2 = f32(s, "t2"), op->sw = f32(s, "sw"), op->bias = f32(s, "bias");
  op->wbits = s.u64.at("wbits");
  op->model = op->wbits;
  op->wants_w16 = k.wants_w16;
  return op;
}

}  // namespace fbck::rt
