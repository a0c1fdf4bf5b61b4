// binary_linear: pack the input's sign planes (thresholds t0, t1), binary GEMM, and the epilogue
// ((d1 [* s1]) + d2 * s2) * sw + bias in the README's order (kernels.h binary_linear).
#include "binary_linear.h"

#include <algorithm>

namespace fbck::rt {

void BinaryLinear::prepare() {
  if (wants_w16) w16 = interleave_rows16(wbits.data(), N, K);
}

void BinaryLinear::compute(const Args& a, const float* x, const PlanesIn* in, const Dims& d, float* y,
                           const PlanesOut* next) const {
  const Kernels& k = *a.k;
  const Split sp = split(d, axis);
  const size_t P = sp.outer * sp.inner, words = row_words(K);
  thread_local std::vector<uint64_t> b1, b2;  // reused: no allocation per call
  thread_local std::vector<float> s1v, s2v;
  BinaryLinearArgs g;
  if (in) {
    g.a1 = in->bits1, g.a2 = in->bits2, g.s2 = in->s2;
    if (s1 == S1Mode::mean_abs) g.s1 = in->s1;
  } else {
    b1.assign(P * words, 0);
    b2.assign(planes == 2 ? P * words : 0, 0);
    s2v.assign(planes == 2 ? P : 0, 0.0f);
    s1v.assign(s1 == S1Mode::mean_abs ? P : 0, 0.0f);
    float* s1p = s1 == S1Mode::mean_abs ? s1v.data() : nullptr;
    if (planes == 2)
      k.pack_dual(x, sp.outer, K, sp.inner, t0.data(), t1.data(), b1.data(), b2.data(), s2v.data(), s1p);
    else
      k.pack_threshold(x, sp.outer, K, sp.inner, t0.data(), b1.data(), s1p);
    g.a1 = b1.data();
    g.a2 = planes == 2 ? b2.data() : nullptr;
    g.s2 = planes == 2 ? s2v.data() : nullptr;
    g.s1 = s1p;
  }
  if (s1 == S1Mode::constant) {
    thread_local std::vector<float> c;
    c.assign(P, s1c);
    g.s1 = c.data();
  }
  g.w = wbits.data();
  g.w16 = w16.empty() ? nullptr : w16.data();
  g.outer = sp.outer, g.inner = sp.inner, g.N = N, g.K = K;
  g.sw = sw.data(), g.bias = bias.data(), g.y = y;
  PostOps buf;
  g.post = post_ops(a, next, buf);
  k.binary_linear(g);
}

PlanesOut BinaryLinear::planes_for(size_t P, std::vector<uint64_t>& b1, std::vector<uint64_t>& b2,
                                   std::vector<float>& s2, std::vector<float>& s1v) const {
  const size_t words = row_words(K);
  PlanesOut out;
  b1.resize(P * words);
  out.t0 = t0.data(), out.bits1 = b1.data();
  if (planes == 2) {
    b2.resize(P * words);
    s2.resize(P);
    out.t1 = t1.data(), out.bits2 = b2.data(), out.s2 = s2.data();
  }
  if (s1 == S1Mode::mean_abs) {
    s1v.resize(P);
    out.s1 = s1v.data();
  }
  return out;
}

void BinaryLinear::run_post(const Args& a, float* y, const PlanesOut* next) const {
  compute(a, a.in[0], nullptr, a.in_dims[0], y, next);
}

TimeMap BinaryLinear::time_map(const std::vector<int>& t) const {
  TimeMap m = Op::time_map(t);
  if (m.out_axis == axis) m.out_axis = -1;
  return m;
}

void BinaryLinear::rethreshold(const std::vector<float>& t, const std::vector<bool>& flip) {
  t0 = t;
  const size_t words = row_words(K);
  for (size_t n = 0; n < N; ++n)
    for (size_t c = 0; c < K; ++c)
      if (flip[c]) wbits[n * words + c / 64] ^= uint64_t{1} << (c % 64);
}

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
