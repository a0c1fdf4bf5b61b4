// binary_linear: pack the input's sign planes (thresholds t0, t1), binary GEMM, and the epilogue
// ((d1 [* s1]) + d2 * s2) * sw + bias in the README's order (kernels.h binary_linear).
#include <algorithm>

#include "binarizing.h"
#include "ops.h"

namespace fbck::rt {
namespace {

class BinaryLinear : public Op, public Binarizing {
 public:
  int axis = 1;
  size_t K = 0, N = 0;
  int planes = 1;
  S1Mode s1 = S1Mode::none;
  float s1c = 1.0f;
  std::vector<float> t0, t1, sw, bias;
  std::vector<uint64_t> wbits;
  std::vector<uint32_t> w16;  // wbits as interleave_rows16, for the tables that want it
  bool wants_w16 = false;

  void prepare() override {
    if (wants_w16) w16 = interleave_rows16(wbits.data(), N, K);
  }

  void run(const Args& a) const override {
    const Kernels& k = *a.k;
    const Split sp = split(a.in_dims[0], axis);
    const size_t P = sp.outer * sp.inner, words = row_words(K);
    thread_local std::vector<uint64_t> b1, b2;  // reused: no allocation per call
    thread_local std::vector<float> s1v, s2v;
    b1.assign(P * words, 0);
    b2.assign(planes == 2 ? P * words : 0, 0);
    s1v.assign(s1 == S1Mode::none ? 0 : P, 0.0f);
    s2v.assign(planes == 2 ? P : 0, 0.0f);
    float* s1p = s1 == S1Mode::mean_abs ? s1v.data() : nullptr;
    if (planes == 2)
      k.pack_dual(a.in[0], sp.outer, K, sp.inner, t0.data(), t1.data(), b1.data(), b2.data(), s2v.data(), s1p);
    else
      k.pack_threshold(a.in[0], sp.outer, K, sp.inner, t0.data(), b1.data(), s1p);
    if (s1 == S1Mode::constant) std::fill(s1v.begin(), s1v.end(), s1c);
    BinaryLinearArgs g;
    g.a1 = b1.data();
    g.s1 = s1 == S1Mode::none ? nullptr : s1v.data();
    g.a2 = planes == 2 ? b2.data() : nullptr;
    g.s2 = planes == 2 ? s2v.data() : nullptr;
    g.w = wbits.data();
    g.w16 = w16.empty() ? nullptr : w16.data();
    g.outer = sp.outer, g.inner = sp.inner, g.N = N, g.K = K;
    g.sw = sw.data(), g.bias = bias.data(), g.y = a.out;
    k.binary_linear(g);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m = Op::time_map(t);
    if (m.out_axis == axis) m.out_axis = -1;
    return m;
  }

  // -- Binarizing
  bool sign_only() const override { return planes == 1 && s1 != S1Mode::mean_abs; }
  int channel_axis() const override { return axis; }
  const std::vector<float>& thresholds() const override { return t0; }
  bool can_flip() const override { return true; }
  void rethreshold(const std::vector<float>& t, const std::vector<bool>& flip) override {
    t0 = t;
    const size_t words = row_words(K);
    for (size_t n = 0; n < N; ++n)
      for (size_t c = 0; c < K; ++c)
        if (flip[c]) wbits[n * words + c / 64] ^= uint64_t{1} << (c % 64);
  }
};

}  // namespace

std::unique_ptr<Op> make_binary_linear(const OpSpec& s, const std::vector<Dims>&, const Dims&, const Kernels& k) {
  auto op = std::make_unique<BinaryLinear>();
  op->axis = static_cast<int>(s.ints.at("axis"));
  op->K = static_cast<size_t>(s.ints.at("k"));
  op->N = static_cast<size_t>(s.ints.at("n"));
  op->planes = static_cast<int>(s.ints.at("planes"));
  op->s1 = s1_mode(s);
  op->s1c = static_cast<float>(s.floats.at("scale1_value"));
  op->t0 = f32(s, "t0"), op->t1 = f32(s, "t1"), op->sw = f32(s, "sw"), op->bias = f32(s, "bias");
  op->wbits = s.u64.at("wbits");
  op->wants_w16 = k.wants_w16;
  return op;
}

}  // namespace fbck::rt
