// FBCK binary kernels for x86-64 AVX2 (+POPCNT, FMA). This file is compiled with
// -mavx2 -mpopcnt -mfma and only reached through the dispatch table after cpuid said so.
// Float arithmetic follows backends/README.md exactly (no FMA in the fixed-order parts; the file
// is compiled with -ffp-contract=off and every multiply/add below is a separate intrinsic).
#include <immintrin.h>

#include <type_traits>

#include "fbck/bits.h"
#include "fbck/impls.h"
#include "fbck/pack_driver.h"
#include "x86_popcount.h"

namespace fbck {
namespace avx2 {

void linear_f32(const LinearF32Args& g);  // fp32_avx2.cpp
void conv2d_f32(const Conv2dF32Args& g);

namespace {

template <int J>
using IC = std::integral_constant<int, J>;

FBCK_INLINE __m256 abs_ps(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

// acc += |v| (8 floats) as doubles, lanes j = k mod 4 for a block starting at k = 0 mod 4.
FBCK_INLINE __m256d add_abs8(__m256d acc, __m256 v) {
  const __m256 a = abs_ps(v);
  acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
  return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
}

FBCK_INLINE float canonical_mean(const double* a, size_t K) {
  return static_cast<float>(((a[0] + a[1]) + (a[2] + a[3])) / static_cast<double>(K));
}

// ---------------------------------------------------------------------------------------------
// Packing, one contiguous row (inner == 1).
// ---------------------------------------------------------------------------------------------
template <bool DUAL, bool SX>
void pack_row(const float* x, size_t K, const float* t0, const float* t1, uint64_t* row1,
              uint64_t* row2, float* s1, float* s2) {
  const size_t W = row_words(K);
  for (size_t w = 0; w < W; ++w) {
    row1[w] = 0;
    if (DUAL) row2[w] = 0;
  }
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f),
               mone = _mm256_set1_ps(-1.0f);
  __m256d ax = _mm256_setzero_pd(), ar = _mm256_setzero_pd();
  size_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    const __m256 d = t0 ? _mm256_sub_ps(v, _mm256_loadu_ps(t0 + k)) : v;
    const __m256 ge = _mm256_cmp_ps(d, zero, _CMP_GE_OQ);
    row1[k >> 6] |= static_cast<uint64_t>(~static_cast<unsigned>(_mm256_movemask_ps(ge)) & 0xffu)
                    << (k & 63);
    if (SX) ax = add_abs8(ax, v);
    if (DUAL) {
      const __m256 b1 = _mm256_blendv_ps(mone, one, ge);
      __m256 r = _mm256_sub_ps(v, b1);
      if (t1) r = _mm256_sub_ps(r, _mm256_loadu_ps(t1 + k));
      const __m256 ge2 = _mm256_cmp_ps(r, zero, _CMP_GE_OQ);
      row2[k >> 6] |=
          static_cast<uint64_t>(~static_cast<unsigned>(_mm256_movemask_ps(ge2)) & 0xffu)
          << (k & 63);
      ar = add_abs8(ar, r);
    }
  }
  alignas(32) double sx[4], sr[4];
  _mm256_store_pd(sx, ax);
  _mm256_store_pd(sr, ar);
  for (; k < K; ++k) {  // same scalar steps as the reference
    const float v = x[k];
    const float d = t0 ? v - t0[k] : v;
    row1[k >> 6] |= neg_bit(d) << (k & 63);
    if (SX) sx[k & 3] += std::fabs(static_cast<double>(v));
    if (DUAL) {
      float r = v - sign_pm1(d);
      if (t1) r = r - t1[k];
      row2[k >> 6] |= neg_bit(r) << (k & 63);
      sr[k & 3] += std::fabs(static_cast<double>(r));
    }
  }
  if (SX && s1) *s1 = canonical_mean(sx, K);
  if (DUAL && s2) *s2 = canonical_mean(sr, K);
}

// Packing, a block of 8 positions (inner > 1): position l's value k is x[k * inner + l].
// Rows are written as 32-bit halves; they must be zeroed beforehand.
FBCK_INLINE void store_halves(uint64_t* rows, size_t W, size_t q, __m256i bits) {
  alignas(32) uint32_t h[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(h), bits);
  for (size_t l = 0; l < 8; ++l)
    std::memcpy(reinterpret_cast<unsigned char*>(rows + l * W) + 4 * q, &h[l], 4);
}

template <bool DUAL, bool SX>
void pack_block8(const float* x, size_t inner, size_t K, const float* t0, const float* t1,
                 uint64_t* rows1, uint64_t* rows2, size_t W, float* s1, float* s2) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f),
               mone = _mm256_set1_ps(-1.0f);
  __m256i acc1 = _mm256_setzero_si256(), acc2 = _mm256_setzero_si256();
  __m256d sx[4][2], sr[4][2];
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) sx[j][h] = sr[j][h] = _mm256_setzero_pd();

  auto step = [&](size_t k, auto jc) FBCK_LAMBDA_INLINE {
    constexpr int j = decltype(jc)::value;
    const __m256 v = _mm256_loadu_ps(x + k * inner);
    const __m256 d = t0 ? _mm256_sub_ps(v, _mm256_set1_ps(t0[k])) : v;
    const __m256 ge = _mm256_cmp_ps(d, zero, _CMP_GE_OQ);
    const __m256i bitk = _mm256_set1_epi32(static_cast<int>(1u << (k & 31)));
    acc1 = _mm256_or_si256(acc1, _mm256_andnot_si256(_mm256_castps_si256(ge), bitk));
    if (SX) {
      const __m256 a = abs_ps(v);
      sx[j][0] = _mm256_add_pd(sx[j][0], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
      sx[j][1] = _mm256_add_pd(sx[j][1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
    if (DUAL) {
      const __m256 b1 = _mm256_blendv_ps(mone, one, ge);
      __m256 r = _mm256_sub_ps(v, b1);
      if (t1) r = _mm256_sub_ps(r, _mm256_set1_ps(t1[k]));
      const __m256 ge2 = _mm256_cmp_ps(r, zero, _CMP_GE_OQ);
      acc2 = _mm256_or_si256(acc2, _mm256_andnot_si256(_mm256_castps_si256(ge2), bitk));
      const __m256 a = abs_ps(r);
      sr[j][0] = _mm256_add_pd(sr[j][0], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
      sr[j][1] = _mm256_add_pd(sr[j][1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
    if ((k & 31) == 31 || k + 1 == K) {
      store_halves(rows1, W, k >> 5, acc1);
      acc1 = _mm256_setzero_si256();
      if (DUAL) {
        store_halves(rows2, W, k >> 5, acc2);
        acc2 = _mm256_setzero_si256();
      }
    }
  };
  size_t k = 0;
  for (; k + 4 <= K; k += 4) {
    step(k, IC<0>{});
    step(k + 1, IC<1>{});
    step(k + 2, IC<2>{});
    step(k + 3, IC<3>{});
  }
  if (k < K) step(k, IC<0>{});
  if (k + 1 < K) step(k + 1, IC<1>{});
  if (k + 2 < K) step(k + 2, IC<2>{});

  const __m256d kd = _mm256_set1_pd(static_cast<double>(K));
  auto finish = [&](__m256d(&s)[4][2], float* out) FBCK_LAMBDA_INLINE {
    for (int h = 0; h < 2; ++h) {
      const __m256d t = _mm256_add_pd(_mm256_add_pd(s[0][h], s[1][h]),
                                      _mm256_add_pd(s[2][h], s[3][h]));
      _mm_storeu_ps(out + 4 * h, _mm256_cvtpd_ps(_mm256_div_pd(t, kd)));
    }
  };
  if (SX && s1) finish(sx, s1);
  if (DUAL && s2) finish(sr, s2);
}

template <bool DUAL, bool SX>
void pack_any(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
              const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2, float* s1) {
  pack_positions<8, DUAL>([](auto... a) { pack_row<DUAL, SX>(a...); },
                            [](auto... a) { pack_block8<DUAL, SX>(a...); }, x, outer, K, inner, t0,
                            t1, bits1, bits2, s2, s1);
}

void pack_threshold(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
                    uint64_t* bits, float* s1) {
  if (s1)
    pack_any<false, true>(x, outer, K, inner, t0, nullptr, bits, nullptr, nullptr, s1);
  else
    pack_any<false, false>(x, outer, K, inner, t0, nullptr, bits, nullptr, nullptr, nullptr);
}

void pack_dual(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
               const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2, float* s1) {
  if (s1)
    pack_any<true, true>(x, outer, K, inner, t0, t1, bits1, bits2, s2, s1);
  else
    pack_any<true, false>(x, outer, K, inner, t0, t1, bits1, bits2, s2, nullptr);
}

void pack_weights(const float* w, size_t N, size_t K, uint64_t* bits) {
  pack_any<false, false>(w, N, K, 1, nullptr, nullptr, bits, nullptr, nullptr, nullptr);
}

// ---------------------------------------------------------------------------------------------
// bgemm
// ---------------------------------------------------------------------------------------------
template <size_t WF>
void bgemm_w(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K, size_t W,
             int32_t* out) {
  const Lut L;
  const __m128i kv = _mm_set1_epi32(static_cast<int>(K));
  for (size_t n0 = 0; n0 < N; n0 += 4) {
    const size_t nv = N - n0 < 4 ? N - n0 : 4;
    const uint64_t* wr[4];
    for (size_t r = 0; r < 4; ++r) wr[r] = w + (n0 + (r < nv ? r : nv - 1)) * W;
    const __m128i smask = tail_mask(nv);
    auto put = [&](size_t p, __m128i pc) FBCK_LAMBDA_INLINE {
      const __m128i d = _mm_sub_epi32(kv, _mm_slli_epi32(pc, 1));
      int32_t* o = out + p * N + n0;
      if (nv == 4)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o), d);
      else
        _mm_maskstore_epi32(o, smask, d);
    };
    size_t p = 0;
    for (; p + 2 <= P; p += 2) {
      const uint64_t* ac[2] = {a + p * W, a + (p + 1) * W};
      __m128i pc[2];
      tile4<2, WF>(wr, ac, W, L, pc);
      put(p, pc[0]);
      put(p + 1, pc[1]);
    }
    if (p < P) {
      const uint64_t* ac[1] = {a + p * W};
      __m128i pc[1];
      tile4<1, WF>(wr, ac, W, L, pc);
      put(p, pc[0]);
    }
  }
}

void bgemm(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K, int32_t* out) {
  const size_t W = row_words(K);
  switch (W) {
    case 2: return bgemm_w<2>(a, P, w, N, K, W, out);
    case 4: return bgemm_w<4>(a, P, w, N, K, W, out);
    case 6: return bgemm_w<6>(a, P, w, N, K, W, out);
    case 8: return bgemm_w<8>(a, P, w, N, K, W, out);
    default: return bgemm_w<0>(a, P, w, N, K, W, out);
  }
}

// ---------------------------------------------------------------------------------------------
// binary_linear: the bgemm tile + the README epilogue on 4 outputs at a time.
// ---------------------------------------------------------------------------------------------
template <size_t WF>
void binary_linear_w(const BinaryLinearArgs& g, size_t W) {
  const size_t P = g.outer * g.inner, N = g.N, WN = row_words(N), N4 = (N + 3) / 4 * 4;
  const bool dual = g.a2 != nullptr;
  // per-channel vectors padded to a multiple of 4
  const PaddedEpilogue pad(g, N4);
  const float *sw = pad.sw, *bias = pad.bias, *slope = pad.slope, *thr = pad.thr;
  const Lut L;
  const __m128i kv = _mm_set1_epi32(static_cast<int>(g.K));
  const __m128 zero = _mm_setzero_ps();
  for (size_t n0 = 0; n0 < N; n0 += 4) {
    const size_t nv = N - n0 < 4 ? N - n0 : 4;
    const uint64_t* wr[4];
    for (size_t r = 0; r < 4; ++r) wr[r] = g.w + (n0 + (r < nv ? r : nv - 1)) * W;
    const __m128i smask = tail_mask(nv);
    const __m128 sw4 = _mm_loadu_ps(sw + n0), bias4 = _mm_loadu_ps(bias + n0),
                 slope4 = _mm_loadu_ps(slope + n0), thr4 = _mm_loadu_ps(thr + n0);
    const unsigned vmask = (1u << nv) - 1u;
    auto emit = [&](size_t p, __m128i pc1, __m128i pc2) FBCK_LAMBDA_INLINE {
      const __m128 d1 = _mm_cvtepi32_ps(_mm_sub_epi32(kv, _mm_slli_epi32(pc1, 1)));
      __m128 u = g.s1 ? _mm_mul_ps(d1, _mm_set1_ps(g.s1[p])) : d1;
      __m128 z = u;
      if (dual) {
        const __m128 d2 = _mm_cvtepi32_ps(_mm_sub_epi32(kv, _mm_slli_epi32(pc2, 1)));
        z = _mm_add_ps(u, _mm_mul_ps(d2, _mm_set1_ps(g.s2[p])));
      }
      __m128 y = g.sw ? _mm_mul_ps(z, sw4) : z;
      y = _mm_add_ps(y, bias4);
      if (g.slope) y = _mm_blendv_ps(_mm_mul_ps(y, slope4), y, _mm_cmpgt_ps(y, zero));
      if (g.y) {
        const size_t o = p / g.inner, i = p % g.inner;
        float* yo = g.y + o * N * g.inner + i;
        if (g.inner == 1) {
          if (nv == 4)
            _mm_storeu_ps(yo + n0, y);
          else
            _mm_maskstore_ps(yo + n0, smask, y);
        } else {
          alignas(16) float t[4];
          _mm_store_ps(t, y);
          for (size_t q = 0; q < nv; ++q) yo[(n0 + q) * g.inner] = t[q];
        }
      }
      if (g.ybits) {
        const __m128 ge = _mm_cmp_ps(_mm_sub_ps(y, thr4), zero, _CMP_GE_OQ);
        const unsigned m = ~static_cast<unsigned>(_mm_movemask_ps(ge)) & vmask;
        g.ybits[p * WN + (n0 >> 6)] |= static_cast<uint64_t>(m) << (n0 & 63);
      }
    };
    if (dual) {
      for (size_t p = 0; p < P; ++p) {
        const uint64_t* ac[2] = {g.a1 + p * W, g.a2 + p * W};
        __m128i pc[2];
        tile4<2, WF>(wr, ac, W, L, pc);
        emit(p, pc[0], pc[1]);
      }
    } else {
      size_t p = 0;
      for (; p + 2 <= P; p += 2) {
        const uint64_t* ac[2] = {g.a1 + p * W, g.a1 + (p + 1) * W};
        __m128i pc[2];
        tile4<2, WF>(wr, ac, W, L, pc);
        emit(p, pc[0], pc[0]);
        emit(p + 1, pc[1], pc[1]);
      }
      if (p < P) {
        const uint64_t* ac[1] = {g.a1 + p * W};
        __m128i pc[1];
        tile4<1, WF>(wr, ac, W, L, pc);
        emit(p, pc[0], pc[0]);
      }
    }
  }
}

void binary_linear(const BinaryLinearArgs& g) {
  const size_t W = row_words(g.K);
  switch (W) {
    case 2: return binary_linear_w<2>(g, W);
    case 4: return binary_linear_w<4>(g, W);
    case 6: return binary_linear_w<6>(g, W);
    case 8: return binary_linear_w<8>(g, W);
    default: return binary_linear_w<0>(g, W);
  }
}

// ---------------------------------------------------------------------------------------------
// binary_memory: binarize each (b, t) over channels (vectorised over c), then the depthwise
// temporal filter vectorised over c. Bit-identical to the reference (same operations per element,
// canonical double sums).
// ---------------------------------------------------------------------------------------------
void memory_row(const float* x, size_t C, const BinaryMemoryArgs& m, float* v) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f),
               mone = _mm256_set1_ps(-1.0f);
  const bool two = m.planes == 2;
  // pass 1: scales
  __m256d ax = _mm256_setzero_pd(), ar = _mm256_setzero_pd();
  size_t c = 0;
  const size_t C8 = C / 8 * 8;
  for (; c < C8; c += 8) {
    const __m256 xv = _mm256_loadu_ps(x + c);
    if (m.s1_mode == S1Mode::mean_abs) ax = add_abs8(ax, xv);
    if (two) {
      const __m256 d = m.t0 ? _mm256_sub_ps(xv, _mm256_loadu_ps(m.t0 + c)) : xv;
      const __m256 b1 = _mm256_blendv_ps(mone, one, _mm256_cmp_ps(d, zero, _CMP_GE_OQ));
      __m256 r = _mm256_sub_ps(xv, b1);
      if (m.t1) r = _mm256_sub_ps(r, _mm256_loadu_ps(m.t1 + c));
      ar = add_abs8(ar, r);
    }
  }
  alignas(32) double sx[4], sr[4];
  _mm256_store_pd(sx, ax);
  _mm256_store_pd(sr, ar);
  for (; c < C; ++c) {
    sx[c & 3] += std::fabs(static_cast<double>(x[c]));
    if (two) {
      float r = x[c] - sign_pm1(m.t0 ? x[c] - m.t0[c] : x[c]);
      if (m.t1) r = r - m.t1[c];
      sr[c & 3] += std::fabs(static_cast<double>(r));
    }
  }
  const float s1 = m.s1_mode == S1Mode::mean_abs ? canonical_mean(sx, C) : m.s1_const;
  const float s2 = two ? canonical_mean(sr, C) : 0.0f;
  // pass 2: v
  const __m256 s1v = _mm256_set1_ps(s1), s2v = _mm256_set1_ps(s2);
  for (c = 0; c < C8; c += 8) {
    const __m256 xv = _mm256_loadu_ps(x + c);
    const __m256 d = m.t0 ? _mm256_sub_ps(xv, _mm256_loadu_ps(m.t0 + c)) : xv;
    const __m256 b1 = _mm256_blendv_ps(mone, one, _mm256_cmp_ps(d, zero, _CMP_GE_OQ));
    __m256 val = m.s1_mode != S1Mode::none ? _mm256_mul_ps(b1, s1v) : b1;
    if (two) {
      __m256 r = _mm256_sub_ps(xv, b1);
      if (m.t1) r = _mm256_sub_ps(r, _mm256_loadu_ps(m.t1 + c));
      const __m256 b2 = _mm256_blendv_ps(mone, one, _mm256_cmp_ps(r, zero, _CMP_GE_OQ));
      val = _mm256_add_ps(val, _mm256_mul_ps(b2, s2v));
    }
    if (m.t2) val = _mm256_sub_ps(val, _mm256_loadu_ps(m.t2 + c));
    _mm256_storeu_ps(v + c, val);
  }
  for (; c < C; ++c) {
    const float b1 = sign_pm1(m.t0 ? x[c] - m.t0[c] : x[c]);
    float val = m.s1_mode != S1Mode::none ? b1 * s1 : b1;
    if (two) {
      float r = x[c] - b1;
      if (m.t1) r = r - m.t1[c];
      val = val + sign_pm1(r) * s2;
    }
    if (m.t2) val = val - m.t2[c];
    v[c] = val;
  }
}

void binary_memory(const BinaryMemoryArgs& m) {
  const size_t C = m.C, T = m.T, taps = m.left + m.right + 1, C8 = C / 8 * 8;
  const bool cstride1 = m.stride_c == 1;
  Scratch<float> v(T * C), wsf(taps * C), xrow(C), yrow(C);
  for (size_t c = 0; c < C; ++c)
    for (size_t k = 0; k < taps; ++k) wsf[k * C + c] = static_cast<float>(m.ws[c * taps + k]);
  for (size_t b = 0; b < m.B; ++b) {
    const ptrdiff_t ob = static_cast<ptrdiff_t>(b) * m.stride_b;
    for (size_t t = 0; t < T; ++t) {
      const float* xt = m.x + ob + static_cast<ptrdiff_t>(t) * m.stride_t;
      if (!cstride1) {
        for (size_t c = 0; c < C; ++c) xrow[c] = xt[static_cast<ptrdiff_t>(c) * m.stride_c];
        xt = xrow.get();
      }
      memory_row(xt, C, m, v.get() + t * C);
    }
    for (size_t t = 0; t < T; ++t) {
      const ptrdiff_t ot = ob + static_cast<ptrdiff_t>(t) * m.stride_t;
      const float* xt = m.x + ot;
      if (!cstride1) {
        if (m.residual != 0.0f)
          for (size_t c = 0; c < C; ++c) xrow[c] = xt[static_cast<ptrdiff_t>(c) * m.stride_c];
        xt = xrow.get();
      }
      float* yt = cstride1 ? m.y + ot : yrow.get();
      size_t c = 0;
      for (; c < C8; c += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (size_t k = 0; k < taps; ++k) {
          const ptrdiff_t tt = static_cast<ptrdiff_t>(t) +
                               (static_cast<ptrdiff_t>(k) - static_cast<ptrdiff_t>(m.left)) *
                                   static_cast<ptrdiff_t>(m.dilation);
          if (tt < 0 || tt >= static_cast<ptrdiff_t>(T)) continue;
          acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(wsf.get() + k * C + c),
                                                 _mm256_loadu_ps(v.get() + tt * C + c)));
        }
        __m256 y = m.sw ? _mm256_mul_ps(acc, _mm256_loadu_ps(m.sw + c)) : acc;
        y = _mm256_add_ps(y, m.bias ? _mm256_loadu_ps(m.bias + c) : _mm256_setzero_ps());
        if (m.residual != 0.0f)
          y = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(xt + c), _mm256_set1_ps(m.residual)), y);
        _mm256_storeu_ps(yt + c, y);
      }
      for (; c < C; ++c) {
        float acc = 0.0f;
        for (size_t k = 0; k < taps; ++k) {
          const ptrdiff_t tt = static_cast<ptrdiff_t>(t) +
                               (static_cast<ptrdiff_t>(k) - static_cast<ptrdiff_t>(m.left)) *
                                   static_cast<ptrdiff_t>(m.dilation);
          if (tt < 0 || tt >= static_cast<ptrdiff_t>(T)) continue;
          acc = acc + wsf[k * C + c] * v[tt * C + c];
        }
        yt[c] = memory_output(acc, (m.residual != 0.0f) ? xt[c] : 0.0f, c, m);
      }
      if (!cstride1)
        for (size_t c2 = 0; c2 < C; ++c2) m.y[ot + static_cast<ptrdiff_t>(c2) * m.stride_c] = yrow[c2];
    }
  }
}

}  // namespace
}  // namespace avx2

const Kernels& avx2_kernels() {
  static const Kernels k = {"avx2",
                            avx2::pack_threshold,
                            avx2::pack_dual,
                            avx2::pack_weights,
                            avx2::bgemm,
                            avx2::binary_linear,
                            avx2::binary_memory,
                            avx2::linear_f32,
                            avx2::conv2d_f32};
  return k;
}

}  // namespace fbck
