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
// Output transform: post-ops and bit-plane outputs shared by the binary kernels, the direct FP
// conv, the FP memory and the standalone post_ops kernel. Implemented once for every ISA (and the
// reference) in fbck/output_transform.h, so every table computes the same floats in the same order.
//
// A kernel first computes its own value y of output (position p, channel n) (its epilogue, stated
// with the kernel), then, each step only when set, in this order:
//   affine:   y = y * scale[n] + shift[n]          (an eval BatchNorm or DTA's per-option affine)
//   act:      relu: y = y > 0 ? y : +0.0f;  prelu: y = y > 0 ? y : y * slope[n]
//   residual: y = res[i] + y                       (res in the float output's layout, i = y's index)
// and stores y (when the kernel's float output is set) and/or the bit planes of y that the next
// binary layer reads, in pack_threshold's / pack_dual's convention over the N channels:
//   b1 = (y - t0[n] >= 0) ? +1 : -1 (t0 null: y >= 0), bits1 bit = (b1 == -1);
//   bits2 (or null): r = (y - b1) - t1[n] (t1 null: r = y - b1), bit = !(r >= 0), s2[p] = mean_n |r|;
//   s1 (or null): s1[p] = mean_n |y| (both means in the canonical order of the packing kernels, so
//   the kernel can emit them channel block by channel block in increasing n).
// Rows are [P, row_words(N)], written in full (padding bits 0). A threshold folded from a BatchNorm
// with a negative scale is not a threshold on y: keep the affine here and t0 on its output (the
// compare stays exact), or negate the planes' meaning in the lowering, never divide by the scale.
// ---------------------------------------------------------------------------------------------
enum class Act : int { none = 0, relu = 1, prelu = 2 };

struct PlanesOut {
  const float* t0 = nullptr;  // [N] or null
  const float* t1 = nullptr;  // [N] or null (with bits2)
  uint64_t* bits1 = nullptr;  // [P, row_words(N)] or null (no bit output)
  uint64_t* bits2 = nullptr;  // [P, row_words(N)] or null (one plane)
  float* s2 = nullptr;        // [P], required with bits2
  float* s1 = nullptr;        // [P] or null
};

struct PostOps {
  const float* scale = nullptr;  // [N], with shift (both or neither)
  const float* shift = nullptr;  // [N]
  Act act = Act::none;
  const float* slope = nullptr;  // [N], with Act::prelu
  const float* res = nullptr;    // residual, in the float output's layout, or null
  PlanesOut planes;
};

// The post-ops alone on a float buffer: x and y (outer, N, inner) (y may alias x, or be null when
// only bit planes are wanted); position p = o * inner + i indexes the planes. One pass: an
// element-wise chain that ends in a binary layer's packing needs no float round trip.
using PostOpsFn = void (*)(const float* x, size_t outer, size_t N, size_t inner, const PostOps& post,
                           float* y);

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
  // Optional: the same weights as interleave_rows16(w, N, K). Every SIMD table reads these
  // instead of w when set (no per-call weight reordering); the reference ignores them.
  const uint32_t* w16 = nullptr;
  size_t outer = 1, inner = 1;   // P = outer * inner
  size_t N = 0, K = 0;
  const float* sw = nullptr;     // [N] or null (1)
  const float* bias = nullptr;   // [N] or null (+0)
  const float* slope = nullptr;  // [N] PReLU slopes or null (no PReLU)
  float* y = nullptr;            // (outer, N, inner) or null
  const float* thr = nullptr;    // [N], required with ybits
  uint64_t* ybits = nullptr;     // [P, row_words(N)] or null
  // Optional post-ops after the slope step (see PostOps); ybits then compares the final y.
  const PostOps* post = nullptr;
};
using BinaryLinearFn = void (*)(const BinaryLinearArgs&);

// ---------------------------------------------------------------------------------------------
// Binary memory block (BiFSMN): depthwise filter over time on binarized activations.
// x and y are (B, C, T) addressed through element strides (so (B, C, T) and (B, T, C) buffers
// both work); y uses the same strides as x and must not alias it. The SIMD tables run the
// channel-major layout (stride_t == 1) vectorised over time; other strides (the frame-major (B, T,
// C) included) are copied to it once. Per position (b, t), over c:
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
  // Optional post-ops after the residual step (channel n = c, position p = b * T + t; res and the
  // float output use x's strides; planes are [B * T, row_words(C)]). y may be null when only
  // planes are wanted.
  const PostOps* post = nullptr;
  // Frames [out_lo, out_hi) of y and of the planes are the ones the caller reads (a stream's window
  // holds context frames around them): a table may skip the others, which are then unspecified.
  size_t out_lo = 0, out_hi = SIZE_MAX;
  // Optional: the same taps as memory_taps_by_tap(ws, C, taps), prepared once; the frame-major
  // pass of a few frames reads them (else it lays them out itself on every call).
  const float* taps_t = nullptr;
};
using BinaryMemoryFn = void (*)(const BinaryMemoryArgs&);

// ---------------------------------------------------------------------------------------------
// FP32 kernels. One float order for every table, so a compiled model is bit-identical across
// implementations (ref, avx2, avx512, neon): per output, acc = +0.0f, then for every term in
// increasing reduction index (linear: k; conv2d: (c, kh, kw)) acc = fma(w, x, acc) (one rounding:
// std::fma, VFMADD, FMLA); terms on zero padding are skipped (the same as adding w * 0, since acc
// is never -0). Then the per-output-channel epilogue, each step only when set:
//   y = acc + bias[c]; y = y * scale[c]; y = y + shift[c]; relu: y = y > 0 ? y : +0.0f;
//   y = y > 0 ? y : y * slope[c]
// and the post-ops when `post` is set (float output y may then be null: planes only).
// These kernels are compiled with -ffp-contract=off like the rest: every fma is written out.
// ---------------------------------------------------------------------------------------------
struct Epilogue {
  const float* bias = nullptr;
  const float* scale = nullptr;
  const float* shift = nullptr;
  const float* slope = nullptr;
  bool relu = false;
};

// Weights [rows, K] (row-major) re-laid out once for the table's GEMM (opaque; valid only for the
// table that made it and the same rows and K). Passing them as `wp` saves the per-call packing.
using PackF32WeightsFn = std::vector<float> (*)(const float* w, size_t rows, size_t K);

// y (outer, N, inner) = W [N, K] applied to x (outer, K, inner), then the epilogue over n.
struct LinearF32Args {
  const float* x = nullptr;
  size_t outer = 1, K = 0, inner = 1;
  const float* w = nullptr;   // [N, K]
  const float* wp = nullptr;  // pack_f32_weights(w, N, K) of this table, or null
  size_t N = 0;
  Epilogue ep;
  const PostOps* post = nullptr;  // channel n, position p = o * inner + i
  float* y = nullptr;
};
using LinearF32Fn = void (*)(const LinearF32Args&);

// NCHW conv2d: x [B, C, H, W], w [O, C / groups, KH, KW], y [B, O, OH, OW] with
// OH = conv_out_size(H, KH, stride_h, pad_h, dil_h) (zero padding), then the epilogue over O.
// Few input channels (a front end on one feature plane) run as a direct convolution (no im2col):
// output rows vectorised over ow, the input split into stride phases once per call.
struct Conv2dF32Args {
  const float* x = nullptr;
  size_t B = 1, C = 0, H = 0, W = 0;
  const float* w = nullptr;
  const float* wp = nullptr;  // pack_f32_weights(w, O, C * KH * KW) (groups == 1 only), or null
  size_t O = 0, KH = 1, KW = 1;
  size_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  Epilogue ep;
  const PostOps* post = nullptr;  // channel o, position p = b * OH * OW + oh * OW + ow
  float* y = nullptr;
};
using Conv2dF32Fn = void (*)(const Conv2dF32Args&);

// FP memory block (FSMN) on x (B, C, T) through element strides (as BinaryMemoryArgs), the float
// order of Memory.exact_forward: acc = +0.0f; for k in 0..left+right: acc = acc + w[c, k] *
// x[c, t + (k - left) * dilation] (a multiply then an add; terms outside [0, T) skipped);
// y = bias ? acc + bias[c] : acc; residual != 0: y = x * residual + y; then the post-ops.
struct MemoryF32Args {
  const float* x = nullptr;
  float* y = nullptr;  // x's strides, must not alias x; null with planes-only post-ops
  size_t B = 0, C = 0, T = 0;
  ptrdiff_t stride_b = 0, stride_c = 0, stride_t = 0;
  const float* w = nullptr;  // [C, left + right + 1]
  size_t left = 0, right = 0, dilation = 1;
  const float* bias = nullptr;
  float residual = 0.0f;
  const PostOps* post = nullptr;
  size_t out_lo = 0, out_hi = SIZE_MAX;  // the frames the caller reads (as BinaryMemoryArgs)
  const float* taps_t = nullptr;         // memory_taps_by_tap(w, C, taps) or null (as there)
};
using MemoryF32Fn = void (*)(const MemoryF32Args&);

// ---------------------------------------------------------------------------------------------
// Binary k x k convolution on bits (groups 1, one bit plane), exact zero padding.
//
// The input's bits: position (b, h, w) holds its C channels as a packed row (pack_threshold over
// (B, C, H * W) with t0, or another kernel's PlanesOut). Each output position gathers its taps'
// bits into a row of K = KH * KW * C bits, bit (kh * KW + kw) * C + c (tap-major), straight from
// the packed rows (no float im2col), and XOR-popcounts it with the weights [O, row_words(K)].
// Taps on zero padding (or on input rows/columns outside [h_lo, h_hi) x [w_lo, w_hi), as a stream
// window marks frames outside the utterance) must add 0, while the gathered row holds +1 (bit 0)
// there: the plan's integer correction fix[class, o] (the weights' sum over those taps) removes
// them exactly. Per output (b, o, oh, ow):
//   d = (the +-1 dot over the valid taps);  z = s1 ? (float) d * s1[0] : (float) d;
//   z = t2 ? z - off[class, o] : z;  y = (sw ? z * sw[o] : z) + (bias ? bias[o] : +0.0f)
// with off = (float) (sum over valid taps and channels of sign(w) * (double) t2[c]) (the float64
// correction of BinaryConv2d.offset_map), then the post-ops (channel o, position
// p = b * Ho * Wo + oh * Wo + ow; planes [B * Ho * Wo, row_words(O)]).
// ---------------------------------------------------------------------------------------------
struct BinaryConv2dGeometry {
  size_t C = 0, H = 0, W = 0, O = 0, KH = 1, KW = 1;
  size_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  size_t h_lo = 0, h_hi = SIZE_MAX, w_lo = 0, w_hi = SIZE_MAX;  // valid input rows / columns
};

// Built once per (weights, geometry) by plan_binary_conv2d; output positions with the same valid
// taps share a class (row class x column class).
struct BinaryConv2dPlan {
  BinaryConv2dGeometry g;
  size_t Ho = 0, Wo = 0, K = 0;
  std::vector<uint32_t> row_class, col_class;  // [Ho], [Wo]
  size_t col_classes = 0;
  std::vector<int32_t> fix;  // [row classes * col_classes, O]
  std::vector<float> off;    // [row classes * col_classes, O], empty without t2
  std::vector<float> fix_map, off_map;  // the same spread per (o, oh * Wo + ow): [O, Ho * Wo]
};

// Throws std::invalid_argument on an empty output or inconsistent sizes. t2 [C] or null.
BinaryConv2dPlan plan_binary_conv2d(const BinaryConv2dGeometry& g, const uint64_t* w,
                                    const float* t2);

struct BinaryConv2dArgs {
  const BinaryConv2dPlan* plan = nullptr;
  size_t B = 1;
  const uint64_t* xbits = nullptr;  // [B * H * W, row_words(C)]
  const uint64_t* w = nullptr;      // [O, row_words(K)]
  const uint32_t* w16 = nullptr;    // interleave_rows16(w, O, K) or null (see BinaryLinearArgs)
  const float* s1 = nullptr;        // [1] constant activation scale, or null
  const float* sw = nullptr;        // [O] or null
  const float* bias = nullptr;      // [O] or null
  const PostOps* post = nullptr;
  float* y = nullptr;  // (B, O, Ho, Wo) or null (planes only)
};
using BinaryConv2dFn = void (*)(const BinaryConv2dArgs&);

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
  bool wants_w16 = false;  // binary_linear / binary_conv2d run faster on w16 (set it up once)
  PostOpsFn post_ops = nullptr;
  BinaryConv2dFn binary_conv2d = nullptr;
  MemoryF32Fn memory_f32 = nullptr;
  PackF32WeightsFn pack_f32_weights = nullptr;
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

// A memory block's taps [C, taps] tap-major as floats: out[k * memory_taps_stride(C) + c], zeros
// past C, so one vector load holds tap k of consecutive channels (BinaryMemoryArgs::taps_t).
inline size_t memory_taps_stride(size_t C) { return (C + 15) / 16 * 16; }
template <class W>
std::vector<float> memory_taps_by_tap(const W* w, size_t C, size_t taps) {
  const size_t S = memory_taps_stride(C);
  std::vector<float> out(taps * S, 0.0f);
  for (size_t c = 0; c < C; ++c)
    for (size_t k = 0; k < taps; ++k) out[k * S + c] = static_cast<float>(w[c * taps + k]);
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
// AVX512F/BW/VL/VPOPCNTDQ with OS support; aarch64: neon; otherwise ref). Resolved once per process.
// Throws std::runtime_error if $FBCK_IMPL names an implementation that is not available.
const Kernels& kernels();

// Same as find_kernels, but throws std::runtime_error with a clear message when unavailable.
const Kernels& get_kernels(const std::string& name);

}  // namespace fbck
