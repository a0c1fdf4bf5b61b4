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
