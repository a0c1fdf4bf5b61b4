// Internal: a BLIS-style FP32 GEMM driver (packing, cache blocking, edge tiles, fused epilogue)
// shared by the SIMD backends. Each backend supplies a register-tiled micro-kernel `UK`:
//
//   struct UK {
//     static constexpr size_t MR, NR, KC, MC, NC;  // register tile and cache blocks
//     // C[MR x NR] (row stride ldc, columns contiguous) = (load ? C : 0) + sum_k Ap[k] (x) Bp[k]
//     // Ap: kc x MR (packed, k-major), Bp: kc x NR (packed, k-major)
//     static void run(size_t kc, const float* Ap, const float* Bp, float* C, size_t ldc, bool load);
//   };
//
// Everything is in an anonymous namespace: each backend's instantiation stays local to its
// translation unit (compiled with its own ISA flags).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "fbck/bits.h"
#include "fbck/kernels.h"

namespace fbck {
namespace {
namespace sgemm {

// Element (r, c) of a strided matrix.
struct View {
  const float* p;
  ptrdiff_t rs, cs;
  inline float at(size_t r, size_t c) const {
    return p[static_cast<ptrdiff_t>(r) * rs + static_cast<ptrdiff_t>(c) * cs];
  }
};

// Implicit im2col of one image and group: B(k, n) with k = (c, kh, kw), n = (oh, ow).
struct Im2col {
  const float* x;  // first channel of the group, [Cg, H, W]
  size_t H, W, KH, KW, sh, sw, ph, pw, dh, dw, OW;
};

// Pack rows [i0, i0 + mc) x cols [k0, k0 + kc) of A into MR-row micro-panels (k-major), zero-padded.
template <size_t MR>
void pack_a(const View& A, size_t M, size_t i0, size_t mc, size_t k0, size_t kc, float* dst) {
  for (size_t ir = 0; ir < mc; ir += MR) {
    const size_t mr = std::min(MR, M - (i0 + ir));
    for (size_t k = 0; k < kc; ++k) {
      for (size_t r = 0; r < mr; ++r) dst[r] = A.at(i0 + ir + r, k0 + k);
      for (size_t r = mr; r < MR; ++r) dst[r] = 0.0f;
      dst += MR;
    }
  }
}

// Pack B rows [k0, k0 + kc) x cols [j0, j0 + nc) into NR-column micro-panels (k-major).
template <size_t NR>
void pack_b(const View& B, size_t N, size_t k0, size_t kc, size_t j0, size_t nc, float* dst) {
  for (size_t jr = 0; jr < nc; jr += NR) {
    const size_t nr = std::min(NR, N - (j0 + jr));
    for (size_t k = 0; k < kc; ++k) {
      if (B.cs == 1 && nr == NR) {
        std::memcpy(dst, B.p + static_cast<ptrdiff_t>(k0 + k) * B.rs +
                             static_cast<ptrdiff_t>(j0 + jr), NR * sizeof(float));
      } else {
        for (size_t c = 0; c < nr; ++c) dst[c] = B.at(k0 + k, j0 + jr + c);
        for (size_t c = nr; c < NR; ++c) dst[c] = 0.0f;
      }
      dst += NR;
    }
  }
}

template <size_t NR>
void pack_b(const Im2col& g, size_t N, size_t k0, size_t kc, size_t j0, size_t nc, float* dst) {
  for (size_t jr = 0; jr < nc; jr += NR) {
    const size_t nr = std::min(NR, N - (j0 + jr));
    ptrdiff_t ih0[NR], iw0[NR];
    for (size_t c = 0; c < nr; ++c) {
      const size_t n = j0 + jr + c, oh = n / g.OW, ow = n % g.OW;
      ih0[c] = static_cast<ptrdiff_t>(oh * g.sh) - static_cast<ptrdiff_t>(g.ph);
      iw0[c] = static_cast<ptrdiff_t>(ow * g.sw) - static_cast<ptrdiff_t>(g.pw);
    }
    for (size_t k = k0; k < k0 + kc; ++k) {
      const size_t ch = k / (g.KH * g.KW), kh = (k / g.KW) % g.KH, kw = k % g.KW;
      const float* xc = g.x + ch * g.H * g.W;
      const ptrdiff_t dh = static_cast<ptrdiff_t>(kh * g.dh), dw = static_cast<ptrdiff_t>(kw * g.dw);
      for (size_t c = 0; c < nr; ++c) {
        const ptrdiff_t ih = ih0[c] + dh, iw = iw0[c] + dw;
        const bool in = ih >= 0 && ih < static_cast<ptrdiff_t>(g.H) && iw >= 0 &&
                        iw < static_cast<ptrdiff_t>(g.W);
        dst[c] = in ? xc[ih * static_cast<ptrdiff_t>(g.W) + iw] : 0.0f;
      }
      for (size_t c = nr; c < NR; ++c) dst[c] = 0.0f;
      dst += NR;
    }
  }
}

// C (rows M, cols N, row stride ldc, contiguous columns) = A B, then the epilogue with channel
// ch_off + row (per_row) or ch_off + col.
template <class UK, class BSrc>
void gemm(size_t M, size_t N, size_t K, const View& A, const BSrc& B, float* C, size_t ldc,
          const Epilogue& ep, size_t ch_off, bool per_row) {
  constexpr size_t MR = UK::MR, NR = UK::NR, KC = UK::KC, MC = UK::MC, NC = UK::NC;
  static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole register tiles");
  if (M == 0 || N == 0) return;
  const bool has_ep = ep.bias || ep.scale || ep.shift || ep.slope;
  if (K == 0) {
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j) C[i * ldc + j] = fp_epilogue(0.0f, ch_off + (per_row ? i : j), ep);
    return;
  }
  const size_t ncb = std::min(NC, (N + NR - 1) / NR * NR), kcb = std::min(KC, K);
  const size_t mcb = std::min(MC, (M + MR - 1) / MR * MR);
  Scratch<float> Bp(kcb * ncb), Ap(mcb * kcb);
  alignas(64) float tmp[MR * NR] = {};
  for (size_t j0 = 0; j0 < N; j0 += NC) {
    const size_t nc = std::min(NC, N - j0);
    for (size_t k0 = 0; k0 < K; k0 += KC) {
      const size_t kc = std::min(KC, K - k0);
      const bool first = k0 == 0, last = k0 + kc == K;
      pack_b<NR>(B, N, k0, kc, j0, nc, Bp.get());
      for (size_t i0 = 0; i0 < M; i0 += MC) {
        const size_t mc = std::min(MC, M - i0);
        pack_a<MR>(A, M, i0, mc, k0, kc, Ap.get());
        for (size_t jr = 0; jr < nc; jr += NR) {
          const size_t nr = std::min(NR, nc - jr);
          const float* bp = Bp.get() + jr * kc;
          for (size_t ir = 0; ir < mc; ir += MR) {
            const size_t mr = std::min(MR, mc - ir);
            const float* ap = Ap.get() + ir * kc;
            float* c = C + (i0 + ir) * ldc + j0 + jr;
            if (mr == MR && nr == NR) {
              UK::run(kc, ap, bp, c, ldc, !first);
            } else {
              if (!first)
                for (size_t r = 0; r < mr; ++r)
                  for (size_t q = 0; q < nr; ++q) tmp[r * NR + q] = c[r * ldc + q];
              UK::run(kc, ap, bp, tmp, NR, !first);
              for (size_t r = 0; r < mr; ++r)
                for (size_t q = 0; q < nr; ++q) c[r * ldc + q] = tmp[r * NR + q];
            }
            if (last && has_ep)
              for (size_t r = 0; r < mr; ++r)
                for (size_t q = 0; q < nr; ++q) {
                  const size_t ch = ch_off + (per_row ? i0 + ir + r : j0 + jr + q);
                  c[r * ldc + q] = fp_epilogue(c[r * ldc + q], ch, ep);
                }
          }
        }
      }
    }
  }
}

// y[m * ldy + n*?]: skinny case (few rows of activations, inner == 1): y[p, n] = dot(x[p], w[n]).
// UK::dot4(K, w0, w1, w2, w3, x, out4) computes four dot products.
template <class UK>
void gemv_rows(const float* x, size_t P, size_t K, const float* w, size_t N, const Epilogue& ep,
               float* y) {
  for (size_t p = 0; p < P; ++p) {
    const float* xp = x + p * K;
    size_t n = 0;
    for (; n + 4 <= N; n += 4) {
      float d[4];
      UK::dot4(K, w + n * K, w + (n + 1) * K, w + (n + 2) * K, w + (n + 3) * K, xp, d);
      for (size_t q = 0; q < 4; ++q) y[p * N + n + q] = fp_epilogue(d[q], n + q, ep);
    }
    for (; n < N; ++n) {
      float d[4];
      const float* wn = w + n * K;
      UK::dot4(K, wn, wn, wn, wn, xp, d);
      y[p * N + n] = fp_epilogue(d[0], n, ep);
    }
  }
}

template <class UK>
void linear(const LinearF32Args& g) {
  if (g.inner == 1) {
    if (g.outer < UK::GEMV_MAX_ROWS) {
      gemv_rows<UK>(g.x, g.outer, g.K, g.w, g.N, g.ep, g.y);
      return;
    }
    // C[p, n] = X[p, :] . W[n, :]
    const View A{g.x, static_cast<ptrdiff_t>(g.K), 1};
    const View B{g.w, 1, static_cast<ptrdiff_t>(g.K)};
    gemm<UK>(g.outer, g.N, g.K, A, B, g.y, g.N, g.ep, 0, false);
    return;
  }
  // per o: C[n, i] = W[n, :] . X_o[:, i]
  const View A{g.w, static_cast<ptrdiff_t>(g.K), 1};
  for (size_t o = 0; o < g.outer; ++o) {
    const View B{g.x + o * g.K * g.inner, static_cast<ptrdiff_t>(g.inner), 1};
    gemm<UK>(g.N, g.inner, g.K, A, B, g.y + o * g.N * g.inner, g.inner, g.ep, 0, true);
  }
}

// Depthwise (one input and one output channel per group): direct, vectorisable over ow.
inline void conv2d_depthwise(const Conv2dF32Args& g, size_t OH, size_t OW) {
  for (size_t b = 0; b < g.B; ++b)
    for (size_t c = 0; c < g.C; ++c) {
      const float* xc = g.x + (b * g.C + c) * g.H * g.W;
      const float* wc = g.w + c * g.KH * g.KW;
      float* yc = g.y + (b * g.O + c) * OH * OW;
      for (size_t i = 0; i < OH * OW; ++i) yc[i] = 0.0f;
      for (size_t kh = 0; kh < g.KH; ++kh)
        for (size_t kw = 0; kw < g.KW; ++kw) {
          const float wv = wc[kh * g.KW + kw];
          const ptrdiff_t offw = static_cast<ptrdiff_t>(kw * g.dil_w) - static_cast<ptrdiff_t>(g.pad_w);
          // valid ow: 0 <= ow * sw + offw < W
          size_t ow_lo = 0, ow_hi = 0;
          {
            const ptrdiff_t sw = static_cast<ptrdiff_t>(g.stride_w);
            ptrdiff_t lo = offw >= 0 ? 0 : (-offw + sw - 1) / sw;
            ptrdiff_t hi = static_cast<ptrdiff_t>(g.W) - offw <= 0
                               ? 0
                               : (static_cast<ptrdiff_t>(g.W) - offw + sw - 1) / sw;
            if (hi > static_cast<ptrdiff_t>(OW)) hi = static_cast<ptrdiff_t>(OW);
            ow_lo = static_cast<size_t>(lo);
            ow_hi = static_cast<size_t>(hi < lo ? lo : hi);
          }
          for (size_t oh = 0; oh < OH; ++oh) {
            const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * g.stride_h + kh * g.dil_h) -
                                 static_cast<ptrdiff_t>(g.pad_h);
            if (ih < 0 || ih >= static_cast<ptrdiff_t>(g.H)) continue;
            const float* xr = xc + ih * static_cast<ptrdiff_t>(g.W) + offw;
            float* yr = yc + oh * OW;
            if (g.stride_w == 1)
              for (size_t ow = ow_lo; ow < ow_hi; ++ow) yr[ow] += wv * xr[ow];
            else
              for (size_t ow = ow_lo; ow < ow_hi; ++ow) yr[ow] += wv * xr[ow * g.stride_w];
          }
        }
      const bool has_ep = g.ep.bias || g.ep.scale || g.ep.shift || g.ep.slope;
      if (has_ep)
        for (size_t i = 0; i < OH * OW; ++i) yc[i] = fp_epilogue(yc[i], c, g.ep);
    }
}

template <class UK>
void conv2d(const Conv2dF32Args& g) {
  const size_t OH = conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
  const size_t OW = conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
  const size_t Cg = g.C / g.groups, Og = g.O / g.groups, Kd = Cg * g.KH * g.KW;
  if (OH == 0 || OW == 0) return;
  if (Cg == 1 && Og == 1) {
    conv2d_depthwise(g, OH, OW);
    return;
  }
  const bool pointwise = g.KH == 1 && g.KW == 1 && g.stride_h == 1 && g.stride_w == 1 &&
                         g.pad_h == 0 && g.pad_w == 0;
  for (size_t b = 0; b < g.B; ++b)
    for (size_t grp = 0; grp < g.groups; ++grp) {
      const View A{g.w + grp * Og * Kd, static_cast<ptrdiff_t>(Kd), 1};
      const float* xg = g.x + (b * g.C + grp * Cg) * g.H * g.W;
      float* yg = g.y + (b * g.O + grp * Og) * OH * OW;
      if (pointwise) {
        const View B{xg, static_cast<ptrdiff_t>(g.H * g.W), 1};
        gemm<UK>(Og, OH * OW, Kd, A, B, yg, OH * OW, g.ep, grp * Og, true);
      } else {
        const Im2col B{xg, g.H, g.W, g.KH, g.KW, g.stride_h, g.stride_w,
                       g.pad_h, g.pad_w, g.dil_h, g.dil_w, OW};
        gemm<UK>(Og, OH * OW, Kd, A, B, yg, OH * OW, g.ep, grp * Og, true);
      }
    }
}

}  // namespace sgemm
}  // namespace
}  // namespace fbck
