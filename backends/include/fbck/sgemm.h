// Internal: a BLIS-style FP32 GEMM driver (packing, cache blocking, edge tiles, fused epilogue)
// shared by the SIMD backends. Each backend supplies a register-tiled micro-kernel `UK`:
//
//   struct UK {
//     static constexpr size_t MR, NR, KC, MC, NC;  // register tile and cache blocks
//     // C[MR x NR] (row stride ldc, columns contiguous) = (load ? C : 0) + sum_k Ap[k] (x) Bp[k]
//     // Ap: kc x MR (packed, k-major), Bp: kc x NR (packed, k-major)
//     static void run(size_t kc, const float* Ap, const float* Bp, float* C, size_t ldc, bool load);
//     // d[i * ldd + j] = s_j[i] for i, j < 4 (used by the packing)
//     static void transpose4x4(const float* s0, const float* s1, const float* s2, const float* s3,
//                              float* d, size_t ldd);
//     static void dot4(...);  // four dot products (skinny linear), GEMV_MAX_ROWS
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

// dst[k * R + r] = rows[r][k] for r < nr, k < kc: 4 x 4 blocks through UK::transpose4x4
// (a register transpose), the rest element by element.
template <class UK, size_t R>
void pack_kmajor(const float* const* rows, size_t nr, size_t kc, float* dst) {
  size_t r = 0;
  for (; r + 4 <= nr; r += 4) {
    size_t k = 0;
    for (; k + 4 <= kc; k += 4)
      UK::transpose4x4(rows[r] + k, rows[r + 1] + k, rows[r + 2] + k, rows[r + 3] + k,
                       dst + k * R + r, R);
    for (; k < kc; ++k)
      for (size_t q = 0; q < 4; ++q) dst[k * R + r + q] = rows[r + q][k];
  }
  for (; r < nr; ++r)
    for (size_t k = 0; k < kc; ++k) dst[k * R + r] = rows[r][k];
}

// Pack rows [i0, i0 + mc) x cols [k0, k0 + kc) of A into MR-row micro-panels (k-major), zero-padded.
template <class UK, size_t MR = UK::MR>
void pack_a(const View& A, size_t M, size_t i0, size_t mc, size_t k0, size_t kc, float* dst) {
  for (size_t ir = 0; ir < mc; ir += MR, dst += MR * kc) {
    const size_t mr = std::min(MR, M - (i0 + ir));
    if (mr < MR)
      for (size_t i = 0; i < MR * kc; ++i) dst[i] = 0.0f;
    if (A.cs == 1) {  // rows contiguous in k
      const float* rows[MR];
      for (size_t r = 0; r < mr; ++r)
        rows[r] = &A.p[static_cast<ptrdiff_t>(i0 + ir + r) * A.rs + static_cast<ptrdiff_t>(k0)];
      pack_kmajor<UK, MR>(rows, mr, kc, dst);
    } else if (A.rs == 1) {  // columns contiguous in m
      for (size_t k = 0; k < kc; ++k) {
        const float* src = &A.p[static_cast<ptrdiff_t>(i0 + ir) + static_cast<ptrdiff_t>(k0 + k) * A.cs];
        for (size_t r = 0; r < mr; ++r) dst[k * MR + r] = src[r];
      }
    } else {
      for (size_t k = 0; k < kc; ++k)
        for (size_t r = 0; r < mr; ++r) dst[k * MR + r] = A.at(i0 + ir + r, k0 + k);
    }
  }
}

// Pack B rows [k0, k0 + kc) x cols [j0, j0 + nc) into NR-column micro-panels (k-major).
template <class UK, size_t NR = UK::NR>
void pack_b(const View& B, size_t N, size_t k0, size_t kc, size_t j0, size_t nc, float* dst) {
  for (size_t jr = 0; jr < nc; jr += NR, dst += NR * kc) {
    const size_t nr = std::min(NR, N - (j0 + jr));
    if (nr < NR)
      for (size_t i = 0; i < NR * kc; ++i) dst[i] = 0.0f;
    if (B.cs == 1) {  // rows contiguous in n
      for (size_t k = 0; k < kc; ++k) {
        const float* src = &B.p[static_cast<ptrdiff_t>(k0 + k) * B.rs + static_cast<ptrdiff_t>(j0 + jr)];
        if (nr == NR)
          std::memcpy(dst + k * NR, src, NR * sizeof(float));
        else
          for (size_t c = 0; c < nr; ++c) dst[k * NR + c] = src[c];
      }
    } else if (B.rs == 1) {  // columns contiguous in k
      const float* cols[NR];
      for (size_t c = 0; c < nr; ++c)
        cols[c] = &B.p[static_cast<ptrdiff_t>(k0) + static_cast<ptrdiff_t>(j0 + jr + c) * B.cs];
      pack_kmajor<UK, NR>(cols, nr, kc, dst);
    } else {
      for (size_t k = 0; k < kc; ++k)
        for (size_t c = 0; c < nr; ++c) dst[k * NR + c] = B.at(k0 + k, j0 + jr + c);
    }
  }
}

template <class UK, size_t NR = UK::NR>
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

// The epilogue on a row-major tile t (row stride ld): channel ch0 + row (per_row) or ch0 + col.
inline void epilogue_tile(float* t, size_t ld, size_t mr, size_t nr, size_t ch0, bool per_row,
                          const Epilogue& ep) {
  for (size_t r = 0; r < mr; ++r) {
    float* row = t + r * ld;
    if (per_row) {
      const size_t ch = ch0 + r;
      if (ep.bias) for (size_t q = 0; q < nr; ++q) row[q] += ep.bias[ch];
      if (ep.scale) for (size_t q = 0; q < nr; ++q) row[q] *= ep.scale[ch];
      if (ep.shift) for (size_t q = 0; q < nr; ++q) row[q] += ep.shift[ch];
      if (ep.slope) {
        const float sl = ep.slope[ch];
        for (size_t q = 0; q < nr; ++q) row[q] = row[q] > 0.0f ? row[q] : row[q] * sl;
      }
    } else {
      if (ep.bias) for (size_t q = 0; q < nr; ++q) row[q] += ep.bias[ch0 + q];
      if (ep.scale) for (size_t q = 0; q < nr; ++q) row[q] *= ep.scale[ch0 + q];
      if (ep.shift) for (size_t q = 0; q < nr; ++q) row[q] += ep.shift[ch0 + q];
      if (ep.slope)
        for (size_t q = 0; q < nr; ++q) row[q] = row[q] > 0.0f ? row[q] : row[q] * ep.slope[ch0 + q];
    }
  }
}

// Copy between the row-major MR x NR tile t and C (element (r, q) at c[r * rsc + q * csc]);
// transposed full tiles (ct) go through 4 x 4 register transposes.
template <class UK, size_t MR, size_t NR>
void store_tile(const float* t, float* c, size_t rsc, size_t csc, size_t mr, size_t nr, bool ct) {
  if (ct && mr == MR && nr == NR && MR % 4 == 0 && NR % 4 == 0) {
    for (size_t r = 0; r < MR; r += 4)
      for (size_t q = 0; q < NR; q += 4)
        UK::transpose4x4(t + r * NR + q, t + (r + 1) * NR + q, t + (r + 2) * NR + q,
                         t + (r + 3) * NR + q, c + q * csc + r, csc);
    return;
  }
  for (size_t r = 0; r < mr; ++r)
    for (size_t q = 0; q < nr; ++q) c[r * rsc + q * csc] = t[r * NR + q];
}

template <class UK, size_t MR, size_t NR>
void load_tile(float* t, const float* c, size_t rsc, size_t csc, size_t mr, size_t nr, bool ct) {
  if (ct && mr == MR && nr == NR && MR % 4 == 0 && NR % 4 == 0) {
    for (size_t q = 0; q < NR; q += 4)
      for (size_t r = 0; r < MR; r += 4)
        UK::transpose4x4(c + q * csc + r, c + (q + 1) * csc + r, c + (q + 2) * csc + r,
                         c + (q + 3) * csc + r, t + r * NR + q, NR);
    return;
  }
  for (size_t r = 0; r < mr; ++r)
    for (size_t q = 0; q < nr; ++q) t[r * NR + q] = c[r * rsc + q * csc];
}

// C (M x N) = A B, then the epilogue with channel ch_off + row (per_row) or ch_off + col.
// C element (i, j) is at C[i * ldc + j], or at C[j * ldc + i] when ct (transposed store).
template <class UK, class BSrc>
void gemm(size_t M, size_t N, size_t K, const View& A, const BSrc& B, float* C, size_t ldc,
          const Epilogue& ep, size_t ch_off, bool per_row, bool ct = false) {
  constexpr size_t MR = UK::MR, NR = UK::NR, KC = UK::KC, MC = UK::MC, NC = UK::NC;
  static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole register tiles");
  if (M == 0 || N == 0) return;
  const bool has_ep = ep.bias || ep.scale || ep.shift || ep.slope;
  const size_t rsc = ct ? 1 : ldc, csc = ct ? ldc : 1;
  if (K == 0) {
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j)
        C[i * rsc + j * csc] = fp_epilogue(0.0f, ch_off + (per_row ? i : j), ep);
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
      pack_b<UK>(B, N, k0, kc, j0, nc, Bp.get());
      for (size_t i0 = 0; i0 < M; i0 += MC) {
        const size_t mc = std::min(MC, M - i0);
        pack_a<UK>(A, M, i0, mc, k0, kc, Ap.get());
        for (size_t jr = 0; jr < nc; jr += NR) {
          const size_t nr = std::min(NR, nc - jr);
          const float* bp = Bp.get() + jr * kc;
          for (size_t ir = 0; ir < mc; ir += MR) {
            const size_t mr = std::min(MR, mc - ir);
            const float* ap = Ap.get() + ir * kc;
            float* c = C + (i0 + ir) * rsc + (j0 + jr) * csc;
            const size_t chr = ch_off + i0 + ir, chc = ch_off + j0 + jr;
            if (mr == MR && nr == NR && !ct) {
              UK::run(kc, ap, bp, c, ldc, !first);
              if (last && has_ep) epilogue_tile(c, ldc, MR, NR, per_row ? chr : chc, per_row, ep);
              continue;
            }
            if (!first) load_tile<UK, MR, NR>(tmp, c, rsc, csc, mr, nr, ct);
            UK::run(kc, ap, bp, tmp, NR, !first);
            if (last && has_ep) epilogue_tile(tmp, NR, mr, nr, per_row ? chr : chc, per_row, ep);
            store_tile<UK, MR, NR>(tmp, c, rsc, csc, mr, nr, ct);
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

// Fraction of a register tile's rows or columns doing useful work for an extent n.
inline double tile_use(size_t n, size_t t) {
  return static_cast<double>(n) / static_cast<double>((n + t - 1) / t * t);
}

template <class UK>
void linear(const LinearF32Args& g) {
  if (g.inner == 1) {
    const size_t P = g.outer;
    if (P < UK::GEMV_MAX_ROWS) {
      gemv_rows<UK>(g.x, P, g.K, g.w, g.N, g.ep, g.y);
      return;
    }
    const View X{g.x, static_cast<ptrdiff_t>(g.K), 1}, Wt{g.w, 1, static_cast<ptrdiff_t>(g.K)};
    if (tile_use(P, UK::MR) * tile_use(g.N, UK::NR) >= tile_use(g.N, UK::MR) * tile_use(P, UK::NR)) {
      gemm<UK>(P, g.N, g.K, X, Wt, g.y, g.N, g.ep, 0, false);  // C[p, n] = X[p, :] . W[n, :]
    } else {  // few positions: C[n, p] = W[n, :] . X[p, :], stored transposed
      const View Wv{g.w, static_cast<ptrdiff_t>(g.K), 1}, Xt{g.x, 1, static_cast<ptrdiff_t>(g.K)};
      gemm<UK>(g.N, P, g.K, Wv, Xt, g.y, g.N, g.ep, 0, true, true);
    }
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

constexpr size_t kExplicitIm2colMaxFloats = size_t{1} << 20;

// dst[k, oh * OW + ow] = x[c, oh * sh + kh * dh - ph, ow * sw + kw * dw - pw] (0 outside), k =
// (c, kh, kw): one strided run per (k, oh) with the valid ow range computed once per kw.
inline void im2col_rows(const Im2col& g, size_t C, size_t OH, float* dst) {
  const size_t OW = g.OW;
  for (size_t c = 0; c < C; ++c)
    for (size_t kh = 0; kh < g.KH; ++kh)
      for (size_t kw = 0; kw < g.KW; ++kw) {
        const ptrdiff_t offw = static_cast<ptrdiff_t>(kw * g.dw) - static_cast<ptrdiff_t>(g.pw);
        const ptrdiff_t sw = static_cast<ptrdiff_t>(g.sw), W = static_cast<ptrdiff_t>(g.W);
        const ptrdiff_t lo = offw >= 0 ? 0 : (-offw + sw - 1) / sw;
        ptrdiff_t hi = W - offw <= 0 ? 0 : (W - offw + sw - 1) / sw;
        hi = std::max(lo, std::min(hi, static_cast<ptrdiff_t>(OW)));
        const float* xc = g.x + c * g.H * g.W;
        for (size_t oh = 0; oh < OH; ++oh, dst += OW) {
          const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * g.sh + kh * g.dh) -
                               static_cast<ptrdiff_t>(g.ph);
          if (ih < 0 || ih >= static_cast<ptrdiff_t>(g.H) || lo >= hi) {
            std::fill(dst, dst + OW, 0.0f);
            continue;
          }
          const float* xr = xc + ih * W + offw;
          std::fill(dst, dst + lo, 0.0f);
          for (ptrdiff_t ow = lo; ow < hi; ++ow) dst[ow] = xr[ow * sw];
          std::fill(dst + hi, dst + OW, 0.0f);
        }
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
      } else if (Kd * OH * OW <= kExplicitIm2colMaxFloats) {
        // the implicit im2col's per-element index work inside the packing costs more than the
        // GEMM at these sizes, so build the columns once, row by row (at most a few MB).
        Scratch<float> cols(Kd * OH * OW);
        im2col_rows(Im2col{xg, g.H, g.W, g.KH, g.KW, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                           g.dil_h, g.dil_w, OW},
                    Cg, OH, cols.get());
        const View B{cols.get(), static_cast<ptrdiff_t>(OH * OW), 1};
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
