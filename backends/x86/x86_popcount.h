// AVX2 XOR-popcount register tile shared by bgemm and binary_linear (include only from files
// compiled with -mavx2; everything has internal linkage).
//
// Method: nibble LUT with the SAD-fused trick of libpopcnt: lut1[i] = 4 + popcount(i),
// lut2[i] = 4 - popcount(i), so vpsadbw(lut1[lo], lut2[hi]) = sum of popcount(lo) + popcount(hi)
// per 64-bit lane. Per 256 bits: vpxor, 2x vpand, vpsrlw, 2x vpshufb, vpsadbw, vpaddq = 8 uops.
//
// Tile: 4 weight rows x C activation rows (C = 1 or 2) share each load; 4*C ymm accumulators of
// u64 lanes. A row is a multiple of 128 bits: full 256-bit steps, then at most one 128-bit tail
// where two weight rows share one ymm ([w0 | w1] XOR [a | a]). The final reduction packs the four
// row sums of a column into one xmm of 4 x u32 (sums < 2^32, so lanes can share a u64).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#define FBCK_INLINE inline __attribute__((always_inline))
#define FBCK_LAMBDA_INLINE __attribute__((always_inline))

namespace fbck {
namespace {

struct Lut {
  __m256i lut1, lut2, m0f;
  Lut() {
    lut1 = _mm256_setr_epi8(4, 5, 5, 6, 5, 6, 6, 7, 5, 6, 6, 7, 6, 7, 7, 8,  //
                            4, 5, 5, 6, 5, 6, 6, 7, 5, 6, 6, 7, 6, 7, 7, 8);
    lut2 = _mm256_setr_epi8(4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0,  //
                            4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0);
    m0f = _mm256_set1_epi8(0x0f);
  }
};

// popcount of each 64-bit lane of x, as u64 lanes.
FBCK_INLINE __m256i pc_sad(__m256i x, const Lut& L) {
  const __m256i lo = _mm256_and_si256(x, L.m0f);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), L.m0f);
  return _mm256_sad_epu8(_mm256_shuffle_epi8(L.lut1, lo), _mm256_shuffle_epi8(L.lut2, hi));
}

FBCK_INLINE __m128i tail_mask(size_t nv) {
  return _mm_setr_epi32(nv > 0 ? -1 : 0, nv > 1 ? -1 : 0, nv > 2 ? -1 : 0, nv > 3 ? -1 : 0);
}

// pc[c] = 4 x u32 popcount(w[r] XOR a[c]) over W words, r = 0..3. WF: W known at compile time
// (0 = run time).
template <int C, size_t WF>
FBCK_INLINE void tile4(const uint64_t* const* w, const uint64_t* const* a, size_t Wrt,
                       const Lut& L, __m128i* pc) {
  const size_t W = WF ? WF : Wrt;
  __m256i acc[4][C];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
  size_t j = 0;
  for (; j + 4 <= W; j += 4) {
    __m256i av[C];
    for (int c = 0; c < C; ++c)
      av[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[c] + j));
    for (int r = 0; r < 4; ++r) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + j));
      for (int c = 0; c < C; ++c)
        acc[r][c] = _mm256_add_epi64(acc[r][c], pc_sad(_mm256_xor_si256(wv, av[c]), L));
    }
  }
  __m256i ab[C], cd[C];
  for (int c = 0; c < C; ++c) {
    ab[c] = _mm256_add_epi64(acc[0][c], _mm256_slli_epi64(acc[1][c], 32));
    cd[c] = _mm256_add_epi64(acc[2][c], _mm256_slli_epi64(acc[3][c], 32));
  }
  if (j < W) {  // one 128-bit tail: rows paired in one ymm
    const __m256i w01 = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(w[1] + j),
                                            reinterpret_cast<const __m128i*>(w[0] + j));
    const __m256i w23 = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(w[3] + j),
                                            reinterpret_cast<const __m128i*>(w[2] + j));
    for (int c = 0; c < C; ++c) {
      const __m256i aa = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[c] + j)));
      const __m256i t01 = pc_sad(_mm256_xor_si256(w01, aa), L);
      const __m256i t23 = pc_sad(_mm256_xor_si256(w23, aa), L);
      // lanes 0,1 belong to the even row (low u32), lanes 2,3 to the odd row (high u32)
      ab[c] = _mm256_add_epi64(ab[c], _mm256_blend_epi32(t01, _mm256_slli_epi64(t01, 32), 0xF0));
      cd[c] = _mm256_add_epi64(cd[c], _mm256_blend_epi32(t23, _mm256_slli_epi64(t23, 32), 0xF0));
    }
  }
  for (int c = 0; c < C; ++c) {
    const __m256i s = _mm256_add_epi64(_mm256_unpacklo_epi64(ab[c], cd[c]),
                                       _mm256_unpackhi_epi64(ab[c], cd[c]));
    pc[c] = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  }
}

}  // namespace
}  // namespace fbck
