// Optional FBCK path for x86-64 with AVX-512 VPOPCNTDQ (Ice Lake and later, Zen 4 and later),
// compiled with -mavx512f -mavx512bw -mavx512vpopcntdq (plus the AVX2 flags) and dispatched only
// when cpuid reports AVX512F, AVX512BW and AVX512_VPOPCNTDQ with OS-enabled zmm state.
//
// A 512-bit XOR-popcount is VPXORQ + VPOPCNTQ + VPADDQ (3 uops per 512 bits, against 8 per 256
// with the AVX2 nibble LUT). Rows of 128 bits (K <= 128) are laid four to a zmm (the weight rows
// are contiguous) against a broadcast activation; rows of 256 or 384 bits use the AVX2 tile, which
// is as fast there; longer rows use a 4-row x 2-column tile of zmm accumulators with a masked last
// chunk. Everything except bgemm and binary_linear is the AVX2 table's. Integer results are exact
// and the binary_linear epilogue keeps the README's float order (separate multiplies and adds).
#include <immintrin.h>

#include "fbck/bits.h"
#include "fbck/impls.h"

#define FBCK_INLINE inline __attribute__((always_inline))
#define FBCK_INLINE_LAMBDA __attribute__((always_inline))

namespace fbck {
namespace avx512 {
namespace {

// ---- K <= 128 (W == 2): 8 rows x 2 columns ---------------------------------------------------
// dots for rows n0..n0+7 (nv valid) against columns a0 and a1: o0[r], o1[r] (o1 skipped if null).
FBCK_INLINE void dots_w2(const uint64_t* w, size_t nv, const uint64_t* a0, const uint64_t* a1,
                         __m512i kv, __m512i idx, int32_t* o0, int32_t* o1) {
  const __mmask8 m0 = static_cast<__mmask8>(nv >= 4 ? 0xff : (1u << (2 * nv)) - 1u);
  const __mmask8 m1 = static_cast<__mmask8>(nv >= 8 ? 0xff : nv <= 4 ? 0 : (1u << (2 * (nv - 4))) - 1u);
  const __m512i z0 = _mm512_maskz_loadu_epi64(m0, w);      // rows 0..3
  const __m512i z1 = _mm512_maskz_loadu_epi64(m1, w + 8);  // rows 4..7
  const __m512i b0 = _mm512_maskz_broadcast_i32x4(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a0)));
  const __m512i b1 = _mm512_maskz_broadcast_i32x4(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a1)));
  auto col = [&](__m512i b) FBCK_INLINE_LAMBDA {
    const __m512i p0 = _mm512_popcnt_epi64(_mm512_xor_si512(z0, b));
    const __m512i p1 = _mm512_popcnt_epi64(_mm512_xor_si512(z1, b));
    // per 128-bit lane i: [row i, row 4 + i] -> u64 lanes [r0 r4 r1 r5 r2 r6 r3 r7]
    return _mm512_add_epi64(_mm512_unpacklo_epi64(p0, p1), _mm512_unpackhi_epi64(p0, p1));
  };
  // u32 lanes [c0 r0, c1 r0, c0 r4, c1 r4, ...] -> [c0 r0..r7, c1 r0..r7]
  const __m512i both = _mm512_or_si512(col(b0), _mm512_slli_epi64(col(b1), 32));
  const __m512i d = _mm512_sub_epi32(kv, _mm512_slli_epi32(_mm512_permutexvar_epi32(idx, both), 1));
  const __mmask16 valid = static_cast<__mmask16>((1u << nv) - 1u);
  _mm512_mask_storeu_epi32(o0, valid, d);
  if (o1) _mm512_mask_storeu_epi32(o1 - 8, static_cast<__mmask16>(valid << 8), d);
}

FBCK_INLINE __m512i w2_index() {
  // destination lane (c, r) takes u32 lane 2 * L(r) + c with L = [0, 2, 4, 6, 1, 3, 5, 7]
  return _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
}

// ---- long rows (W >= 8): 4 rows x C columns ------------------------------------------------
template <int C>
FBCK_INLINE void tile4(const uint64_t* const* w, const uint64_t* const* a, size_t W, __m128i* pc) {
  __m512i acc[4][C];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
  const size_t full = W / 8;
  const __mmask8 tail = static_cast<__mmask8>((1u << (W % 8)) - 1u);
  auto step = [&](size_t j, __mmask8 m) FBCK_INLINE_LAMBDA {
    __m512i av[C];
    for (int c = 0; c < C; ++c) av[c] = _mm512_maskz_loadu_epi64(m, a[c] + j);
    for (int r = 0; r < 4; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi64(m, w[r] + j);
      for (int c = 0; c < C; ++c)
        acc[r][c] = _mm512_add_epi64(acc[r][c], _mm512_popcnt_epi64(_mm512_xor_si512(wv, av[c])));
    }
  };
  for (size_t q = 0; q < full; ++q) step(8 * q, 0xff);
  if (tail) step(8 * full, tail);
  for (int c = 0; c < C; ++c) {
    const __m512i ab = _mm512_add_epi64(acc[0][c], _mm512_slli_epi64(acc[1][c], 32));
    const __m512i cd = _mm512_add_epi64(acc[2][c], _mm512_slli_epi64(acc[3][c], 32));
    const __m512i t = _mm512_add_epi64(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    const __m256i h = _mm256_add_epi64(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    pc[c] = _mm_add_epi64(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  }
}

// Dots of rows [n0, n0 + nv) against all positions, written by put(p, plane, n0, nv, dots8).
// planes: a1 (and a2) [P, W].
template <class Put>
void dots_all(const uint64_t* a1, const uint64_t* a2, size_t P, const uint64_t* w, size_t N,
              size_t K, Put&& put) {
  const size_t W = row_words(K);
  const __m512i kv = _mm512_set1_epi32(static_cast<int>(K));
  alignas(64) int32_t d[2][16];
  if (W == 2) {
    const __m512i idx = w2_index();
    for (size_t n0 = 0; n0 < N; n0 += 8) {
      const size_t nv = N - n0 < 8 ? N - n0 : 8;
      const uint64_t* wb = w + n0 * W;
      if (a2) {
        for (size_t p = 0; p < P; ++p) {
          dots_w2(wb, nv, a1 + p * W, a2 + p * W, kv, idx, d[0], d[1]);
          put(p, n0, nv, d[0], d[1]);
        }
      } else {
        size_t p = 0;
        for (; p + 2 <= P; p += 2) {
          dots_w2(wb, nv, a1 + p * W, a1 + (p + 1) * W, kv, idx, d[0], d[1]);
          put(p, n0, nv, d[0], d[0]);
          put(p + 1, n0, nv, d[1], d[1]);
        }
        if (p < P) {
          dots_w2(wb, nv, a1 + p * W, a1 + p * W, kv, idx, d[0], nullptr);
          put(p, n0, nv, d[0], d[0]);
        }
      }
    }
    return;
  }
  const __m128i k4 = _mm_set1_epi32(static_cast<int>(K));
  for (size_t n0 = 0; n0 < N; n0 += 4) {
    const size_t nv = N - n0 < 4 ? N - n0 : 4;
    const uint64_t* wr[4];
    for (size_t r = 0; r < 4; ++r) wr[r] = w + (n0 + (r < nv ? r : nv - 1)) * W;
    auto store = [&](__m128i pc, int32_t* o) FBCK_INLINE_LAMBDA {
      _mm_store_si128(reinterpret_cast<__m128i*>(o), _mm_sub_epi32(k4, _mm_slli_epi32(pc, 1)));
    };
    size_t p = 0;
    if (a2) {
      for (; p < P; ++p) {
        const uint64_t* ac[2] = {a1 + p * W, a2 + p * W};
        __m128i pc[2];
        tile4<2>(wr, ac, W, pc);
        store(pc[0], d[0]);
        store(pc[1], d[1]);
        put(p, n0, nv, d[0], d[1]);
      }
      continue;
    }
    for (; p + 2 <= P; p += 2) {
      const uint64_t* ac[2] = {a1 + p * W, a1 + (p + 1) * W};
      __m128i pc[2];
      tile4<2>(wr, ac, W, pc);
      store(pc[0], d[0]);
      store(pc[1], d[1]);
      put(p, n0, nv, d[0], d[0]);
      put(p + 1, n0, nv, d[1], d[1]);
    }
    if (p < P) {
      const uint64_t* ac[1] = {a1 + p * W};
      __m128i pc[1];
      tile4<1>(wr, ac, W, pc);
      store(pc[0], d[0]);
      put(p, n0, nv, d[0], d[0]);
    }
  }
}

bool use_avx2(size_t K) {
  const size_t W = row_words(K);
  return W == 4 || W == 6;  // measured: the AVX2 tile is as fast or faster for 256/384-bit rows
}

void bgemm(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K, int32_t* out) {
  if (use_avx2(K)) return avx2_kernels().bgemm(a, P, w, N, K, out);
  dots_all(a, nullptr, P, w, N, K,
           [&](size_t p, size_t n0, size_t nv, const int32_t* d, const int32_t*) {
             int32_t* o = out + p * N + n0;
             for (size_t q = 0; q < nv; ++q) o[q] = d[q];
           });
}

// ---- interleaved weights (BinaryLinearArgs::w16): 16 rows per zmm, no horizontal sums ---------
// Per 16-row tile and position: for each 32-bit chunk j, VPXORD with the broadcast activation
// chunk, VPOPCNTD, VPADDD: 16 dot products in lanes, already int32 for the float epilogue.
FBCK_INLINE __m512i popc16(const uint32_t* wt, const uint32_t* a, size_t C) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0;  // two chains hide the popcount latency
  size_t j = 0;
  for (; j + 2 <= C; j += 2) {
    c0 = _mm512_add_epi32(c0, _mm512_popcnt_epi32(_mm512_xor_si512(
                                  _mm512_loadu_si512(wt + j * 16), _mm512_set1_epi32(static_cast<int>(a[j])))));
    c1 = _mm512_add_epi32(c1, _mm512_popcnt_epi32(_mm512_xor_si512(
                                  _mm512_loadu_si512(wt + (j + 1) * 16), _mm512_set1_epi32(static_cast<int>(a[j + 1])))));
  }
  if (j < C)
    c0 = _mm512_add_epi32(c0, _mm512_popcnt_epi32(_mm512_xor_si512(
                                  _mm512_loadu_si512(wt + j * 16), _mm512_set1_epi32(static_cast<int>(a[j])))));
  return _mm512_add_epi32(c0, c1);
}

void binary_linear_w16(const BinaryLinearArgs& g) {
  const size_t P = g.outer * g.inner, N = g.N, W = row_words(g.K), C = (g.K + 31) / 32;
  const size_t tiles = (N + 15) / 16, NP = tiles * 16, WN = row_words(N);
  const bool dual = g.a2 != nullptr;
  const PaddedEpilogue pad(g, NP);
  const float *sw = pad.sw, *bias = pad.bias, *slope = pad.slope, *thr = pad.thr;
  const __m512i kv = _mm512_set1_epi32(static_cast<int>(g.K));
  const __m512 zero = _mm512_setzero_ps();
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i strided = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(g.inner)));
  for (size_t t = 0; t < tiles; ++t) {
    const size_t n0 = 16 * t, nv = N - n0 < 16 ? N - n0 : 16;
    const __mmask16 valid = static_cast<__mmask16>((1u << nv) - 1u);
    const uint32_t* wt = g.w16 + t * C * 16;
    const __m512 swv = _mm512_load_ps(sw + n0), bv = _mm512_load_ps(bias + n0);
    const __m512 slv = _mm512_load_ps(slope + n0), thv = _mm512_load_ps(thr + n0);
    for (size_t p = 0; p < P; ++p) {
      // the README epilogue, lane-wise (separate multiplies and adds, as the reference)
      const __m512i pc1 = popc16(wt, reinterpret_cast<const uint32_t*>(g.a1 + p * W), C);
      const __m512 f1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(kv, _mm512_slli_epi32(pc1, 1)));
      __m512 z = g.s1 ? _mm512_mul_ps(f1, _mm512_set1_ps(g.s1[p])) : f1;
      if (dual) {
        const __m512i pc2 = popc16(wt, reinterpret_cast<const uint32_t*>(g.a2 + p * W), C);
        const __m512 f2 = _mm512_cvtepi32_ps(_mm512_sub_epi32(kv, _mm512_slli_epi32(pc2, 1)));
        z = _mm512_add_ps(z, _mm512_mul_ps(f2, _mm512_set1_ps(g.s2[p])));
      }
      __m512 y = g.sw ? _mm512_mul_ps(z, swv) : z;
      y = _mm512_add_ps(y, bv);
      if (g.slope)
        y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), _mm512_mul_ps(y, slv), y);
      if (g.y) {
        const size_t o = p / g.inner, i = p % g.inner;
        float* yo = g.y + (o * N + n0) * g.inner + i;
        if (g.inner == 1)
          _mm512_mask_storeu_ps(yo, valid, y);
        else
          _mm512_mask_i32scatter_ps(yo, valid, strided, y, 4);
      }
      if (g.ybits) {
        const __mmask16 ge = _mm512_cmp_ps_mask(_mm512_sub_ps(y, thv), zero, _CMP_GE_OQ);
        const unsigned m = ~static_cast<unsigned>(ge) & valid;
        g.ybits[p * WN + (n0 >> 6)] |= static_cast<uint64_t>(m) << (n0 & 63);
      }
    }
  }
}

void binary_linear(const BinaryLinearArgs& g) {
  if (g.w16) return binary_linear_w16(g);
  if (use_avx2(g.K)) return avx2_kernels().binary_linear(g);
  const size_t P = g.outer * g.inner, N = g.N, WN = row_words(N), NP = (N + 7) / 8 * 8 + 8;
  const bool dual = g.a2 != nullptr;
  const PaddedEpilogue pad(g, NP);
  const float *sw = pad.sw, *bias = pad.bias, *slope = pad.slope, *thr = pad.thr;
  const __m256 zero = _mm256_setzero_ps();
  // the README epilogue on up to 8 outputs (separate multiplies and adds, as the reference)
  dots_all(g.a1, g.a2, P, g.w, N, g.K,
           [&](size_t p, size_t n0, size_t nv, const int32_t* d1, const int32_t* d2) {
             const __m256 f1 = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d1)));
             const __m256 u = g.s1 ? _mm256_mul_ps(f1, _mm256_set1_ps(g.s1[p])) : f1;
             __m256 z = u;
             if (dual) {
               const __m256 f2 = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d2)));
               z = _mm256_add_ps(u, _mm256_mul_ps(f2, _mm256_set1_ps(g.s2[p])));
             }
             __m256 y = g.sw ? _mm256_mul_ps(z, _mm256_loadu_ps(sw + n0)) : z;
             y = _mm256_add_ps(y, _mm256_loadu_ps(bias + n0));
             if (g.slope)
               y = _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_loadu_ps(slope + n0)), y,
                                    _mm256_cmp_ps(y, zero, _CMP_GT_OQ));
             const unsigned valid = (1u << nv) - 1u;
             if (g.y) {
               const size_t o = p / g.inner, i = p % g.inner;
               float* yo = g.y + o * N * g.inner + i;
               if (g.inner == 1) {
                 _mm512_mask_storeu_ps(yo + n0, static_cast<__mmask16>(valid),
                                       _mm512_castps256_ps512(y));
               } else {
                 alignas(32) float t[8];
                 _mm256_store_ps(t, y);
                 for (size_t q = 0; q < nv; ++q) yo[(n0 + q) * g.inner] = t[q];
               }
             }
             if (g.ybits) {
               const __m256 ge = _mm256_cmp_ps(_mm256_sub_ps(y, _mm256_loadu_ps(thr + n0)), zero,
                                               _CMP_GE_OQ);
               const unsigned m = ~static_cast<unsigned>(_mm256_movemask_ps(ge)) & valid;
               g.ybits[p * WN + (n0 >> 6)] |= static_cast<uint64_t>(m) << (n0 & 63);
             }
           });
}

}  // namespace
}  // namespace avx512

const Kernels& avx512_kernels() {
  static const Kernels k = [] {
    Kernels t = avx2_kernels();
    t.name = "avx512";
    t.bgemm = avx512::bgemm;
    t.binary_linear = avx512::binary_linear;
    t.wants_w16 = true;
    return t;
  }();
  return k;
}

}  // namespace fbck
