// Internal: the binary linear / binary conv driver over interleaved weights (interleave_rows16),
// shared by the AVX2, AVX-512 and NEON tables. Each table supplies its XOR-popcount tile `D`:
//
//   struct D {
//     // out[c * 16 + r] = K - 2 * popcount(row r of the tile XOR column c), c < NC (1 or 2);
//     // wt: the tile's C 32-bit chunks x 16 rows, cols[c]: an activation row as 32-bit chunks.
//     template <int NC> static void dots16(const uint32_t* wt, size_t C, const uint32_t* const* cols,
//                                          int32_t K, int32_t* out);
//   };
//
// and its vector traits V (output_transform.h). One 16-row tile of dots lands in lanes (AVX-512:
// one zmm; AVX2: two ymm; NEON: four q registers) with no horizontal sum, so the epilogue (the
// layer's own, then the post-ops and bit planes) runs on them directly: row orientation when the
// output is (P, N), column orientation (positions in lanes, after a small transpose through
// memory) when it is (outer, N, inner) with inner > 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fbck/bits.h"
#include "fbck/kernels.h"
#include "fbck/output_transform.h"

// Packed rows are read as 32-bit chunks and bytes: bit b of a row is bit b % 8 of byte b / 8.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "FBCK packs bits little-endian");

namespace fbck {
namespace {

// The binary linear's own epilogue (kernels.h, README order).
// (Plain values: w16_run takes the front by value, so it stays in registers.)
template <class V>
struct LinearFront {
  const float *s1, *s2, *sw, *bias, *slope;
  bool dual;
  const float *swp, *biasp, *slopep;  // sw, bias, slope padded with identity values (+32)
  LinearFront(const BinaryLinearArgs& g, float* buf)
      : s1(g.s1), s2(g.s2), sw(g.sw), bias(g.bias), slope(g.slope), dual(g.a2 != nullptr) {
    const size_t np = g.N + 32;
    auto fill = [&](float* d, const float* src, float dflt) {
      size_t n = 0;
      if (src) {
        std::memcpy(d, src, g.N * sizeof(float));
        n = g.N;
      }
      for (; n < np; ++n) d[n] = dflt;
    };
    fill(buf, sw, 1.0f);
    fill(buf + np, bias, 0.0f);
    fill(buf + 2 * np, slope, 1.0f);
    swp = buf, biasp = buf + np, slopep = buf + 2 * np;
  }
  FBCK_OT_INLINE typename V::F row(size_t p, size_t n0, const int32_t* d1, const int32_t* d2) const {
    typename V::F z = V::cvt(d1);
    if (s1) z = V::mul(z, V::set1(s1[p]));
    if (dual) z = V::add(z, V::mul(V::cvt(d2), V::set1(s2[p])));
    typename V::F y = sw ? V::mul(z, V::load(swp + n0)) : z;
    y = V::add(y, V::load(biasp + n0));
    if (slope) y = V::prelu(y, V::load(slopep + n0));
    return y;
  }
  FBCK_OT_INLINE typename V::F col(size_t n, size_t p0, size_t nl, const int32_t* d1,
                                   const int32_t* d2) const {
    auto ld = [&](const float* v) { return nl >= V::L ? V::load(v + p0) : V::load_part(v + p0, nl); };
    typename V::F z = V::cvt(d1);
    if (s1) z = V::mul(z, ld(s1));
    if (dual) z = V::add(z, V::mul(V::cvt(d2), ld(s2)));
    typename V::F y = sw ? V::mul(z, V::set1(sw[n])) : z;
    y = V::add(y, V::set1(bias ? bias[n] : 0.0f));
    if (slope) y = V::prelu(y, V::set1(slope[n]));
    return y;
  }
};

// The binary conv's own epilogue (kernels.h: BinaryConv2dArgs), with the plan's corrections
// spread per (out channel, output position): fixm/offm [O, HoWo].
template <class V>
struct ConvFront {
  const float *fixm, *offm, *sw, *bias;
  float s1c;
  bool scaled;
  size_t HoWo;
  FBCK_OT_INLINE typename V::F col(size_t o, size_t p0, size_t nl, const int32_t* d,
                                   const int32_t*) const {
    const size_t hw = p0 % HoWo, at = o * HoWo + hw;
    auto ld = [&](const float* v) { return nl >= V::L ? V::load(v + at) : V::load_part(v + at, nl); };
    typename V::F z = V::sub(V::cvt(d), ld(fixm));
    if (scaled) z = V::mul(z, V::set1(s1c));
    if (offm) z = V::sub(z, ld(offm));
    typename V::F y = sw ? V::mul(z, V::set1(sw[o])) : z;
    return V::add(y, V::set1(bias ? bias[o] : 0.0f));
  }
};

// Whether the tile D has the transposed 16 x 4 column kernel (NEON's dots16x4T).
template <class D, class = void>
struct HasColT {
  static constexpr bool value = false;
};
template <class D>
struct HasColT<D, decltype(void(D::kColT))> {
  static constexpr bool value = D::kColT;
};
// Whether the tile D has a 16 x L column kernel with the positions in the lanes, L = the epilogue's
// vector width (AVX-512's dots16xLT on zmm or ymm, on activations transposed once per block).
template <class D, class = void>
struct ColTLanes {
  static constexpr size_t value = 0;
};
template <class D>
struct ColTLanes<D, decltype(void(D::kColTL))> {
  static constexpr size_t value = D::kColTL;
};
// Everything the driver needs besides the front.
struct W16Problem {
  const uint64_t* a1;
  const uint64_t* a2;  // null: one plane
  const uint32_t* w16;
  size_t outer, inner, N, K;
  float* y;
};

// The column epilogue of one block of nl <= V::L positions (p0.., inner index i0 of image o) over
// all N channels in order: D1/D2 [N][V::L] dots (lanes = positions). Two small functions of their
// own (the front into a buffer, then the post-ops and stores), so the flags and pointers they test
// per channel stay in registers.
template <class V, class Front>
__attribute__((noinline)) void col_front(const Front front, const int32_t* D1, const int32_t* D2,
                                         size_t N, size_t p0, size_t nl, float* Y) {
  constexpr size_t LB = V::L;
  for (size_t n = 0; n < N; ++n)
    V::store(Y + n * LB, front.col(n, p0, nl, D1 + n * LB, D2 ? D2 + n * LB : nullptr));
}

// The binary linear's column front with its flags as template arguments (no tests per channel):
// sw and bias are the padded vectors (1 and +0 where absent: z * 1 and + 0 as the README's
// "sw ? z * sw : z" and "+ (bias ? bias : +0)").
template <class V, bool DUAL, bool S1, bool SLOPE>
__attribute__((noinline)) void linear_col_front(const int32_t* D1, const int32_t* D2,
                                                typename V::F s1v, typename V::F s2v,
                                                const float* sw, const float* bias,
                                                const float* slope, size_t N, float* Y) {
  constexpr size_t LB = V::L;
  for (size_t n = 0; n < N; ++n) {
    typename V::F z = V::cvt(D1 + n * LB);
    if (S1) z = V::mul(z, s1v);
    if (DUAL) z = V::add(z, V::mul(V::cvt(D2 + n * LB), s2v));
    typename V::F y = V::add(V::mul(z, V::set1(sw[n])), V::set1(bias[n]));
    if (SLOPE) y = V::prelu(y, V::set1(slope[n]));
    V::store(Y + n * LB, y);
  }
}

template <class V>
void col_front(const LinearFront<V> f, const int32_t* D1, const int32_t* D2, size_t N, size_t p0,
               size_t nl, float* Y) {
  auto ld = [&](const float* v) { return nl >= V::L ? V::load(v + p0) : V::load_part(v + p0, nl); };
  const typename V::F s1v = f.s1 ? ld(f.s1) : V::set1(1.0f), s2v = f.dual ? ld(f.s2) : V::set1(0.0f);
  const int k = (f.dual ? 4 : 0) | (f.s1 ? 2 : 0) | (f.slope ? 1 : 0);
  const float *sw = f.swp, *b = f.biasp, *sl = f.slopep;
  switch (k) {
    case 0: return linear_col_front<V, false, false, false>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    case 1: return linear_col_front<V, false, false, true>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    case 2: return linear_col_front<V, false, true, false>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    case 3: return linear_col_front<V, false, true, true>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    case 4: return linear_col_front<V, true, false, false>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    case 5: return linear_col_front<V, true, false, true>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    case 6: return linear_col_front<V, true, true, false>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
    default: return linear_col_front<V, true, true, true>(D1, D2, s1v, s2v, sw, b, sl, N, Y);
  }
}

// col_post without planes, the post-ops known at compile time (KIND bits: 1 affine, 2 relu,
// 4 prelu, 8 residual): a tight loop over the channels.
template <class V, int KIND>
__attribute__((noinline)) void col_post_plain(const float* Y, const PostView q, size_t N, size_t nl,
                                              size_t inner, const float* res, float* yo) {
  constexpr size_t LB = V::L;
  for (size_t n = 0; n < N; ++n) {
    typename V::F v = V::load(Y + n * LB);
    if (KIND & 1) v = V::add(V::mul(v, V::set1(q.scale[n])), V::set1(q.shift[n]));
    if (KIND & 2) v = V::relu(v);
    if (KIND & 4) v = V::prelu(v, V::set1(q.slope[n]));
    if (KIND & 8) v = V::add(nl == LB ? V::load(res + n * inner) : V::load_part(res + n * inner, nl), v);
    (nl == LB ? V::store(yo + n * inner, v) : V::store_part(yo + n * inner, v, nl));
  }
}

// col_post with bit planes, the post-ops known at compile time (KIND as col_post_plain): the
// channels in groups of four so the double sums j = n mod 4 are fixed registers.
template <class V, int KIND, bool DUAL, bool STORE>
__attribute__((noinline)) void col_post_planes(const float* Y, const PostView q, size_t N, size_t p0,
                                               size_t nl, size_t inner, const float* res, float* yo) {
  constexpr size_t LB = V::L;
  typename V::U w1 = V::uzero(), w2 = V::uzero();
  typename V::Col c1, c2;
  alignas(64) uint32_t h[LB];
  auto flush = [&](size_t half) {
    V::ustore(h, w1);
    for (size_t l = 0; l < nl; ++l)
      std::memcpy(reinterpret_cast<unsigned char*>(q.bits1 + (p0 + l) * q.WN) + 4 * half, &h[l], 4);
    w1 = V::uzero();
    if (DUAL) {
      V::ustore(h, w2);
      for (size_t l = 0; l < nl; ++l)
        std::memcpy(reinterpret_cast<unsigned char*>(q.bits2 + (p0 + l) * q.WN) + 4 * half, &h[l], 4);
      w2 = V::uzero();
    }
  };
  auto one = [&](size_t n, auto jc) __attribute__((always_inline)) {
    constexpr int J = decltype(jc)::value;
    typename V::F v = V::load(Y + n * LB);
    if (KIND & 1) v = V::add(V::mul(v, V::set1(q.scale[n])), V::set1(q.shift[n]));
    if (KIND & 2) v = V::relu(v);
    if (KIND & 4) v = V::prelu(v, V::set1(q.slope[n]));
    if (KIND & 8) v = V::add(nl == LB ? V::load(res + n * inner) : V::load_part(res + n * inner, nl), v);
    if (STORE) (nl == LB ? V::store(yo + n * inner, v) : V::store_part(yo + n * inner, v, nl));
    const typename V::F d = V::sub(v, V::set1(q.t0[n]));
    const uint32_t bit = 1u << (n & 31);
    w1 = V::ubit(w1, d, bit);
    if (q.want_s1) V::template abs_col_j<J>(c1, v);
    if (DUAL) {
      const typename V::F r = V::sub(V::sub(v, V::sign(d)), V::set1(q.t1[n]));
      w2 = V::ubit(w2, r, bit);
      V::template abs_col_j<J>(c2, r);
    }
  };
  size_t n = 0;
  for (; n + 4 <= N; n += 4) {
    one(n, std::integral_constant<int, 0>{});
    one(n + 1, std::integral_constant<int, 1>{});
    one(n + 2, std::integral_constant<int, 2>{});
    one(n + 3, std::integral_constant<int, 3>{});
    if (((n + 3) & 31) == 31 || n + 4 == N) flush(n >> 5);
  }
  for (; n < N; ++n) {
    switch (n & 3) {
      case 0: one(n, std::integral_constant<int, 0>{}); break;
      case 1: one(n, std::integral_constant<int, 1>{}); break;
      default: one(n, std::integral_constant<int, 2>{}); break;
    }
    if ((n & 31) == 31 || n + 1 == N) flush(n >> 5);
  }
  if (q.want_s1) V::mean_col(c1, q.N, q.s1 + p0, nl);
  if (DUAL) V::mean_col(c2, q.N, q.s2 + p0, nl);
}

template <class V, int KIND>
void col_post_planes_k(const float* Y, const PostView q, size_t N, size_t p0, size_t nl, size_t inner,
                       const float* res, float* yo) {
  if (q.dual)
    (yo ? col_post_planes<V, KIND, true, true> : col_post_planes<V, KIND, true, false>)(Y, q, N, p0, nl, inner, res, yo);
  else
    (yo ? col_post_planes<V, KIND, false, true> : col_post_planes<V, KIND, false, false>)(Y, q, N, p0, nl, inner, res, yo);
}

template <class V>
__attribute__((noinline)) void col_post(const float* Y, const PostView q, const PostView lq, size_t N,
                                        size_t o, size_t p0, size_t i0, size_t nl, size_t inner,
                                        float* y) {
  constexpr size_t LB = V::L;
  if (!q.planes && !lq.planes && y) {  // no planes: post-ops specialised, then stores
    const int k = (q.affine ? 1 : 0) | (q.act == Act::relu ? 2 : q.act == Act::prelu ? 4 : 0) |
                  (q.res ? 8 : 0);
    float* yo = y + o * N * inner + i0;
    const float* r = q.res ? q.res + o * N * inner + i0 : nullptr;
    switch (k) {
      case 0: return col_post_plain<V, 0>(Y, q, N, nl, inner, r, yo);
      case 1: return col_post_plain<V, 1>(Y, q, N, nl, inner, r, yo);
      case 2: return col_post_plain<V, 2>(Y, q, N, nl, inner, r, yo);
      case 3: return col_post_plain<V, 3>(Y, q, N, nl, inner, r, yo);
      case 4: return col_post_plain<V, 4>(Y, q, N, nl, inner, r, yo);
      case 5: return col_post_plain<V, 5>(Y, q, N, nl, inner, r, yo);
      case 8: return col_post_plain<V, 8>(Y, q, N, nl, inner, r, yo);
      case 9: return col_post_plain<V, 9>(Y, q, N, nl, inner, r, yo);
      case 10: return col_post_plain<V, 10>(Y, q, N, nl, inner, r, yo);
      case 11: return col_post_plain<V, 11>(Y, q, N, nl, inner, r, yo);
      case 12: return col_post_plain<V, 12>(Y, q, N, nl, inner, r, yo);
      case 13: return col_post_plain<V, 13>(Y, q, N, nl, inner, r, yo);
      default: break;
    }
  }
  if (q.planes && !lq.planes) {  // planes: specialised as well
    const int k = (q.affine ? 1 : 0) | (q.act == Act::relu ? 2 : q.act == Act::prelu ? 4 : 0) |
                  (q.res ? 8 : 0);
    float* yo = y ? y + o * N * inner + i0 : nullptr;
    const float* r = q.res ? q.res + o * N * inner + i0 : nullptr;
    switch (k) {
      case 0: return col_post_planes_k<V, 0>(Y, q, N, p0, nl, inner, r, yo);
      case 1: return col_post_planes_k<V, 1>(Y, q, N, p0, nl, inner, r, yo);
      case 2: return col_post_planes_k<V, 2>(Y, q, N, p0, nl, inner, r, yo);
      case 3: return col_post_planes_k<V, 3>(Y, q, N, p0, nl, inner, r, yo);
      case 4: return col_post_planes_k<V, 4>(Y, q, N, p0, nl, inner, r, yo);
      case 5: return col_post_planes_k<V, 5>(Y, q, N, p0, nl, inner, r, yo);
      case 8: return col_post_planes_k<V, 8>(Y, q, N, p0, nl, inner, r, yo);
      case 9: return col_post_planes_k<V, 9>(Y, q, N, p0, nl, inner, r, yo);
      case 10: return col_post_planes_k<V, 10>(Y, q, N, p0, nl, inner, r, yo);
      case 11: return col_post_planes_k<V, 11>(Y, q, N, p0, nl, inner, r, yo);
      case 12: return col_post_planes_k<V, 12>(Y, q, N, p0, nl, inner, r, yo);
      case 13: return col_post_planes_k<V, 13>(Y, q, N, p0, nl, inner, r, yo);
      default: break;
    }
  }
  ColPlanes<V> cp(q, p0, nl), lp(lq, p0, nl);
  const float* const res = q.active ? q.res : nullptr;
  for (size_t n = 0; n < N; ++n) {
    const size_t at = (o * N + n) * inner + i0;
    typename V::F yv = V::load(Y + n * LB);
    if (q.active) yv = post_value_col<V>(q, yv, n, res ? res + at : nullptr, nl);
    if (y) (nl == LB ? V::store(y + at, yv) : V::store_part(y + at, yv, nl));
    if (q.planes) cp.add(yv, n);
    if (lq.planes) lp.add(yv, n);
  }
  if (q.planes) cp.finish();
  if (lq.planes) lp.finish();
}

// Run a binary layer on interleaved weights: dots, the front epilogue, post-ops, planes.
// q: the post-ops (may be inactive); lq: a legacy single-plane output (BinaryLinearArgs::ybits),
// applied to the final y, may be inactive. Column orientation requires a column front (`col`).
template <class V, class D, class Front, bool HAS_ROW>
void w16_run(const W16Problem& g, const Front front, const PostView q, const PostView lq) {
  const size_t P = g.outer * g.inner, N = g.N, W = row_words(g.K), C = (g.K + 31) / 32;
  const size_t tiles = (N + 15) / 16;
  const int32_t K = static_cast<int32_t>(g.K);
  const bool dual = g.a2 != nullptr;
  q.clear_rows(0, P);
  lq.clear_rows(0, P);
  auto chunks = [&](const uint64_t* rows, size_t p) {
    return reinterpret_cast<const uint32_t*>(rows + p * W);
  };
  alignas(64) int32_t d[2 * 16];
  if constexpr (HAS_ROW) {
    if (g.inner == 1) {
      // row orientation: per position (pairs of positions share the weight loads with one
      // plane), tile by tile in increasing n
      const size_t step = dual ? 1 : 2;
      for (size_t p = 0; p < P; p += step) {
        const size_t np = (!dual && p + 1 < P) ? 2 : 1;
        RowPlanes<V> rp[2] = {RowPlanes<V>(q, p), RowPlanes<V>(q, p + 1)};
        RowPlanes<V> lp[2] = {RowPlanes<V>(lq, p), RowPlanes<V>(lq, p + 1)};
        for (size_t t = 0; t < tiles; ++t) {
          const uint32_t* wt = g.w16 + t * C * 16;
          if (dual) {
            const uint32_t* cols[2] = {chunks(g.a1, p), chunks(g.a2, p)};
            D::template dots16<2>(wt, C, cols, K, d);
          } else if (np == 2) {
            const uint32_t* cols[2] = {chunks(g.a1, p), chunks(g.a1, p + 1)};
            D::template dots16<2>(wt, C, cols, K, d);
          } else {
            const uint32_t* cols[1] = {chunks(g.a1, p)};
            D::template dots16<1>(wt, C, cols, K, d);
          }
          for (size_t c = 0; c < np; ++c) {
            const int32_t* d1 = d + 16 * c;
            for (size_t v = 0; v < 16; v += V::L) {
              const size_t n0 = 16 * t + v;
              if (n0 >= N) break;
              const size_t nv = N - n0 < V::L ? N - n0 : V::L, at = (p + c) * N + n0;
              typename V::F yv = front.row(p + c, n0, d1 + v, d + 16 + v);
              if (q.active) yv = post_value_row<V>(q, yv, n0, q.res ? q.res + at : nullptr, nv);
              if (g.y) (nv == V::L ? V::store(g.y + at, yv) : V::store_part(g.y + at, yv, nv));
              if (q.planes) rp[c].add(yv, n0, nv);
              if (lq.planes) lp[c].add(yv, n0, nv);
            }
          }
        }
        for (size_t c = 0; c < np; ++c) {
          if (q.planes) rp[c].finish();
          if (lq.planes) lp[c].finish();
        }
      }
      return;
    }
  }
  // column orientation: blocks of V::L positions of one o, all tiles, then n in order
  constexpr size_t LB = V::L;
  const size_t np = tiles * 16;
  Scratch<int32_t> D1(np * LB), D2(dual ? np * LB : 1);
  Scratch<float> Y(np * LB);
  constexpr bool colt = ColTLanes<D>::value == LB;
  Scratch<uint32_t> AT1(colt ? C * LB : 1), AT2(colt && dual ? C * LB : 1);
  for (size_t o = 0; o < g.outer; ++o)
    for (size_t i0 = 0; i0 < g.inner; i0 += LB) {
      const size_t nl = g.inner - i0 < LB ? g.inner - i0 : LB, p0 = o * g.inner + i0;
      bool done = false;
      if constexpr (colt) {  // lanes past the block repeat its last position (defined, never stored)
        for (size_t j = 0; j < C; ++j)
          for (size_t l = 0; l < LB; ++l) {
            const size_t pl = p0 + (l < nl ? l : nl - 1);
            AT1[j * LB + l] = chunks(g.a1, pl)[j];
            if (dual) AT2[j * LB + l] = chunks(g.a2, pl)[j];
          }
        for (size_t t = 0; t < tiles; ++t) {
          const uint32_t* wt = g.w16 + t * C * 16;
          D::dots16xLT(wt, C, AT1.get(), K, D1.get() + 16 * t * LB);
          if (dual) D::dots16xLT(wt, C, AT2.get(), K, D2.get() + 16 * t * LB);
        }
        done = true;
      }
      if constexpr (HasColT<D>::value) {
        if (LB == 4) {  // the tile's own transposed 16 x 4 dots (lanes past the block: repeats)
          const uint32_t* c1[4], *c2[4];
          for (size_t l = 0; l < 4; ++l) {
            const size_t pl = p0 + (l < nl ? l : nl - 1);
            c1[l] = chunks(g.a1, pl);
            if (dual) c2[l] = chunks(g.a2, pl);
          }
          for (size_t t = 0; t < tiles; ++t) {
            const uint32_t* wt = g.w16 + t * C * 16;
            D::dots16x4T(wt, C, c1, K, D1.get() + 16 * t * LB);
            if (dual) D::dots16x4T(wt, C, c2, K, D2.get() + 16 * t * LB);
          }
          done = true;
        }
      }
      for (size_t t = 0; t < tiles && !done; ++t) {
        const uint32_t* wt = g.w16 + t * C * 16;
        size_t l = 0;
        for (; l < nl; ++l) {
          const size_t p = p0 + l;
          if (dual) {
            const uint32_t* cols[2] = {chunks(g.a1, p), chunks(g.a2, p)};
            D::template dots16<2>(wt, C, cols, K, d);
            for (size_t r = 0; r < 16; ++r) D2[(16 * t + r) * LB + l] = d[16 + r];
          } else if (l + 1 < nl) {
            const uint32_t* cols[2] = {chunks(g.a1, p), chunks(g.a1, p + 1)};
            D::template dots16<2>(wt, C, cols, K, d);
            for (size_t r = 0; r < 16; ++r) D1[(16 * t + r) * LB + l + 1] = d[16 + r];
          } else {
            const uint32_t* cols[1] = {chunks(g.a1, p)};
            D::template dots16<1>(wt, C, cols, K, d);
          }
          for (size_t r = 0; r < 16; ++r) D1[(16 * t + r) * LB + l] = d[r];
          if (!dual && l + 1 < nl) ++l;
        }
        for (; l < LB; ++l)  // lanes past the block: defined values, never stored
          for (size_t r = 0; r < 16; ++r) {
            D1[(16 * t + r) * LB + l] = 0;
            if (dual) D2[(16 * t + r) * LB + l] = 0;
          }
      }
      col_front<V>(front, D1.get(), dual ? D2.get() : nullptr, N, p0, nl, Y.get());
      col_post<V>(Y.get(), q, lq, N, o, p0, i0, nl, g.inner, g.y);
    }
}

// The legacy BinaryLinearArgs::thr/ybits output as a planes-only PostOps.
inline PostOps legacy_planes(const BinaryLinearArgs& g) {
  PostOps p;
  p.planes.t0 = g.thr;
  p.planes.bits1 = g.ybits;
  return p;
}

// binary_linear on g.w16 with the table's tile D.
template <class V, class D>
void binary_linear_w16(const BinaryLinearArgs& g) {
  Scratch<float> buf(3 * (g.N + 32));
  const LinearFront<V> front(g, buf.get());
  const PostParams q(g.post, g.N, g.inner == 1);  // padded for the row orientation
  const PostOps legacy = legacy_planes(g);
  const PostParams lq(g.ybits ? &legacy : nullptr, g.N, g.inner == 1);
  w16_run<V, D, LinearFront<V>, true>(W16Problem{g.a1, g.a2, g.w16, g.outer, g.inner, g.N, g.K, g.y},
                                     front, q, lq);
}

// ---------------------------------------------------------------------------------------------
// Binary conv2d: gather each output position's taps from the packed input rows (bits, no floats)
// ---------------------------------------------------------------------------------------------
// Copy nbits bits from src (starting at bit sbit) to dst (starting at bit dbit); dst bits are
// OR-ed in (dst must be zero there).
inline void or_bits(uint64_t* dst, size_t dbit, const uint64_t* src, size_t sbit, size_t nbits) {
  while (nbits > 0) {
    const size_t so = sbit & 63, take0 = 64 - so;
    const size_t n = nbits < take0 ? nbits : take0;
    uint64_t v = src[sbit >> 6] >> so;
    if (n < 64) v &= (uint64_t{1} << n) - 1;
    const size_t dofs = dbit & 63;
    dst[dbit >> 6] |= v << dofs;
    if (dofs + n > 64) dst[(dbit >> 6) + 1] |= v >> (64 - dofs);
    sbit += n, dbit += n, nbits -= n;
  }
}

// The valid range [lo, hi) of kernel taps j for every output index o along one axis: taps whose
// input o * stride + j * dil - pad falls in [vlo, vhi).
inline void valid_taps(size_t n_out, size_t k, size_t stride, size_t pad, size_t dil, size_t vlo,
                       size_t vhi, uint32_t* lo, uint32_t* hi) {
  for (size_t o = 0; o < n_out; ++o) {
    size_t a = k, b = 0;
    for (size_t j = 0; j < k; ++j) {
      const ptrdiff_t i = static_cast<ptrdiff_t>(o * stride + j * dil) - static_cast<ptrdiff_t>(pad);
      if (i >= static_cast<ptrdiff_t>(vlo) && i < static_cast<ptrdiff_t>(vhi)) {
        a = a < j ? a : j;
        b = j + 1;
      }
    }
    lo[o] = static_cast<uint32_t>(a < b ? a : 0), hi[o] = static_cast<uint32_t>(a < b ? b : 0);
  }
}

// rows [B * Ho * Wo, row_words(K)]: position (b, oh, ow)'s taps, tap-major, 0 bits on padding and
// outside the valid window. xbits [B * H * W, row_words(C)]. (The valid taps of an output form a
// rectangle, since the valid input rows and columns are ranges.)
inline void binary_im2col(const BinaryConv2dPlan& pl, size_t B, const uint64_t* xbits, uint64_t* rows) {
  const BinaryConv2dGeometry& g = pl.g;
  const size_t C = g.C, CW = row_words(C), RW = row_words(pl.K), Ho = pl.Ho, Wo = pl.Wo;
  std::memset(rows, 0, B * Ho * Wo * RW * sizeof(uint64_t));
  Scratch<uint32_t> r(2 * (Ho + Wo));
  uint32_t *hlo = r.get(), *hhi = hlo + Ho, *wlo = hhi + Ho, *whi = wlo + Wo;
  valid_taps(Ho, g.KH, g.stride_h, g.pad_h, g.dil_h, g.h_lo, g.h_hi, hlo, hhi);
  valid_taps(Wo, g.KW, g.stride_w, g.pad_w, g.dil_w, g.w_lo, g.w_hi, wlo, whi);
  const size_t wstep = g.dil_w * CW, KW = g.KW;
  for (size_t b = 0; b < B; ++b)
    for (size_t oh = 0; oh < Ho; ++oh)
      for (size_t kh = hlo[oh]; kh < hhi[oh]; ++kh) {
        const size_t ih = oh * g.stride_h + kh * g.dil_h - g.pad_h;
        const uint64_t* xrow = xbits + (b * g.H + ih) * g.W * CW;
        uint64_t* row = rows + (b * Ho + oh) * Wo * RW;
        for (size_t ow = 0; ow < Wo; ++ow, row += RW) {
          const size_t k0 = wlo[ow], k1 = whi[ow];
          if (k0 >= k1) continue;
          const uint64_t* src = xrow + (ow * g.stride_w + k0 * g.dil_w - g.pad_w) * CW;
          size_t at = (kh * KW + k0) * C;
          unsigned char* rb = reinterpret_cast<unsigned char*>(row);
          auto copy = [&](auto bytes) __attribute__((always_inline)) {  // whole bytes (bit b in byte b / 8)
            for (size_t kw = k0; kw < k1; ++kw, src += wstep, at += C) std::memcpy(rb + at / 8, src, bytes);
          };
          if (C == 8) {
            copy(std::integral_constant<size_t, 1>{});
          } else if (C == 16) {
            copy(std::integral_constant<size_t, 2>{});
          } else if (C == 32) {
            copy(std::integral_constant<size_t, 4>{});
          } else if (C == 64) {
            copy(std::integral_constant<size_t, 8>{});
          } else if (C < 64) {  // the position's bits are its first word (padding bits are 0)
            for (size_t kw = k0; kw < k1; ++kw, src += wstep, at += C) {
              const uint64_t v = src[0];
              const size_t sh = at & 63;
              row[at >> 6] |= v << sh;
              if (sh + C > 64) row[(at >> 6) + 1] |= v >> (64 - sh);
            }
          } else {
            for (size_t kw = k0; kw < k1; ++kw, src += wstep, at += C) or_bits(row, at, src, 0, C);
          }
        }
      }
}

template <class V, class D>
void binary_conv2d_w16(const BinaryConv2dArgs& a, const uint32_t* w16) {
  const BinaryConv2dPlan& pl = *a.plan;
  const size_t HW = pl.Ho * pl.Wo, P = a.B * HW, RW = row_words(pl.K);
  Scratch<uint64_t> rows(P * RW);
  binary_im2col(pl, a.B, a.xbits, rows.get());
  const ConvFront<V> front{pl.fix_map.data(), pl.off_map.empty() ? nullptr : pl.off_map.data(), a.sw,
                           a.bias, a.s1 ? a.s1[0] : 1.0f, a.s1 != nullptr, HW};
  const PostParams q(a.post, pl.g.O), lq(nullptr, pl.g.O);
  w16_run<V, D, ConvFront<V>, false>(W16Problem{rows.get(), nullptr, w16, a.B, HW, pl.g.O, pl.K, a.y},
                                     front, q, lq);
}

}  // namespace
}  // namespace fbck
