// Internal: a BLIS-style FP32 GEMM driver (packing, cache blocking, edge tiles) shared by the
// SIMD backends, in the float order of kernels.h: every output is one fma chain over k in order
// (a cache block of k continues the chain from the value in C, never a separate partial sum), so
// the result is bit-identical to the reference's loop whatever the tiling. The epilogue and the
// post-ops run after the sums (fp_direct.h: fp_finish). Each backend supplies a micro-kernel `UK`:
//
//   struct UK {
//     using V = ...;                                  // vector traits (output_transform.h)
//     static constexpr size_t MR, NR, KC, MC, NC;     // register tile and cache blocks
//     // C[MR x NR] (row stride ldc, columns contiguous): acc = (load ? C : +0), then for each k
//     // acc = fma(Ap[k][r], Bp[k][c], acc); Ap: kc x MR (packed, k-major), Bp: kc x NR
//     static void run(size_t kc, const float* Ap, const float* Bp, float* C, size_t ldc, bool load);
//     // d[i * ldd + j] = s_j[i] for i, j < 4 (used by the packing)
//     static void transpose4x4(const float* s0, const float* s1, const float* s2, const float* s3,
//                              float* d, size_t ldd);
//   };
//
// Weights packed once (Kernels::pack_f32_weights, ref/kernels_ref.cpp: pack_f32_panels) have the
// layout pack_a gives per cache block: for each k block k0 (KC steps), the MR-row micro-panels of
// all rows, kc x MR each, at offset k0 * Mpad (Mpad = rows rounded up to MR).
//
// Everything is in an anonymous namespace: each backend's instantiation stays local to its
// translation unit (compiled with its own ISA flags).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "fbck/bits.h"
#include "fbck/fp_direct.h"
#include "fbck/impls.h"
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

// im2col over phase-split input rows: phase r of row (c, h) holds the zero-padded columns
// r, r + sw, r + 2 sw, ..., so tap (kh, kw) of consecutive outputs ow of one output row is a
// contiguous run (no per-element index work); rows on padding read as zeros.
struct PhaseCols {
  const float* ph;  // [Cg][H][sw][RW]
  size_t H, KH, KW, sh, sw, pad_h, dh, dw, OW, RW;
};

// The phase rows of one image and group: xg [Cg, H, W] -> ph [Cg][H][sw][RW].
inline void build_phases(const float* xg, size_t Cg, size_t H, size_t W, size_t sw, size_t pad_w,
                         size_t RW, float* ph, float* padded) {
  const size_t PL = RW * sw + W + pad_w;
  for (size_t i = 0; i < PL; ++i) padded[i] = 0.0f;
  for (size_t ch = 0; ch < Cg * H; ++ch) {
    std::memcpy(padded + pad_w, xg + ch * W, W * sizeof(float));
    for (size_t r = 0; r < sw; ++r) {
      float* d = ph + (ch * sw + r) * RW;
      const float* src = padded + r;
      for (size_t j = 0; j < RW; ++j) d[j] = src[j * sw];
    }
  }
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
void pack_b(const PhaseCols& g, size_t N, size_t k0, size_t kc, size_t j0, size_t nc, float* dst) {
  const size_t taps = g.KH * g.KW;
  // per k: the source's phase-row offset (without the input row) and kernel row
  Scratch<size_t> kbase(kc), kh_of(kc);
  for (size_t k = k0; k < k0 + kc; ++k) {
    const size_t c = k / taps, kh = (k / g.KW) % g.KH, off = (k % g.KW) * g.dw;
    kbase[k - k0] = (c * g.H * g.sw + off % g.sw) * g.RW + off / g.sw;
    kh_of[k - k0] = kh;
  }
  for (size_t jr = 0; jr < nc; jr += NR, dst += NR * kc) {
    const size_t n0 = j0 + jr, nr = std::min(NR, N - n0);
    // the panel's runs inside output rows: (first column in the panel, oh, ow, length)
    size_t seg_q[NR], seg_oh[NR], seg_ow[NR], seg_len[NR], nseg = 0;
    for (size_t q = 0, n = n0; q < nr; ++nseg) {
      const size_t oh = n / g.OW, ow = n % g.OW, run = std::min(nr - q, g.OW - ow);
      seg_q[nseg] = q, seg_oh[nseg] = oh, seg_ow[nseg] = ow, seg_len[nseg] = run;
      q += run, n += run;
    }
    if (nseg == 1 && nr == NR) {  // the panel lies in one output row: one copy per k
      const ptrdiff_t ih0 = static_cast<ptrdiff_t>(seg_oh[0] * g.sh) - static_cast<ptrdiff_t>(g.pad_h);
      const ptrdiff_t H = static_cast<ptrdiff_t>(g.H), dh = static_cast<ptrdiff_t>(g.dh);
      const size_t rowstride = g.sw * g.RW, ow = seg_ow[0];
      const float* const ph = g.ph;
      for (size_t kk = 0; kk < kc; ++kk) {
        const ptrdiff_t ih = ih0 + static_cast<ptrdiff_t>(kh_of[kk]) * dh;
        float* d = dst + kk * NR;
        if (ih < 0 || ih >= H)
          std::memset(d, 0, NR * sizeof(float));
        else
          std::memcpy(d, ph + kbase[kk] + static_cast<size_t>(ih) * rowstride + ow, NR * sizeof(float));
      }
      continue;
    }
    for (size_t kk = 0; kk < kc; ++kk) {
      float* d = dst + kk * NR;
      for (size_t sgi = 0; sgi < nseg; ++sgi) {
        const ptrdiff_t ih = static_cast<ptrdiff_t>(seg_oh[sgi] * g.sh + kh_of[kk] * g.dh) -
                             static_cast<ptrdiff_t>(g.pad_h);
        float* dd = d + seg_q[sgi];
        if (ih < 0 || ih >= static_cast<ptrdiff_t>(g.H)) {
          for (size_t i = 0; i < seg_len[sgi]; ++i) dd[i] = 0.0f;
        } else {
          const float* src = g.ph + kbase[kk] + static_cast<size_t>(ih) * g.sw * g.RW + seg_ow[sgi];
          if (seg_len[sgi] == NR)
            std::memcpy(dd, src, NR * sizeof(float));
          else
            for (size_t i = 0; i < seg_len[sgi]; ++i) dd[i] = src[i];
        }
      }
      for (size_t q = nr; q < NR; ++q) d[q] = 0.0f;
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

// C (M x N) = A B (raw fma sums). C element (i, j) is at C[i * ldc + j], or at C[j * ldc + i]
// when ct (transposed store). Apre: A already packed (pack_f32_panels layout) or null.
template <class UK, class BSrc>
void gemm(size_t M, size_t N, size_t K, const View& A, const float* Apre, const BSrc& B, float* C,
          size_t ldc, bool ct = false) {
  constexpr size_t MR = UK::MR, NR = UK::NR, KC = UK::KC, MC = UK::MC, NC = UK::NC;
  static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole register tiles");
  if (M == 0 || N == 0) return;
  const size_t rsc = ct ? 1 : ldc, csc = ct ? ldc : 1;
  if (K == 0) {
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j) C[i * rsc + j * csc] = 0.0f;
    return;
  }
  const size_t ncb = std::min(NC, (N + NR - 1) / NR * NR), kcb = std::min(KC, K);
  const size_t mcb = std::min(MC, (M + MR - 1) / MR * MR), Mpad = (M + MR - 1) / MR * MR;
  Scratch<float> Bp(kcb * ncb), Ap(Apre ? 1 : mcb * kcb);
  alignas(64) float tmp[MR * NR] = {};
  for (size_t j0 = 0; j0 < N; j0 += NC) {
    const size_t nc = std::min(NC, N - j0);
    for (size_t k0 = 0; k0 < K; k0 += KC) {
      const size_t kc = std::min(KC, K - k0);
      const bool first = k0 == 0;
      pack_b<UK>(B, N, k0, kc, j0, nc, Bp.get());
      for (size_t i0 = 0; i0 < M; i0 += MC) {
        const size_t mc = std::min(MC, M - i0);
        if (!Apre) pack_a<UK>(A, M, i0, mc, k0, kc, Ap.get());
        const float* apb = Apre ? Apre + k0 * Mpad + i0 * kc : Ap.get();
        for (size_t jr = 0; jr < nc; jr += NR) {
          const size_t nr = std::min(NR, nc - jr);
          const float* bp = Bp.get() + jr * kc;
          for (size_t ir = 0; ir < mc; ir += MR) {
            const size_t mr = std::min(MR, mc - ir);
            const float* ap = apb + ir * kc;
            float* c = C + (i0 + ir) * rsc + (j0 + jr) * csc;
            if (mr == MR && nr == NR && !ct) {
              UK::run(kc, ap, bp, c, ldc, !first);
              continue;
            }
            if (!first) load_tile<UK, MR, NR>(tmp, c, rsc, csc, mr, nr, ct);
            UK::run(kc, ap, bp, tmp, NR, !first);
            store_tile<UK, MR, NR>(tmp, c, rsc, csc, mr, nr, ct);
          }
        }
      }
    }
  }
}

// All rows of A [M, K] (row-major, or any View) packed as pack_f32_panels does, with 16 floats of
// zero slack at the end (vector loads of a last MR-row panel may run past it).
template <class UK>
void pack_all_a(const View& A, size_t M, size_t K, float* dst) {
  constexpr size_t MR = UK::MR, KC = UK::KC;
  const size_t Mpad = (M + MR - 1) / MR * MR;
  for (size_t k0 = 0; k0 < K; k0 += KC) {
    const size_t kc = std::min(KC, K - k0);
    pack_a<UK>(A, M, 0, M, k0, kc, dst + k0 * Mpad);
  }
  for (size_t i = 0; i < 16; ++i) dst[Mpad * K + i] = 0.0f;
}

inline size_t panels_floats(size_t M, size_t K, size_t MR) { return (M + MR - 1) / MR * MR * K + 16; }

// out[p * N + n] = sum_k W[n, k] x[p, k] for NP positions against NM panels m0.., straight from
// the packed weight panels: lanes = the MR rows of a panel, one fma chain per output over k in
// order (NM > 1: a one-position classifier's few panels interleave their chains rather than each
// waiting out a K-long chain in turn). t receives NP x NM x NVEC * L floats, position-major (lanes
// past MR are junk).
template <class UK, int NP, int NM>
void gemv_tile(const float* panels, size_t Mpad, size_t m0, size_t K, const float* x, float* t) {
  using V = typename UK::V;
  constexpr size_t MR = UK::MR, KC = UK::KC, L = V::L, NVEC = (MR + L - 1) / L;
  typename V::F acc[NP][NM][NVEC];
  for (auto& a : acc)
    for (auto& b : a)
      for (auto& v : b) v = V::set1(0.0f);
  for (size_t k0 = 0; k0 < K; k0 += KC) {
    const size_t kc = std::min(KC, K - k0);
    const float* pa = panels + k0 * Mpad + m0 * MR * kc;
    for (size_t k = 0; k < kc; ++k) {
      typename V::F wv[NM][NVEC];
      for (int i = 0; i < NM; ++i)
        for (size_t v = 0; v < NVEC; ++v) wv[i][v] = V::load(pa + i * MR * kc + k * MR + v * L);
      for (int j = 0; j < NP; ++j) {
        const typename V::F xs = V::set1(x[j * K + k0 + k]);
        for (int i = 0; i < NM; ++i)
          for (size_t v = 0; v < NVEC; ++v) acc[j][i][v] = V::fma(wv[i][v], xs, acc[j][i][v]);
      }
    }
  }
  for (int j = 0; j < NP; ++j)
    for (int i = 0; i < NM; ++i)
      for (size_t v = 0; v < NVEC; ++v) V::store(t + ((j * NM + i) * NVEC + v) * L, acc[j][i][v]);
}

template <class UK>
void gemv_panels(const float* panels, size_t N, size_t K, const float* x, size_t P, float* out) {
  using V = typename UK::V;
  constexpr size_t MR = UK::MR, NV = ((MR + V::L - 1) / V::L) * V::L;
  const size_t Mpad = (N + MR - 1) / MR * MR;
  alignas(64) float t[4 * NV];
  if (P == 1) {
    const size_t panels_n = Mpad / MR;
    for (size_t m0 = 0; m0 < panels_n; m0 += 4) {
      const size_t nm = std::min<size_t>(4, panels_n - m0);
      switch (nm) {
        case 1: gemv_tile<UK, 1, 1>(panels, Mpad, m0, K, x, t); break;
        case 2: gemv_tile<UK, 1, 2>(panels, Mpad, m0, K, x, t); break;
        case 3: gemv_tile<UK, 1, 3>(panels, Mpad, m0, K, x, t); break;
        default: gemv_tile<UK, 1, 4>(panels, Mpad, m0, K, x, t); break;
      }
      for (size_t i = 0; i < nm; ++i)
        for (size_t r = 0; r < MR && (m0 + i) * MR + r < N; ++r) out[(m0 + i) * MR + r] = t[i * NV + r];
    }
    return;
  }
  for (size_t m = 0; m < Mpad / MR; ++m)
    for (size_t p0 = 0; p0 < P; p0 += 4) {
      const size_t np = std::min<size_t>(4, P - p0);
      const float* xp = x + p0 * K;
      switch (np) {
        case 1: gemv_tile<UK, 1, 1>(panels, Mpad, m, K, xp, t); break;
        case 2: gemv_tile<UK, 2, 1>(panels, Mpad, m, K, xp, t); break;
        case 3: gemv_tile<UK, 3, 1>(panels, Mpad, m, K, xp, t); break;
        default: gemv_tile<UK, 4, 1>(panels, Mpad, m, K, xp, t); break;
      }
      for (size_t j = 0; j < np; ++j)
        for (size_t r = 0; r < MR && m * MR + r < N; ++r) out[(p0 + j) * N + m * MR + r] = t[j * NV + r];
    }
}

// Fraction of a register tile's rows or columns doing useful work for an extent n.
inline double tile_use(size_t n, size_t t) {
  return static_cast<double>(n) / static_cast<double>((n + t - 1) / t * t);
}

template <class UK>
void linear(const LinearF32Args& g) {
  using V = typename UK::V;
  const size_t P = g.outer * g.inner;
  if (P == 0 || g.N == 0) return;
  Scratch<float> raw(g.y ? 1 : P * g.N);
  float* out = g.y ? g.y : raw.get();
  const View Wv{g.w, static_cast<ptrdiff_t>(g.K), 1};
  // the weights as packed panels: given once by the caller, or packed here for the GEMV
  const bool gemv = g.inner == 1 && g.outer < UK::GEMV_MAX_ROWS;
  Scratch<float> packed(g.wp || !gemv ? 1 : panels_floats(g.N, g.K, UK::MR));
  const float* wp = g.wp;
  if (!wp && gemv) {
    pack_all_a<UK>(Wv, g.N, g.K, packed.get());
    wp = packed.get();
  }
  if (g.inner == 1) {
    if (gemv) {
      gemv_panels<UK>(wp, g.N, g.K, g.x, P, out);
    } else {
      const View X{g.x, static_cast<ptrdiff_t>(g.K), 1}, Wt{g.w, 1, static_cast<ptrdiff_t>(g.K)};
      if (!wp && tile_use(P, UK::MR) * tile_use(g.N, UK::NR) >= tile_use(g.N, UK::MR) * tile_use(P, UK::NR)) {
        gemm<UK>(P, g.N, g.K, X, nullptr, Wt, out, g.N);  // C[p, n] = X[p, :] . W[n, :]
      } else {  // C[n, p] = W[n, :] . X[p, :], stored transposed
        const View Xt{g.x, 1, static_cast<ptrdiff_t>(g.K)};
        gemm<UK>(g.N, P, g.K, Wv, wp, Xt, out, g.N, true);
      }
    }
  } else {
    // per o: C[n, i] = W[n, :] . X_o[:, i]
    for (size_t o = 0; o < g.outer; ++o) {
      const View B{g.x + o * g.K * g.inner, static_cast<ptrdiff_t>(g.inner), 1};
      gemm<UK>(g.N, g.inner, g.K, Wv, wp, B, out + o * g.N * g.inner, g.inner);
    }
  }
  fp_finish<V>(out, g.outer, g.N, g.inner, g.ep, g.post, g.y);
}

// Depthwise (one input and one output channel per group): direct, vectorisable over ow; raw sums
// (one fma chain per output over (kh, kw)).
inline void conv2d_depthwise(const Conv2dF32Args& g, size_t OH, size_t OW, float* y) {
  for (size_t b = 0; b < g.B; ++b)
    for (size_t c = 0; c < g.C; ++c) {
      const float* xc = g.x + (b * g.C + c) * g.H * g.W;
      const float* wc = g.w + c * g.KH * g.KW;
      float* yc = y + (b * g.O + c) * OH * OW;
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
              for (size_t ow = ow_lo; ow < ow_hi; ++ow) yr[ow] = std::fma(wv, xr[ow], yr[ow]);
            else
              for (size_t ow = ow_lo; ow < ow_hi; ++ow) yr[ow] = std::fma(wv, xr[ow * g.stride_w], yr[ow]);
          }
        }
    }
}

// A stream's window yields a few output columns per call: im2col then packs runs of one or two
// floats, and a lane-per-column kernel leaves most lanes idle. With few columns (and at most
// kNarrowChannelVectors vectors of output channels) the outputs are vectorised over channels instead: per output
// position, acc[o] = fma(x[c, ih, iw], w[o, c, kh, kw], acc[o]) over (c, kh, kw) in order, taps
// on padding skipped (kernels.h's float order), then the shared epilogue.
constexpr size_t kNarrowChannelVectors = 4;

template <class V>
bool use_narrow_conv(const Conv2dF32Args& g, size_t OW) {
  return g.groups == 1 && OW < V::L && g.O <= kNarrowChannelVectors * V::L;
}

template <class V, int NO>
__attribute__((noinline)) void conv_narrow_sums(const Conv2dF32Args& g, size_t OH, size_t OW, const float* wt,
                                                size_t OP, float* out) {
  constexpr size_t L = V::L;
  const size_t C = g.C, H = g.H, W = g.W, KH = g.KH, KW = g.KW, O = g.O;
  for (size_t b = 0; b < g.B; ++b)
    for (size_t oh = 0; oh < OH; ++oh)
      for (size_t ow = 0; ow < OW; ++ow) {
        typename V::F acc[NO];
        for (int j = 0; j < NO; ++j) acc[j] = V::set1(0.0f);
        for (size_t c = 0; c < C; ++c)
          for (size_t kh = 0; kh < KH; ++kh) {
            const ptrdiff_t ih = static_cast<ptrdiff_t>(oh * g.stride_h + kh * g.dil_h) - static_cast<ptrdiff_t>(g.pad_h);
            if (ih < 0 || ih >= static_cast<ptrdiff_t>(H)) continue;
            const float* xr = g.x + ((b * C + c) * H + static_cast<size_t>(ih)) * W;
            const float* wr = wt + (c * KH + kh) * KW * OP;
            for (size_t kw = 0; kw < KW; ++kw) {
              const ptrdiff_t iw = static_cast<ptrdiff_t>(ow * g.stride_w + kw * g.dil_w) - static_cast<ptrdiff_t>(g.pad_w);
              if (iw < 0 || iw >= static_cast<ptrdiff_t>(W)) continue;
              const typename V::F xv = V::set1(xr[iw]);
              for (int j = 0; j < NO; ++j) acc[j] = V::fma(V::load(wr + kw * OP + j * L), xv, acc[j]);
            }
          }
        alignas(64) float lanes[NO * L];
        for (int j = 0; j < NO; ++j) V::store(lanes + j * L, acc[j]);
        float* y = out + b * O * OH * OW + oh * OW + ow;
        for (size_t o = 0; o < O; ++o) y[o * OH * OW] = lanes[o];
      }
}

template <class V>
void conv_narrow(const Conv2dF32Args& g, size_t OH, size_t OW) {
  constexpr size_t L = V::L;
  const size_t taps = g.C * g.KH * g.KW, NO = (g.O + L - 1) / L, OP = NO * L;
  Scratch<float> wt(taps * OP), raw(g.y ? 1 : g.B * g.O * OH * OW);
  for (size_t t = 0; t < taps; ++t)  // wt[t][o]: the weights of one tap, channels padded to OP
    for (size_t o = 0; o < OP; ++o) wt[t * OP + o] = o < g.O ? g.w[o * taps + t] : 0.0f;
  float* out = g.y ? g.y : raw.get();
  switch (NO) {
    case 1: conv_narrow_sums<V, 1>(g, OH, OW, wt.get(), OP, out); break;
    case 2: conv_narrow_sums<V, 2>(g, OH, OW, wt.get(), OP, out); break;
    case 3: conv_narrow_sums<V, 3>(g, OH, OW, wt.get(), OP, out); break;
    default: conv_narrow_sums<V, 4>(g, OH, OW, wt.get(), OP, out); break;
  }
  fp_finish<V>(out, g.B, g.O, OH * OW, g.ep, g.post, g.y);
}

template <class UK>
void conv2d(const Conv2dF32Args& g) {
  using V = typename UK::V;
  const size_t OH = conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
  const size_t OW = conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
  const size_t Cg = g.C / g.groups, Og = g.O / g.groups, Kd = Cg * g.KH * g.KW;
  if (OH == 0 || OW == 0) return;
  if (use_rows_in_lanes<V>(g, OH, OW)) return conv_rows<V>(g, OH, OW);
  if (use_narrow_conv<V>(g, OW)) return conv_narrow<V>(g, OH, OW);
  if (use_direct_conv(g)) return conv_direct<V>(g);
  Scratch<float> raw(g.y ? 1 : g.B * g.O * OH * OW);
  float* out = g.y ? g.y : raw.get();
  if (Cg == 1 && Og == 1) {
    conv2d_depthwise(g, OH, OW, out);
  } else {
    const bool pointwise = g.KH == 1 && g.KW == 1 && g.stride_h == 1 && g.stride_w == 1 &&
                           g.pad_h == 0 && g.pad_w == 0;
    const float* wp = g.groups == 1 ? g.wp : nullptr;
    const size_t RW = OW + ((g.KW - 1) * g.dil_w) / g.stride_w + 1;
    Scratch<float> ph(pointwise ? 1 : Cg * g.H * g.stride_w * RW),
        padded(pointwise ? 1 : RW * g.stride_w + g.W + g.pad_w);
    for (size_t b = 0; b < g.B; ++b)
      for (size_t grp = 0; grp < g.groups; ++grp) {
        const View A{g.w + grp * Og * Kd, static_cast<ptrdiff_t>(Kd), 1};
        const float* xg = g.x + (b * g.C + grp * Cg) * g.H * g.W;
        float* yg = out + (b * g.O + grp * Og) * OH * OW;
        if (pointwise) {
          const View B{xg, static_cast<ptrdiff_t>(g.H * g.W), 1};
          gemm<UK>(Og, OH * OW, Kd, A, wp, B, yg, OH * OW);
        } else {
          build_phases(xg, Cg, g.H, g.W, g.stride_w, g.pad_w, RW, ph.get(), padded.get());
          const PhaseCols B{ph.get(), g.H, g.KH, g.KW, g.stride_h, g.stride_w, g.pad_h,
                            g.dil_h, g.dil_w, OW, RW};
          gemm<UK>(Og, OH * OW, Kd, A, wp, B, yg, OH * OW);
        }
      }
  }
  fp_finish<V>(out, g.B, g.O, OH * OW, g.ep, g.post, g.y);
}

}  // namespace sgemm
}  // namespace
}  // namespace fbck
