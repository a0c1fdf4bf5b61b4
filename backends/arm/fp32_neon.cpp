// FP32 linear / conv2d for AArch64 NEON: the shared BLIS-style driver (fbck/sgemm.h) with a
// 12 x 8 register-tiled FMLA micro-kernel.
//
// Each accumulator lane is one output's FMLA chain over k (kernels.h's float order, shared with ref
// and AVX2, so the tables agree bit for bit).
// Per k step: one LD1 {3 x .4s} of packed A (12 rows), one LD1 {2 x .4s} of packed B (8 columns)
// and 24 FMLA (by element) into 24 .4s accumulators = 96 MAC per 26 instructions; 24 + 3 + 2 = 29
// of the 32 vector registers. Written as inline asm (the compiler spilled accumulators) and
// unrolled by 4 k steps, so the loop control adds 2 instructions per 104: 3.62 MAC/instruction.
#include <arm_neon.h>

#include "fbck/impls.h"
#include "fbck/sgemm.h"

namespace fbck {
namespace neon {
namespace {

struct UkNeon {
  using V = VNeon;
  static constexpr size_t MR = kNeonMR, NR = 8, KC = kNeonKC, MC = 96, NC = 512, GEMV_MAX_ROWS = 8;

  // C[12 x 8] = (load ? C : 0) then + A^T B, one FMLA chain per output over the kc packed steps.
  // Accumulators v8-v31 (row r: v(8+2r), v(9+2r)),
  // A in v0-v2, B in v3-v4. Main loop: 4 k steps = 4 x (LD1 {3}, LD1 {2}, 24 FMLA) + SUBS + B.NE
  // = 106 instructions for 384 MAC (3.62 MAC/instruction; 4 per FMLA).
  static void run(size_t kc, const float* A, const float* B, float* C, size_t ldc, bool load) {
    alignas(16) float t[MR * NR];
    float* tp = t;
    const float* tl = t;
    size_t n4 = kc / 4, n1 = kc % 4, ld = load ? 1 : 0;
    if (load)
      for (size_t r = 0; r < MR; ++r) {
        vst1q_f32(t + r * NR, vld1q_f32(C + r * ldc));
        vst1q_f32(t + r * NR + 4, vld1q_f32(C + r * ldc + 4));
      }
#define FBCK_FMLA_STEP                                                                      \
  "ld1 {v0.4s, v1.4s, v2.4s}, [%[a]], #48\n ld1 {v3.4s, v4.4s}, [%[b]], #32\n"             \
  "fmla v8.4s, v3.4s, v0.s[0]\n fmla v9.4s, v4.4s, v0.s[0]\n"                               \
  "fmla v10.4s, v3.4s, v0.s[1]\n fmla v11.4s, v4.4s, v0.s[1]\n"                             \
  "fmla v12.4s, v3.4s, v0.s[2]\n fmla v13.4s, v4.4s, v0.s[2]\n"                             \
  "fmla v14.4s, v3.4s, v0.s[3]\n fmla v15.4s, v4.4s, v0.s[3]\n"                             \
  "fmla v16.4s, v3.4s, v1.s[0]\n fmla v17.4s, v4.4s, v1.s[0]\n"                             \
  "fmla v18.4s, v3.4s, v1.s[1]\n fmla v19.4s, v4.4s, v1.s[1]\n"                             \
  "fmla v20.4s, v3.4s, v1.s[2]\n fmla v21.4s, v4.4s, v1.s[2]\n"                             \
  "fmla v22.4s, v3.4s, v1.s[3]\n fmla v23.4s, v4.4s, v1.s[3]\n"                             \
  "fmla v24.4s, v3.4s, v2.s[0]\n fmla v25.4s, v4.4s, v2.s[0]\n"                             \
  "fmla v26.4s, v3.4s, v2.s[1]\n fmla v27.4s, v4.4s, v2.s[1]\n"                             \
  "fmla v28.4s, v3.4s, v2.s[2]\n fmla v29.4s, v4.4s, v2.s[2]\n"                             \
  "fmla v30.4s, v3.4s, v2.s[3]\n fmla v31.4s, v4.4s, v2.s[3]\n"
    __asm__ volatile(
        "cbz %[ld], 5f\n"
        "ld1 {v8.4s-v11.4s}, [%[tl]], #64\n ld1 {v12.4s-v15.4s}, [%[tl]], #64\n"
        "ld1 {v16.4s-v19.4s}, [%[tl]], #64\n ld1 {v20.4s-v23.4s}, [%[tl]], #64\n"
        "ld1 {v24.4s-v27.4s}, [%[tl]], #64\n ld1 {v28.4s-v31.4s}, [%[tl]], #64\n"
        "b 6f\n"
        "5:\n"
        "movi v8.16b, #0\n movi v9.16b, #0\n movi v10.16b, #0\n movi v11.16b, #0\n"
        "movi v12.16b, #0\n movi v13.16b, #0\n movi v14.16b, #0\n movi v15.16b, #0\n"
        "movi v16.16b, #0\n movi v17.16b, #0\n movi v18.16b, #0\n movi v19.16b, #0\n"
        "movi v20.16b, #0\n movi v21.16b, #0\n movi v22.16b, #0\n movi v23.16b, #0\n"
        "movi v24.16b, #0\n movi v25.16b, #0\n movi v26.16b, #0\n movi v27.16b, #0\n"
        "movi v28.16b, #0\n movi v29.16b, #0\n movi v30.16b, #0\n movi v31.16b, #0\n"
        "6:\n"
        "cbz %[n4], 2f\n"
        "1:\n" FBCK_FMLA_STEP FBCK_FMLA_STEP FBCK_FMLA_STEP FBCK_FMLA_STEP
        "subs %[n4], %[n4], #1\n b.ne 1b\n"
        "2:\n cbz %[n1], 4f\n"
        "3:\n" FBCK_FMLA_STEP "subs %[n1], %[n1], #1\n b.ne 3b\n"
        "4:\n"
        "st1 {v8.4s-v11.4s}, [%[t]], #64\n st1 {v12.4s-v15.4s}, [%[t]], #64\n"
        "st1 {v16.4s-v19.4s}, [%[t]], #64\n st1 {v20.4s-v23.4s}, [%[t]], #64\n"
        "st1 {v24.4s-v27.4s}, [%[t]], #64\n st1 {v28.4s-v31.4s}, [%[t]], #64\n"
        : [a] "+r"(A), [b] "+r"(B), [n4] "+r"(n4), [n1] "+r"(n1), [t] "+r"(tp), [tl] "+r"(tl)
        : [ld] "r"(ld)
        : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v8", "v9", "v10", "v11", "v12", "v13",
          "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25",
          "v26", "v27", "v28", "v29", "v30", "v31");
#undef FBCK_FMLA_STEP
    for (size_t r = 0; r < MR; ++r) {
      vst1q_f32(C + r * ldc, vld1q_f32(t + r * NR));
      vst1q_f32(C + r * ldc + 4, vld1q_f32(t + r * NR + 4));
    }
  }

  static inline void transpose4x4(const float* s0, const float* s1, const float* s2,
                                  const float* s3, float* d, size_t ldd) {
    const float32x4_t a = vld1q_f32(s0), b = vld1q_f32(s1), c = vld1q_f32(s2), e = vld1q_f32(s3);
    const float32x4_t ab0 = vtrn1q_f32(a, b), ab1 = vtrn2q_f32(a, b);
    const float32x4_t ce0 = vtrn1q_f32(c, e), ce1 = vtrn2q_f32(c, e);
    const float64x2_t x0 = vreinterpretq_f64_f32(ab0), x1 = vreinterpretq_f64_f32(ab1);
    const float64x2_t y0 = vreinterpretq_f64_f32(ce0), y1 = vreinterpretq_f64_f32(ce1);
    vst1q_f32(d, vreinterpretq_f32_f64(vtrn1q_f64(x0, y0)));
    vst1q_f32(d + ldd, vreinterpretq_f32_f64(vtrn1q_f64(x1, y1)));
    vst1q_f32(d + 2 * ldd, vreinterpretq_f32_f64(vtrn2q_f64(x0, y0)));
    vst1q_f32(d + 3 * ldd, vreinterpretq_f32_f64(vtrn2q_f64(x1, y1)));
  }

};

}  // namespace

void linear_f32(const LinearF32Args& g) { sgemm::linear<UkNeon>(g); }
void conv2d_f32(const Conv2dF32Args& g) { sgemm::conv2d<UkNeon>(g); }

}  // namespace neon
}  // namespace fbck
