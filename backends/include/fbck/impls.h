// Internal: the per-implementation entry points behind the dispatch table (not for callers;
// use fbck::kernels() / fbck::get_kernels() from kernels.h).
#pragma once

#include "fbck/kernels.h"

namespace fbck {

namespace ref {
void pack_position(const float* x, ptrdiff_t stride, size_t K, const float* t0, const float* t1,
                   bool dual, uint64_t* row1, uint64_t* row2, float* s1, float* s2);
void pack_threshold(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
                    uint64_t* bits, float* s1);
void pack_dual(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
               const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2, float* s1);
void pack_weights(const float* w, size_t N, size_t K, uint64_t* bits);
void bgemm(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K, int32_t* out);
void binary_linear(const BinaryLinearArgs& g);
void binary_memory(const BinaryMemoryArgs& m);
void memory_activation(const BinaryMemoryArgs& m, size_t b, float* v);
void linear_f32(const LinearF32Args& g);
void conv2d_f32(const Conv2dF32Args& g);
void post_ops(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post, float* y);
void binary_conv2d(const BinaryConv2dArgs& a);
void memory_f32(const MemoryF32Args& a);
std::vector<float> pack_f32_weights(const float* w, size_t rows, size_t K);
}  // namespace ref

// Portable helpers (compiled for the baseline ISA, callable from every table; SIMD translation
// units must not instantiate std containers, whose inline copies could win at link time).
// out[(tile * C + j) * 16 + r] as interleave_rows16 (out: ceil(N / 16) * C * 16 uint32).
void interleave_rows16_into(const uint64_t* w, size_t N, size_t K, uint32_t* out);
// The FP32 GEMM weight panels of sgemm.h for a micro-kernel of MR rows and KC-step cache blocks:
// panels_floats(rows, K, MR) floats (16 of zero slack at the end).
void pack_f32_panels(const float* w, size_t rows, size_t K, size_t MR, size_t KC, float* dst);
std::vector<float> pack_f32_panels(const float* w, size_t rows, size_t K, size_t MR, size_t KC);

// The micro-kernel shapes the packed panels depend on (sgemm.h's UK::MR and UK::KC), and each
// SIMD table's Kernels::pack_f32_weights (portable code, so no std::vector is built under SIMD flags).
constexpr size_t kAvx2MR = 6, kAvx2KC = 256;
constexpr size_t kNeonMR = 12, kNeonKC = 256;
std::vector<float> pack_f32_weights_avx2(const float* w, size_t rows, size_t K);
std::vector<float> pack_f32_weights_neon(const float* w, size_t rows, size_t K);

#if defined(__x86_64__) || defined(_M_X64)
#define FBCK_HAVE_X86 1
const Kernels& avx2_kernels();    // backends/x86 (call only when the CPU supports AVX2+POPCNT+FMA)
#if defined(FBCK_WITH_AVX512)
const Kernels& avx512_kernels();  // backends/x86 (AVX512F/BW/VL/VPOPCNTDQ)
#endif
#endif

#if defined(__aarch64__)
#define FBCK_HAVE_NEON 1
const Kernels& neon_kernels();  // backends/arm
#endif

}  // namespace fbck
