// FBCK binary kernels for x86-64 AVX2 (+POPCNT, FMA). This file is compiled with
// -mavx2 -mpopcnt -mfma and only reached through the dispatch table after cpuid said so.
// Float arithmetic follows backends/README.md exactly (no FMA in the fixed-order parts; the file
// is compiled with -ffp-contract=off and every multiply/add below is a separate intrinsic). The
// epilogues, post-ops and memories are the shared templates (output_transform.h, binary_tile.h,
// memory_tile.h) on 8-lane vectors.
#include <immintrin.h>

#include <type_traits>

#include "fbck/binary_tile.h"
#include "fbck/bits.h"
#include "fbck/impls.h"
#include "fbck/memory_tile.h"
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

// pack_block_words' vector traits: 8 positions per vector. Rows are written as 32-bit halves.
struct Avx2Pack {
  using U = __m256i;
  using Sums = __m256d[4][2];
  static FBCK_INLINE U zero() { return _mm256_setzero_si256(); }
  static FBCK_INLINE U one() { return _mm256_set1_epi32(1); }
  static FBCK_INLINE U shl1(U b) { return _mm256_slli_epi32(b, 1); }
  // one 32-bit word per position (row l of the block, word q)
  static FBCK_INLINE void store(uint64_t* rows, size_t W, size_t q, U bits) {
    alignas(32) uint32_t h[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(h), bits);
    for (size_t l = 0; l < 8; ++l)
      std::memcpy(reinterpret_cast<unsigned char*>(rows + l * W) + 4 * q, &h[l], 4);
  }
  // One channel (values xk[0..7]): its sign bits into acc1 (acc2: the second plane) at bitk, the
  // |x| / |r| sums into j = J (a function, not a by-reference closure).
  template <bool DUAL, bool SX, int J>
  static FBCK_INLINE void step(const float* xk, const float* t0k, const float* t1k, U bitk, U& acc1,
                               U& acc2, Sums& sx, Sums& sr) {
    const __m256 zero = _mm256_setzero_ps(), v = _mm256_loadu_ps(xk);
    const __m256 d = t0k ? _mm256_sub_ps(v, _mm256_broadcast_ss(t0k)) : v;
    const __m256 ge = _mm256_cmp_ps(d, zero, _CMP_GE_OQ);
    acc1 = _mm256_or_si256(acc1, _mm256_andnot_si256(_mm256_castps_si256(ge), bitk));
    if (SX) {
      const __m256 a = abs_ps(v);
      sx[J][0] = _mm256_add_pd(sx[J][0], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
      sx[J][1] = _mm256_add_pd(sx[J][1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
    if (DUAL) {
      const __m256 b1 = _mm256_blendv_ps(_mm256_set1_ps(-1.0f), _mm256_set1_ps(1.0f), ge);
      __m256 r = _mm256_sub_ps(v, b1);
      if (t1k) r = _mm256_sub_ps(r, _mm256_broadcast_ss(t1k));
      const __m256 ge2 = _mm256_cmp_ps(r, zero, _CMP_GE_OQ);
      acc2 = _mm256_or_si256(acc2, _mm256_andnot_si256(_mm256_castps_si256(ge2), bitk));
      const __m256 a = abs_ps(r);
      sr[J][0] = _mm256_add_pd(sr[J][0], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
      sr[J][1] = _mm256_add_pd(sr[J][1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
  }
};

// Packing, a block of 8 positions (inner > 1): position l's value k is x[k * inner + l]. Rows
// must be zeroed beforehand.
template <bool DUAL, bool SX>
void pack_block8(const float* x, size_t inner, size_t K, const float* t0, const float* t1,
                 uint64_t* rows1, uint64_t* rows2, size_t W, float* s1, float* s2) {
  __m256d sx[4][2], sr[4][2];
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) sx[j][h] = sr[j][h] = _mm256_setzero_pd();
  pack_block_words<Avx2Pack, DUAL, SX>(x, inner, K, t0, t1, rows1, rows2, W, sx, sr);

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
// binary_linear / binary_conv2d on interleaved weights (binary_tile.h): 16 rows per two ymm of
// 32-bit chunks. Popcount per byte by the nibble LUT, byte counts summed over up to 31 chunks,
// then widened to 32-bit lanes (VPMADDUBSW + VPMADDWD): 16 dot products in lanes, no horizontal sum.
// ---------------------------------------------------------------------------------------------
struct Avx2Dots {
  static FBCK_INLINE __m256i pcnt8(__m256i x, __m256i lut, __m256i m0f) {
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m0f)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m0f)));
  }
  template <int NC>
  static FBCK_INLINE void dots16(const uint32_t* wt, size_t C, const uint32_t* const* cols,
                                 int32_t K, int32_t* out) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m0f = _mm256_set1_epi8(0x0f), ones8 = _mm256_set1_epi8(1),
                  ones16 = _mm256_set1_epi16(1);
    __m256i acc[NC][2];
    for (int c = 0; c < NC; ++c) acc[c][0] = acc[c][1] = _mm256_setzero_si256();
    size_t j = 0;
    while (j < C) {
      const size_t end = C - j > 31 ? j + 31 : C;  // byte counts <= 8 per chunk: 31 fit in a byte
      __m256i b[NC][2];
      for (int c = 0; c < NC; ++c) b[c][0] = b[c][1] = _mm256_setzero_si256();
      for (; j < end; ++j) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + j * 16));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + j * 16 + 8));
        for (int c = 0; c < NC; ++c) {
          const __m256i a = _mm256_set1_epi32(static_cast<int>(cols[c][j]));
          b[c][0] = _mm256_add_epi8(b[c][0], pcnt8(_mm256_xor_si256(w0, a), lut, m0f));
          b[c][1] = _mm256_add_epi8(b[c][1], pcnt8(_mm256_xor_si256(w1, a), lut, m0f));
        }
      }
      for (int c = 0; c < NC; ++c)
        for (int h = 0; h < 2; ++h)
          acc[c][h] = _mm256_add_epi32(acc[c][h], _mm256_madd_epi16(_mm256_maddubs_epi16(b[c][h], ones8), ones16));
    }
    const __m256i kv = _mm256_set1_epi32(K);
    for (int c = 0; c < NC; ++c)
      for (int h = 0; h < 2; ++h)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * c + 8 * h),
                            _mm256_sub_epi32(kv, _mm256_slli_epi32(acc[c][h], 1)));
  }
};

void binary_linear(const BinaryLinearArgs& g) {
  if (g.w16) return binary_linear_w16<VAvx2, Avx2Dots>(g);
  Scratch<uint32_t> w16(((g.N + 15) / 16) * ((g.K + 31) / 32) * 16);
  interleave_rows16_into(g.w, g.N, g.K, w16.get());
  BinaryLinearArgs h = g;
  h.w16 = w16.get();
  binary_linear_w16<VAvx2, Avx2Dots>(h);
}

void binary_conv2d(const BinaryConv2dArgs& a) {
  const size_t O = a.plan->g.O, K = a.plan->K;
  Scratch<uint32_t> own(a.w16 ? 1 : ((O + 15) / 16) * ((K + 31) / 32) * 16);
  if (!a.w16) interleave_rows16_into(a.w, O, K, own.get());
  binary_conv2d_w16<VAvx2, Avx2Dots>(a, a.w16 ? a.w16 : own.get());
}

void binary_memory(const BinaryMemoryArgs& m) { binary_memory_v<VAvx2>(m); }
void memory_f32(const MemoryF32Args& m) { memory_f32_v<VAvx2>(m); }
void post_ops(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post, float* y) {
  post_ops_buffer<VAvx2>(x, outer, N, inner, post, y);
}

}  // namespace
}  // namespace avx2

const Kernels& avx2_kernels() {
  static const Kernels k = [] {
    Kernels t{};
    t.name = "avx2";
    t.pack_threshold = avx2::pack_threshold;
    t.pack_dual = avx2::pack_dual;
    t.pack_weights = avx2::pack_weights;
    t.bgemm = avx2::bgemm;
    t.binary_linear = avx2::binary_linear;
    t.binary_memory = avx2::binary_memory;
    t.linear_f32 = avx2::linear_f32;
    t.conv2d_f32 = avx2::conv2d_f32;
    t.wants_w16 = true;
    t.post_ops = avx2::post_ops;
    t.binary_conv2d = avx2::binary_conv2d;
    t.memory_f32 = avx2::memory_f32;
    t.pack_f32_weights = pack_f32_weights_avx2;
    return t;
  }();
  return k;
}

}  // namespace fbck
