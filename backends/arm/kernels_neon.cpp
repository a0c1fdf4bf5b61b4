// FBCK binary kernels for AArch64 NEON (ARMv8.0-A baseline: no dot-product extension needed).
// Float arithmetic follows backends/README.md exactly (separate vmulq/vaddq, -ffp-contract=off).
//
// bgemm inner loop (LCE's "BMLA"): for one 128-bit step of 8 weight rows against one activation
// column: 8 EOR + 8 CNT + 7 ADDP (a tree that folds the 8 rows' byte counts into one register,
// two bytes per row, each <= 64) + 1 UADALP into 8 x u16 row accumulators = 24 vector ALU
// instructions per 8 XOR-popcounts, i.e. 3 per 128-bit XOR-popcount (42.7 bMAC/instruction).
// The register tile is 8 rows x 4 columns (inline asm): 8 weight registers are reused by 4
// columns, the weights come from an interleaved copy of the 8-row panel (two LD1 {4 regs} per
// step; for K <= 128 the weight rows already have that layout and are used in place).
// u16 accumulators are safe for 511 steps (511 * 128 = 65408 < 65536 bits). Longer rows, and the
// 1 to 3 column tails, take the intrinsics tile, which accumulates blocks of 511 steps in u16 and
// widens each block into u32 (the int32 fallback, tested on both sides of the limit).
// binary_linear and binary_conv2d run on interleaved weights (interleave_rows16: 16 rows in four
// q registers, no per-call panel copy, no horizontal sums); their epilogues, the post-ops and the
// memories are the shared templates (output_transform.h, binary_tile.h, memory_tile.h) on
// 4-lane vectors.
#include <arm_neon.h>

#include "fbck/binary_tile.h"
#include "fbck/bits.h"
#include "fbck/impls.h"
#include "fbck/memory_tile.h"
#include "fbck/pack_driver.h"

#define FBCK_INLINE inline __attribute__((always_inline))

namespace fbck {
namespace neon {

void linear_f32(const LinearF32Args& g);  // fp32_neon.cpp
void conv2d_f32(const Conv2dF32Args& g);

namespace {

constexpr size_t kU16Steps = 511;  // 128-bit steps per u16 accumulation block

FBCK_INLINE float canonical_mean(float64x2_t a01, float64x2_t a23, size_t K) {
  const double a0 = vgetq_lane_f64(a01, 0), a1 = vgetq_lane_f64(a01, 1);
  const double a2 = vgetq_lane_f64(a23, 0), a3 = vgetq_lane_f64(a23, 1);
  return static_cast<float>(((a0 + a1) + (a2 + a3)) / static_cast<double>(K));
}

// acc01/acc23 += |v| as doubles (lanes k mod 4 for a group starting at k = 0 mod 4).
FBCK_INLINE void add_abs4(float64x2_t& a01, float64x2_t& a23, float32x4_t v) {
  const float32x4_t a = vabsq_f32(v);
  a01 = vaddq_f64(a01, vcvt_f64_f32(vget_low_f32(a)));
  a23 = vaddq_f64(a23, vcvt_high_f64_f32(a));
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------
// 64 "x >= 0" masks (4 x 16 bytes of 0x00/0xff, byte i = value k0 + i) -> a 64-bit word.
FBCK_INLINE uint64_t masks_to_word(uint8x16_t m0, uint8x16_t m1, uint8x16_t m2, uint8x16_t m3) {
  static const uint8_t kw[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t w = vld1q_u8(kw);
  const uint8x16_t p01 = vpaddq_u8(vandq_u8(m0, w), vandq_u8(m1, w));
  const uint8x16_t p23 = vpaddq_u8(vandq_u8(m2, w), vandq_u8(m3, w));
  const uint8x16_t q = vpaddq_u8(p01, p23);
  const uint8x16_t r = vpaddq_u8(q, q);
  return vgetq_lane_u64(vreinterpretq_u64_u8(r), 0);
}

FBCK_INLINE uint8x16_t narrow_masks(uint32x4_t a, uint32x4_t b, uint32x4_t c, uint32x4_t d) {
  const uint16x8_t ab = vcombine_u16(vmovn_u32(a), vmovn_u32(b));
  const uint16x8_t cd = vcombine_u16(vmovn_u32(c), vmovn_u32(d));
  return vcombine_u8(vmovn_u16(ab), vmovn_u16(cd));
}

template <bool DUAL, bool SX>
void pack_row(const float* x, size_t K, const float* t0, const float* t1, uint64_t* row1,
              uint64_t* row2, float* s1, float* s2) {
  const size_t W = row_words(K);
  for (size_t w = 0; w < W; ++w) {
    row1[w] = 0;
    if (DUAL) row2[w] = 0;
  }
  const float32x4_t zero = vdupq_n_f32(0.0f), one = vdupq_n_f32(1.0f), mone = vdupq_n_f32(-1.0f);
  float64x2_t ax01 = vdupq_n_f64(0.0), ax23 = ax01, ar01 = ax01, ar23 = ax01;
  size_t k = 0;
  for (; k + 64 <= K; k += 64) {
    uint8x16_t m1[4], m2[4];
    for (int g = 0; g < 4; ++g) {
      uint32x4_t ge[4], ge2[4];
      for (int q = 0; q < 4; ++q) {
        const size_t kk = k + 16 * g + 4 * q;
        const float32x4_t v = vld1q_f32(x + kk);
        const float32x4_t d = t0 ? vsubq_f32(v, vld1q_f32(t0 + kk)) : v;
        ge[q] = vcgeq_f32(d, zero);
        if (SX) add_abs4(ax01, ax23, v);
        if (DUAL) {
          float32x4_t r = vsubq_f32(v, vbslq_f32(ge[q], one, mone));
          if (t1) r = vsubq_f32(r, vld1q_f32(t1 + kk));
          ge2[q] = vcgeq_f32(r, zero);
          add_abs4(ar01, ar23, r);
        }
      }
      m1[g] = narrow_masks(ge[0], ge[1], ge[2], ge[3]);
      if (DUAL) m2[g] = narrow_masks(ge2[0], ge2[1], ge2[2], ge2[3]);
    }
    row1[k >> 6] = ~masks_to_word(m1[0], m1[1], m1[2], m1[3]);
    if (DUAL) row2[k >> 6] = ~masks_to_word(m2[0], m2[1], m2[2], m2[3]);
  }
  double sx[4] = {vgetq_lane_f64(ax01, 0), vgetq_lane_f64(ax01, 1), vgetq_lane_f64(ax23, 0),
                  vgetq_lane_f64(ax23, 1)};
  double sr[4] = {vgetq_lane_f64(ar01, 0), vgetq_lane_f64(ar01, 1), vgetq_lane_f64(ar23, 0),
                  vgetq_lane_f64(ar23, 1)};
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
  if (SX && s1) *s1 = static_cast<float>(((sx[0] + sx[1]) + (sx[2] + sx[3])) / static_cast<double>(K));
  if (DUAL && s2) *s2 = static_cast<float>(((sr[0] + sr[1]) + (sr[2] + sr[3])) / static_cast<double>(K));
}

// pack_block_words' vector traits: 4 positions per vector.
struct NeonPack {
  using U = uint32x4_t;
  using Sums = float64x2_t[4][2];
  static FBCK_INLINE U zero() { return vdupq_n_u32(0); }
  static FBCK_INLINE U one() { return vdupq_n_u32(1); }
  static FBCK_INLINE U shl1(U b) { return vshlq_n_u32(b, 1); }
  // one 32-bit word per position (row l of the block, word q)
  static FBCK_INLINE void store(uint64_t* rows, size_t W, size_t q, U bits) {
    uint32_t h[4];
    vst1q_u32(h, bits);
    for (size_t l = 0; l < 4; ++l)
      std::memcpy(reinterpret_cast<unsigned char*>(rows + l * W) + 4 * q, &h[l], 4);
  }
  // One channel (values xk[0..3]): its sign bits into acc1 (acc2: the second plane) at bitk, the
  // |x| / |r| sums into j = J (a function, not a by-reference closure: the sums stay in registers).
  template <bool DUAL, bool SX, int J>
  static FBCK_INLINE void step(const float* xk, const float* t0k, const float* t1k, U bitk, U& acc1,
                               U& acc2, Sums& sx, Sums& sr) {
    const float32x4_t zero = vdupq_n_f32(0.0f), v = vld1q_f32(xk);
    const float32x4_t d = t0k ? vsubq_f32(v, vld1q_dup_f32(t0k)) : v;
    const uint32x4_t ge = vcgeq_f32(d, zero);
    acc1 = vorrq_u32(acc1, vbicq_u32(bitk, ge));
    if (SX) {
      const float32x4_t a = vabsq_f32(v);
      sx[J][0] = vaddq_f64(sx[J][0], vcvt_f64_f32(vget_low_f32(a)));
      sx[J][1] = vaddq_f64(sx[J][1], vcvt_high_f64_f32(a));
    }
    if (DUAL) {
      float32x4_t r = vsubq_f32(v, vbslq_f32(ge, vdupq_n_f32(1.0f), vdupq_n_f32(-1.0f)));
      if (t1k) r = vsubq_f32(r, vld1q_dup_f32(t1k));
      acc2 = vorrq_u32(acc2, vbicq_u32(bitk, vcgeq_f32(r, zero)));
      const float32x4_t a = vabsq_f32(r);
      sr[J][0] = vaddq_f64(sr[J][0], vcvt_f64_f32(vget_low_f32(a)));
      sr[J][1] = vaddq_f64(sr[J][1], vcvt_high_f64_f32(a));
    }
  }
};

// 4 positions (inner > 1): value k of position l is x[k * inner + l]. Rows must be zeroed.
template <bool DUAL, bool SX>
void pack_block4(const float* x, size_t inner, size_t K, const float* t0, const float* t1,
                 uint64_t* rows1, uint64_t* rows2, size_t W, float* s1, float* s2) {
  float64x2_t sx[4][2], sr[4][2];
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) sx[j][h] = sr[j][h] = vdupq_n_f64(0.0);
  pack_block_words<NeonPack, DUAL, SX>(x, inner, K, t0, t1, rows1, rows2, W, sx, sr);
  const float64x2_t kd = vdupq_n_f64(static_cast<double>(K));
  auto finish = [&](float64x2_t(&s)[4][2], float* out) __attribute__((always_inline)) {
    for (int h = 0; h < 2; ++h) {
      const float64x2_t t = vaddq_f64(vaddq_f64(s[0][h], s[1][h]), vaddq_f64(s[2][h], s[3][h]));
      vst1_f32(out + 2 * h, vcvt_f32_f64(vdivq_f64(t, kd)));
    }
  };
  if (SX && s1) finish(sx, s1);
  if (DUAL && s2) finish(sr, s2);
}

template <bool DUAL, bool SX>
void pack_any(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
              const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2, float* s1) {
  pack_positions<4, DUAL>([](auto... a) { pack_row<DUAL, SX>(a...); },
                            [](auto... a) { pack_block4<DUAL, SX>(a...); }, x, outer, K, inner, t0,
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
// bgemm: 8 rows x C columns register tile
// ---------------------------------------------------------------------------------------------
// Fold 8 rows' CNT vectors into one register (2 bytes per row, row r in bytes 2r, 2r+1).
FBCK_INLINE uint8x16_t fold8(uint8x16_t t0, uint8x16_t t1, uint8x16_t t2, uint8x16_t t3,
                             uint8x16_t t4, uint8x16_t t5, uint8x16_t t6, uint8x16_t t7) {
  const uint8x16_t s01 = vpaddq_u8(t0, t1), s23 = vpaddq_u8(t2, t3);
  const uint8x16_t s45 = vpaddq_u8(t4, t5), s67 = vpaddq_u8(t6, t7);
  return vpaddq_u8(vpaddq_u8(s01, s23), vpaddq_u8(s45, s67));
}

// Popcounts of 8 weight rows against C activation rows over `steps` 128-bit steps.
// wp: the 8-row panel, interleaved: step j of row r at wp[16 * (8 * j + r)] (bytes).
// pc[c][0]: rows 0..3, pc[c][1]: rows 4..7 (u32).
template <int C>
FBCK_INLINE void tile8(const uint8_t* wp, const uint8_t* const* a, size_t steps,
                       uint32x4_t (&pc)[C][2]) {
  for (int c = 0; c < C; ++c) pc[c][0] = pc[c][1] = vdupq_n_u32(0);
  for (size_t j0 = 0; j0 < steps; j0 += kU16Steps) {
    const size_t j1 = steps - j0 < kU16Steps ? steps : j0 + kU16Steps;
    uint16x8_t acc[C];
    for (int c = 0; c < C; ++c) acc[c] = vdupq_n_u16(0);
    const uint8_t* wj = wp + 128 * j0;
    for (size_t j = j0; j < j1; ++j, wj += 128) {
      const uint8x16x4_t wa = vld1q_u8_x4(wj);
      const uint8x16x4_t wb = vld1q_u8_x4(wj + 64);
      for (int c = 0; c < C; ++c) {
        const uint8x16_t av = vld1q_u8(a[c] + 16 * j);
        const uint8x16_t f = fold8(vcntq_u8(veorq_u8(wa.val[0], av)), vcntq_u8(veorq_u8(wa.val[1], av)),
                                   vcntq_u8(veorq_u8(wa.val[2], av)), vcntq_u8(veorq_u8(wa.val[3], av)),
                                   vcntq_u8(veorq_u8(wb.val[0], av)), vcntq_u8(veorq_u8(wb.val[1], av)),
                                   vcntq_u8(veorq_u8(wb.val[2], av)), vcntq_u8(veorq_u8(wb.val[3], av)));
        acc[c] = vpadalq_u8(acc[c], f);
      }
    }
    for (int c = 0; c < C; ++c) {
      pc[c][0] = vaddw_u16(pc[c][0], vget_low_u16(acc[c]));
      pc[c][1] = vaddw_high_u16(pc[c][1], acc[c]);
    }
  }
}

// The 8 x 4 tile, hand-scheduled (inline asm), for rows of at most kU16Steps steps, run over
// `tiles` tiles in one call. Inner loop per pair of 128-bit steps: 4 LD1 {4 regs} (weights),
// 4 LDP (2 steps of each activation column), 64 x (EOR, CNT) + 56 ADDP + 8 UADALP, SUBS + B.NE:
// 202 instructions per 64 XOR-popcounts (3.16 per 128 bits, 3.0 of them vector ALU). Per tile
// then USHLL/USHLL2 #1 (widen and double), SUB from K, ST1: dots = K - 2 * popcount as int32.
// With a single step (K <= 128) the 8 weight registers stay loaded across all tiles and a tile is
// 4 LD1 + 96 vector ALU + 20 output + 2 loop instructions (3.81 per XOR-popcount).
// Registers: weights v0-v7, activations v16-v23, u16 accumulators v8-v11, temporaries v24-v31.
// Tile t reads column c at col_c + t * adv (bytes) and writes its 8 dots at
// out + (4 * t + c) * ldo (bytes).
#define FBCK_BMLA_TREE(A)                                                                     \
  "eor v24.16b, v0.16b, " A ".16b\n eor v25.16b, v1.16b, " A ".16b\n"                        \
  "eor v26.16b, v2.16b, " A ".16b\n eor v27.16b, v3.16b, " A ".16b\n"                        \
  "eor v28.16b, v4.16b, " A ".16b\n eor v29.16b, v5.16b, " A ".16b\n"                        \
  "eor v30.16b, v6.16b, " A ".16b\n eor v31.16b, v7.16b, " A ".16b\n"                        \
  "cnt v24.16b, v24.16b\n cnt v25.16b, v25.16b\n cnt v26.16b, v26.16b\n cnt v27.16b, v27.16b\n" \
  "cnt v28.16b, v28.16b\n cnt v29.16b, v29.16b\n cnt v30.16b, v30.16b\n cnt v31.16b, v31.16b\n" \
  "addp v24.16b, v24.16b, v25.16b\n addp v26.16b, v26.16b, v27.16b\n"                         \
  "addp v28.16b, v28.16b, v29.16b\n addp v30.16b, v30.16b, v31.16b\n"                         \
  "addp v24.16b, v24.16b, v26.16b\n addp v28.16b, v28.16b, v30.16b\n"                         \
  "addp v24.16b, v24.16b, v28.16b\n"
#define FBCK_BMLA_COL(A, ACC) FBCK_BMLA_TREE(A) "uadalp " ACC ".8h, v24.16b\n"
#define FBCK_BMLA_COL_FIRST(A, ACC) FBCK_BMLA_TREE(A) "uaddlp " ACC ".8h, v24.16b\n"
#define FBCK_BMLA_OUT(ACC)                                                 \
  "ushll v16.4s, " ACC ".4h, #1\n ushll2 v17.4s, " ACC ".8h, #1\n"          \
  "sub v16.4s, v12.4s, v16.4s\n sub v17.4s, v12.4s, v17.4s\n"               \
  "st1 {v16.4s, v17.4s}, [%[out]], %[ldo]\n"
#define FBCK_BMLA_CLOBBERS                                                                    \
  "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11",   \
      "v12", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", \
      "v28", "v29", "v30", "v31"

void bmla_8x4_tiles(const uint8_t* wp, const uint8_t* c0, const uint8_t* c1, const uint8_t* c2,
                    const uint8_t* c3, size_t adv, size_t steps, size_t tiles, int32_t K,
                    int32_t* out, size_t ldo) {
  if (tiles == 0) return;
  if (steps == 1) {
    __asm__ volatile(
        "ld1 {v0.16b-v3.16b}, [%[wp]], #64\n"
        "ld1 {v4.16b-v7.16b}, [%[wp]]\n"
        "dup v12.4s, %w[k]\n"
        "0:\n"
        "ld1 {v16.16b}, [%[c0]], %[adv]\n ld1 {v18.16b}, [%[c1]], %[adv]\n"
        "ld1 {v20.16b}, [%[c2]], %[adv]\n ld1 {v22.16b}, [%[c3]], %[adv]\n"
        FBCK_BMLA_COL_FIRST("v16", "v8") FBCK_BMLA_COL_FIRST("v18", "v9")
        FBCK_BMLA_COL_FIRST("v20", "v10") FBCK_BMLA_COL_FIRST("v22", "v11")
        FBCK_BMLA_OUT("v8") FBCK_BMLA_OUT("v9") FBCK_BMLA_OUT("v10") FBCK_BMLA_OUT("v11")
        "subs %[tiles], %[tiles], #1\n"
        "b.ne 0b\n"
        : [wp] "+r"(wp), [c0] "+r"(c0), [c1] "+r"(c1), [c2] "+r"(c2), [c3] "+r"(c3),
          [tiles] "+r"(tiles), [out] "+r"(out)
        : [adv] "r"(adv), [k] "r"(K), [ldo] "r"(ldo)
        : FBCK_BMLA_CLOBBERS);
    return;
  }
  __asm__ volatile(
      "dup v12.4s, %w[k]\n"
      "0:\n"
      "mov x9, %[wp]\n mov x10, %[c0]\n mov x11, %[c1]\n mov x12, %[c2]\n mov x13, %[c3]\n"
      "movi v8.16b, #0\n movi v9.16b, #0\n movi v10.16b, #0\n movi v11.16b, #0\n"
      "lsr x14, %[steps], #1\n"
      "cbz x14, 2f\n"
      "1:\n"
      "ld1 {v0.16b-v3.16b}, [x9], #64\n"
      "ld1 {v4.16b-v7.16b}, [x9], #64\n"
      "ldp q16, q17, [x10], #32\n"
      "ldp q18, q19, [x11], #32\n"
      "ldp q20, q21, [x12], #32\n"
      "ldp q22, q23, [x13], #32\n"
      FBCK_BMLA_COL("v16", "v8") FBCK_BMLA_COL("v18", "v9")
      FBCK_BMLA_COL("v20", "v10") FBCK_BMLA_COL("v22", "v11")
      "ld1 {v0.16b-v3.16b}, [x9], #64\n"
      "ld1 {v4.16b-v7.16b}, [x9], #64\n"
      FBCK_BMLA_COL("v17", "v8") FBCK_BMLA_COL("v19", "v9")
      FBCK_BMLA_COL("v21", "v10") FBCK_BMLA_COL("v23", "v11")
      "subs x14, x14, #1\n"
      "b.ne 1b\n"
      "2:\n"
      "tbz %[steps], #0, 3f\n"
      "ld1 {v0.16b-v3.16b}, [x9], #64\n"
      "ld1 {v4.16b-v7.16b}, [x9]\n"
      "ldr q16, [x10]\n ldr q18, [x11]\n ldr q20, [x12]\n ldr q22, [x13]\n"
      FBCK_BMLA_COL("v16", "v8") FBCK_BMLA_COL("v18", "v9")
      FBCK_BMLA_COL("v20", "v10") FBCK_BMLA_COL("v22", "v11")
      "3:\n"
      FBCK_BMLA_OUT("v8") FBCK_BMLA_OUT("v9") FBCK_BMLA_OUT("v10") FBCK_BMLA_OUT("v11")
      "add %[c0], %[c0], %[adv]\n add %[c1], %[c1], %[adv]\n"
      "add %[c2], %[c2], %[adv]\n add %[c3], %[c3], %[adv]\n"
      "subs %[tiles], %[tiles], #1\n"
      "b.ne 0b\n"
      : [c0] "+r"(c0), [c1] "+r"(c1), [c2] "+r"(c2), [c3] "+r"(c3), [tiles] "+r"(tiles),
        [out] "+r"(out)
      : [wp] "r"(wp), [adv] "r"(adv), [steps] "r"(steps), [k] "r"(K), [ldo] "r"(ldo)
      : "x9", "x10", "x11", "x12", "x13", "x14", FBCK_BMLA_CLOBBERS);
}
#undef FBCK_BMLA_TREE
#undef FBCK_BMLA_COL
#undef FBCK_BMLA_COL_FIRST
#undef FBCK_BMLA_OUT
#undef FBCK_BMLA_CLOBBERS

// dots[c * 8 + r] = K - 2 * popcount(w[r] XOR a[c]) for an 8-row panel and C columns
// (intrinsics; any number of steps).
template <int C>
FBCK_INLINE void dots8(const uint8_t* wp, const uint8_t* const* a, size_t steps, int32_t K,
                       int32_t* dots) {
  uint32x4_t pc[C][2];
  tile8<C>(wp, a, steps, pc);
  const int32x4_t kv = vdupq_n_s32(K);
  for (int c = 0; c < C; ++c) {
    vst1q_s32(dots + 8 * c, vsubq_s32(kv, vreinterpretq_s32_u32(vshlq_n_u32(pc[c][0], 1))));
    vst1q_s32(dots + 8 * c + 4, vsubq_s32(kv, vreinterpretq_s32_u32(vshlq_n_u32(pc[c][1], 1))));
  }
}

// The 8-row panel of rows n0..n0+7 (clamped to N - 1) in tile8's layout (step j of row r at
// 16 * (8 * j + r) bytes). With one step per row and 8 real rows that is the weights themselves.
const uint8_t* panel8(const uint64_t* w, size_t N, size_t n0, size_t W, uint64_t* scratch) {
  if (W == 2 && n0 + 8 <= N) return reinterpret_cast<const uint8_t*>(w + n0 * W);
  const size_t steps = W / 2;
  for (size_t r = 0; r < 8; ++r) {
    const uint64_t* row = w + (n0 + r < N ? n0 + r : N - 1) * W;
    uint64_t* dst = scratch + 2 * r;
    size_t j = 0;
    for (; j + 2 <= steps; j += 2) {  // LDP + 2 STR per two steps
      const uint64x2x2_t v = vld1q_u64_x2(row + 2 * j);
      vst1q_u64(dst + 16 * j, v.val[0]);
      vst1q_u64(dst + 16 * (j + 1), v.val[1]);
    }
    if (j < steps) vst1q_u64(dst + 16 * j, vld1q_u64(row + 2 * j));
  }
  return reinterpret_cast<const uint8_t*>(scratch);
}

// Scratch for one interleaved 8-row panel: on the stack up to K = 4096 bits, else on the heap.
struct PanelBuf {
  alignas(64) uint64_t local[8 * 64];
  uint64_t* heap = nullptr;
  explicit PanelBuf(size_t W) {
    if (8 * W > 8 * 64) {
      heap = static_cast<uint64_t*>(std::aligned_alloc(64, 8 * W * sizeof(uint64_t)));
      if (!heap) std::abort();
    }
  }
  ~PanelBuf() { std::free(heap); }
  PanelBuf(const PanelBuf&) = delete;
  PanelBuf& operator=(const PanelBuf&) = delete;
  uint64_t* get() { return heap ? heap : local; }
};

// Dots of one 8-row panel against all P positions. One plane: position p's 8 dots at
// dst + p * ldp. Two planes (a2): plane q of position p at dst + (2 * p + q) * 8.
void panel_dots(const uint8_t* pb, const uint64_t* a1, const uint64_t* a2, size_t P, size_t W,
                int32_t K, int32_t* dst, size_t ldp) {
  const size_t steps = W / 2, rb = W * sizeof(uint64_t);
  const auto* b1 = reinterpret_cast<const uint8_t*>(a1);
  const auto* b2 = reinterpret_cast<const uint8_t*>(a2);
  alignas(16) int32_t d[4 * 8];
  if (a2) {
    const size_t tiles = P / 2;
    if (steps <= kU16Steps) {
      bmla_8x4_tiles(pb, b1, b2, b1 + rb, b2 + rb, 2 * rb, steps, tiles, K, dst, 8 * sizeof(int32_t));
    } else {
      for (size_t t = 0; t < tiles; ++t) {
        const uint8_t* ac[4] = {b1 + 2 * t * rb, b2 + 2 * t * rb, b1 + (2 * t + 1) * rb,
                                b2 + (2 * t + 1) * rb};
        dots8<4>(pb, ac, steps, K, dst + 32 * t);
      }
    }
    if (P % 2) {
      const uint8_t* ac[2] = {b1 + (P - 1) * rb, b2 + (P - 1) * rb};
      dots8<2>(pb, ac, steps, K, dst + 16 * (P - 1));
    }
    return;
  }
  const size_t tiles = P / 4;
  if (steps <= kU16Steps) {
    bmla_8x4_tiles(pb, b1, b1 + rb, b1 + 2 * rb, b1 + 3 * rb, 4 * rb, steps, tiles, K, dst,
                   ldp * sizeof(int32_t));
  } else {
    for (size_t t = 0; t < tiles; ++t) {
      const uint8_t* ac[4] = {b1 + 4 * t * rb, b1 + (4 * t + 1) * rb, b1 + (4 * t + 2) * rb,
                              b1 + (4 * t + 3) * rb};
      dots8<4>(pb, ac, steps, K, d);
      for (size_t c = 0; c < 4; ++c) std::memcpy(dst + (4 * t + c) * ldp, d + 8 * c, 32);
    }
  }
  const size_t p0 = tiles * 4, rest = P - p0;
  const uint8_t* ac[3] = {b1 + p0 * rb, b1 + (p0 + (rest > 1)) * rb,
                          b1 + (p0 + (rest > 2 ? 2 : 0)) * rb};
  if (rest == 3) dots8<3>(pb, ac, steps, K, d);
  if (rest == 2) dots8<2>(pb, ac, steps, K, d);
  if (rest == 1) dots8<1>(pb, ac, steps, K, d);
  for (size_t c = 0; c < rest; ++c) std::memcpy(dst + (p0 + c) * ldp, d + 8 * c, 32);
}

void bgemm(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K, int32_t* out) {
  const size_t W = row_words(K);
  PanelBuf panel(W);
  Scratch<int32_t> tmp((N % 8) ? 8 * P : 1);
  for (size_t n0 = 0; n0 < N; n0 += 8) {
    const uint8_t* pb = panel8(w, N, n0, W, panel.get());
    if (n0 + 8 <= N) {
      panel_dots(pb, a, nullptr, P, W, static_cast<int32_t>(K), out + n0, N);
    } else {
      panel_dots(pb, a, nullptr, P, W, static_cast<int32_t>(K), tmp.get(), 8);
      for (size_t p = 0; p < P; ++p)
        for (size_t q = 0; q < N - n0; ++q) out[p * N + n0 + q] = tmp[8 * p + q];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// binary_linear / binary_conv2d on interleaved weights (binary_tile.h): 16 rows = four q registers
// of 32-bit chunks. Per chunk and column: LD1R of the activation chunk, 4 EOR + 4 CNT + 4 UADALP
// (byte counts pairwise into u16 lanes, two per row), shared LD1 {4 regs} of the weights; the u16
// lanes are widened into u32 every 4095 chunks (16 per chunk at most) and at the end (UADDLP):
// 16 dot products in lanes, no horizontal sum.
// ---------------------------------------------------------------------------------------------
struct NeonDots {
  template <int NC>
  static FBCK_INLINE void dots16(const uint32_t* wt, size_t C, const uint32_t* const* cols,
                                 int32_t K, int32_t* out) {
    uint32x4_t acc[NC][4];
    for (int c = 0; c < NC; ++c)
      for (int r = 0; r < 4; ++r) acc[c][r] = vdupq_n_u32(0);
    size_t j = 0;
    while (j < C) {
      const size_t end = C - j > 4095 ? j + 4095 : C;
      uint16x8_t h[NC][4];
      for (int c = 0; c < NC; ++c)
        for (int r = 0; r < 4; ++r) h[c][r] = vdupq_n_u16(0);
      for (; j < end; ++j) {
        const uint8x16x4_t w = vld1q_u8_x4(reinterpret_cast<const uint8_t*>(wt + j * 16));
        for (int c = 0; c < NC; ++c) {
          const uint8x16_t a = vreinterpretq_u8_u32(vld1q_dup_u32(cols[c] + j));
          h[c][0] = vpadalq_u8(h[c][0], vcntq_u8(veorq_u8(w.val[0], a)));
          h[c][1] = vpadalq_u8(h[c][1], vcntq_u8(veorq_u8(w.val[1], a)));
          h[c][2] = vpadalq_u8(h[c][2], vcntq_u8(veorq_u8(w.val[2], a)));
          h[c][3] = vpadalq_u8(h[c][3], vcntq_u8(veorq_u8(w.val[3], a)));
        }
      }
      for (int c = 0; c < NC; ++c)
        for (int r = 0; r < 4; ++r) acc[c][r] = vpadalq_u16(acc[c][r], h[c][r]);
    }
    const int32x4_t kv = vdupq_n_s32(K);
    for (int c = 0; c < NC; ++c)
      for (int r = 0; r < 4; ++r)
        vst1q_s32(out + 16 * c + 4 * r, vsubq_s32(kv, vshlq_n_s32(vreinterpretq_s32_u32(acc[c][r]), 1)));
  }

  // Column orientation: 16 rows x 4 columns (positions), transposed in registers so that
  // out[r * 4 + c] holds row r of column c (lanes = positions, as the column epilogue reads them).
  static constexpr bool kColT = true;
  // The chunk loop is inline asm: 16 u16 accumulators (v16-v31), the four weight registers and
  // one activation register reused per column (the compiler spilled accumulators). Per chunk:
  // LD1 {4 regs} + 4 x (LD1R + 4 EOR + 4 CNT + 4 UADALP) + SUBS + B.NE = 55 instructions for 16
  // XOR-popcounts of 128 bits.
  static FBCK_INLINE void dots16x4T(const uint32_t* wt, size_t C, const uint32_t* const* cols,
                                    int32_t K, int32_t* out) {
    uint32x4_t acc[4][4];
    for (int c = 0; c < 4; ++c)
      for (int r = 0; r < 4; ++r) acc[c][r] = vdupq_n_u32(0);
    const uint32_t *c0 = cols[0], *c1 = cols[1], *c2 = cols[2], *c3 = cols[3];
    size_t j = 0;
    alignas(16) uint16_t h[16 * 8];
    while (j < C) {
      size_t n = C - j > 4095 ? 4095 : C - j;
      j += n;
      uint16_t* hp = h;
#define FBCK_X4(A, B, CC, D)                                                              \
  "eor v5.16b, v0.16b, v4.16b\n cnt v5.16b, v5.16b\n uadalp " A ".8h, v5.16b\n"           \
  "eor v6.16b, v1.16b, v4.16b\n cnt v6.16b, v6.16b\n uadalp " B ".8h, v6.16b\n"           \
  "eor v5.16b, v2.16b, v4.16b\n cnt v5.16b, v5.16b\n uadalp " CC ".8h, v5.16b\n"          \
  "eor v6.16b, v3.16b, v4.16b\n cnt v6.16b, v6.16b\n uadalp " D ".8h, v6.16b\n"
      __asm__ volatile(
          "movi v16.16b, #0\n movi v17.16b, #0\n movi v18.16b, #0\n movi v19.16b, #0\n"
          "movi v20.16b, #0\n movi v21.16b, #0\n movi v22.16b, #0\n movi v23.16b, #0\n"
          "movi v24.16b, #0\n movi v25.16b, #0\n movi v26.16b, #0\n movi v27.16b, #0\n"
          "movi v28.16b, #0\n movi v29.16b, #0\n movi v30.16b, #0\n movi v31.16b, #0\n"
          "1:\n"
          "ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [%[w]], #64\n"
          "ld1r {v4.4s}, [%[c0]], #4\n" FBCK_X4("v16", "v17", "v18", "v19")
          "ld1r {v4.4s}, [%[c1]], #4\n" FBCK_X4("v20", "v21", "v22", "v23")
          "ld1r {v4.4s}, [%[c2]], #4\n" FBCK_X4("v24", "v25", "v26", "v27")
          "ld1r {v4.4s}, [%[c3]], #4\n" FBCK_X4("v28", "v29", "v30", "v31")
          "subs %[n], %[n], #1\n b.ne 1b\n"
          "st1 {v16.8h, v17.8h, v18.8h, v19.8h}, [%[h]], #64\n"
          "st1 {v20.8h, v21.8h, v22.8h, v23.8h}, [%[h]], #64\n"
          "st1 {v24.8h, v25.8h, v26.8h, v27.8h}, [%[h]], #64\n"
          "st1 {v28.8h, v29.8h, v30.8h, v31.8h}, [%[h]], #64\n"
          : [w] "+r"(wt), [c0] "+r"(c0), [c1] "+r"(c1), [c2] "+r"(c2), [c3] "+r"(c3), [n] "+r"(n),
            [h] "+r"(hp)
          :
          : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v16", "v17", "v18", "v19",
            "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
#undef FBCK_X4
      for (int c = 0; c < 4; ++c)
        for (int r = 0; r < 4; ++r) acc[c][r] = vpadalq_u16(acc[c][r], vld1q_u16(h + (4 * c + r) * 8));
    }
    const int32x4_t kv = vdupq_n_s32(K);
    for (int r = 0; r < 4; ++r) {  // 4 x 4 transpose of (column, row) per row quad
      const uint32x4_t t0 = vtrn1q_u32(acc[0][r], acc[1][r]), t1 = vtrn2q_u32(acc[0][r], acc[1][r]);
      const uint32x4_t t2 = vtrn1q_u32(acc[2][r], acc[3][r]), t3 = vtrn2q_u32(acc[2][r], acc[3][r]);
      const uint32x4_t q[4] = {
          vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))),
          vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3))),
          vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))),
          vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3)))};
      for (int i = 0; i < 4; ++i)
        vst1q_s32(out + (4 * r + i) * 4, vsubq_s32(kv, vshlq_n_s32(vreinterpretq_s32_u32(q[i]), 1)));
    }
  }
};

void binary_linear(const BinaryLinearArgs& g) {
  if (g.w16) return binary_linear_w16<VNeon, NeonDots>(g);
  Scratch<uint32_t> w16(((g.N + 15) / 16) * ((g.K + 31) / 32) * 16);
  interleave_rows16_into(g.w, g.N, g.K, w16.get());
  BinaryLinearArgs h = g;
  h.w16 = w16.get();
  binary_linear_w16<VNeon, NeonDots>(h);
}

void binary_conv2d(const BinaryConv2dArgs& a) {
  const size_t O = a.plan->g.O, K = a.plan->K;
  Scratch<uint32_t> own(a.w16 ? 1 : ((O + 15) / 16) * ((K + 31) / 32) * 16);
  if (!a.w16) interleave_rows16_into(a.w, O, K, own.get());
  binary_conv2d_w16<VNeon, NeonDots>(a, a.w16 ? a.w16 : own.get());
}

void binary_memory(const BinaryMemoryArgs& m) { binary_memory_v<VNeon>(m); }
void memory_f32(const MemoryF32Args& m) { memory_f32_v<VNeon>(m); }
void post_ops(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post, float* y) {
  post_ops_buffer<VNeon>(x, outer, N, inner, post, y);
}

}  // namespace
}  // namespace neon

const Kernels& neon_kernels() {
  static const Kernels k = [] {
    Kernels t{};
    t.name = "neon";
    t.pack_threshold = neon::pack_threshold;
    t.pack_dual = neon::pack_dual;
    t.pack_weights = neon::pack_weights;
    t.bgemm = neon::bgemm;
    t.binary_linear = neon::binary_linear;
    t.binary_memory = neon::binary_memory;
    t.linear_f32 = neon::linear_f32;
    t.conv2d_f32 = neon::conv2d_f32;
    t.wants_w16 = true;
    t.post_ops = neon::post_ops;
    t.binary_conv2d = neon::binary_conv2d;
    t.memory_f32 = neon::memory_f32;
    t.pack_f32_weights = pack_f32_weights_neon;
    return t;
  }();
  return k;
}

}  // namespace fbck
