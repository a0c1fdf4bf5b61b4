// Portable scalar FBCK kernels: the oracle every SIMD path is tested against.
// Written for clarity, in exactly the float order of backends/README.md.
#include <cstring>
#include <vector>

#include "fbck/bits.h"
#include "fbck/kernels.h"
#include "fbck/impls.h"

namespace fbck {
namespace ref {

static inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

// One position of a packed activation: values x[k * stride], k < K. Writes row1 (and row2 when
// dual) in full, padding included, and the canonical mean-abs scales when asked.
void pack_position(const float* x, ptrdiff_t stride, size_t K, const float* t0, const float* t1,
                   bool dual, uint64_t* row1, uint64_t* row2, float* s1, float* s2) {
  const size_t W = row_words(K);
  std::memset(row1, 0, W * sizeof(uint64_t));
  if (dual) std::memset(row2, 0, W * sizeof(uint64_t));
  AbsSum4 sx, sr;
  for (size_t k = 0; k < K; ++k) {
    const float v = x[static_cast<ptrdiff_t>(k) * stride];
    const float d = t0 ? v - t0[k] : v;
    row1[k >> 6] |= neg_bit(d) << (k & 63);
    sx.add(k, v);
    if (dual) {
      const float b1 = sign_pm1(d);
      float r = v - b1;
      if (t1) r = r - t1[k];
      row2[k >> 6] |= neg_bit(r) << (k & 63);
      sr.add(k, r);
    }
  }
  if (s1) *s1 = sx.mean(K);
  if (dual && s2) *s2 = sr.mean(K);
}

void pack_threshold(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
                    uint64_t* bits, float* s1) {
  const size_t W = row_words(K);
  for (size_t o = 0; o < outer; ++o)
    for (size_t i = 0; i < inner; ++i) {
      const size_t p = o * inner + i;
      pack_position(x + o * K * inner + i, static_cast<ptrdiff_t>(inner), K, t0, nullptr, false,
                    bits + p * W, nullptr, s1 ? s1 + p : nullptr, nullptr);
    }
}

void pack_dual(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
               const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2, float* s1) {
  const size_t W = row_words(K);
  for (size_t o = 0; o < outer; ++o)
    for (size_t i = 0; i < inner; ++i) {
      const size_t p = o * inner + i;
      pack_position(x + o * K * inner + i, static_cast<ptrdiff_t>(inner), K, t0, t1, true,
                    bits1 + p * W, bits2 + p * W, s1 ? s1 + p : nullptr, s2 ? s2 + p : nullptr);
    }
}

void pack_weights(const float* w, size_t N, size_t K, uint64_t* bits) {
  pack_threshold(w, N, K, 1, nullptr, bits, nullptr);
}

static inline int32_t dot(const uint64_t* a, const uint64_t* w, size_t W, size_t K) {
  int pc = 0;
  for (size_t j = 0; j < W; ++j) pc += popcount64(a[j] ^ w[j]);
  return static_cast<int32_t>(K) - 2 * pc;
}

void bgemm(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K, int32_t* out) {
  const size_t W = row_words(K);
  for (size_t p = 0; p < P; ++p)
    for (size_t n = 0; n < N; ++n) out[p * N + n] = dot(a + p * W, w + n * W, W, K);
}

void binary_linear(const BinaryLinearArgs& g) {
  const size_t W = row_words(g.K), P = g.outer * g.inner, WN = row_words(g.N);
  const bool dual = g.a2 != nullptr;
  if (g.ybits) std::memset(g.ybits, 0, P * WN * sizeof(uint64_t));
  for (size_t p = 0; p < P; ++p) {
    const size_t o = p / g.inner, i = p % g.inner;
    for (size_t n = 0; n < g.N; ++n) {
      const int32_t d1 = dot(g.a1 + p * W, g.w + n * W, W, g.K);
      const int32_t d2 = dual ? dot(g.a2 + p * W, g.w + n * W, W, g.K) : 0;
      const float y = binary_epilogue(d1, g.s1, d2, g.s2, dual, p, n, g.sw, g.bias, g.slope);
      if (g.y) g.y[(o * g.N + n) * g.inner + i] = y;
      if (g.ybits) g.ybits[p * WN + (n >> 6)] |= neg_bit(y - g.thr[n]) << (n & 63);
    }
  }
}

// v[t * C + c] of one batch element (the memory block's binarized, scaled, shifted activation).
void memory_activation(const BinaryMemoryArgs& m, size_t b, float* v) {
  const size_t C = m.C;
  std::vector<float> xs(C), b1(C), r(C);
  for (size_t t = 0; t < m.T; ++t) {
    const float* xb = m.x + static_cast<ptrdiff_t>(b) * m.stride_b +
                      static_cast<ptrdiff_t>(t) * m.stride_t;
    AbsSum4 sx, sr;
    for (size_t c = 0; c < C; ++c) {
      xs[c] = xb[static_cast<ptrdiff_t>(c) * m.stride_c];
      b1[c] = sign_pm1(m.t0 ? xs[c] - m.t0[c] : xs[c]);
      sx.add(c, xs[c]);
      if (m.planes == 2) {
        r[c] = xs[c] - b1[c];
        if (m.t1) r[c] = r[c] - m.t1[c];
        sr.add(c, r[c]);
      }
    }
    const float s1 = m.s1_mode == S1Mode::mean_abs ? sx.mean(C) : m.s1_const;
    const float s2 = m.planes == 2 ? sr.mean(C) : 0.0f;
    for (size_t c = 0; c < C; ++c) {
      float val = m.s1_mode != S1Mode::none ? b1[c] * s1 : b1[c];
      if (m.planes == 2) val = val + sign_pm1(r[c]) * s2;
      if (m.t2) val = val - m.t2[c];
      v[t * C + c] = val;
    }
  }
}

void binary_memory(const BinaryMemoryArgs& m) {
  const size_t C = m.C, T = m.T, taps = m.left + m.right + 1;
  std::vector<float> v(T * C);
  for (size_t b = 0; b < m.B; ++b) {
    memory_activation(m, b, v.data());
    for (size_t c = 0; c < C; ++c) {
      for (size_t t = 0; t < T; ++t) {
        float acc = 0.0f;
        for (size_t k = 0; k < taps; ++k) {
          const ptrdiff_t tt = static_cast<ptrdiff_t>(t) +
                               (static_cast<ptrdiff_t>(k) - static_cast<ptrdiff_t>(m.left)) *
                                   static_cast<ptrdiff_t>(m.dilation);
          if (tt < 0 || tt >= static_cast<ptrdiff_t>(T)) continue;
          acc = acc + static_cast<float>(m.ws[c * taps + k]) * v[tt * C + c];
        }
        const ptrdiff_t off = static_cast<ptrdiff_t>(b) * m.stride_b +
                              static_cast<ptrdiff_t>(c) * m.stride_c +
                              static_cast<ptrdiff_t>(t) * m.stride_t;
        m.y[off] = memory_output(acc, m.x[off], c, m);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// FP32: direct loops, float accumulation in k order.
// ---------------------------------------------------------------------------------------------
void linear_f32(const LinearF32Args& g) {
  for (size_t o = 0; o < g.outer; ++o)
    for (size_t n = 0; n < g.N; ++n)
      for (size_t i = 0; i < g.inner; ++i) {
        float acc = 0.0f;
        for (size_t k = 0; k < g.K; ++k)
          acc = acc + g.w[n * g.K + k] * g.x[(o * g.K + k) * g.inner + i];
        g.y[(o * g.N + n) * g.inner + i] = fp_epilogue(acc, n, g.ep);
      }
}

void conv2d_f32(const Conv2dF32Args& g) {
  const size_t OH = conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
  const size_t OW = conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
  const size_t Cg = g.C / g.groups, Og = g.O / g.groups;
  for (size_t b = 0; b < g.B; ++b)
    for (size_t oc = 0; oc < g.O; ++oc) {
      const size_t grp = oc / Og;
      for (size_t oh = 0; oh < OH; ++oh)
        for (size_t ow = 0; ow < OW; ++ow) {
          float acc = 0.0f;
          for (size_t c = 0; c < Cg; ++c)
            for (size_t kh = 0; kh < g.KH; ++kh) {
              const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * g.stride_h + kh * g.dil_h) -
                                   static_cast<ptrdiff_t>(g.pad_h);
              if (ih < 0 || ih >= static_cast<ptrdiff_t>(g.H)) continue;
              for (size_t kw = 0; kw < g.KW; ++kw) {
                const ptrdiff_t iw = static_cast<ptrdiff_t>(ow * g.stride_w + kw * g.dil_w) -
                                     static_cast<ptrdiff_t>(g.pad_w);
                if (iw < 0 || iw >= static_cast<ptrdiff_t>(g.W)) continue;
                const float xv = g.x[((b * g.C + grp * Cg + c) * g.H + ih) * g.W + iw];
                const float wv = g.w[((oc * Cg + c) * g.KH + kh) * g.KW + kw];
                acc = acc + wv * xv;
              }
            }
          g.y[((b * g.O + oc) * OH + oh) * OW + ow] = fp_epilogue(acc, oc, g.ep);
        }
    }
}

}  // namespace ref

const Kernels& ref_kernels() {
  static const Kernels k = {"ref",          ref::pack_threshold, ref::pack_dual,
                            ref::pack_weights, ref::bgemm,       ref::binary_linear,
                            ref::binary_memory, ref::linear_f32, ref::conv2d_f32};
  return k;
}

}  // namespace fbck
