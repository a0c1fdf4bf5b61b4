// FP32 linear / conv2d for x86-64 AVX2 + FMA (compiled with -mavx2 -mfma; called only when cpuid
// reports them). Register-tiled 6 x 16 micro-kernel: 12 ymm accumulators, 2 ymm of B and one
// broadcast of A per k, i.e. 12 FMA (96 MAC) per 2 loads + 6 broadcasts. Each accumulator lane is
// one output's fma chain over k (kernels.h's float order, shared with ref and NEON).
#include <immintrin.h>

#include "fbck/impls.h"
#include "fbck/sgemm.h"

namespace fbck {
namespace avx2 {
namespace {

struct UkAvx2 {
  using V = VAvx2;
  static constexpr size_t MR = kAvx2MR, NR = 16, KC = kAvx2KC, MC = 72, NC = 512, GEMV_MAX_ROWS = 4;

  static void run(size_t kc, const float* A, const float* B, float* C, size_t ldc, bool load) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    if (load) {  // continue the chains of the previous k block
      c00 = _mm256_loadu_ps(C), c01 = _mm256_loadu_ps(C + 8);
      c10 = _mm256_loadu_ps(C + ldc), c11 = _mm256_loadu_ps(C + ldc + 8);
      c20 = _mm256_loadu_ps(C + 2 * ldc), c21 = _mm256_loadu_ps(C + 2 * ldc + 8);
      c30 = _mm256_loadu_ps(C + 3 * ldc), c31 = _mm256_loadu_ps(C + 3 * ldc + 8);
      c40 = _mm256_loadu_ps(C + 4 * ldc), c41 = _mm256_loadu_ps(C + 4 * ldc + 8);
      c50 = _mm256_loadu_ps(C + 5 * ldc), c51 = _mm256_loadu_ps(C + 5 * ldc + 8);
    }
    for (size_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
      __m256 a = _mm256_broadcast_ss(A + 0);
      c00 = _mm256_fmadd_ps(a, b0, c00);
      c01 = _mm256_fmadd_ps(a, b1, c01);
      a = _mm256_broadcast_ss(A + 1);
      c10 = _mm256_fmadd_ps(a, b0, c10);
      c11 = _mm256_fmadd_ps(a, b1, c11);
      a = _mm256_broadcast_ss(A + 2);
      c20 = _mm256_fmadd_ps(a, b0, c20);
      c21 = _mm256_fmadd_ps(a, b1, c21);
      a = _mm256_broadcast_ss(A + 3);
      c30 = _mm256_fmadd_ps(a, b0, c30);
      c31 = _mm256_fmadd_ps(a, b1, c31);
      a = _mm256_broadcast_ss(A + 4);
      c40 = _mm256_fmadd_ps(a, b0, c40);
      c41 = _mm256_fmadd_ps(a, b1, c41);
      a = _mm256_broadcast_ss(A + 5);
      c50 = _mm256_fmadd_ps(a, b0, c50);
      c51 = _mm256_fmadd_ps(a, b1, c51);
      A += MR;
      B += NR;
    }
    const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                               {c30, c31}, {c40, c41}, {c50, c51}};
    for (size_t r = 0; r < MR; ++r) {
      _mm256_storeu_ps(C + r * ldc, acc[r][0]);
      _mm256_storeu_ps(C + r * ldc + 8, acc[r][1]);
    }
  }

  static inline void transpose4x4(const float* s0, const float* s1, const float* s2,
                                  const float* s3, float* d, size_t ldd) {
    __m128 a = _mm_loadu_ps(s0), b = _mm_loadu_ps(s1), c = _mm_loadu_ps(s2), e = _mm_loadu_ps(s3);
    _MM_TRANSPOSE4_PS(a, b, c, e);
    _mm_storeu_ps(d, a);
    _mm_storeu_ps(d + ldd, b);
    _mm_storeu_ps(d + 2 * ldd, c);
    _mm_storeu_ps(d + 3 * ldd, e);
  }

};

}  // namespace

void linear_f32(const LinearF32Args& g) { sgemm::linear<UkAvx2>(g); }
void conv2d_f32(const Conv2dF32Args& g) { sgemm::conv2d<UkAvx2>(g); }

}  // namespace avx2
}  // namespace fbck
