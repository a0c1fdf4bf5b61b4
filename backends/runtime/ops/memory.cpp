// memory / binary_memory: the FSMN memory block, a per-channel filter over time with `left` past
// and `right` future taps (dilation, zero padding) plus `residual` * x, on (B, C, T) or (B, T, C).
// FP: y = (sum_k taps[c, k] * x[c, t + (k - left) d]) + bias[c] (kernels.h memory_f32); binary:
// the input binarized (1 or 2 planes, offset t2), +-1/0 taps, y = acc * sw[c] + bias[c]
// (kernels.h binary_memory); then the post-ops.
#include "binarizing.h"
#include "layer.h"
#include "ops.h"

namespace fbck::rt {
namespace {

class MemoryBase : public Layer {
 public:
  int ch_axis = 1, t_axis = 2;
  size_t left = 0, right = 0, dil = 1;
  float residual = 0.0f;
  std::vector<float> bias;

  std::vector<float> taps_t;  // the taps tap-major as floats (kernels.h memory_taps_by_tap)

  int channel_axis_out() const override { return ch_axis; }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m;
    if (t.empty() || t[0] != t_axis) return m;  // time on the channel axis: whole utterance
    m.out_axis = t_axis;
    m.lo = static_cast<ptrdiff_t>(left * dil);
    m.hi = static_cast<ptrdiff_t>(right * dil);
    m.pads_itself = true;
    return m;
  }
  // (B, C, T, strides) of a (B, C, T) or (B, T, C) buffer
  void layout(const Dims& xd, size_t& B, size_t& C, size_t& T, ptrdiff_t& sb, ptrdiff_t& sc, ptrdiff_t& st) const {
    B = xd[0], C = xd[ch_axis], T = xd[t_axis];
    sb = static_cast<ptrdiff_t>(C * T);
    sc = ch_axis == 1 ? static_cast<ptrdiff_t>(T) : 1;
    st = ch_axis == 1 ? 1 : static_cast<ptrdiff_t>(C);
  }

 protected:
  template <class W>
  void prepare_taps(const std::vector<W>& w) {
    const size_t k = left + right + 1;
    taps_t = memory_taps_by_tap(w.data(), w.size() / k, k);
  }
};

class Memory : public MemoryBase {
 public:
  std::vector<float> taps;  // [C, left + right + 1]

  void prepare() override { prepare_taps(taps); }

  void run_post(const Args& a, float* y, const PlanesOut* planes) const override {
    MemoryF32Args m;
    layout(a.in_dims[0], m.B, m.C, m.T, m.stride_b, m.stride_c, m.stride_t);
    m.x = a.in[0], m.y = y, m.w = taps.data();
    m.left = left, m.right = right, m.dilation = dil;
    m.bias = bias.data(), m.residual = residual;
    m.out_lo = a.out_lo, m.out_hi = a.out_hi, m.taps_t = taps_t.data();
    PostOps buf;
    m.post = post_ops(a, planes, buf);
    a.k->memory_f32(m);
  }
};

class BinaryMemory : public MemoryBase, public Binarizing {
 public:
  int planes = 1;
  S1Mode s1 = S1Mode::none;
  float s1c = 1.0f;
  bool has_t2 = false;
  std::vector<float> t0, t1, t2, sw;
  std::vector<int8_t> ws;

  void prepare() override { prepare_taps(ws); }

  void run_post(const Args& a, float* y, const PlanesOut* next) const override {
    BinaryMemoryArgs m;
    layout(a.in_dims[0], m.B, m.C, m.T, m.stride_b, m.stride_c, m.stride_t);
    m.x = a.in[0], m.y = y;
    m.t0 = t0.data(), m.planes = planes, m.s1_mode = s1, m.s1_const = s1c;
    m.t1 = t1.data(), m.t2 = has_t2 ? t2.data() : nullptr, m.ws = ws.data();
    m.left = left, m.right = right, m.dilation = dil;
    m.sw = sw.data(), m.bias = bias.data(), m.residual = residual;
    m.out_lo = a.out_lo, m.out_hi = a.out_hi, m.taps_t = taps_t.data();
    PostOps buf;
    m.post = post_ops(a, next, buf);
    a.k->binary_memory(m);
  }

  // -- Binarizing
  bool sign_only() const override { return planes == 1 && s1 != S1Mode::mean_abs && residual == 0.0f; }
  int channel_axis() const override { return ch_axis; }
  const std::vector<float>& thresholds() const override { return t0; }
  bool can_flip() const override { return false; }  // the t2 offset would flip with the taps
  void rethreshold(const std::vector<float>& t, const std::vector<bool>&) override { t0 = t; }
};

template <class M>
void common(M& op, const OpSpec& s) {
  op.ch_axis = static_cast<int>(s.ints.at("channel_axis"));
  op.t_axis = static_cast<int>(s.ints.at("time_axis"));
  op.left = s.ints.at("left"), op.right = s.ints.at("right"), op.dil = s.ints.at("dilation");
  op.residual = static_cast<float>(s.ints.at("residual"));
  op.bias = f32(s, "bias");
}

}  // namespace

std::unique_ptr<Op> make_memory(const OpSpec& s, const std::vector<Dims>&, const Dims&, const Kernels&) {
  auto op = std::make_unique<Memory>();
  common(*op, s);
  op->taps = f32(s, "taps");
  return op;
}

std::unique_ptr<Op> make_binary_memory(const OpSpec& s, const std::vector<Dims>&, const Dims&, const Kernels&) {
  auto op = std::make_unique<BinaryMemory>();
  common(*op, s);
  op->planes = static_cast<int>(s.ints.at("planes"));
  op->s1 = s1_mode(s);
  op->s1c = static_cast<float>(s.floats.at("scale1_value"));
  op->has_t2 = s.ints.at("has_t2") != 0;
  op->t0 = f32(s, "t0"), op->t1 = f32(s, "t1"), op->t2 = f32(s, "t2"), op->sw = f32(s, "sw");
  op->ws = s.i8.at("taps");
  return op;
}

}  // namespace fbck::rt
