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
}  // namespace ref

#if defined(__x86_64__) || defined(_M_X64)
#define FBCK_HAVE_X86 1
const Kernels& avx2_kernels();    // backends/x86 (call only when the CPU supports AVX2+POPCNT+FMA)
#if defined(FBCK_WITH_AVX512)
const Kernels& avx512_kernels();  // backends/x86 (AVX512F/BW/VPOPCNTDQ)
#endif
#endif

#if defined(__aarch64__)
#define FBCK_HAVE_NEON 1
const Kernels& neon_kernels();  // backends/arm
#endif

}  // namespace fbck
