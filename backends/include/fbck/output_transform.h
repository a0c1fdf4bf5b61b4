// Internal: the output transform of kernels.h (a layer's own epilogue, the post-ops, the bit-plane
// outputs), written once over a small vector-traits interface and instantiated by every table:
// the reference with `VScalar` (one lane), AVX2 with `VAvx2` (8), AVX-512 with `VAvx512` (16),
// NEON with `VNeon` (4). Every lane runs the same float operations in the same order as the
// scalar instantiation, so the tables agree bit for bit (-ffp-contract=off: no fused multiply-add
// sneaks in). After Larq Compute Engine's core/bconv2d/output_transform.h, which plays this role
// for its kernels.
//
// Two orientations, because outputs come in two layouts:
//   row    lanes = consecutive channels n0.. of one position p (outputs (P, N), inner == 1);
//          per-channel parameters are vector loads, per-position scales broadcasts.
//   column lanes = consecutive positions p0.. of one channel n (outputs (outer, N, inner) with
//          inner > 1, or (C, T) memories); per-channel parameters are broadcasts, and the bit
//          planes are gathered per lane in 32-bit words over n (channels visited in order).
//
// Internal linkage (anonymous namespace), like bits.h: each ISA's translation unit gets its own copy.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fbck/bits.h"
#include "fbck/kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

#define FBCK_OT_INLINE inline __attribute__((always_inline))
// abs_col(c, n, v): the per-lane double sums j = n mod 4, through constant indices so the
// accumulators can live in registers.
#define FBCK_OT_ABS_COL_SWITCH                                       \
  static FBCK_OT_INLINE void abs_col(Col& c, size_t n, F v) {        \
    switch (n & 3) {                                                 \
      case 0: abs_col_j<0>(c, v); break;                             \
      case 1: abs_col_j<1>(c, v); break;                             \
      case 2: abs_col_j<2>(c, v); break;                             \
      default: abs_col_j<3>(c, v); break;                            \
    }                                                                \
  }

namespace fbck {
namespace {

// ---------------------------------------------------------------------------------------------
// Vector traits
// ---------------------------------------------------------------------------------------------
struct VScalar {
  using F = float;
  using U = uint32_t;
  static constexpr size_t L = 1;
  static F load(const float* p) { return *p; }
  static F load_part(const float* p, size_t) { return *p; }
  static void store(float* p, F v) { *p = v; }
  static void store_part(float* p, F v, size_t) { *p = v; }
  static F set1(float v) { return v; }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F fma(F a, F b, F c) { return std::fma(a, b, c); }  // a * b + c, one rounding
  static FBCK_OT_INLINE void fma_w4(F& a0, F& a1, F& a2, F& a3, F x, const float* w4) {
    a0 = fma(set1(w4[0]), x, a0);
    a1 = fma(set1(w4[1]), x, a1);
    a2 = fma(set1(w4[2]), x, a2);
    a3 = fma(set1(w4[3]), x, a3);
  }
  static F cvt(const int32_t* p) { return static_cast<float>(*p); }
  static F relu(F y) { return y > 0.0f ? y : 0.0f; }
  static F prelu(F y, F s) { return y > 0.0f ? y : y * s; }
  static F sign(F d) { return d >= 0.0f ? 1.0f : -1.0f; }
  static unsigned negmask(F d) { return d >= 0.0f ? 0u : 1u; }
  static void abs_row(double* acc, F v, size_t n0, size_t) {
    acc[n0 & 3] += std::fabs(static_cast<double>(v));
  }
  struct Col {
    double a[4] = {0, 0, 0, 0};
  };
  static void abs_col(Col& c, size_t n, F v) { c.a[n & 3] += std::fabs(static_cast<double>(v)); }
  template <int J>
  static void abs_col_j(Col& c, F v) {
    c.a[J] += std::fabs(static_cast<double>(v));
  }
  static void mean_col(const Col& c, size_t K, float* out, size_t) {
    *out = static_cast<float>(((c.a[0] + c.a[1]) + (c.a[2] + c.a[3])) / static_cast<double>(K));
  }
  static U uzero() { return 0u; }
  static U ubit(U acc, F d, uint32_t bit) { return d >= 0.0f ? acc : (acc | bit); }
  static void ustore(uint32_t* p, U v) { *p = v; }
};

#if defined(__AVX2__)
struct VAvx2 {
  using F = __m256;
  using U = __m256i;
  static constexpr size_t L = 8;
  static __m256i part_mask(size_t n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
  }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F load_part(const float* p, size_t n) { return _mm256_maskload_ps(p, part_mask(n)); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void store_part(float* p, F v, size_t n) { _mm256_maskstore_ps(p, part_mask(n), v); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static FBCK_OT_INLINE void fma_w4(F& a0, F& a1, F& a2, F& a3, F x, const float* w4) {
    a0 = fma(set1(w4[0]), x, a0);
    a1 = fma(set1(w4[1]), x, a1);
    a2 = fma(set1(w4[2]), x, a2);
    a3 = fma(set1(w4[3]), x, a3);
  }
  static F cvt(const int32_t* p) {
    return _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F relu(F y) {
    return _mm256_and_ps(y, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
  }
  static F prelu(F y, F s) {
    return _mm256_blendv_ps(_mm256_mul_ps(y, s), y, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
  }
  static F sign(F d) {
    return _mm256_blendv_ps(_mm256_set1_ps(-1.0f), _mm256_set1_ps(1.0f),
                            _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GE_OQ));
  }
  static unsigned negmask(F d) {
    return ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GE_OQ))) & 0xffu;
  }
  static __m256 zero_past(F v, size_t nv) {
    return nv >= 8 ? v : _mm256_and_ps(v, _mm256_castsi256_ps(part_mask(nv)));
  }
  static void abs_row(double* acc, F v, size_t, size_t nv) {
    const __m256 a = zero_past(_mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))), nv);
    __m256d s = _mm256_loadu_pd(acc);
    s = _mm256_add_pd(s, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
    s = _mm256_add_pd(s, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    _mm256_storeu_pd(acc, s);
  }
  struct Col {
    __m256d a[4][2];
    Col() {
      for (auto& j : a) j[0] = j[1] = _mm256_setzero_pd();
    }
  };
  template <int J>
  static FBCK_OT_INLINE void abs_col_j(Col& c, F v) {
    const __m256 a = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    c.a[J][0] = _mm256_add_pd(c.a[J][0], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
    c.a[J][1] = _mm256_add_pd(c.a[J][1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
  }
  FBCK_OT_ABS_COL_SWITCH
  static void mean_col(const Col& c, size_t K, float* out, size_t n) {
    const __m256d kd = _mm256_set1_pd(static_cast<double>(K));
    alignas(32) float t[8];
    for (int h = 0; h < 2; ++h) {
      const __m256d s = _mm256_add_pd(_mm256_add_pd(c.a[0][h], c.a[1][h]), _mm256_add_pd(c.a[2][h], c.a[3][h]));
      _mm_store_ps(t + 4 * h, _mm256_cvtpd_ps(_mm256_div_pd(s, kd)));
    }
    for (size_t l = 0; l < n; ++l) out[l] = t[l];
  }
  static U uzero() { return _mm256_setzero_si256(); }
  static U ubit(U acc, F d, uint32_t bit) {
    const __m256 ge = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GE_OQ);
    return _mm256_or_si256(acc, _mm256_andnot_si256(_mm256_castps_si256(ge), _mm256_set1_epi32(static_cast<int>(bit))));
  }
  static void ustore(uint32_t* p, U v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
struct VAvx512 {
  using F = __m512;
  using U = __m512i;
  static constexpr size_t L = 16;
  static __mmask16 m(size_t n) { return n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1u); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load_part(const float* p, size_t n) { return _mm512_maskz_loadu_ps(m(n), p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void store_part(float* p, F v, size_t n) { _mm512_mask_storeu_ps(p, m(n), v); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static FBCK_OT_INLINE void fma_w4(F& a0, F& a1, F& a2, F& a3, F x, const float* w4) {
    a0 = fma(set1(w4[0]), x, a0);
    a1 = fma(set1(w4[1]), x, a1);
    a2 = fma(set1(w4[2]), x, a2);
    a3 = fma(set1(w4[3]), x, a3);
  }
  static F cvt(const int32_t* p) { return _mm512_cvtepi32_ps(_mm512_loadu_si512(p)); }
  static F relu(F y) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), y); }
  static F prelu(F y, F s) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_mul_ps(y, s), y);
  }
  static F sign(F d) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GE_OQ), _mm512_set1_ps(-1.0f),
                                _mm512_set1_ps(1.0f));
  }
  static unsigned negmask(F d) {
    return ~static_cast<unsigned>(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GE_OQ)) & 0xffffu;
  }
  static void abs_row(double* acc, F v, size_t, size_t nv) {
    const __m512 a = _mm512_maskz_mov_ps(m(nv), _mm512_abs_ps(v));
    __m256d s = _mm256_loadu_pd(acc);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    s = _mm256_add_pd(s, _mm512_castpd512_pd256(lo));
    s = _mm256_add_pd(s, _mm512_extractf64x4_pd(lo, 1));
    s = _mm256_add_pd(s, _mm512_castpd512_pd256(hi));
    s = _mm256_add_pd(s, _mm512_extractf64x4_pd(hi, 1));
    _mm256_storeu_pd(acc, s);
  }
  struct Col {
    __m512d a[4][2];
    Col() {
      for (auto& j : a) j[0] = j[1] = _mm512_setzero_pd();
    }
  };
  template <int J>
  static FBCK_OT_INLINE void abs_col_j(Col& c, F v) {
    const __m512 a = _mm512_abs_ps(v);
    c.a[J][0] = _mm512_add_pd(c.a[J][0], _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
    c.a[J][1] = _mm512_add_pd(
        c.a[J][1], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))));
  }
  FBCK_OT_ABS_COL_SWITCH
  static void mean_col(const Col& c, size_t K, float* out, size_t n) {
    const __m512d kd = _mm512_set1_pd(static_cast<double>(K));
    alignas(64) float t[16];
    for (int h = 0; h < 2; ++h) {
      const __m512d s = _mm512_add_pd(_mm512_add_pd(c.a[0][h], c.a[1][h]), _mm512_add_pd(c.a[2][h], c.a[3][h]));
      _mm256_store_ps(t + 8 * h, _mm512_maskz_cvtpd_ps(static_cast<__mmask8>(0xff), _mm512_div_pd(s, kd)));
    }
    for (size_t l = 0; l < n; ++l) out[l] = t[l];
  }
  static U uzero() { return _mm512_setzero_si512(); }
  static U ubit(U acc, F d, uint32_t bit) {
    const __mmask16 lt = static_cast<__mmask16>(~_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GE_OQ));
    return _mm512_mask_or_epi32(acc, lt, acc, _mm512_set1_epi32(static_cast<int>(bit)));
  }
  static void ustore(uint32_t* p, U v) { _mm512_storeu_si512(p, v); }
};
#endif

#if defined(__ARM_NEON) && defined(__aarch64__)
struct VNeon {
  using F = float32x4_t;
  using U = uint32x4_t;
  static constexpr size_t L = 4;
  static F load(const float* p) { return vld1q_f32(p); }
  static F load_part(const float* p, size_t n) {
    float t[4] = {0, 0, 0, 0};
    for (size_t l = 0; l < n; ++l) t[l] = p[l];
    return vld1q_f32(t);
  }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static void store_part(float* p, F v, size_t n) {
    float t[4];
    vst1q_f32(t, v);
    for (size_t l = 0; l < n; ++l) p[l] = t[l];
  }
  static F set1(float v) { return vdupq_n_f32(v); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  // a_j = fma(w4[j], x, a_j), j < 4: one load and four FMLA by element
  static FBCK_OT_INLINE void fma_w4(F& a0, F& a1, F& a2, F& a3, F x, const float* w4) {
    const float32x4_t w = vld1q_f32(w4);
    a0 = vfmaq_laneq_f32(a0, x, w, 0);
    a1 = vfmaq_laneq_f32(a1, x, w, 1);
    a2 = vfmaq_laneq_f32(a2, x, w, 2);
    a3 = vfmaq_laneq_f32(a3, x, w, 3);
  }
  static F cvt(const int32_t* p) { return vcvtq_f32_s32(vld1q_s32(p)); }
  static F relu(F y) {
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), vcgtq_f32(y, vdupq_n_f32(0.0f))));
  }
  static F prelu(F y, F s) { return vbslq_f32(vcgtq_f32(y, vdupq_n_f32(0.0f)), y, vmulq_f32(y, s)); }
  static F sign(F d) { return vbslq_f32(vcgeq_f32(d, vdupq_n_f32(0.0f)), vdupq_n_f32(1.0f), vdupq_n_f32(-1.0f)); }
  static unsigned negmask(F d) {
    static const uint32_t kb[4] = {1, 2, 4, 8};
    return vaddvq_u32(vbicq_u32(vld1q_u32(kb), vcgeq_f32(d, vdupq_n_f32(0.0f))));
  }
  static void abs_row(double* acc, F v, size_t, size_t nv) {
    float32x4_t a = vabsq_f32(v);
    if (nv < 4) {
      static const uint32_t idx[4] = {0, 1, 2, 3};
      a = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a),
                                          vcltq_u32(vld1q_u32(idx), vdupq_n_u32(static_cast<uint32_t>(nv)))));
    }
    vst1q_f64(acc, vaddq_f64(vld1q_f64(acc), vcvt_f64_f32(vget_low_f32(a))));
    vst1q_f64(acc + 2, vaddq_f64(vld1q_f64(acc + 2), vcvt_high_f64_f32(a)));
  }
  struct Col {
    float64x2_t a[4][2];
    Col() {
      for (auto& j : a) j[0] = j[1] = vdupq_n_f64(0.0);
    }
  };
  template <int J>
  static FBCK_OT_INLINE void abs_col_j(Col& c, F v) {
    const float32x4_t a = vabsq_f32(v);
    c.a[J][0] = vaddq_f64(c.a[J][0], vcvt_f64_f32(vget_low_f32(a)));
    c.a[J][1] = vaddq_f64(c.a[J][1], vcvt_high_f64_f32(a));
  }
  FBCK_OT_ABS_COL_SWITCH
  static void mean_col(const Col& c, size_t K, float* out, size_t n) {
    const float64x2_t kd = vdupq_n_f64(static_cast<double>(K));
    float t[4];
    for (int h = 0; h < 2; ++h) {
      const float64x2_t s = vaddq_f64(vaddq_f64(c.a[0][h], c.a[1][h]), vaddq_f64(c.a[2][h], c.a[3][h]));
      vst1_f32(t + 2 * h, vcvt_f32_f64(vdivq_f64(s, kd)));
    }
    for (size_t l = 0; l < n; ++l) out[l] = t[l];
  }
  static U uzero() { return vdupq_n_u32(0); }
  static U ubit(U acc, F d, uint32_t bit) { return vorrq_u32(acc, vbicq_u32(vdupq_n_u32(bit), vcgeq_f32(d, vdupq_n_f32(0.0f)))); }
  static void ustore(uint32_t* p, U v) { vst1q_u32(p, v); }
};
#endif

// ---------------------------------------------------------------------------------------------
// Post-ops (kernels.h: PostOps)
// ---------------------------------------------------------------------------------------------
// What the inner loops read, as plain values: copied into a local before a loop (`const PostView
// q = params;`), so the compiler keeps it in registers instead of reloading it after every store.
struct PostView {
  size_t N = 0, WN = 0;
  bool active = false, affine = false, planes = false, dual = false, want_s1 = false;
  Act act = Act::none;
  const float *scale = nullptr, *shift = nullptr, *slope = nullptr, *t0 = nullptr, *t1 = nullptr;
  const float* res = nullptr;
  uint64_t *bits1 = nullptr, *bits2 = nullptr;
  float *s1 = nullptr, *s2 = nullptr;
  // Clear the planes of positions [p0, p0 + np) (their bits are OR-ed in).
  void clear_rows(size_t p0, size_t np) const {
    if (!planes) return;
    std::memset(bits1 + p0 * WN, 0, np * WN * sizeof(uint64_t));
    if (dual) std::memset(bits2 + p0 * WN, 0, np * WN * sizeof(uint64_t));
  }
};

// A PostOps made ready. pad: the row orientation loads the per-channel vectors V::L at a time, so
// they are copied with identity values past n; the column orientation broadcasts one value per
// channel and reads the caller's vectors in place (only the absent ones are filled).
struct PostParams : PostView {
  Scratch<float> buf;
  PostParams(const PostOps* post, size_t n, bool pad = true) : buf(post ? 5 * (n + 16) : 1) {
    N = n, WN = row_words(n);
    if (!post) return;
    active = true;
    affine = post->scale && post->shift;
    planes = post->planes.bits1 != nullptr;
    dual = planes && post->planes.bits2 != nullptr;
    want_s1 = planes && post->planes.s1 != nullptr;
    act = post->act;
    res = post->res;
    bits1 = post->planes.bits1, bits2 = post->planes.bits2;
    s1 = post->planes.s1, s2 = post->planes.s2;
    const size_t np = n + 16;
    float* b = buf.get();
    auto fill = [&](const float* src, float dflt, size_t k) -> const float* {
      if (src && !pad) return src;
      float* d = b + k * np;
      size_t i = 0;
      if (src) {
        std::memcpy(d, src, n * sizeof(float));
        i = n;
      }
      for (; i < np; ++i) d[i] = dflt;
      return d;
    };
    // only what the flags say is read (an absent t0, t1 or slope reads as its identity)
    if (affine) scale = fill(post->scale, 1.0f, 0), shift = fill(post->shift, 0.0f, 1);
    if (act == Act::prelu) slope = fill(post->slope, 1.0f, 2);
    if (planes) t0 = fill(post->planes.t0, 0.0f, 3);
    if (dual) t1 = fill(post->planes.t1, 0.0f, 4);
  }
};

// y before the planes: affine, activation, residual (res: address of y's element, or null).
template <class V>
FBCK_OT_INLINE typename V::F post_value_row(const PostView& q, typename V::F y, size_t n0,
                                            const float* res, size_t nv) {
  if (q.affine) y = V::add(V::mul(y, V::load(q.scale + n0)), V::load(q.shift + n0));
  if (q.act == Act::relu) y = V::relu(y);
  if (q.act == Act::prelu) y = V::prelu(y, V::load(q.slope + n0));
  if (res) y = V::add(nv >= V::L ? V::load(res) : V::load_part(res, nv), y);
  return y;
}

template <class V>
FBCK_OT_INLINE typename V::F post_value_col(const PostView& q, typename V::F y, size_t n,
                                            const float* res, size_t nl) {
  if (q.affine) y = V::add(V::mul(y, V::set1(q.scale[n])), V::set1(q.shift[n]));
  if (q.act == Act::relu) y = V::relu(y);
  if (q.act == Act::prelu) y = V::prelu(y, V::set1(q.slope[n]));
  if (res) y = V::add(nl >= V::L ? V::load(res) : V::load_part(res, nl), y);
  return y;
}

// Row orientation: the bit planes of one position, channel block by channel block in increasing n
// (n0 a multiple of 4 for V::L >= 4).
template <class V>
struct RowPlanes {
  PostView q;
  size_t p;
  alignas(32) double a1[4] = {0, 0, 0, 0};
  alignas(32) double a2[4] = {0, 0, 0, 0};
  RowPlanes(const PostView& params, size_t pos) : q(params), p(pos) {}
  FBCK_OT_INLINE void add(typename V::F y, size_t n0, size_t nv) {
    const unsigned valid = nv >= 32 ? ~0u : ((1u << nv) - 1u);
    const typename V::F d = V::sub(y, V::load(q.t0 + n0));
    q.bits1[p * q.WN + (n0 >> 6)] |= static_cast<uint64_t>(V::negmask(d) & valid) << (n0 & 63);
    if (q.want_s1) V::abs_row(a1, y, n0, nv);
    if (q.dual) {
      const typename V::F r = V::sub(V::sub(y, V::sign(d)), V::load(q.t1 + n0));
      q.bits2[p * q.WN + (n0 >> 6)] |= static_cast<uint64_t>(V::negmask(r) & valid) << (n0 & 63);
      V::abs_row(a2, r, n0, nv);
    }
  }
  void finish() const {
    const double k = static_cast<double>(q.N);
    if (q.want_s1) q.s1[p] = static_cast<float>(((a1[0] + a1[1]) + (a1[2] + a1[3])) / k);
    if (q.dual) q.s2[p] = static_cast<float>(((a2[0] + a2[1]) + (a2[2] + a2[3])) / k);
  }
};

// Column orientation: the bit planes of nl <= V::L consecutive positions p0.., channels visited in
// increasing n (32 at a time in per-lane words, as the packing kernels' block packers).
template <class V>
struct ColPlanes {
  PostView q;
  size_t p0, nl;
  typename V::U w1, w2;
  typename V::Col c1, c2;
  ColPlanes(const PostView& params, size_t pos0, size_t lanes)
      : q(params), p0(pos0), nl(lanes), w1(V::uzero()), w2(V::uzero()) {}
  FBCK_OT_INLINE void add(typename V::F y, size_t n) {
    const typename V::F d = V::sub(y, V::set1(q.t0[n]));
    const uint32_t bit = 1u << (n & 31);
    w1 = V::ubit(w1, d, bit);
    if (q.want_s1) V::abs_col(c1, n, y);
    if (q.dual) {
      const typename V::F r = V::sub(V::sub(y, V::sign(d)), V::set1(q.t1[n]));
      w2 = V::ubit(w2, r, bit);
      V::abs_col(c2, n, r);
    }
    if ((n & 31) == 31 || n + 1 == q.N) flush(n >> 5);
  }
  void flush(size_t half) {
    alignas(64) uint32_t h[V::L];
    V::ustore(h, w1);
    for (size_t l = 0; l < nl; ++l)
      std::memcpy(reinterpret_cast<unsigned char*>(q.bits1 + (p0 + l) * q.WN) + 4 * half, &h[l], 4);
    w1 = V::uzero();
    if (q.dual) {
      V::ustore(h, w2);
      for (size_t l = 0; l < nl; ++l)
        std::memcpy(reinterpret_cast<unsigned char*>(q.bits2 + (p0 + l) * q.WN) + 4 * half, &h[l], 4);
      w2 = V::uzero();
    }
  }
  void finish() const {
    if (q.want_s1) V::mean_col(c1, q.N, q.s1 + p0, nl);
    if (q.dual) V::mean_col(c2, q.N, q.s2 + p0, nl);
  }
};

// The post-ops over a float buffer (outer, N, inner): the standalone PostOpsFn of every table.
template <class V>
void post_ops_buffer(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post,
                     float* y) {
  const PostParams qp(&post, N);
  const PostView q = qp;
  q.clear_rows(0, outer * inner);
  const float* res = q.res;
  if (inner == 1) {
    for (size_t p = 0; p < outer; ++p) {
      RowPlanes<V> rp(q, p);
      for (size_t n0 = 0; n0 < N; n0 += V::L) {
        const size_t nv = N - n0 < V::L ? N - n0 : V::L, at = p * N + n0;
        typename V::F v = nv == V::L ? V::load(x + at) : V::load_part(x + at, nv);
        v = post_value_row<V>(q, v, n0, res ? res + at : nullptr, nv);
        if (y) (nv == V::L ? V::store(y + at, v) : V::store_part(y + at, v, nv));
        if (q.planes) rp.add(v, n0, nv);
      }
      if (q.planes) rp.finish();
    }
    return;
  }
  for (size_t o = 0; o < outer; ++o)
    for (size_t i0 = 0; i0 < inner; i0 += V::L) {
      const size_t nl = inner - i0 < V::L ? inner - i0 : V::L;
      ColPlanes<V> cp(q, o * inner + i0, nl);
      for (size_t n = 0; n < N; ++n) {
        const size_t at = (o * N + n) * inner + i0;
        typename V::F v = nl == V::L ? V::load(x + at) : V::load_part(x + at, nl);
        v = post_value_col<V>(q, v, n, res ? res + at : nullptr, nl);
        if (y) (nl == V::L ? V::store(y + at, v) : V::store_part(y + at, v, nl));
        if (q.planes) cp.add(v, n);
      }
      if (q.planes) cp.finish();
    }
}

}  // namespace
}  // namespace fbck
