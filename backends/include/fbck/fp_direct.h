// Internal: FP32 helpers written once over the vector traits of output_transform.h: the FP
// epilogue + post-ops pass (`fp_finish`) and the direct convolution for few input channels (a front
// end on one feature plane). No im2col: the input rows are split
// into their stride phases once (phase r of a zero-padded row holds columns r, r + stride, ...), so
// a tap (kh, kw) of a block of output columns is one contiguous vector load; four output channels
// share each load (one weight vector, four FMAs by lane on NEON). Float order of kernels.h: per
// output, fma over (c, kh, kw) in order (rows on padding skipped, padded columns read zeros: the
// same sum), then the FP epilogue and the post-ops (column orientation: lanes = output columns).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include "fbck/bits.h"
#include "fbck/kernels.h"
#include "fbck/output_transform.h"

namespace fbck {
namespace {

// The FP epilogue of kernels.h on a vector of outputs of channel c.
template <class V>
FBCK_OT_INLINE typename V::F fp_epilogue_v(typename V::F y, size_t c, const Epilogue& ep) {
  if (ep.bias) y = V::add(y, V::set1(ep.bias[c]));
  if (ep.scale) y = V::mul(y, V::set1(ep.scale[c]));
  if (ep.shift) y = V::add(y, V::set1(ep.shift[c]));
  if (ep.relu) y = V::relu(y);
  if (ep.slope) y = V::prelu(y, V::set1(ep.slope[c]));
  return y;
}

// The FP epilogue and the post-ops over raw sums acc (outer, N, inner) -> y (may alias acc, or be
// null with planes-only post-ops): row orientation when inner == 1, else column orientation.
template <class V>
void fp_finish(const float* acc, size_t outer, size_t N, size_t inner, const Epilogue& ep,
               const PostOps* post, float* y) {
  constexpr size_t L = V::L;
  const PostParams q(post, N);
  q.clear_rows(0, outer * inner);
  if (inner == 1) {
    // per-channel epilogue vectors padded with identity values
    Scratch<float> e(5 * (N + 16));
    const size_t np = N + 16;
    float *bias = e.get(), *scale = bias + np, *shift = scale + np, *slope = shift + np;
    for (size_t n = 0; n < np; ++n) {
      const bool in = n < N;
      bias[n] = (ep.bias && in) ? ep.bias[n] : 0.0f;
      scale[n] = (ep.scale && in) ? ep.scale[n] : 1.0f;
      shift[n] = (ep.shift && in) ? ep.shift[n] : 0.0f;
      slope[n] = (ep.slope && in) ? ep.slope[n] : 1.0f;
    }
    for (size_t p = 0; p < outer; ++p) {
      RowPlanes<V> rp(q, p);
      for (size_t n0 = 0; n0 < N; n0 += L) {
        const size_t nv = N - n0 < L ? N - n0 : L, at = p * N + n0;
        typename V::F v = nv == L ? V::load(acc + at) : V::load_part(acc + at, nv);
        if (ep.bias) v = V::add(v, V::load(bias + n0));
        if (ep.scale) v = V::mul(v, V::load(scale + n0));
        if (ep.shift) v = V::add(v, V::load(shift + n0));
        if (ep.relu) v = V::relu(v);
        if (ep.slope) v = V::prelu(v, V::load(slope + n0));
        if (q.active()) v = post_value_row<V>(q, v, n0, q.p->res ? q.p->res + at : nullptr, nv);
        if (y) (nv == L ? V::store(y + at, v) : V::store_part(y + at, v, nv));
        if (q.planes) rp.add(v, n0, nv);
      }
      if (q.planes) rp.finish();
    }
    return;
  }
  for (size_t o = 0; o < outer; ++o)
    for (size_t i0 = 0; i0 < inner; i0 += L) {
      const size_t nl = inner - i0 < L ? inner - i0 : L;
      ColPlanes<V> cp(q, o * inner + i0, nl);
      for (size_t n = 0; n < N; ++n) {
        const size_t at = (o * N + n) * inner + i0;
        typename V::F v = nl == L ? V::load(acc + at) : V::load_part(acc + at, nl);
        v = fp_epilogue_v<V>(v, n, ep);
        if (q.active()) v = post_value_col<V>(q, v, n, q.p->res ? q.p->res + at : nullptr, nl);
        if (y) (nl == L ? V::store(y + at, v) : V::store_part(y + at, v, nl));
        if (q.planes) cp.add(v, n);
      }
      if (q.planes) cp.finish();
    }
}

// Few input channels and groups == 1: where im2col + GEMM does not pay.
inline bool use_direct_conv(const Conv2dF32Args& g) { return g.groups == 1 && g.C <= 4 && !g.wp; }

template <class V, int NV>
void conv_direct_rows(const Conv2dF32Args& g, size_t OH, size_t OW, const float* phases, size_t RW,
                      const float* w4, const PostParams& q) {
  constexpr size_t L = V::L;
  const size_t sw = g.stride_w, O4 = (g.O + 3) / 4, taps = g.C * g.KH * g.KW;
  for (size_t b = 0; b < g.B; ++b)
    for (size_t oh = 0; oh < OH; ++oh)
      for (size_t ow0 = 0; ow0 < OW; ow0 += NV * L) {
        alignas(ColPlanes<V>) unsigned char cpbuf[NV * sizeof(ColPlanes<V>)];
        ColPlanes<V>* cp = reinterpret_cast<ColPlanes<V>*>(cpbuf);
        for (size_t v = 0; v < static_cast<size_t>(NV); ++v) {
          const size_t s = ow0 + v * L, nl = s < OW ? (OW - s < L ? OW - s : L) : 0;
          new (&cp[v]) ColPlanes<V>(q, (b * OH + oh) * OW + s, nl);
        }
        for (size_t o4 = 0; o4 < O4; ++o4) {
          typename V::F acc[4][NV];
          for (auto& a : acc)
            for (auto& x : a) x = V::set1(0.0f);
          const float* wb = w4 + o4 * taps * 4;
          for (size_t c = 0; c < g.C; ++c)
            for (size_t kh = 0; kh < g.KH; ++kh) {
              const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * g.stride_h + kh * g.dil_h) - static_cast<ptrdiff_t>(g.pad_h);
              if (ih < 0 || ih >= static_cast<ptrdiff_t>(g.H)) continue;
              const float* prow = phases + ((b * g.C + c) * g.H + static_cast<size_t>(ih)) * sw * RW;
              const float* wk = wb + ((c * g.KH + kh) * g.KW) * 4;
              for (size_t kw = 0; kw < g.KW; ++kw) {
                const size_t off = kw * g.dil_w;
                const float* src = prow + (off % sw) * RW + off / sw + ow0;
                for (int v = 0; v < NV; ++v) {
                  typename V::F a4[4] = {acc[0][v], acc[1][v], acc[2][v], acc[3][v]};
                  V::fma_w4(a4, V::load(src + v * L), wk + kw * 4);
                  for (int j = 0; j < 4; ++j) acc[j][v] = a4[j];
                }
              }
            }
          for (size_t j = 0; j < 4; ++j) {
            const size_t o = 4 * o4 + j;
            if (o >= g.O) break;
            for (int v = 0; v < NV; ++v) {
              const size_t s = ow0 + v * L;
              if (s >= OW) break;
              const size_t nl = OW - s < L ? OW - s : L, at = ((b * g.O + o) * OH + oh) * OW + s;
              typename V::F y = fp_epilogue_v<V>(acc[j][v], o, g.ep);
              if (q.active()) y = post_value_col<V>(q, y, o, q.p->res ? q.p->res + at : nullptr, nl);
              if (g.y) (nl == L ? V::store(g.y + at, y) : V::store_part(g.y + at, y, nl));
              if (q.planes) cp[v].add(y, o);
            }
          }
        }
        for (int v = 0; v < NV; ++v)
          if (q.planes && ow0 + v * L < OW) cp[v].finish();
      }
}

template <class V>
void conv_direct(const Conv2dF32Args& g) {
  constexpr size_t L = V::L;
  const size_t OH = conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
  const size_t OW = conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
  if (OH == 0 || OW == 0) return;
  const size_t nv = (OW + L - 1) / L, NV = nv >= 4 ? 4 : nv;
  const size_t sw = g.stride_w, span = ((g.KW - 1) * g.dil_w) / sw + 1;
  const size_t RW = (OW + NV * L) + span;  // a phase row, zero past the input
  // phases[(b, c, h)][r][j] = x[b, c, h, j * sw + r - pad_w] (0 outside the row)
  Scratch<float> phases(g.B * g.C * g.H * sw * RW);
  for (size_t bch = 0; bch < g.B * g.C * g.H; ++bch) {
    const float* xr = g.x + bch * g.W;
    for (size_t r = 0; r < sw; ++r) {
      float* d = phases.get() + (bch * sw + r) * RW;
      for (size_t j = 0; j < RW; ++j) {
        const ptrdiff_t iw = static_cast<ptrdiff_t>(j * sw + r) - static_cast<ptrdiff_t>(g.pad_w);
        d[j] = (iw >= 0 && iw < static_cast<ptrdiff_t>(g.W)) ? xr[iw] : 0.0f;
      }
    }
  }
  // weights as [O / 4][C][KH][KW][4] (zero rows past O)
  const size_t taps = g.C * g.KH * g.KW, O4 = (g.O + 3) / 4;
  Scratch<float> w4(O4 * taps * 4);
  for (size_t o = 0; o < O4 * 4; ++o)
    for (size_t t = 0; t < taps; ++t) w4[((o / 4) * taps + t) * 4 + o % 4] = o < g.O ? g.w[o * taps + t] : 0.0f;
  const PostParams q(g.post, g.O);
  q.clear_rows(0, g.B * OH * OW);
  switch (NV) {
    case 1: conv_direct_rows<V, 1>(g, OH, OW, phases.get(), RW, w4.get(), q); break;
    case 2: conv_direct_rows<V, 2>(g, OH, OW, phases.get(), RW, w4.get(), q); break;
    case 3: conv_direct_rows<V, 3>(g, OH, OW, phases.get(), RW, w4.get(), q); break;
    default: conv_direct_rows<V, 4>(g, OH, OW, phases.get(), RW, w4.get(), q); break;
  }
}

}  // namespace
}  // namespace fbck
