// FP32 linear / conv2d for x86-64 AVX2 + FMA (compiled with -mavx2 -mfma; called only when cpuid
// reports them). Register-tiled 6 x 16 micro-kernel: 12 ymm accumulators, 2 ymm of B and one
// broadcast of A per k, i.e. 12 FMA (96 MAC) per 2 loads + 6 broadcasts.
#include <immintrin.h>

#include "fbck/impls.h"
#include "fbck/sgemm.h"

namespace fbck {
namespace avx2 {
namespace {

struct UkAvx2 {
  static constexpr size_t MR = 6, NR = 16, KC = 256, MC = 72, NC = 512, GEMV_MAX_ROWS = 4;

  static void run(size_t kc, const float* A, const float* B, float* C, size_t ldc, bool load) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
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
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                         {c30, c31}, {c40, c41}, {c50, c51}};
    for (size_t r = 0; r < MR; ++r) {
      float* cr = C + r * ldc;
      if (load) {
        acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
        acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, acc[r][0]);
      _mm256_storeu_ps(cr + 8, acc[r][1]);
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

  static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // Four dot products of length K (one activation row against four weight rows).
  static void dot4(size_t K, const float* w0, const float* w1, const float* w2, const float* w3,
                   const float* x, float* out) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    __m256 t0 = s0, t1 = s0, t2 = s0, t3 = s0;
    size_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xa, s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xa, s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xa, s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xa, s3);
      t0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), xb, t0);
      t1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), xb, t1);
      t2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), xb, t2);
      t3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), xb, t3);
    }
    for (; k + 8 <= K; k += 8) {
      const __m256 xa = _mm256_loadu_ps(x + k);
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xa, s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xa, s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xa, s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xa, s3);
    }
    float r[4] = {hsum(_mm256_add_ps(s0, t0)), hsum(_mm256_add_ps(s1, t1)),
                  hsum(_mm256_add_ps(s2, t2)), hsum(_mm256_add_ps(s3, t3))};
    for (; k < K; ++k) {
      r[0] += w0[k] * x[k];
      r[1] += w1[k] * x[k];
      r[2] += w2[k] * x[k];
      r[3] += w3[k] * x[k];
    }
    for (int q = 0; q < 4; ++q) out[q] = r[q];
  }
};

}  // namespace

void linear_f32(const LinearF32Args& g) { sgemm::linear<UkAvx2>(g); }
void conv2d_f32(const Conv2dF32Args& g) { sgemm::conv2d<UkAvx2>(g); }

}  // namespace avx2
}  // namespace fbck
