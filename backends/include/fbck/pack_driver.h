// Internal: the activation-packing driver shared by the SIMD tables. Each table supplies its
// own row packer (a position's K channels contiguous) and block packer (BLOCK positions of a
// channel-major (outer, K, inner) buffer at once); positions left over are copied into a
// contiguous row for the row packer. Internal linkage, like bits.h, so each ISA's instantiation
// stays in its own unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fbck/bits.h"
#include "fbck/impls.h"
#include "fbck/kernels.h"

namespace fbck {
namespace {

// The block packers' channel loop: channels in words of 32 (the bit of channel k, k & 31, doubles
// from one channel to the next), the double sums j = k mod 4. P (one per SIMD table) supplies the
// vector of sign bits U, the sums Sums, one channel's step over the block's positions and the
// store of a word per position.
template <class P, bool DUAL, bool SX>
inline __attribute__((always_inline)) void pack_block_words(const float* x, size_t inner, size_t K,
                                                            const float* t0, const float* t1, uint64_t* rows1,
                                                            uint64_t* rows2, size_t W, typename P::Sums& sx,
                                                            typename P::Sums& sr) {
  for (size_t k0 = 0; k0 < K; k0 += 32) {
    const size_t k1 = K - k0 < 32 ? K : k0 + 32;
    typename P::U acc1 = P::zero(), acc2 = P::zero(), bitk = P::one();
#define FBCK_PACK_STEP(J)                                                                                  \
  P::template step<DUAL, SX, J>(x + (k + J) * inner, t0 ? t0 + k + J : nullptr, t1 ? t1 + k + J : nullptr, \
                                bitk, acc1, acc2, sx, sr);                                                 \
  bitk = P::shl1(bitk)
    size_t k = k0;
    for (; k + 4 <= k1; k += 4) {  // J = k mod 4, as k0 is a multiple of 4
      FBCK_PACK_STEP(0);
      FBCK_PACK_STEP(1);
      FBCK_PACK_STEP(2);
      FBCK_PACK_STEP(3);
    }
    if (k < k1) { FBCK_PACK_STEP(0); }
    if (k + 1 < k1) { FBCK_PACK_STEP(1); }
    if (k + 2 < k1) { FBCK_PACK_STEP(2); }
#undef FBCK_PACK_STEP
    P::store(rows1, W, k0 >> 5, acc1);
    if (DUAL) P::store(rows2, W, k0 >> 5, acc2);
  }
}

// row(x, K, t0, t1, bits1, bits2, s1, s2) packs one contiguous position;
// block(x, inner, K, t0, t1, bits1, bits2, W, s1, s2) packs BLOCK positions strided by inner.
template <size_t BLOCK, bool DUAL, class Row, class Block>
void pack_positions(Row&& row, Block&& block, const float* x, size_t outer, size_t K, size_t inner,
                    const float* t0, const float* t1, uint64_t* bits1, uint64_t* bits2, float* s2,
                    float* s1) {
  const size_t W = row_words(K);
  if (inner == 1) {
    for (size_t p = 0; p < outer; ++p)
      row(x + p * K, K, t0, t1, bits1 + p * W, DUAL ? bits2 + p * W : nullptr,
          s1 ? s1 + p : nullptr, s2 ? s2 + p : nullptr);
    return;
  }
  std::memset(bits1, 0, outer * inner * W * sizeof(uint64_t));
  if (DUAL) std::memset(bits2, 0, outer * inner * W * sizeof(uint64_t));
  Scratch<float> column(inner % BLOCK ? K : 1);
  for (size_t o = 0; o < outer; ++o) {
    const float* xo = x + o * K * inner;
    size_t i = 0;
    for (; i + BLOCK <= inner; i += BLOCK) {
      const size_t p = o * inner + i;
      block(xo + i, inner, K, t0, t1, bits1 + p * W, DUAL ? bits2 + p * W : nullptr, W,
            s1 ? s1 + p : nullptr, s2 ? s2 + p : nullptr);
    }
    // the positions left over (all of them in a stream's window of a few frames): each one's
    // channels copied into a contiguous row, then the row packer (the same bits and scales)
    for (; i < inner; ++i) {
      const size_t p = o * inner + i;
      float* col = column.get();
      for (size_t k = 0; k < K; ++k) col[k] = xo[i + k * inner];
      row(col, K, t0, t1, bits1 + p * W, DUAL ? bits2 + p * W : nullptr, s1 ? s1 + p : nullptr,
          s2 ? s2 + p : nullptr);
    }
  }
}

}  // namespace
}  // namespace fbck
