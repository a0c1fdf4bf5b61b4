// Portable scalar FBCK kernels: the oracle every SIMD path is tested against.
// Written for clarity, in exactly the float order of backends/README.md; the output transform
// (post-ops, bit planes) is output_transform.h's with one lane, as every table's.
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "fbck/bits.h"
#include "fbck/impls.h"
#include "fbck/kernels.h"
#include "fbck/output_transform.h"

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

// The post-ops and planes of one position's outputs y[n] (already the kernel's own value),
// channels in increasing order (output_transform.h with one lane). yat(n): y's index.
template <class At>
static void post_position(const PostView q, const PostView lq, size_t p, size_t N, float* vals,
                          float* y, At yat) {
  RowPlanes<VScalar> rp(q, p), lp(lq, p);
  for (size_t n = 0; n < N; ++n) {
    float v = vals[n];
    const size_t at = yat(n);
    if (q.active) v = post_value_row<VScalar>(q, v, n, q.res ? q.res + at : nullptr, 1);
    if (y) y[at] = v;
    if (q.planes) rp.add(v, n, 1);
    if (lq.planes) lp.add(v, n, 1);
  }
  if (q.planes) rp.finish();
  if (lq.planes) lp.finish();
}

void binary_linear(const BinaryLinearArgs& g) {
  const size_t W = row_words(g.K), P = g.outer * g.inner;
  const bool dual = g.a2 != nullptr;
  const PostParams q(g.post, g.N);
  PostOps legacy;
  legacy.planes.t0 = g.thr;
  legacy.planes.bits1 = g.ybits;
  const PostParams lq(g.ybits ? &legacy : nullptr, g.N);
  q.clear_rows(0, P);
  lq.clear_rows(0, P);
  std::vector<float> vals(g.N);
  for (size_t p = 0; p < P; ++p) {
    const size_t o = p / g.inner, i = p % g.inner;
    for (size_t n = 0; n < g.N; ++n) {
      const int32_t d1 = dot(g.a1 + p * W, g.w + n * W, W, g.K);
      const int32_t d2 = dual ? dot(g.a2 + p * W, g.w + n * W, W, g.K) : 0;
      vals[n] = binary_epilogue(d1, g.s1, d2, g.s2, dual, p, n, g.sw, g.bias, g.slope);
    }
    post_position(q, lq, p, g.N, vals.data(), g.y, [&](size_t n) { return (o * g.N + n) * g.inner + i; });
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

// The tap loop of both memories over v[t * C + c]: acc in tap order, terms outside [0, T) skipped.
static float memory_taps(const float* v, size_t C, size_t T, size_t c, size_t t, size_t left,
                         size_t dil, size_t taps, const float* wc) {
  float acc = 0.0f;
  for (size_t k = 0; k < taps; ++k) {
    const ptrdiff_t tt = static_cast<ptrdiff_t>(t) +
                         (static_cast<ptrdiff_t>(k) - static_cast<ptrdiff_t>(left)) * static_cast<ptrdiff_t>(dil);
    if (tt < 0 || tt >= static_cast<ptrdiff_t>(T)) continue;
    acc = acc + wc[k] * v[static_cast<size_t>(tt) * C + c];
  }
  return acc;
}

// Runs y_of(b, c, t, acc) per output and the post-ops per position (b, t) over channels.
template <class Out>
static void memory_outputs(size_t B, size_t C, size_t T, ptrdiff_t sb, ptrdiff_t sc, ptrdiff_t st,
                           const PostOps* post, float* y, Out out) {
  const PostParams q(post, C), none(nullptr, C);
  q.clear_rows(0, B * T);
  std::vector<float> vals(C);
  for (size_t b = 0; b < B; ++b)
    for (size_t t = 0; t < T; ++t) {
      for (size_t c = 0; c < C; ++c) vals[c] = out(b, c, t);
      post_position(q, none, b * T + t, C, vals.data(), y, [&](size_t c) {
        return static_cast<size_t>(static_cast<ptrdiff_t>(b) * sb + static_cast<ptrdiff_t>(c) * sc +
                                   static_cast<ptrdiff_t>(t) * st);
      });
    }
}

void binary_memory(const BinaryMemoryArgs& m) {
  const size_t C = m.C, T = m.T, taps = m.left + m.right + 1;
  std::vector<float> v(m.B * T * C), wsf(C * taps);
  for (size_t i = 0; i < C * taps; ++i) wsf[i] = static_cast<float>(m.ws[i]);
  for (size_t b = 0; b < m.B; ++b) memory_activation(m, b, v.data() + b * T * C);
  memory_outputs(m.B, C, T, m.stride_b, m.stride_c, m.stride_t, m.post, m.y, [&](size_t b, size_t c, size_t t) {
    const float acc = memory_taps(v.data() + b * T * C, C, T, c, t, m.left, m.dilation, taps, wsf.data() + c * taps);
    const ptrdiff_t off = static_cast<ptrdiff_t>(b) * m.stride_b + static_cast<ptrdiff_t>(c) * m.stride_c +
                          static_cast<ptrdiff_t>(t) * m.stride_t;
    return memory_output(acc, m.x[off], c, m);
  });
}

void memory_f32(const MemoryF32Args& m) {
  const size_t C = m.C, T = m.T, taps = m.left + m.right + 1;
  std::vector<float> v(m.B * T * C);
  for (size_t b = 0; b < m.B; ++b)
    for (size_t t = 0; t < T; ++t)
      for (size_t c = 0; c < C; ++c)
        v[(b * T + t) * C + c] = m.x[static_cast<ptrdiff_t>(b) * m.stride_b + static_cast<ptrdiff_t>(c) * m.stride_c +
                                     static_cast<ptrdiff_t>(t) * m.stride_t];
  memory_outputs(m.B, C, T, m.stride_b, m.stride_c, m.stride_t, m.post, m.y, [&](size_t b, size_t c, size_t t) {
    const float acc = memory_taps(v.data() + b * T * C, C, T, c, t, m.left, m.dilation, taps, m.w + c * taps);
    float y = m.bias ? acc + m.bias[c] : acc;
    if (m.residual != 0.0f) y = v[(b * T + t) * C + c] * m.residual + y;
    return y;
  });
}

void post_ops(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post, float* y) {
  post_ops_buffer<VScalar>(x, outer, N, inner, post, y);
}

// ---------------------------------------------------------------------------------------------
// Binary conv2d: the dot over the valid taps computed directly, position by position.
// ---------------------------------------------------------------------------------------------
void binary_conv2d(const BinaryConv2dArgs& a) {
  const BinaryConv2dPlan& pl = *a.plan;
  const BinaryConv2dGeometry& g = pl.g;
  const size_t C = g.C, CW = row_words(C), RW = row_words(pl.K), O = g.O, HW = pl.Ho * pl.Wo;
  const PostParams q(a.post, O), none(nullptr, O);
  q.clear_rows(0, a.B * HW);
  std::vector<float> vals(O);
  for (size_t b = 0; b < a.B; ++b)
    for (size_t oh = 0; oh < pl.Ho; ++oh)
      for (size_t ow = 0; ow < pl.Wo; ++ow) {
        const size_t cls = pl.row_class[oh] * pl.col_classes + pl.col_class[ow];
        for (size_t o = 0; o < O; ++o) {
          int32_t d = 0;
          for (size_t kh = 0; kh < g.KH; ++kh) {
            const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * g.stride_h + kh * g.dil_h) - static_cast<ptrdiff_t>(g.pad_h);
            if (ih < static_cast<ptrdiff_t>(g.h_lo) || ih >= static_cast<ptrdiff_t>(g.h_hi)) continue;
            for (size_t kw = 0; kw < g.KW; ++kw) {
              const ptrdiff_t iw = static_cast<ptrdiff_t>(ow * g.stride_w + kw * g.dil_w) - static_cast<ptrdiff_t>(g.pad_w);
              if (iw < static_cast<ptrdiff_t>(g.w_lo) || iw >= static_cast<ptrdiff_t>(g.w_hi)) continue;
              const uint64_t* xr = a.xbits + ((b * g.H + static_cast<size_t>(ih)) * g.W + static_cast<size_t>(iw)) * CW;
              const uint64_t* wr = a.w + o * RW;
              const size_t base = (kh * g.KW + kw) * C;
              for (size_t c = 0; c < C; ++c) {
                const uint64_t xb = (xr[c >> 6] >> (c & 63)) & 1u;
                const uint64_t wb = (wr[(base + c) >> 6] >> ((base + c) & 63)) & 1u;
                d += (xb ^ wb) ? -1 : 1;
              }
            }
          }
          float z = static_cast<float>(d);
          if (a.s1) z = z * a.s1[0];
          if (!pl.off.empty()) z = z - pl.off[cls * O + o];
          float y = a.sw ? z * a.sw[o] : z;
          vals[o] = y + (a.bias ? a.bias[o] : 0.0f);
        }
        post_position(q, none, (b * pl.Ho + oh) * pl.Wo + ow, O, vals.data(), a.y,
                      [&](size_t o) { return (b * O + o) * HW + oh * pl.Wo + ow; });
      }
}

// ---------------------------------------------------------------------------------------------
// FP32: direct loops, one fma chain per output in the reduction order of kernels.h.
// ---------------------------------------------------------------------------------------------
void linear_f32(const LinearF32Args& g) {
  const size_t P = g.outer * g.inner;
  std::vector<float> raw(P * g.N);
  for (size_t o = 0; o < g.outer; ++o)
    for (size_t n = 0; n < g.N; ++n)
      for (size_t i = 0; i < g.inner; ++i) {
        float acc = 0.0f;
        for (size_t k = 0; k < g.K; ++k)
          acc = std::fma(g.w[n * g.K + k], g.x[(o * g.K + k) * g.inner + i], acc);
        raw[(o * g.N + n) * g.inner + i] = fp_epilogue(acc, n, g.ep);
      }
  post_ops_buffer<VScalar>(raw.data(), g.outer, g.N, g.inner, g.post ? *g.post : PostOps(), g.y);
}

void conv2d_f32(const Conv2dF32Args& g) {
  const size_t OH = conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
  const size_t OW = conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
  const size_t Cg = g.C / g.groups, Og = g.O / g.groups;
  std::vector<float> raw(g.B * g.O * OH * OW);
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
                acc = std::fma(wv, xv, acc);
              }
            }
          raw[((b * g.O + oc) * OH + oh) * OW + ow] = fp_epilogue(acc, oc, g.ep);
        }
    }
  post_ops_buffer<VScalar>(raw.data(), g.B, g.O, OH * OW, g.post ? *g.post : PostOps(), g.y);
}

std::vector<float> pack_f32_weights(const float* w, size_t rows, size_t K) {
  return std::vector<float>(w, w + rows * K);  // the reference reads w itself
}

}  // namespace ref

// ---------------------------------------------------------------------------------------------
// Portable helpers shared by every table
// ---------------------------------------------------------------------------------------------
void interleave_rows16_into(const uint64_t* w, size_t N, size_t K, uint32_t* out) {
  const size_t W = row_words(K), C = (K + 31) / 32, tiles = (N + 15) / 16;
  std::memset(out, 0, tiles * C * 16 * sizeof(uint32_t));
  for (size_t n = 0; n < N; ++n)
    for (size_t j = 0; j < C; ++j) {
      const uint64_t word = w[n * W + j / 2];
      out[((n / 16) * C + j) * 16 + n % 16] = static_cast<uint32_t>((j & 1) ? word >> 32 : word);
    }
}

void pack_f32_panels(const float* w, size_t rows, size_t K, size_t MR, size_t KC, float* dst) {
  const size_t Mpad = (rows + MR - 1) / MR * MR;
  for (size_t k0 = 0; k0 < K; k0 += KC) {
    const size_t kc = K - k0 < KC ? K - k0 : KC;
    float* blk = dst + k0 * Mpad;
    for (size_t m = 0; m < Mpad / MR; ++m)
      for (size_t k = 0; k < kc; ++k)
        for (size_t r = 0; r < MR; ++r) {
          const size_t row = m * MR + r;
          blk[(m * kc + k) * MR + r] = row < rows ? w[row * K + k0 + k] : 0.0f;
        }
  }
  for (size_t i = 0; i < 16; ++i) dst[Mpad * K + i] = 0.0f;
}

std::vector<float> pack_f32_panels(const float* w, size_t rows, size_t K, size_t MR, size_t KC) {
  std::vector<float> out((rows + MR - 1) / MR * MR * K + 16);
  pack_f32_panels(w, rows, K, MR, KC, out.data());
  return out;
}

std::vector<float> pack_f32_weights_avx2(const float* w, size_t rows, size_t K) {
  return pack_f32_panels(w, rows, K, kAvx2MR, kAvx2KC);
}
std::vector<float> pack_f32_weights_neon(const float* w, size_t rows, size_t K) {
  return pack_f32_panels(w, rows, K, kNeonMR, kNeonKC);
}

BinaryConv2dPlan plan_binary_conv2d(const BinaryConv2dGeometry& geo, const uint64_t* w, const float* t2) {
  BinaryConv2dPlan pl;
  BinaryConv2dGeometry& g = pl.g;
  g = geo;
  if (g.C == 0 || g.O == 0 || g.KH == 0 || g.KW == 0 || g.stride_h == 0 || g.stride_w == 0 ||
      g.dil_h == 0 || g.dil_w == 0)
    throw std::invalid_argument("plan_binary_conv2d: channels, kernel, strides and dilations must be positive");
  g.h_hi = g.h_hi < g.H ? g.h_hi : g.H;
  g.w_hi = g.w_hi < g.W ? g.w_hi : g.W;
  pl.Ho = conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
  pl.Wo = conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
  if (pl.Ho == 0 || pl.Wo == 0) throw std::invalid_argument("plan_binary_conv2d: empty output");
  const size_t taps = g.KH * g.KW, C = g.C, O = g.O;
  pl.K = taps * C;
  // classes of output rows / columns by which kernel rows / columns fall on valid input
  auto classes = [](size_t n_out, size_t k, size_t stride, size_t pad, size_t dil, size_t lo, size_t hi,
                    std::vector<uint32_t>& cls, std::vector<std::vector<bool>>& seen) {
    cls.assign(n_out, 0);
    for (size_t o = 0; o < n_out; ++o) {
      std::vector<bool> valid(k);
      for (size_t j = 0; j < k; ++j) {
        const ptrdiff_t i = static_cast<ptrdiff_t>(o * stride + j * dil) - static_cast<ptrdiff_t>(pad);
        valid[j] = i >= static_cast<ptrdiff_t>(lo) && i < static_cast<ptrdiff_t>(hi);
      }
      size_t q = 0;
      while (q < seen.size() && seen[q] != valid) ++q;
      if (q == seen.size()) seen.push_back(valid);
      cls[o] = static_cast<uint32_t>(q);
    }
  };
  std::vector<std::vector<bool>> rows_v, cols_v;
  classes(pl.Ho, g.KH, g.stride_h, g.pad_h, g.dil_h, g.h_lo, g.h_hi, pl.row_class, rows_v);
  classes(pl.Wo, g.KW, g.stride_w, g.pad_w, g.dil_w, g.w_lo, g.w_hi, pl.col_class, cols_v);
  pl.col_classes = cols_v.size();
  // per (o, tap): the weights' sum over the tap's channels, and their t2-weighted sum
  const size_t RW = row_words(pl.K);
  std::vector<int32_t> wsum(O * taps);
  std::vector<double> t2sum(t2 ? O * taps : 0);
  for (size_t o = 0; o < O; ++o)
    for (size_t t = 0; t < taps; ++t) {
      int32_t s = 0;
      double s2 = 0.0;
      for (size_t c = 0; c < C; ++c) {
        const size_t k = t * C + c;
        const bool neg = (w[o * RW + (k >> 6)] >> (k & 63)) & 1u;
        s += neg ? -1 : 1;
        if (t2) s2 += neg ? -static_cast<double>(t2[c]) : static_cast<double>(t2[c]);
      }
      wsum[o * taps + t] = s;
      if (t2) t2sum[o * taps + t] = s2;
    }
  const size_t ncls = rows_v.size() * cols_v.size();
  pl.fix.assign(ncls * O, 0);
  if (t2) pl.off.assign(ncls * O, 0.0f);
  for (size_t rc = 0; rc < rows_v.size(); ++rc)
    for (size_t cc = 0; cc < cols_v.size(); ++cc) {
      const size_t cls = rc * cols_v.size() + cc;
      for (size_t o = 0; o < O; ++o) {
        int32_t fix = 0;
        double off = 0.0;
        for (size_t kh = 0; kh < g.KH; ++kh)
          for (size_t kw = 0; kw < g.KW; ++kw) {
            const size_t t = kh * g.KW + kw;
            if (rows_v[rc][kh] && cols_v[cc][kw]) {
              if (t2) off += t2sum[o * taps + t];
            } else {
              fix += wsum[o * taps + t];
            }
          }
        pl.fix[cls * O + o] = fix;
        if (t2) pl.off[cls * O + o] = static_cast<float>(off);
      }
    }
  const size_t HW = pl.Ho * pl.Wo;
  pl.fix_map.resize(O * HW);
  if (t2) pl.off_map.resize(O * HW);
  for (size_t oh = 0; oh < pl.Ho; ++oh)
    for (size_t ow = 0; ow < pl.Wo; ++ow) {
      const size_t cls = pl.row_class[oh] * pl.col_classes + pl.col_class[ow], hw = oh * pl.Wo + ow;
      for (size_t o = 0; o < O; ++o) {
        pl.fix_map[o * HW + hw] = static_cast<float>(pl.fix[cls * O + o]);  // exact: |fix| < 2^24
        if (t2) pl.off_map[o * HW + hw] = pl.off[cls * O + o];
      }
    }
  return pl;
}

const Kernels& ref_kernels() {
  static const Kernels k = [] {
    Kernels t{};
    t.name = "ref";
    t.pack_threshold = ref::pack_threshold;
    t.pack_dual = ref::pack_dual;
    t.pack_weights = ref::pack_weights;
    t.bgemm = ref::bgemm;
    t.binary_linear = ref::binary_linear;
    t.binary_memory = ref::binary_memory;
    t.linear_f32 = ref::linear_f32;
    t.conv2d_f32 = ref::conv2d_f32;
    t.post_ops = ref::post_ops;
    t.binary_conv2d = ref::binary_conv2d;
    t.memory_f32 = ref::memory_f32;
    t.pack_f32_weights = ref::pack_f32_weights;
    return t;
  }();
  return k;
}

}  // namespace fbck
