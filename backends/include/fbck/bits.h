// Scalar helpers shared by all FBCK implementations (bit rule, canonical mean-abs sum, epilogue).
//
// Everything here has internal linkage (anonymous namespace), so a SIMD translation unit compiled
// with -mavx2 can include it without its copies ever replacing the baseline ones at link time.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "fbck/kernels.h"

namespace fbck {
namespace {

// Bit of a thresholded value: 1 (= -1) unless d >= 0 (NaN gives 1).
inline uint64_t neg_bit(float d) { return (d >= 0.0f) ? 0u : 1u; }

// Sign as float: +1 when d >= 0, else -1.
inline float sign_pm1(float d) { return (d >= 0.0f) ? 1.0f : -1.0f; }

// Canonical mean of |v| over K values (see kernels.h): four double partial sums by k mod 4.
struct AbsSum4 {
  double a[4] = {0.0, 0.0, 0.0, 0.0};
  inline void add(size_t k, float v) { a[k & 3] += std::fabs(static_cast<double>(v)); }
  inline float mean(size_t K) const {
    return static_cast<float>(((a[0] + a[1]) + (a[2] + a[3])) / static_cast<double>(K));
  }
};

// The README's binary-linear epilogue on exact dots (d2 ignored unless dual).
inline float binary_epilogue(int32_t d1, const float* s1, int32_t d2, const float* s2, bool dual,
                             size_t p, size_t n, const float* sw, const float* bias,
                             const float* slope) {
  float u = static_cast<float>(d1);
  if (s1) u = u * s1[p];
  float z = u;
  if (dual) z = u + static_cast<float>(d2) * s2[p];
  float y = sw ? z * sw[n] : z;
  y = y + (bias ? bias[n] : 0.0f);
  if (slope) y = y > 0.0f ? y : y * slope[n];
  return y;
}

// The memory block's output step.
inline float memory_output(float acc, float x, size_t c, const BinaryMemoryArgs& m) {
  float y = m.sw ? acc * m.sw[c] : acc;
  y = y + (m.bias ? m.bias[c] : 0.0f);
  if (m.residual != 0.0f) y = x * m.residual + y;
  return y;
}

// The FP32 epilogue on one value of channel c.
inline float fp_epilogue(float acc, size_t c, const Epilogue& ep) {
  float y = acc;
  if (ep.bias) y = y + ep.bias[c];
  if (ep.scale) y = y * ep.scale[c];
  if (ep.shift) y = y + ep.shift[c];
  if (ep.relu) y = y > 0.0f ? y : 0.0f;
  if (ep.slope) y = y > 0.0f ? y : y * ep.slope[c];
  return y;
}

// Freed scratch blocks kept per thread for the next call: the kernels allocate the same few
// buffers on every call, and aligned_alloc/free of them cost about 8% of a one-utterance run.
// Blocks are sized in powers of two (at least 64 bytes, 64-byte aligned), a few kept per size, so
// taking and giving back are O(1); all are freed when the thread ends.
class ScratchPool {
 public:
  static constexpr size_t kAlign = 64;
  // The block size for a request of `bytes` (a power of two >= kAlign).
  static size_t block_bytes(size_t bytes) {
    size_t b = kAlign;
    while (b < bytes) b <<= 1;
    return b;
  }
  static void* take(size_t block) {
    ScratchPool& pool = local();
    Bin& bin = pool.bin_[index(block)];
    if (bin.n) return bin.p[--bin.n];
    void* p = std::aligned_alloc(kAlign, block);
    if (!p) std::abort();
    return p;
  }
  static void give(void* p, size_t block) {
    Bin& bin = local().bin_[index(block)];
    if (bin.n < kPerSize) bin.p[bin.n++] = p;
    else std::free(p);
  }
  ~ScratchPool() {
    for (Bin& bin : bin_)
      for (int i = 0; i < bin.n; ++i) std::free(bin.p[i]);
  }

 private:
  static constexpr int kPerSize = 6, kSizes = 58;  // 2^6 .. 2^63 bytes
  struct Bin {
    void* p[kPerSize];
    int n = 0;
  };
  Bin bin_[kSizes];
  static int index(size_t block) {
    int i = 0;
    while ((size_t{kAlign} << i) < block) ++i;
    return i;
  }
  static ScratchPool& local() {
    static thread_local ScratchPool pool;
    return pool;
  }
};

// Per-call scratch memory (no std containers in SIMD translation units), from the thread's pool;
// 64-byte aligned.
template <class T>
struct Scratch {
  T* p = nullptr;
  size_t block;
  explicit Scratch(size_t n) : block(ScratchPool::block_bytes(n * sizeof(T))) {
    p = static_cast<T*>(ScratchPool::take(block));
  }
  ~Scratch() { ScratchPool::give(p, block); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return p; }
  T& operator[](size_t i) const { return p[i]; }
};

// The binary linear epilogue's per-channel vectors padded to `np` entries (identity values past
// N: scale 1, bias 0, slope 1, threshold 0) so full-width vector loads stay inside, and the packed
// output cleared (its bits are OR-ed in).
struct PaddedEpilogue {
  Scratch<float> buf;
  float *sw, *bias, *slope, *thr;
  PaddedEpilogue(const BinaryLinearArgs& g, size_t np) : buf(4 * np) {
    sw = buf.get(), bias = sw + np, slope = bias + np, thr = slope + np;
    for (size_t n = 0; n < np; ++n) {
      const bool in = n < g.N;
      sw[n] = (g.sw && in) ? g.sw[n] : 1.0f;
      bias[n] = (g.bias && in) ? g.bias[n] : 0.0f;
      slope[n] = (g.slope && in) ? g.slope[n] : 1.0f;
      thr[n] = (g.thr && in) ? g.thr[n] : 0.0f;
    }
    if (g.ybits) std::memset(g.ybits, 0, g.outer * g.inner * row_words(g.N) * sizeof(uint64_t));
  }
};

}  // namespace
}  // namespace fbck
