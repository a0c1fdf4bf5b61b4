// binary_conv2d: a k x k convolution on a one-plane binarized input. Every input position's
// channels are packed into bits once, gathered per output position into rows of K = taps * C bits
// (tap-major, zero bits = +1 for padded taps), one binary GEMM, then an epilogue that removes the
// padded taps' weights from the exact integer dot and applies ((d [* s1]) - offset) * sw + bias
// in the student's float order, offset = sum over valid taps and channels of sign * t2 (in double).
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "binarizing.h"
#include "ops.h"

namespace fbck::rt {
namespace {

// The output positions' view of the input for one input size and padding: per (position, tap)
// the input position read (-1: padding), and per (out channel, position) the padded taps' weight
// sum and the valid taps' t2 offset, as floats for a plain epilogue loop.
struct Geometry {
  std::vector<int32_t> src;
  std::vector<float> fix, off;
};

class BinaryConv2d : public Op, public Binarizing {
 public:
  size_t C = 0, O = 0, kernel[2] = {1, 1}, stride[2] = {1, 1}, pad[2] = {0, 0}, dilation[2] = {1, 1};
  size_t H = 0, W = 0;  // the whole utterance's input size
  S1Mode s1 = S1Mode::none;
  float s1c = 1.0f;
  bool has_t2 = false;
  std::vector<float> t0, t2, sw, bias;
  std::vector<uint64_t> wbits;
  std::vector<uint32_t> w16;
  bool wants_w16 = false;
  std::vector<int32_t> wsum;  // per (out channel, tap): sum of the GEMM's +-1 weights
  std::vector<double> t2w;    // per (out channel, tap): sum over channels of sign * t2 (the model's signs)
  Geometry whole;             // for the whole utterance
  mutable std::mutex mu;      // guards the streaming windows' geometries
  mutable std::map<std::tuple<size_t, size_t, size_t, size_t, ptrdiff_t, ptrdiff_t>, Geometry> windows;

  size_t taps() const { return kernel[0] * kernel[1]; }

  // Per (out channel, tap) sums of the weights as the GEMM sees them, and (with_t2w: from the
  // model's signs, before any flip) of sign * t2.
  void sums(bool with_t2w) {
    const size_t T = taps(), words = row_words(T * C);
    wsum.assign(O * T, 0);
    if (with_t2w) t2w.assign(O * T, 0.0);
    for (size_t o = 0; o < O; ++o)
      for (size_t t = 0; t < T; ++t)
        for (size_t c = 0; c < C; ++c) {
          const size_t bit = t * C + c;
          const int sgn = ((wbits[o * words + bit / 64] >> (bit % 64)) & 1u) ? -1 : 1;
          wsum[o * T + t] += sgn;
          if (with_t2w) t2w[o * T + t] += sgn * static_cast<double>(t2[c]);
        }
  }

  void prepare() override {
    const size_t T = taps();
    sums(false);
    whole = geometry(H, W, pad[0], pad[1], -1, Window{});
    std::lock_guard<std::mutex> lock(mu);
    windows.clear();
    if (wants_w16) w16 = interleave_rows16(wbits.data(), O, T * C);
  }

  Geometry geometry(size_t h, size_t w, size_t pad_h, size_t pad_w, int time_axis, const Window& win) const {
    const size_t T = taps(), Ho = conv_out_size(h, kernel[0], stride[0], pad_h, dilation[0]),
                 Wo = conv_out_size(w, kernel[1], stride[1], pad_w, dilation[1]), HoWo = Ho * Wo;
    Geometry g;
    g.src.assign(HoWo * T, -1);
    for (size_t oh = 0; oh < Ho; ++oh)
      for (size_t ow = 0; ow < Wo; ++ow)
        for (size_t i = 0; i < kernel[0]; ++i)
          for (size_t j = 0; j < kernel[1]; ++j) {
            const ptrdiff_t ih = (ptrdiff_t)(oh * stride[0] + i * dilation[0]) - (ptrdiff_t)pad_h;
            const ptrdiff_t iw = (ptrdiff_t)(ow * stride[1] + j * dilation[1]) - (ptrdiff_t)pad_w;
            bool ok = ih >= 0 && ih < (ptrdiff_t)h && iw >= 0 && iw < (ptrdiff_t)w;
            if (ok && win.on) {
              const ptrdiff_t tc = time_axis == 2 ? ih : iw;
              ok = tc >= win.valid_lo && tc < win.valid_hi;
            }
            if (ok) g.src[(oh * Wo + ow) * T + i * kernel[1] + j] = static_cast<int32_t>(ih * w + iw);
          }
    // positions with the same valid taps share their corrections
    std::vector<std::string> seen;
    std::map<std::string, int32_t> index;
    std::vector<int32_t> pattern(HoWo);
    std::string valid(T, '0');
    for (size_t p = 0; p < HoWo; ++p) {
      for (size_t t = 0; t < T; ++t) valid[t] = g.src[p * T + t] >= 0 ? '1' : '0';
      auto it = index.find(valid);
      if (it == index.end()) {
        it = index.emplace(valid, static_cast<int32_t>(seen.size())).first;
        seen.push_back(valid);
      }
      pattern[p] = it->second;
    }
    std::vector<float> fix(seen.size() * O), off(seen.size() * O);
    for (size_t q = 0; q < seen.size(); ++q)
      for (size_t o = 0; o < O; ++o) {
        int32_t f = 0;
        double d = 0.0;
        for (size_t t = 0; t < T; ++t) {
          if (seen[q][t] == '1')
            d += t2w[o * T + t];
          else
            f += wsum[o * T + t];
        }
        fix[q * O + o] = static_cast<float>(f);  // exact: |f| < 2^24
        off[q * O + o] = static_cast<float>(d);
      }
    g.fix.resize(O * HoWo);
    g.off.resize(O * HoWo);
    for (size_t o = 0; o < O; ++o)
      for (size_t p = 0; p < HoWo; ++p) {
        g.fix[o * HoWo + p] = fix[pattern[p] * O + o];
        g.off[o * HoWo + p] = off[pattern[p] * O + o];
      }
    return g;
  }

  const Geometry& window_geometry(size_t h, size_t w, size_t pad_h, size_t pad_w, int time_axis,
                                  const Window& win) const {
    const auto key = std::make_tuple(h, w, pad_h, pad_w, win.valid_lo, win.valid_hi);
    std::lock_guard<std::mutex> lock(mu);
    auto it = windows.find(key);
    if (it == windows.end()) it = windows.emplace(key, geometry(h, w, pad_h, pad_w, time_axis, win)).first;
    return it->second;  // std::map never moves its nodes
  }

  void run(const Args& a) const override {
    const Kernels& k = *a.k;
    const Dims& xd = a.in_dims[0];
    const Dims& od = *a.out_dims;
    const size_t B = xd[0], h = xd[2], w = xd[3], HoWo = od[2] * od[3], T = taps();
    const size_t cw = row_words(C), words = row_words(T * C);
    thread_local std::vector<uint64_t> pos, rows;  // reused: no allocation per call
    pos.assign(B * h * w * cw, 0);
    k.pack_threshold(a.in[0], B, C, h * w, t0.data(), pos.data(), nullptr);
    const Geometry* g = &whole;
    if (a.window.on || h != H || w != W) {
      const size_t pad_h = (a.window.on && a.time_axis == 2) ? 0 : pad[0];
      const size_t pad_w = (a.window.on && a.time_axis == 3) ? 0 : pad[1];
      g = &window_geometry(h, w, pad_h, pad_w, a.time_axis, a.window);
    }
    rows.assign(B * HoWo * words, 0);
    for (size_t b = 0; b < B; ++b)
      for (size_t p = 0; p < HoWo; ++p) {
        uint64_t* row = rows.data() + (b * HoWo + p) * words;
        const int32_t* s = g->src.data() + p * T;
        for (size_t t = 0; t < T; ++t) {
          if (s[t] < 0) continue;  // padding: 0 bits (+1), corrected below
          const uint64_t* chunk = pos.data() + (b * h * w + s[t]) * cw;
          const size_t base = t * C;
          for (size_t q = 0; q * 64 < C; ++q) {
            const size_t at = base + q * 64, shift = at % 64;
            row[at / 64] |= chunk[q] << shift;
            if (shift && shift + std::min<size_t>(64, C - q * 64) > 64) row[at / 64 + 1] |= chunk[q] >> (64 - shift);
          }
        }
      }
    // the dot products as exact floats straight into the (B, O, Ho*Wo) output, then the
    // corrections and the affine in place
    BinaryLinearArgs ga;
    ga.a1 = rows.data();
    ga.w = wbits.data();
    ga.w16 = w16.empty() ? nullptr : w16.data();
    ga.outer = B, ga.inner = HoWo, ga.N = O, ga.K = T * C;
    ga.y = a.out;
    k.binary_linear(ga);
    const bool scaled = s1 == S1Mode::constant;
    for (size_t b = 0; b < B; ++b)
      for (size_t o = 0; o < O; ++o) {
        float* y = a.out + (b * O + o) * HoWo;
        const float* f = g->fix.data() + o * HoWo;
        const float* off = g->off.data() + o * HoWo;
        const float s = sw[o], bi = bias[o], c = s1c;
        if (scaled && has_t2)
          for (size_t p = 0; p < HoWo; ++p) y[p] = ((y[p] - f[p]) * c - off[p]) * s + bi;
        else if (scaled)
          for (size_t p = 0; p < HoWo; ++p) y[p] = ((y[p] - f[p]) * c) * s + bi;
        else if (has_t2)
          for (size_t p = 0; p < HoWo; ++p) y[p] = ((y[p] - f[p]) - off[p]) * s + bi;
        else
          for (size_t p = 0; p < HoWo; ++p) y[p] = (y[p] - f[p]) * s + bi;
      }
  }
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
    const size_t T = taps(), words = row_words(T * C);
    for (size_t o = 0; o < O; ++o)
      for (size_t tap = 0; tap < T; ++tap)
        for (size_t c = 0; c < C; ++c)
          if (flip[c]) wbits[o * words + (tap * C + c) / 64] ^= uint64_t{1} << ((tap * C + c) % 64);
    // prepare() recomputes the weight sums from the flipped bits; the t2 offsets keep the model's signs
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
  op->wants_w16 = k.wants_w16;
  op->sums(true);
  return op;
}

}  // namespace fbck::rt
