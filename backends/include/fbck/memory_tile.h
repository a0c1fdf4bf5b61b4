// Internal: the FSMN memory blocks (binary_memory, memory_f32) over the channel-major (C, T)
// layout, vectorised over time (lanes = consecutive frames of one channel), written once over the
// vector traits of output_transform.h and instantiated by every SIMD table. No gathers: a channel's
// frames are contiguous, the per-channel constants are broadcasts, and the per-frame scales
// (means over channels) are per-lane double sums visited in channel order (the canonical order).
//
//   pass 1  per frame: s1 = mean_c |x| (mean_abs) and s2 = mean_c |r| (two planes)
//   pass 2  per channel: v over all frames, with left * dilation and right * dilation zero frames
//           around it (a tap on a zero frame adds w * 0, which leaves the sum unchanged)
//   pass 3  per block of frames, channels in order: the tap sum, the memory's own output step,
//           the post-ops (output_transform.h, column orientation) and the planes for the next layer
//
// Buffers with other strides (frame-major (B, T, C) included) are copied to channel-major once.
// Windows of fewer frames than a vector has lanes (a stream's) run frame-major instead
// (memory_frames, vectorised over channels).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "fbck/bits.h"
#include "fbck/kernels.h"
#include "fbck/output_transform.h"

namespace fbck {
namespace {

// The parts of BinaryMemoryArgs / MemoryF32Args the passes read, in channel-major form.
struct MemoryJob {
  const float* x;  // (B, C, T) contiguous
  float* y;        // (B, C, T) contiguous or null
  const float* res;
  size_t B, C, T, left, right, dil;
  const float* wsf;  // [C, taps] float taps (or null with ws)
  const int8_t* ws;  // [C, taps] binary taps (memory_frames reads them directly) or null
  const float* taps_t;  // memory_taps_by_tap of the taps, or null
  const float* sw;
  const float* bias;
  float residual;
  bool binary;  // FP memory: y = acc + bias (bias null: acc, the same as acc * 1 + 0)
  // binary activation
  const float *t0, *t1, *t2;
  int planes;
  S1Mode s1_mode;
  float s1_const;
  size_t out_lo, out_hi;  // the output frames the caller reads (memory_frames computes only these)
};

// Per-channel constants with identity values where the job has none (t0, t1, t2: 0; sw: 1;
// bias: 0): x - 0, v - 0, acc * 1 and acc + 0 leave every value as it was (acc is never -0), so
// the passes need no branches on them. `n` >= C: identity values past C too (whole vectors of
// channels for memory_frames).
struct MemoryConsts {
  Scratch<float> buf;
  const float *t0, *t1, *t2, *sw, *bias;
  explicit MemoryConsts(const MemoryJob& m, size_t n = 0) : buf(5 * (n > m.C ? n : m.C)) {
    const size_t N = n > m.C ? n : m.C;
    float* b = buf.get();
    auto fill = [&](const float* src, float dflt, size_t k) {
      float* d = b + k * N;
      if (src) std::memcpy(d, src, m.C * sizeof(float));
      else std::fill(d, d + m.C, dflt);
      std::fill(d + m.C, d + N, dflt);
      return d;
    };
    t0 = fill(m.t0, 0.0f, 0), t1 = fill(m.t1, 0.0f, 1), t2 = fill(m.t2, 0.0f, 2);
    sw = fill(m.sw, 1.0f, 3), bias = fill(m.bias, 0.0f, 4);
  }
};

template <class V>
FBCK_OT_INLINE typename V::F ld_n(const float* p, size_t n) {
  return n == V::L ? V::load(p) : V::load_part(p, n);
}

// One channel's frames [f0, f0 + nl) of pass 1, into accumulator J of the column sums. A plain
// function rather than a lambda: a closure holding the Col by reference kept it in memory (a
// load and a store around every double add on aarch64).
template <class V, bool TWO, bool MEAN1, int J>
FBCK_OT_INLINE void memory_scale_one(const float* xc, size_t nl, float t0, float t1, typename V::Col& cx,
                                     typename V::Col& cr, float* b1o, float* sro) {
  const typename V::F xv = ld_n<V>(xc, nl);
  if (MEAN1) V::template abs_col_j<J>(cx, xv);
  if (TWO) {
    const typename V::F b1 = V::sign(V::sub(xv, V::set1(t0)));
    const typename V::F r = V::sub(V::sub(xv, b1), V::set1(t1));
    V::template abs_col_j<J>(cr, r);
    V::store(b1o, b1);
    V::store(sro, V::sign(r));
  }
}

// pass 1: s1[t] = mean_c |x| (MEAN1), s2[t] = mean_c |r| (TWO) for the frames of one image; with
// two planes it also keeps each channel's b1 = sign(x - t0) and sign(r) (rows of TB frames in b1r
// and sr) for pass 2, which then only scales and adds them
template <class V, bool TWO, bool MEAN1>
void memory_scales(const float* xb, size_t C, size_t T, size_t TB, const float* t0, const float* t1, float* s1,
                   float* s2, float* b1r, float* sr) {
  constexpr size_t L = V::L;
  for (size_t f0 = 0; f0 < T; f0 += L) {
    const size_t nl = T - f0 < L ? T - f0 : L;
    typename V::Col cx, cr;
    size_t c = 0;
    const float* xc = xb + f0;
    float *b1o = b1r + f0, *sro = sr + f0;
#define FBCK_MS_ONE(J) \
  memory_scale_one<V, TWO, MEAN1, J>(xc + (c + J) * T, nl, t0[c + J], t1[c + J], cx, cr, b1o + (c + J) * TB, sro + (c + J) * TB)
    for (; c + 4 <= C; c += 4) {
      FBCK_MS_ONE(0);
      FBCK_MS_ONE(1);
      FBCK_MS_ONE(2);
      FBCK_MS_ONE(3);
    }
    if (c < C) FBCK_MS_ONE(0);
    if (c + 1 < C) FBCK_MS_ONE(1);
    if (c + 2 < C) FBCK_MS_ONE(2);
#undef FBCK_MS_ONE
    if (MEAN1) V::mean_col(cx, C, s1 + f0, nl);
    if (TWO) V::mean_col(cr, C, s2 + f0, nl);
  }
}

// pass 2: v rows (zero halos hl and past T) of one image; BIN: the binarized activation (TWO: from
// pass 1's b1 and sign(r) rows)
template <class V, bool BIN, bool TWO, int S1>
void memory_values(const float* xb, size_t C, size_t T, size_t TB, size_t hl, size_t RL, const MemoryConsts& k,
                   const float* s1, float s1c, const float* s2, const float* b1r, const float* sr, float* v) {
  constexpr size_t L = V::L;
  const float *t0 = k.t0, *t2 = k.t2;
  for (size_t c = 0; c < C; ++c) {
    float* vr = v + c * RL;  // the halos are zero: memory_channel_major clears v once per call
    const float* xc = xb + c * T;
    for (size_t f0 = 0; f0 < T; f0 += L) {
      const size_t nl = T - f0 < L ? T - f0 : L;
      typename V::F val;
      if (BIN) {
        const typename V::F b1 = TWO ? V::load(b1r + c * TB + f0) : V::sign(V::sub(ld_n<V>(xc + f0, nl), V::set1(t0[c])));
        val = b1;
        if (S1 == static_cast<int>(S1Mode::mean_abs)) val = V::mul(b1, ld_n<V>(s1 + f0, nl));
        if (S1 == static_cast<int>(S1Mode::constant)) val = V::mul(b1, V::set1(s1c));
        if (TWO) val = V::add(val, V::mul(V::load(sr + c * TB + f0), ld_n<V>(s2 + f0, nl)));
        val = V::sub(val, V::set1(t2[c]));
      } else {
        val = ld_n<V>(xc + f0, nl);
      }
      (nl == L ? V::store(vr + hl + f0, val) : V::store_part(vr + hl + f0, val, nl));
    }
  }
}

// acc[j] = sum over taps t, in order, of w[t] * v[t * dil + j * L] (TAPS > 0: the tap count as a
// constant, so the loop unrolls; 0: taps at run time)
template <class V, int NV, int TAPS>
FBCK_OT_INLINE void memory_taps(const float* vr, const float* wc, size_t taps, size_t dil, typename V::F* acc) {
  constexpr size_t L = V::L;
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) acc[j] = V::set1(0.0f);
  const size_t n = TAPS > 0 ? static_cast<size_t>(TAPS) : taps;
#pragma GCC unroll 8
  for (size_t t = 0; t < n; ++t) {
    const typename V::F wt = V::set1(wc[t]);
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[j] = V::add(acc[j], V::mul(wt, V::load(vr + t * dil + j * L)));
  }
}

// pass 3: channels in order, NV blocks of V::L frames at a time (all of a short utterance, so a
// channel's constants are broadcast once): taps, y = acc * sw + bias, residual, post-ops, planes
template <class V, bool RES, int NV>
__attribute__((noinline)) void memory_outputs(const MemoryJob& m, size_t b, size_t f00,
                                              const MemoryConsts& k, const float* v, size_t RL,
                                              const PostView q) {
  constexpr size_t L = V::L;
  const size_t C = m.C, T = m.T, taps = m.left + m.right + 1, dil = m.dil;
  const float *const wsf = m.wsf, *const sw = k.sw, *const bias = k.bias, *const x = m.x;
  const float* const res = q.active ? m.res : nullptr;
  float* const yout = m.y;
  const typename V::F residual = V::set1(m.residual);
  size_t nl[NV];
  for (int j = 0; j < NV; ++j) {
    const size_t f0 = f00 + j * L;
    nl[j] = f0 >= T ? 0 : (T - f0 < L ? T - f0 : L);
  }
  alignas(ColPlanes<V>) unsigned char cpbuf[NV * sizeof(ColPlanes<V>)];
  ColPlanes<V>* cp = reinterpret_cast<ColPlanes<V>*>(cpbuf);
  for (int j = 0; j < NV; ++j) new (&cp[j]) ColPlanes<V>(q, b * T + f00 + j * L, nl[j]);
  for (size_t c = 0; c < C; ++c) {
    const float* vr = v + c * RL + f00;
    const float* wc = wsf + c * taps;
    typename V::F acc[NV];
    if (taps == 5) memory_taps<V, NV, 5>(vr, wc, 5, dil, acc);  // a D-FSMN's 2 + 1 + 2, unrolled
    else if (taps == 3) memory_taps<V, NV, 3>(vr, wc, 3, dil, acc);
    else memory_taps<V, NV, 0>(vr, wc, taps, dil, acc);
    const typename V::F swc = V::set1(sw[c]), bc = V::set1(bias[c]);
    const size_t at0 = (b * C + c) * T + f00;
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      if (!nl[j]) continue;
      const size_t at = at0 + j * L;
      typename V::F y = V::add(V::mul(acc[j], swc), bc);
      if (RES) y = V::add(V::mul(ld_n<V>(x + at, nl[j]), residual), y);
      if (q.active) y = post_value_col<V>(q, y, c, res ? res + at : nullptr, nl[j]);
      if (yout) (nl[j] == L ? V::store(yout + at, y) : V::store_part(yout + at, y, nl[j]));
      if (q.planes) cp[j].add(y, c);
    }
  }
  if (q.planes)
    for (int j = 0; j < NV; ++j)
      if (nl[j]) cp[j].finish();
}

template <class V, bool RES>
void memory_outputs_all(const MemoryJob& m, size_t b, const MemoryConsts& k, const float* v,
                        size_t RL, const PostView q) {
  constexpr size_t L = V::L;
  const size_t nb = (m.T + L - 1) / L;
  if (nb == 1) return memory_outputs<V, RES, 1>(m, b, 0, k, v, RL, q);
  if (nb == 2) return memory_outputs<V, RES, 2>(m, b, 0, k, v, RL, q);
  if (nb == 3) return memory_outputs<V, RES, 3>(m, b, 0, k, v, RL, q);
  for (size_t f00 = 0; f00 < m.T; f00 += 4 * L) memory_outputs<V, RES, 4>(m, b, f00, k, v, RL, q);
}

template <class V>
void memory_channel_major(const MemoryJob& m, const PostOps* post) {
  constexpr size_t L = V::L;
  const size_t C = m.C, T = m.T;
  const size_t nb = (T + L - 1) / L, TB = (nb <= 3 ? nb : (nb + 3) / 4 * 4) * L;
  const size_t hl = m.left * m.dil, hr = m.right * m.dil;
  const size_t RL = hl + TB + hr;  // one channel's padded v row (whole groups of frame blocks)
  const bool two = m.binary && m.planes == 2, mean1 = m.binary && m.s1_mode == S1Mode::mean_abs;
  const MemoryConsts k(m);
  Scratch<float> s1(TB), s2(TB), v(C * RL + L), b1r(two ? C * TB : 1), sr(two ? C * TB : 1);
  // the halos, once per call (pass 2 writes only frames): one vector store each where a vector
  // covers them (it may run into the frames, written later, or the next row's left halo; the
  // buffer has V::L floats of slack), else the whole buffer
  if (hl <= L && RL - hl - T <= L) {
    for (size_t c = 0; c < C; ++c) {
      V::store(v.get() + c * RL, V::set1(0.0f));
      V::store(v.get() + c * RL + hl + T, V::set1(0.0f));
    }
  } else {
    std::memset(v.get(), 0, (C * RL + L) * sizeof(float));
  }
  const PostParams qp(post, C, false);  // column orientation
  const PostView q = qp;
  q.clear_rows(0, m.B * T);
  for (size_t b = 0; b < m.B; ++b) {
    const float* xb = m.x + b * C * T;
    float *b1p = b1r.get(), *srp = sr.get();
    if (two && mean1) memory_scales<V, true, true>(xb, C, T, TB, k.t0, k.t1, s1.get(), s2.get(), b1p, srp);
    else if (two) memory_scales<V, true, false>(xb, C, T, TB, k.t0, k.t1, s1.get(), s2.get(), b1p, srp);
    else if (mean1) memory_scales<V, false, true>(xb, C, T, TB, k.t0, k.t1, s1.get(), s2.get(), b1p, srp);
    auto values = [&](auto fn) { fn(xb, C, T, TB, hl, RL, k, s1.get(), m.s1_const, s2.get(), b1p, srp, v.get()); };
    if (!m.binary) values(memory_values<V, false, false, 0>);
    else if (two) {
      if (m.s1_mode == S1Mode::none) values(memory_values<V, true, true, 0>);
      else if (m.s1_mode == S1Mode::mean_abs) values(memory_values<V, true, true, 1>);
      else values(memory_values<V, true, true, 2>);
    } else {
      if (m.s1_mode == S1Mode::none) values(memory_values<V, true, false, 0>);
      else if (m.s1_mode == S1Mode::mean_abs) values(memory_values<V, true, false, 1>);
      else values(memory_values<V, true, false, 2>);
    }
    if (m.residual != 0.0f) memory_outputs_all<V, true>(m, b, k, v.get(), RL, q);
    else memory_outputs_all<V, false>(m, b, k, v.get(), RL, q);
  }
}

// Channel-major frames (channel c's T frames at src + c * sc) to frame rows dst[t * CP + c].
template <size_t T>
void frames_to_rows(const float* src, size_t sc, size_t C, size_t CP, float* dst) {
  for (size_t c = 0; c < C; ++c, src += sc)
#pragma GCC unroll 8
    for (size_t t = 0; t < T; ++t) dst[t * CP + c] = src[t];
}

// The tap sum of memory_frames for one vector of channels: sum over taps j, in order, of
// w[j * ws] * v[j * vs] (TAPS > 0: the count as a constant, so the loop unrolls).
template <class V, int TAPS>
FBCK_OT_INLINE typename V::F frame_taps(const float* w, size_t ws, const float* v, size_t vs, size_t taps) {
  typename V::F acc = V::set1(0.0f);
  const size_t n = TAPS > 0 ? static_cast<size_t>(TAPS) : taps;
#pragma GCC unroll 8
  for (size_t j = 0; j < n; ++j) acc = V::add(acc, V::mul(V::load(w + j * ws), V::load(v + j * vs)));
  return acc;
}

// A few frames (a stream's window, T < V::L): time lanes would sit idle, so the passes run over
// channels instead, on frame rows (the window transposed once, channels padded to whole vectors):
// per frame the scales (canonical row sums, as RowPlanes) and the binarized values, then per
// wanted frame [out_lo, out_hi) the taps, the output step, the post-ops (row orientation) and
// the next layer's planes. The same float operations per element as memory_channel_major.
template <class V>
void memory_frames(const MemoryJob& m, const float* x, float* y, const float* res, const PostOps* post,
                   ptrdiff_t sb, ptrdiff_t sc, ptrdiff_t st) {
  constexpr size_t L = V::L;
  const size_t B = m.B, C = m.C, T = m.T, taps = m.left + m.right + 1, dil = m.dil;
  const size_t CP = (C + L - 1) / L * L, hl = m.left * dil, TV = hl + T + m.right * dil;
  const size_t lo = m.out_lo < T ? m.out_lo : T, hi = m.out_hi < T ? m.out_hi : T;
  const bool two = m.binary && m.planes == 2, mean1 = m.binary && m.s1_mode == S1Mode::mean_abs;
  // per-channel constants over CP lanes (identity values past C and where the job has none) and
  // the taps as [tap][CP]; frame rows of x (and res), the v rows with zero halo frames
  const size_t WS = memory_taps_stride(C);  // the tap rows' stride (>= CP)
  const bool own_res = res && res != x;
  // the taps as the caller prepared them, else laid out here (the kernel bindings' calls)
  std::vector<float> own_taps;
  if (!m.taps_t) own_taps = m.ws ? memory_taps_by_tap(m.ws, C, taps) : memory_taps_by_tap(m.wsf, C, taps);
  const float* const wtaps = m.taps_t ? m.taps_t : own_taps.data();
  Scratch<float> xt(T * CP), rt(own_res ? T * CP : 1), v(TV * CP), yt(CP);
  const MemoryConsts k(m, CP);
  const float *const t0 = k.t0, *const t1 = k.t1, *const t2 = k.t2, *const sw = k.sw, *const bias = k.bias;
  // zeros where nothing is written: the halo frames of v, the channels past C of the frame rows
  std::fill(v.get(), v.get() + hl * CP, 0.0f);
  std::fill(v.get() + (hl + T) * CP, v.get() + TV * CP, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    std::fill(xt.get() + t * CP + C, xt.get() + (t + 1) * CP, 0.0f);
    if (own_res) std::fill(rt.get() + t * CP + C, rt.get() + (t + 1) * CP, 0.0f);
  }
  const PostParams qp(post, C);  // row orientation
  const PostView q = qp;
  q.clear_rows(0, B * T);
  const typename V::F residual = V::set1(m.residual);
  const float* rows_res = own_res ? rt.get() : xt.get();  // a residual of the input itself: x
  for (size_t b = 0; b < B; ++b) {
    auto rows = [&](const float* src, float* dst) {
      const float* sbp = src + b * sb;
      if (st == 1) {  // channel-major: each channel's frames contiguous
        switch (T) {  // a constant frame count: one load and store per value, no inner loop
          case 1: return frames_to_rows<1>(sbp, sc, C, CP, dst);
          case 2: return frames_to_rows<2>(sbp, sc, C, CP, dst);
          case 3: return frames_to_rows<3>(sbp, sc, C, CP, dst);
          case 4: return frames_to_rows<4>(sbp, sc, C, CP, dst);
          case 5: return frames_to_rows<5>(sbp, sc, C, CP, dst);
          case 6: return frames_to_rows<6>(sbp, sc, C, CP, dst);
          case 7: return frames_to_rows<7>(sbp, sc, C, CP, dst);
          case 8: return frames_to_rows<8>(sbp, sc, C, CP, dst);
          default:
            for (size_t c = 0; c < C; ++c, sbp += sc)
              for (size_t t = 0; t < T; ++t) dst[t * CP + c] = sbp[t];
        }
        return;
      }
      for (size_t t = 0; t < T; ++t)
        for (size_t c = 0; c < C; ++c) dst[t * CP + c] = sbp[c * sc + t * st];
    };
    rows(x, xt.get());
    if (own_res) rows(res, rt.get());
    for (size_t t = 0; t < T; ++t) {
      const float* xr = xt.get() + t * CP;
      float* vr = v.get() + (hl + t) * CP;
      if (!m.binary) {
        std::memcpy(vr, xr, CP * sizeof(float));
        continue;
      }
      float s1 = m.s1_const, s2 = 0.0f;
      if (mean1 || two) {
        alignas(32) double ax[4] = {0, 0, 0, 0}, ar[4] = {0, 0, 0, 0};
        for (size_t n0 = 0; n0 < C; n0 += L) {
          const size_t nv = C - n0 < L ? C - n0 : L;
          const typename V::F xv = V::load(xr + n0);
          if (mean1) V::abs_row(ax, xv, n0, nv);
          if (two) {
            const typename V::F b1 = V::sign(V::sub(xv, V::load(t0 + n0)));
            V::abs_row(ar, V::sub(V::sub(xv, b1), V::load(t1 + n0)), n0, nv);
          }
        }
        if (mean1) s1 = static_cast<float>(((ax[0] + ax[1]) + (ax[2] + ax[3])) / static_cast<double>(C));
        if (two) s2 = static_cast<float>(((ar[0] + ar[1]) + (ar[2] + ar[3])) / static_cast<double>(C));
      }
      for (size_t n0 = 0; n0 < CP; n0 += L) {
        const typename V::F xv = V::load(xr + n0);
        const typename V::F b1 = V::sign(V::sub(xv, V::load(t0 + n0)));
        typename V::F val = m.s1_mode == S1Mode::none ? b1 : V::mul(b1, V::set1(s1));
        if (two) {
          const typename V::F r = V::sub(V::sub(xv, b1), V::load(t1 + n0));
          val = V::add(val, V::mul(V::sign(r), V::set1(s2)));
        }
        V::store(vr + n0, V::sub(val, V::load(t2 + n0)));
      }
    }
    for (size_t t = lo; t < hi; ++t) {
      RowPlanes<V> rp(q, b * T + t);
      for (size_t n0 = 0; n0 < C; n0 += L) {
        const size_t nv = C - n0 < L ? C - n0 : L;
        const float *wj = wtaps + n0, *vj = v.get() + t * CP + n0;
        const typename V::F acc = taps == 5   ? frame_taps<V, 5>(wj, WS, vj, dil * CP, 5)
                                  : taps == 3 ? frame_taps<V, 3>(wj, WS, vj, dil * CP, 3)
                                              : frame_taps<V, 0>(wj, WS, vj, dil * CP, taps);
        typename V::F yv = V::add(V::mul(acc, V::load(sw + n0)), V::load(bias + n0));
        if (m.residual != 0.0f) yv = V::add(V::mul(V::load(xt.get() + t * CP + n0), residual), yv);
        if (q.active) yv = post_value_row<V>(q, yv, n0, res ? rows_res + t * CP + n0 : nullptr, nv);
        V::store(yt.get() + n0, yv);
        if (q.planes) rp.add(yv, n0, nv);
      }
      if (q.planes) rp.finish();
      if (y)
        for (size_t c = 0; c < C; ++c) y[b * sb + c * sc + t * st] = yt[c];
    }
  }
}

// Channel-major copies of a strided (B, C, T) buffer and back.
inline void gather_cm(const float* x, size_t B, size_t C, size_t T, ptrdiff_t sb, ptrdiff_t sc,
                      ptrdiff_t st, float* out) {
  for (size_t b = 0; b < B; ++b)
    for (size_t c = 0; c < C; ++c)
      for (size_t t = 0; t < T; ++t)
        out[(b * C + c) * T + t] = x[static_cast<ptrdiff_t>(b) * sb + static_cast<ptrdiff_t>(c) * sc +
                                     static_cast<ptrdiff_t>(t) * st];
}
inline void scatter_cm(const float* in, size_t B, size_t C, size_t T, ptrdiff_t sb, ptrdiff_t sc,
                       ptrdiff_t st, float* y) {
  for (size_t b = 0; b < B; ++b)
    for (size_t c = 0; c < C; ++c)
      for (size_t t = 0; t < T; ++t)
        y[static_cast<ptrdiff_t>(b) * sb + static_cast<ptrdiff_t>(c) * sc + static_cast<ptrdiff_t>(t) * st] =
            in[(b * C + c) * T + t];
}

// Whether a window of T frames, of which the caller reads [out_lo, out_hi), runs frame-major
// (memory_frames): fewer frames than lanes, or fewer read frames than lanes (a stream's window is
// mostly context: the channel-major passes would compute every frame of it).
template <class V>
constexpr bool memory_runs_frames(size_t T, size_t out_lo, size_t out_hi) {
  const size_t lo = out_lo < T ? out_lo : T, hi = out_hi < T ? out_hi : T;
  return T < V::L || hi - lo < V::L;
}

// Runs the job on x/y/res with any strides: in place when channel-major and contiguous.
template <class V>
void memory_strided(MemoryJob m, const float* x, float* y, const PostOps* post, ptrdiff_t sb,
                    ptrdiff_t sc, ptrdiff_t st) {
  const size_t B = m.B, C = m.C, T = m.T;
  if (memory_runs_frames<V>(T, m.out_lo, m.out_hi)) return memory_frames<V>(m, x, y, post ? post->res : nullptr, post, sb, sc, st);
  const bool cm = st == 1 && sc == static_cast<ptrdiff_t>(T) && sb == static_cast<ptrdiff_t>(C * T);
  if (cm) {
    m.x = x, m.y = y, m.res = post ? post->res : nullptr;
    memory_channel_major<V>(m, post);
    return;
  }
  const size_t n = B * C * T;
  const bool has_res = post && post->res;
  Scratch<float> xc(n), yc(y ? n : 1), rc(has_res ? n : 1);
  gather_cm(x, B, C, T, sb, sc, st, xc.get());
  if (has_res) gather_cm(post->res, B, C, T, sb, sc, st, rc.get());
  m.x = xc.get(), m.y = y ? yc.get() : nullptr, m.res = has_res ? rc.get() : nullptr;
  memory_channel_major<V>(m, post);
  if (y) scatter_cm(yc.get(), B, C, T, sb, sc, st, y);
}

template <class V>
void binary_memory_v(const BinaryMemoryArgs& a) {
  const size_t taps = a.left + a.right + 1;
  const bool frames = memory_runs_frames<V>(a.T, a.out_lo, a.out_hi);  // reads taps_t or int8 taps
  Scratch<float> wsf(frames ? 1 : a.C * taps);
  if (!frames)
    for (size_t i = 0; i < a.C * taps; ++i) wsf[i] = static_cast<float>(a.ws[i]);
  MemoryJob m{nullptr, nullptr,   nullptr, a.B,  a.C,          a.T,   a.left,   a.right,
              a.dilation, frames ? nullptr : wsf.get(), frames ? a.ws : nullptr, a.taps_t, a.sw, a.bias,
              a.residual, true, a.t0, a.t1, a.t2, a.planes, a.s1_mode, a.s1_const, a.out_lo, a.out_hi};
  memory_strided<V>(m, a.x, a.y, a.post, a.stride_b, a.stride_c, a.stride_t);
}

template <class V>
void memory_f32_v(const MemoryF32Args& a) {
  MemoryJob m{nullptr,    nullptr, nullptr, a.B,        a.C,   a.T,     a.left,  a.right,
              a.dilation, a.w,     nullptr, a.taps_t, nullptr, a.bias, a.residual, false, nullptr, nullptr,
              nullptr,    1,       S1Mode::none, 1.0f, a.out_lo, a.out_hi};
  memory_strided<V>(m, a.x, a.y, a.post, a.stride_b, a.stride_c, a.stride_t);
}

}  // namespace
}  // namespace fbck
