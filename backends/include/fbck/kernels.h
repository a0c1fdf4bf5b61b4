// FBCK: fast bitwise computation kernels (the native side of binarize).
//
// The contract (bit convention, activation layout, exact float order) is backends/README.md.
// This header is the C++ API: argument structs, the dispatch table `Kernels` (a struct of
// function pointers, one per kernel) and the functions that pick a table at run time.
//
// All kernels are pure functions of their arguments: no global mutable state, scratch memory is
// allocated per call, so any table may be used from many threads at once. Sizes are element
// counts. Unless said otherwise a pointer marked "or null" selects an optional feature.
//
// Bit layout: a packed row of K bits is row_words(K) uint64 words (bit k in word k / 64, bit
// position k % 64; bit 1 = -1, bit 0 = +1), padded with 0 bits to a multiple of 128 bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fbck {

// Words (uint64) per packed row of K bits: 2 * ceil(K / 128).
constexpr size_t row_words(size_t K) { return 2 * ((K + 127) / 128); }

// Output size of a convolution along one axis (0 when the kernel does not fit).
constexpr size_t conv_out_size(size_t in, size_t k, size_t stride, size_t pad, size_t dil) {
  return (in + 2 * pad < dil * (k - 1) + 1) ? 0 : (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

// ---------------------------------------------------------------------------------------------
// Packing. Activations x are contiguous (outer, K, inner) float32; position p = o * inner + i
// indexes the packed rows bits[p * row_words(K) + k / 64]. K >= 1.
//
// Per-position mean-abs scales s = (float)(sum_k |(double) v_k| / K) are summed in one fixed
// ("canonical") order so every implementation gives the same bits: four double partial sums
// acc[j] over k = j (mod 4) in increasing k, then total = (acc[0] + acc[1]) + (acc[2] + acc[3]).
// ---------------------------------------------------------------------------------------------

// bit = !((x - t0[k]) >= 0)  (t0 null: bit = !(x >= 0)). s1 (or null): s1[p] = mean_k |x|.
using PackThresholdFn = void (*)(const float* x, size_t outer, size_t K, size_t inner,
                                 const float* t0, uint64_t* bits, float* s1);

// DTA dual-scale planes: b1 = (x - t0[k] >= 0) ? +1 : -1, bits1 = (b1 == -1);
// r = (x - b1) - t1[k] (t1 null: r = x - b1), bits2 = !(r >= 0), s2[p] = mean_k |r|.
// s1 (or null): s1[p] = mean_k |x| as in PackThresholdFn.
using PackDualFn = void (*)(const float* x, size_t outer, size_t K, size_t inner, const float* t0,
                            const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2,
                            float* s1);

// Weights w [N, K] float32 -> bits [N, row_words(K)], bit = !(w >= 0).
using PackWeightsFn = void (*)(const float* w, size_t N, size_t K, uint64_t* bits);

// ---------------------------------------------------------------------------------------------
// Binary GEMM: out[p * N + n] = K - 2 * popcount(a[p] XOR w[n]) (exact), a [P, row_words(K)],
// w [N, row_words(K)], out int32 [P, N].
// ---------------------------------------------------------------------------------------------
using BgemmFn = void (*)(const uint64_t* a, size_t P, const uint64_t* w, size_t N, size_t K,
                         int32_t* out);

// Fused binary linear (GEMM + epilogue) in the README's float order, with exact dots d1, d2:
//   u = s1 ? d1 * s1[p] : d1;  z = a2 ? u + d2 * s2[p] : u;
//   y = (sw ? z * sw[n] : z) + (bias ? bias[n] : +0.0f);  slope: y = y > 0 ? y : y * slope[n]
// Outputs (either or both): y float (outer, N, inner); ybits [P, row_words(N)] with
// bit = !((y - thr[n]) >= 0) (bits n >= N are 0).
struct BinaryLinearArgs {
  const uint64_t* a1 = nullptr;  // [P, row_words(K)] plane-1 bits
  const float* s1 = nullptr;     // [P] or null
  const uint64_t* a2 = nullptr;  // [P, row_words(K)] plane-2 bits or null (one plane)
  const float* s2 = nullptr;     // [P], required with a2
  const uint64_t* w = nullptr;   // [N, row_words(K)]
  // Optional: the same weights as interleave_rows16(w, N, K). Tables with wants_w16 read these
  // instead of w when set; the others ignore them.
  const uint32_t* w16 = nullptr;
  size_t outer = 1, inner = 1;   // P = outer * inner
  size_t N = 0, K = 0;
  const float* sw = nullptr;     // [N] or null (1)
  const float* bias = nullptr;   // [N] or null (+0)
  const float* slope = nullptr;  // [N] PReLU slopes or null (no PReLU)
  float* y = nullptr;            // (outer, N, inner) or null
  const float* thr = nullptr;    // [N], required with ybits
  uint64_t* ybits = nullptr;     // [P, row_words(N)] or null
};
using BinaryLinearFn = void (*)(const BinaryLinearArgs&);

// ---------------------------------------------------------------------------------------------
// Binary memory block (BiFSMN): depthwise filter over time on binarized activations.
// x and y are (B, C, T) addressed through element strides (so (B, C, T) and (B, T, C) buffers
// both work); y uses the same strides as x and must not alias it. Per position (b, t), over c:
//   b1 = (x - t0[c] >= 0) ? +1 : -1;  s1 = none | mean_c |x| | s1_const
//   planes == 2: r = (x - b1) - t1[c], b2 = (r >= 0) ? +1 : -1, s2 = mean_c |r| (canonical order)
//   v = s1 ? b1 * s1 : b1;  planes == 2: v = v + b2 * s2;  t2: v = v - t2[c]
// then per (c, t): acc = +0.0f; for k in 0..left+right: acc = acc + ws[c, k] * v[c, t + (k - left)
// * dilation] (terms outside [0, T) are zero and skipped); y = (sw ? acc * sw[c] : acc) +
// (bias ? bias[c] : +0.0f); residual != 0: y = x * residual + y.
// ---------------------------------------------------------------------------------------------
enum class S1Mode : int { none = 0, mean_abs = 1, constant = 2 };

struct BinaryMemoryArgs {
  const float* x = nullptr;
  float* y = nullptr;
  size_t B = 0, C = 0, T = 0;
  ptrdiff_t stride_b = 0, stride_c = 0, stride_t = 0;  // in elements, for x and y
  const float* t0 = nullptr;                           // [C] or null
  int planes = 1;                                      // 1 or 2
  S1Mode s1_mode = S1Mode::none;
  float s1_const = 1.0f;
  const float* t1 = nullptr;                           // [C] or null (planes == 2)
  const float* t2 = nullptr;                           // [C] or null
  const int8_t* ws = nullptr;                          // [C, left + right + 1], values -1, 0, +1
  size_t left = 0, right = 0, dilation = 1;
  const float* sw = nullptr;                           // [C] or null (1)
  const float* bias = nullptr;                         // [C] or null (+0)
  float residual = 0.0f;
};
using BinaryMemoryFn = void (*)(const BinaryMemoryArgs&);

// ---------------------------------------------------------------------------------------------
// FP32 kernels (tolerance-checked, FMA allowed). Per-output-channel epilogue, each step only when
// its pointer is non-null: y = acc + bias[c]; y = y * scale[c]; y = y + shift[c];
// y = y > 0 ? y : y * slope[c].
// ---------------------------------------------------------------------------------------------
struct Epilogue {
  const float* bias = nullptr;
  const float* scale = nullptr;
  const float* shift = nullptr;
  const float* slope = nullptr;
};

// y (outer, N, inner) = W [N, K] applied to x (outer, K, inner), then the epilogue over n.
struct LinearF32Args {
  const float* x = nullptr;
  size_t outer = 1, K = 0, inner = 1;
  const float* w = nullptr;  // [N, K]
  size_t N = 0;
  Epilogue ep;
  float* y = nullptr;
};
using LinearF32Fn = void (*)(const LinearF32Args&);

// NCHW conv2d: x [B, C, H, W], w [O, C / groups, KH, KW], y [B, O, OH, OW] with
// OH = conv_out_size(H, KH, stride_h, pad_h, dil_h) (zero padding), then the epilogue over O.
struct Conv2dF32Args {
  const float* x = nullptr;
  size_t B = 1, C = 0, H = 0, W = 0;
  const float* w = nullptr;
  size_t O = 0, KH = 1, KW = 1;
  size_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  Epilogue ep;
  float* y = nullptr;
};
using Conv2dF32Fn = void (*)(const Conv2dF32Args&);

// ---------------------------------------------------------------------------------------------
// Dispatch table
// ---------------------------------------------------------------------------------------------
struct Kernels {
  const char* name;  // "ref", "avx2", "avx512", "neon"
  PackThresholdFn pack_threshold;
  PackDualFn pack_dual;
  PackWeightsFn pack_weights;
  BgemmFn bgemm;
  BinaryLinearFn binary_linear;
  BinaryMemoryFn binary_memory;
  LinearF32Fn linear_f32;
  Conv2dF32Fn conv2d_f32;
  bool wants_w16 = false;  // binary_linear runs faster on BinaryLinearArgs::w16 (set it up once)
};

// Weights for 16-row tiles: out[(tile * C + j) * 16 + r] = 32-bit chunk j (bits 32j..32j+31) of
// row 16 * tile + r, C = ceil(K / 32), rows past N zero. One vector load then holds chunk j of
// 16 rows, so 16 dot products accumulate lane-wise with no horizontal reduction.
inline std::vector<uint32_t> interleave_rows16(const uint64_t* w, size_t N, size_t K) {
  const size_t W = row_words(K), C = (K + 31) / 32, tiles = (N + 15) / 16;
  std::vector<uint32_t> out(tiles * C * 16, 0u);
  for (size_t n = 0; n < N; ++n)
    for (size_t j = 0; j < C; ++j) {
      const uint64_t word = w[n * W + j / 2];
      out[((n / 16) * C + j) * 16 + n % 16] = static_cast<uint32_t>((j & 1) ? word >> 32 : word);
    }
  return out;
}

// The portable scalar table (always available; the oracle).
const Kernels& ref_kernels();

// The table named `name` ("ref", "avx2", "avx512", "neon", or "auto") if it is compiled in and
// this CPU supports it, else nullptr.
const Kernels* find_kernels(const std::string& name);

// Names of the tables usable on this machine, best last ("ref" first).
std::vector<std::string> available_impls();

// The table "auto" resolves to: $FBCK_IMPL if set (ref|avx2|avx512|neon), else the best one for
// this CPU (x86-64: avx2 when cpuid reports AVX2+POPCNT+FMA, avx512 when it also reports
// AVX512F/BW/VPOPCNTDQ with OS support; aarch64: neon; otherwise ref). Resolved once per process.
// Throws std::runtime_error if $FBCK_IMPL names an implementation that is not available.
const Kernels& kernels();

// Same as find_kernels, but throws std::runtime_error with a clear message when unavailable.
const Kernels& get_kernels(const std::string& name);

}  // namespace fbck
