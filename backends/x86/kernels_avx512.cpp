// Optional FBCK path for x86-64 with AVX-512 VPOPCNTDQ (Ice Lake and later, Zen 4 and later),
// compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq (plus the AVX2 flags) and
// dispatched only when cpuid reports AVX512F, AVX512BW, AVX512VL and AVX512_VPOPCNTDQ with
// OS-enabled zmm state.
//
// A 512-bit XOR-popcount is VPXORQ + VPOPCNTQ + VPADDQ (3 uops per 512 bits, against 8 per 256
// with the AVX2 nibble LUT). Rows of 128 bits (K <= 128) are laid four to a zmm (the weight rows
// are contiguous) against a broadcast activation; rows of 256 or 384 bits use the AVX2 tile, which
// is as fast there; longer rows use a 4-row x 2-column tile of zmm accumulators with a masked last
// chunk. Binary linear / conv run on interleaved weights (16 rows per zmm); the epilogues, post-ops
// and memories are the shared templates on 16-lane vectors; packing and the FP32 GEMM are the
// AVX2 table's. Integer results are exact and the float order is the README's.
#include <immintrin.h>

#include "fbck/binary_tile.h"
#include "fbck/bits.h"
#include "fbck/impls.h"
#include "fbck/memory_tile.h"

#define FBCK_INLINE inline __attribute__((always_inline))
#define FBCK_INLINE_LAMBDA __attribute__((always_inline))

namespace fbck {
namespace avx512 {
namespace {

// The 8-lane epilogue (VAvx2) with AVX-512's wider double sums: the per-lane |x| sums of the
// canonical mean (output_transform.h) widen 8 floats to one zmm of doubles instead of two ymm
// halves; each lane adds the same numbers in the same order, so the means are the same.
struct VAvx2Z : VAvx2 {
  struct Col {
    __m512d a[4];
    Col() {
      for (auto& j : a) j = _mm512_setzero_pd();
    }
  };
  template <int J>
  static FBCK_OT_INLINE void abs_col_j(Col& c, F v) {
    const __m256 a = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    c.a[J] = _mm512_add_pd(c.a[J], _mm512_cvtps_pd(a));
  }
  FBCK_OT_ABS_COL_SWITCH
  static void mean_col(const Col& c, size_t K, float* out, size_t n) {
    const __m512d s = _mm512_add_pd(_mm512_add_pd(c.a[0], c.a[1]), _mm512_add_pd(c.a[2], c.a[3]));
    alignas(32) float t[8];
    // the masked form with a zero source: GCC 12's _mm512_cvtpd_ps passes an uninitialised one
    _mm256_store_ps(t, _mm512_maskz_cvtpd_ps(0xff, _mm512_div_pd(s, _mm512_set1_pd(static_cast<double>(K)))));
    for (size_t l = 0; l < n; ++l) out[l] = t[l];
  }
};

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

// ---- interleaved weights (w16): 16 rows per zmm, no horizontal sums ---------------------------
// Per 16-row tile and column: for each 32-bit chunk j, VPXORD with the broadcast activation
// chunk, VPOPCNTD, VPADDD: 16 dot products in lanes, already int32 for the epilogue
// (binary_tile.h: the epilogue, post-ops and bit planes on 16-lane vectors).
struct Avx512Dots {
  template <int NC>
  static FBCK_INLINE void dots16(const uint32_t* wt, size_t C, const uint32_t* const* cols,
                                 int32_t K, int32_t* out) {
    __m512i acc[NC][2];  // two chains per column hide the popcount latency
    for (int c = 0; c < NC; ++c) acc[c][0] = acc[c][1] = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 2 <= C; j += 2) {
      const __m512i w0 = _mm512_loadu_si512(wt + j * 16), w1 = _mm512_loadu_si512(wt + (j + 1) * 16);
      for (int c = 0; c < NC; ++c) {
        acc[c][0] = _mm512_add_epi32(acc[c][0], _mm512_popcnt_epi32(_mm512_xor_si512(
                                                    w0, _mm512_set1_epi32(static_cast<int>(cols[c][j])))));
        acc[c][1] = _mm512_add_epi32(acc[c][1], _mm512_popcnt_epi32(_mm512_xor_si512(
                                                    w1, _mm512_set1_epi32(static_cast<int>(cols[c][j + 1])))));
      }
    }
    if (j < C) {
      const __m512i w0 = _mm512_loadu_si512(wt + j * 16);
      for (int c = 0; c < NC; ++c)
        acc[c][0] = _mm512_add_epi32(acc[c][0], _mm512_popcnt_epi32(_mm512_xor_si512(
                                                    w0, _mm512_set1_epi32(static_cast<int>(cols[c][j])))));
    }
    const __m512i kv = _mm512_set1_epi32(K);
    for (int c = 0; c < NC; ++c)
      _mm512_storeu_si512(out + 16 * c,
                          _mm512_sub_epi32(kv, _mm512_slli_epi32(_mm512_add_epi32(acc[c][0], acc[c][1]), 1)));
  }

  // Column orientation: 16 rows x 16 positions with the positions in the lanes (dots16xLT below).
  static constexpr size_t kColTL = 16;
  static FBCK_INLINE void dots16xLT(const uint32_t* wt, size_t C, const uint32_t* at, int32_t K, int32_t* out);
};

// The column tile: 16 rows x L positions with the positions in the lanes, so the dots land in the
// column epilogue's layout (out[r * L + l]) with no transpose. at[j * L + l] holds chunk j of
// position l (transposed once per block of positions, shared by every tile). Per row and chunk:
// VPXORD with the row's broadcast weight chunk, VPOPCNTD, VPADDD; four rows at a time so four
// chains hide the popcount latency. I: the vector width's intrinsics (zmm, or ymm with AVX512VL).
struct ZmmLanes {
  using I = __m512i;
  static constexpr size_t L = 16;
  static I zero() { return _mm512_setzero_si512(); }
  static I set1(int32_t v) { return _mm512_set1_epi32(v); }
  static I load(const uint32_t* p) { return _mm512_load_si512(p); }
  static void store(int32_t* p, I v) { _mm512_storeu_si512(p, v); }
  static I xor_popcnt_add(I acc, I x, I w) { return _mm512_add_epi32(acc, _mm512_popcnt_epi32(_mm512_xor_si512(x, w))); }
  static I k_minus_twice(I k, I v) { return _mm512_sub_epi32(k, _mm512_slli_epi32(v, 1)); }
};
struct YmmLanes {
  using I = __m256i;
  static constexpr size_t L = 8;
  static I zero() { return _mm256_setzero_si256(); }
  static I set1(int32_t v) { return _mm256_set1_epi32(v); }
  static I load(const uint32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static I xor_popcnt_add(I acc, I x, I w) { return _mm256_add_epi32(acc, _mm256_popcnt_epi32(_mm256_xor_si256(x, w))); }
  static I k_minus_twice(I k, I v) { return _mm256_sub_epi32(k, _mm256_slli_epi32(v, 1)); }
};

template <class Lanes>
FBCK_INLINE void dots16_lanes(const uint32_t* wt, size_t C, const uint32_t* at, int32_t K, int32_t* out) {
  using I = typename Lanes::I;
  constexpr size_t L = Lanes::L;
  const I kv = Lanes::set1(K);
  for (int r = 0; r < 16; r += 4) {
    I acc[4] = {Lanes::zero(), Lanes::zero(), Lanes::zero(), Lanes::zero()};
    for (size_t j = 0; j < C; ++j) {
      const I x = Lanes::load(at + j * L);
      const uint32_t* w = wt + j * 16 + r;
      for (int i = 0; i < 4; ++i) acc[i] = Lanes::xor_popcnt_add(acc[i], x, Lanes::set1(static_cast<int32_t>(w[i])));
    }
    for (int i = 0; i < 4; ++i) Lanes::store(out + (r + i) * L, Lanes::k_minus_twice(kv, acc[i]));
  }
}

FBCK_INLINE void Avx512Dots::dots16xLT(const uint32_t* wt, size_t C, const uint32_t* at, int32_t K, int32_t* out) {
  dots16_lanes<ZmmLanes>(wt, C, at, K, out);
}

// The same tile for blocks of at most 8 positions, on ymm: an utterance's 8 frames fill every
// lane, where zmm would leave half of them idle.
struct Avx512DotsY : Avx512Dots {
  static constexpr size_t kColTL = 8;
  static FBCK_INLINE void dots16xLT(const uint32_t* wt, size_t C, const uint32_t* at, int32_t K, int32_t* out) {
    dots16_lanes<YmmLanes>(wt, C, at, K, out);
  }
};

// Blocks of at most 8 positions (an utterance's frames, channel-major) run on 8-lane vectors.
void binary_linear_on_w16(const BinaryLinearArgs& g) {
  if (g.inner > 1 && g.inner <= 8) return binary_linear_w16<VAvx2Z, Avx512DotsY>(g);
  binary_linear_w16<VAvx512, Avx512Dots>(g);
}

void binary_linear(const BinaryLinearArgs& g) {
  if (g.w16) return binary_linear_on_w16(g);
  Scratch<uint32_t> w16(((g.N + 15) / 16) * ((g.K + 31) / 32) * 16);
  interleave_rows16_into(g.w, g.N, g.K, w16.get());
  BinaryLinearArgs h = g;
  h.w16 = w16.get();
  binary_linear_on_w16(h);
}

void binary_conv2d(const BinaryConv2dArgs& a) {
  const size_t O = a.plan->g.O, K = a.plan->K;
  Scratch<uint32_t> own(a.w16 ? 1 : ((O + 15) / 16) * ((K + 31) / 32) * 16);
  if (!a.w16) interleave_rows16_into(a.w, O, K, own.get());
  binary_conv2d_w16<VAvx512, Avx512Dots>(a, a.w16 ? a.w16 : own.get());
}

// Memories over at most 8 frames run on 8-lane vectors (frames are the lanes).
void binary_memory(const BinaryMemoryArgs& m) {
  if (m.T <= 8) return binary_memory_v<VAvx2Z>(m);
  binary_memory_v<VAvx512>(m);
}
void memory_f32(const MemoryF32Args& m) {
  if (m.T <= 8) return memory_f32_v<VAvx2Z>(m);
  memory_f32_v<VAvx512>(m);
}
void post_ops(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post, float* y) {
  post_ops_buffer<VAvx512>(x, outer, N, inner, post, y);
}

}  // namespace
}  // namespace avx512

const Kernels& avx512_kernels() {
  static const Kernels k = [] {
    Kernels t = avx2_kernels();
    t.name = "avx512";
    t.bgemm = avx512::bgemm;
    t.binary_linear = avx512::binary_linear;
    t.binary_conv2d = avx512::binary_conv2d;
    t.binary_memory = avx512::binary_memory;
    t.memory_f32 = avx512::memory_f32;
    t.post_ops = avx512::post_ops;
    t.wants_w16 = true;
    return t;
  }();
  return k;
}

}  // namespace fbck
