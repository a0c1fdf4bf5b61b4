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
// Best fit by size; at most kSlots blocks kept, the rest freed; all freed when the thread ends.
class ScratchPool {
 public:
  static void* take(size_t bytes, size_t align) {
    ScratchPool& pool = local();
    int best = -1;
    for (int i = 0; i < pool.n_; ++i)
      if (pool.slot_[i].align == align && pool.slot_[i].bytes >= bytes &&
          (best < 0 || pool.slot_[i].bytes < pool.slot_[best].bytes))
        best = i;
    if (best >= 0) {
      void* p = pool.slot_[best].p;
      pool.slot_[best] = pool.slot_[--pool.n_];
      return p;
    }
    void* p = std::aligned_alloc(align, bytes);
    if (!p) std::abort();
    return p;
  }
  static void give(void* p, size_t bytes, size_t align) {
    ScratchPool& pool = local();
    if (pool.n_ == kSlots) {  // full: drop the smallest kept block if this one is larger
      int small = 0;
      for (int i = 1; i < kSlots; ++i)
        if (pool.slot_[i].bytes < pool.slot_[small].bytes) small = i;
      if (pool.slot_[small].bytes >= bytes) return std::free(p);
      std::free(pool.slot_[small].p);
      pool.slot_[small] = pool.slot_[--pool.n_];
    }
    pool.slot_[pool.n_++] = Block{p, bytes, align};
  }
  ~ScratchPool() {
    for (int i = 0; i < n_; ++i) std::free(slot_[i].p);
  }

 private:
  struct Block {
    void* p;
    size_t bytes, align;
  };
  static constexpr int kSlots = 32;
  Block slot_[kSlots];
  int n_ = 0;
  static ScratchPool& local() {
    static thread_local ScratchPool pool;
    return pool;
  }
};

// Per-call scratch memory (no std containers in SIMD translation units), from the thread's pool.
template <class T>
struct Scratch {
  T* p = nullptr;
  size_t bytes, align;
  explicit Scratch(size_t n, size_t alignment = 64) : align(alignment) {
    bytes = (n * sizeof(T) + align - 1) / align * align;
    if (!bytes) bytes = align;
    p = static_cast<T*>(ScratchPool::take(bytes, align));
  }
  ~Scratch() { ScratchPool::give(p, bytes, align); }
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
