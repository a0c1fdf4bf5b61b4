// Internal: FP32 helpers written once over the vector traits of output_transform.h: the FP
// epilogue + post-ops pass (`fp_finish`) and the direct convolution for few input channels (a front
// end on one feature plane). No im2col: the input rows are split
// into their stride phases once (phase r of a zero-padded row holds columns r, r + stride, ...), so
// a tap (kh, kw) of a block of output columns is one contiguous vector load; four output channels
// share each load (one weight vector, four FMAs by lane on NEON). Float order of kernels.h: per
// output, fma over (c, kh, kw) in order (rows on padding skipped, padded columns read zeros: the
// same sum), then the FP epilogue and the post-ops (column orientation: lanes = output columns).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include "fbck/binary_tile.h"
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

// The FP epilogue of one channel with its constants broadcast once (applied to many vectors).
template <class V>
struct FpChannel {
  typename V::F bias, scale, shift, slope;
  bool hb, hs, hsh, relu, hsl;
  FBCK_OT_INLINE FpChannel(const Epilogue& ep, size_t c)
      : bias(V::set1(ep.bias ? ep.bias[c] : 0.0f)), scale(V::set1(ep.scale ? ep.scale[c] : 1.0f)),
        shift(V::set1(ep.shift ? ep.shift[c] : 0.0f)), slope(V::set1(ep.slope ? ep.slope[c] : 1.0f)),
        hb(ep.bias), hs(ep.scale), hsh(ep.shift), relu(ep.relu), hsl(ep.slope) {}
  FBCK_OT_INLINE typename V::F operator()(typename V::F y) const {
    if (hb) y = V::add(y, bias);
    if (hs) y = V::mul(y, scale);
    if (hsh) y = V::add(y, shift);
    if (relu) y = V::relu(y);
    if (hsl) y = V::prelu(y, slope);
    return y;
  }
};

// The FP epilogue over (outer, N, inner) channel by channel; KIND: the steps present (bits: 1 bias,
// 2 scale + shift, 4 relu, 8 slope) known at compile time, or -1 (tested per channel).
template <class V, int KIND>
__attribute__((noinline)) void fp_channels(const float* acc, size_t outer, size_t N, size_t inner,
                                           const Epilogue ep, float* y) {
  constexpr size_t L = V::L;
  for (size_t o = 0; o < outer; ++o)
    for (size_t n = 0; n < N; ++n) {
      const size_t base = (o * N + n) * inner;
      auto f = [&](typename V::F v) {
        if (KIND < 0) return FpChannel<V>(ep, n)(v);
        if (KIND & 1) v = V::add(v, V::set1(ep.bias[n]));
        if (KIND & 2) v = V::add(V::mul(v, V::set1(ep.scale[n])), V::set1(ep.shift[n]));
        if (KIND & 4) v = V::relu(v);
        if (KIND & 8) v = V::prelu(v, V::set1(ep.slope[n]));
        return v;
      };
      size_t i0 = 0;
      for (; i0 + L <= inner; i0 += L) V::store(y + base + i0, f(V::load(acc + base + i0)));
      if (i0 < inner) V::store_part(y + base + i0, f(V::load_part(acc + base + i0, inner - i0)), inner - i0);
    }
}

// The FP epilogue and the post-ops over raw sums acc (outer, N, inner) -> y (may alias acc, or be
// null with planes-only post-ops): row orientation when inner == 1, else column orientation.
template <class V>
void fp_finish(const float* acc, size_t outer, size_t N, size_t inner, const Epilogue& ep,
               const PostOps* post, float* y) {
  constexpr size_t L = V::L;
  const PostParams qp(post, N);
  const PostView q = qp;
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
        if (q.active) v = post_value_row<V>(q, v, n0, q.res ? q.res + at : nullptr, nv);
        if (y) (nv == L ? V::store(y + at, v) : V::store_part(y + at, v, nv));
        if (q.planes) rp.add(v, n0, nv);
      }
      if (q.planes) rp.finish();
    }
    return;
  }
  if (!q.active) {  // channel by channel: its constants broadcast once, common chains specialised
    const int kind = (ep.bias ? 1 : 0) | (ep.scale && ep.shift ? 2 : 0) | (ep.relu ? 4 : 0) |
                     (ep.slope ? 8 : 0) | ((!ep.scale) != (!ep.shift) ? 16 : 0);
    switch (kind) {
      case 1: return fp_channels<V, 1>(acc, outer, N, inner, ep, y);
      case 3: return fp_channels<V, 3>(acc, outer, N, inner, ep, y);
      case 5: return fp_channels<V, 5>(acc, outer, N, inner, ep, y);
      case 7: return fp_channels<V, 7>(acc, outer, N, inner, ep, y);
      case 11: return fp_channels<V, 11>(acc, outer, N, inner, ep, y);
      default: return fp_channels<V, -1>(acc, outer, N, inner, ep, y);
    }
  }
  for (size_t o = 0; o < outer; ++o)
    for (size_t i0 = 0; i0 < inner; i0 += L) {
      const size_t nl = inner - i0 < L ? inner - i0 : L;
      ColPlanes<V> cp(q, o * inner + i0, nl);
      for (size_t n = 0; n < N; ++n) {
        const size_t at = (o * N + n) * inner + i0;
        typename V::F v = nl == L ? V::load(acc + at) : V::load_part(acc + at, nl);
        v = fp_epilogue_v<V>(v, n, ep);
        if (q.active) v = post_value_col<V>(q, v, n, q.res ? q.res + at : nullptr, nl);
        if (y) (nl == L ? V::store(y + at, v) : V::store_part(y + at, v, nl));
        if (q.planes) cp.add(v, n);
      }
      if (q.planes) cp.finish();
    }
}

// The direct kernels' weights, four output channels per tap: w4[o / 4][tap][o % 4] = w[o][tap] for
// taps = C * KH * KW (zero rows past O), the four that share one input load.
inline void weights_by4(const float* w, size_t O, size_t taps, float* w4) {
  for (size_t o4 = 0; o4 < (O + 3) / 4; ++o4)
    for (size_t t = 0; t < taps; ++t)
      for (size_t j = 0; j < 4; ++j) {
        const size_t o = 4 * o4 + j;
        w4[(o4 * taps + t) * 4 + j] = o < O ? w[o * taps + t] : 0.0f;
      }
}

// Few input channels and groups == 1: where im2col + GEMM does not pay.
inline bool use_direct_conv(const Conv2dF32Args& g) { return g.groups == 1 && g.C <= 4 && !g.wp; }

template <class V, int NV>
__attribute__((noinline)) void conv_direct_rows(const Conv2dF32Args& g, size_t OH, size_t OW, const float* phases, size_t RW,
                      const float* w4, const size_t* kwoff, const PostView q, float* Ybuf) {
  const Epilogue ep = g.ep;
  const size_t B = g.B, C = g.C, H = g.H, KH = g.KH, KW = g.KW, O = g.O;
  const size_t sh = g.stride_h, dh = g.dil_h, ph = g.pad_h;
  float* const yout = g.y;
  constexpr size_t L = V::L;
  const size_t sw = g.stride_w, O4 = (O + 3) / 4, taps = C * KH * KW;
  for (size_t b = 0; b < B; ++b)
    for (size_t oh = 0; oh < OH; ++oh)
      for (size_t ow0 = 0; ow0 < OW; ow0 += NV * L) {
        for (size_t o4 = 0; o4 < O4; ++o4) {
          typename V::F acc[4][NV];
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[j][v] = V::set1(0.0f);
          const float* wb = w4 + o4 * taps * 4;
          for (size_t c = 0; c < C; ++c)
            for (size_t kh = 0; kh < KH; ++kh) {
              const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * sh + kh * dh) - static_cast<ptrdiff_t>(ph);
              if (ih < 0 || ih >= static_cast<ptrdiff_t>(H)) continue;
              const float* prow = phases + ((b * C + c) * H + static_cast<size_t>(ih)) * sw * RW + ow0;
              const float* wk = wb + ((c * KH + kh) * KW) * 4;
              for (size_t kw = 0; kw < KW; ++kw) {
                const float* src = prow + kwoff[kw];
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v)
                  V::fma_w4(acc[0][v], acc[1][v], acc[2][v], acc[3][v], V::load(src + v * L), wk + kw * 4);
              }
            }
          for (int j = 0; j < 4; ++j) {
            const size_t o = 4 * o4 + j;
            if (o >= O) break;
            const FpChannel<V> epi(ep, o);
            typename V::F ys[NV];
            switch (j) {  // constant indices keep the accumulators in registers
              case 0: for (int v = 0; v < NV; ++v) ys[v] = acc[0][v]; break;
              case 1: for (int v = 0; v < NV; ++v) ys[v] = acc[1][v]; break;
              case 2: for (int v = 0; v < NV; ++v) ys[v] = acc[2][v]; break;
              default: for (int v = 0; v < NV; ++v) ys[v] = acc[3][v]; break;
            }
            const size_t at0 = ((b * O + o) * OH + oh) * OW + ow0;
            if (!q.active && ow0 + NV * L <= OW) {  // plain full blocks
              for (int v = 0; v < NV; ++v) V::store(yout + at0 + v * L, epi(ys[v]));
              continue;
            }
            if (!q.active) {
              for (int v = 0; v < NV; ++v) {
                const size_t s = ow0 + v * L;
                if (s >= OW) break;
                const size_t nl = OW - s < L ? OW - s : L;
                V::store_part(yout + at0 + v * L, epi(ys[v]), nl);
              }
              continue;
            }
            // post-ops: the block's channels gathered first (lanes = output columns), then the
            // shared column post-ops (binary_tile.h), planes included
            for (int v = 0; v < NV; ++v) V::store(Ybuf + (v * O + o) * L, epi(ys[v]));
          }
        }
        if (q.active)
          for (int v = 0; v < NV; ++v) {
            const size_t s = ow0 + v * L;
            if (s >= OW) break;
            const size_t nl = OW - s < L ? OW - s : L;
            col_post<V>(Ybuf + v * O * L, q, PostView{}, O, b, (b * OH + oh) * OW + s, oh * OW + s,
                        nl, OH * OW, yout);
          }
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
  Scratch<float> padded(RW * sw + g.W + g.pad_w);
  for (size_t i = 0; i < RW * sw + g.W + g.pad_w; ++i) padded[i] = 0.0f;
  for (size_t bch = 0; bch < g.B * g.C * g.H; ++bch) {
    // the row zero-padded (pad_w zeros in front), then split into its stride phases
    std::memcpy(padded.get() + g.pad_w, g.x + bch * g.W, g.W * sizeof(float));
    const float* src = padded.get();
    for (size_t r = 0; r < sw; ++r) {
      float* d = phases.get() + (bch * sw + r) * RW;
      for (size_t j = 0; j < RW; ++j) d[j] = src[j * sw + r];
    }
  }
  const size_t taps = g.C * g.KH * g.KW;
  Scratch<float> w4(((g.O + 3) / 4) * taps * 4);
  weights_by4(g.w, g.O, taps, w4.get());
  const PostParams q(g.post, g.O);
  q.clear_rows(0, g.B * OH * OW);
  // tap column kw reads phase (kw * dil) % stride at offset (kw * dil) / stride
  Scratch<size_t> kwoff(g.KW);
  for (size_t kw = 0; kw < g.KW; ++kw) kwoff[kw] = ((kw * g.dil_w) % sw) * RW + (kw * g.dil_w) / sw;
  Scratch<float> ybuf(g.post ? NV * g.O * L : 1);
  float* yb = ybuf.get();
  switch (NV) {
    case 1: conv_direct_rows<V, 1>(g, OH, OW, phases.get(), RW, w4.get(), kwoff.get(), q, yb); break;
    case 2: conv_direct_rows<V, 2>(g, OH, OW, phases.get(), RW, w4.get(), kwoff.get(), q, yb); break;
    case 3: conv_direct_rows<V, 3>(g, OH, OW, phases.get(), RW, w4.get(), kwoff.get(), q, yb); break;
    default: conv_direct_rows<V, 4>(g, OH, OW, phases.get(), RW, w4.get(), kwoff.get(), q, yb); break;
  }
}

// A stream's window of the front end: a few output columns (rows_column_vectors) over many
// output rows. Column lanes would sit mostly idle, and im2col + GEMM's packing is a per-call cost
// (a stream's 7-column flush on NEON: 12 k instructions per column through GEMM, 5.7 k here), so
// this kernel puts output rows in the lanes: each input column is split into its row-stride
// phases and transposed (phase r of column w holds rows r, r + stride, ... of it, zero on
// padding), so a tap (kh, kw) of a block of output rows is one contiguous load shared by four
// output channels (weights_by4). Same float order: per output, fma over
// (c, kh, kw) in order, padded rows read zeros, columns on padding skipped; the raw sums then go
// through the shared epilogue (fp_finish).
//
// Vectors of output columns below which the rows kernel runs: 2 on x86, where the GEMM's
// broadcast tile does a column for less (3.6 k AVX2 instructions on the front end against 4.7 k);
// 3 on NEON, where FMA by lane makes the two cost the same per column (5.0 k and 5.2 k) and the
// GEMM's packing is then pure overhead (a stream's first 11-column window: 105 k against 60 k).
template <class V>
constexpr size_t rows_column_vectors() {
  return V::L == 4 ? 3 : 2;
}

template <class V>
bool use_rows_in_lanes(const Conv2dF32Args& g, size_t OH, size_t OW) {
  return g.groups == 1 && g.C <= 4 && OW < rows_column_vectors<V>() * V::L && OH >= V::L;
}

template <class V, int NV>
__attribute__((noinline)) void conv_rows_sums(const Conv2dF32Args& g, size_t OH, size_t OW, const float* phases,
                                              size_t RH, const float* w4, const size_t* khoff, float* out) {
  constexpr size_t L = V::L;
  const size_t C = g.C, W = g.W, KH = g.KH, KW = g.KW, O = g.O, sh = g.stride_h;
  const size_t O4 = (O + 3) / 4, taps = C * KH * KW;
  for (size_t b = 0; b < g.B; ++b)
    for (size_t ow = 0; ow < OW; ++ow)
      for (size_t oh0 = 0; oh0 < OH; oh0 += NV * L)
        for (size_t o4 = 0; o4 < O4; ++o4) {
          typename V::F acc[4][NV];
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[j][v] = V::set1(0.0f);
          const float* wb = w4 + o4 * taps * 4;
          for (size_t c = 0; c < C; ++c)
            for (size_t kh = 0; kh < KH; ++kh) {
              const float* col = phases + (b * C + c) * W * sh * RH + khoff[kh] + oh0;
              const float* wk = wb + ((c * KH + kh) * KW) * 4;
              for (size_t kw = 0; kw < KW; ++kw) {
                const ptrdiff_t iw = static_cast<ptrdiff_t>(ow * g.stride_w + kw * g.dil_w) -
                                     static_cast<ptrdiff_t>(g.pad_w);
                if (iw < 0 || iw >= static_cast<ptrdiff_t>(W)) continue;
                const float* src = col + static_cast<size_t>(iw) * sh * RH;
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v)
                  V::fma_w4(acc[0][v], acc[1][v], acc[2][v], acc[3][v], V::load(src + v * L), wk + kw * 4);
              }
            }
          // the sums leave the registers through constant indices (a dynamic index would keep
          // the accumulators in memory for the whole tap loop)
          alignas(64) float sums[4][NV * L];
#pragma GCC unroll 4
          for (int jj = 0; jj < 4; ++jj)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) V::store(sums[jj] + v * L, acc[jj][v]);
          const size_t rows = OH - oh0 < NV * L ? OH - oh0 : NV * L;
          for (size_t jj = 0; jj < 4 && 4 * o4 + jj < O; ++jj) {
            float* y = out + ((b * O + 4 * o4 + jj) * OH + oh0) * OW + ow;
            const float* from = sums[jj];
#pragma GCC unroll 4
            for (size_t i = 0; i < rows; ++i, y += OW) *y = from[i];
          }
        }
}

template <class V>
__attribute__((noinline)) void conv_rows(const Conv2dF32Args& g, size_t OH, size_t OW) {
  constexpr size_t L = V::L;
  const size_t nv = (OH + L - 1) / L, NV = nv >= 4 ? 4 : nv;
  const size_t sh = g.stride_h, span = ((g.KH - 1) * g.dil_h) / sh + 1;
  const size_t RH = ((OH + NV * L - 1) / (NV * L)) * NV * L + span;  // a phase, zero past the input
  // phases[(b, c, w)][r][j] = x[b, c, j * sh + r - pad_h, w] (0 outside the column)
  Scratch<float> phases(g.B * g.C * g.W * sh * RH);
  std::memset(phases.get(), 0, g.B * g.C * g.W * sh * RH * sizeof(float));
  for (size_t r = 0; r < sh; ++r) {
    // the rows j * sh + r - pad_h that lie in [0, H): j in [lo, hi)
    if (r >= g.H + g.pad_h) break;
    const size_t lo = r >= g.pad_h ? 0 : (g.pad_h - r + sh - 1) / sh;
    const size_t hi = std::min(RH, (g.H + g.pad_h - r + sh - 1) / sh);
    if (hi <= lo) continue;
    const size_t h0 = lo * sh + r - g.pad_h;
    for (size_t bc = 0; bc < g.B * g.C; ++bc)
      for (size_t w = 0; w < g.W; ++w) {
        float* d = phases.get() + ((bc * g.W + w) * sh + r) * RH;
        const float* xc = g.x + (bc * g.H + h0) * g.W + w;
        for (size_t j = lo; j < hi; ++j, xc += sh * g.W) d[j] = *xc;
      }
  }
  const size_t taps = g.C * g.KH * g.KW;
  Scratch<float> w4(((g.O + 3) / 4) * taps * 4);
  weights_by4(g.w, g.O, taps, w4.get());
  // tap row kh reads phase (kh * dil) % stride at offset (kh * dil) / stride
  Scratch<size_t> khoff(g.KH);
  for (size_t kh = 0; kh < g.KH; ++kh) khoff[kh] = ((kh * g.dil_h) % sh) * RH + (kh * g.dil_h) / sh;
  Scratch<float> raw(g.y ? 1 : g.B * g.O * OH * OW);
  float* out = g.y ? g.y : raw.get();
  switch (NV) {
    case 1: conv_rows_sums<V, 1>(g, OH, OW, phases.get(), RH, w4.get(), khoff.get(), out); break;
    case 2: conv_rows_sums<V, 2>(g, OH, OW, phases.get(), RH, w4.get(), khoff.get(), out); break;
    case 3: conv_rows_sums<V, 3>(g, OH, OW, phases.get(), RH, w4.get(), khoff.get(), out); break;
    default: conv_rows_sums<V, 4>(g, OH, OW, phases.get(), RH, w4.get(), khoff.get(), out); break;
  }
  fp_finish<V>(out, g.B, g.O, OH * OW, g.ep, g.post, g.y);
}

}  // namespace
}  // namespace fbck
