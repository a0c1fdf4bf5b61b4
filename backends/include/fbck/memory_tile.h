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
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

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
  const float* wsf;  // [C, taps] float taps
  const float* sw;
  const float* bias;
  float residual;
  bool binary, fp_bias_only;  // FP memory: y = bias ? acc + bias : acc
  // binary activation
  const float *t0, *t1, *t2;
  int planes;
  S1Mode s1_mode;
  float s1_const;
};

template <class V>
void memory_channel_major(const MemoryJob& m, const PostOps* post) {
  constexpr size_t L = V::L;
  const size_t C = m.C, T = m.T, taps = m.left + m.right + 1;
  const size_t hl = m.left * m.dil, hr = m.right * m.dil, TB = (T + L - 1) / L * L;
  const size_t RL = hl + TB + hr;  // one channel's padded v row
  const bool two = m.binary && m.planes == 2, mean1 = m.binary && m.s1_mode == S1Mode::mean_abs;
  Scratch<float> s1(TB), s2(TB), v(C * RL);
  const PostParams q(post, C);
  q.clear_rows(0, m.B * T);
  for (size_t b = 0; b < m.B; ++b) {
    const float* xb = m.x + b * C * T;
    // pass 1: per-frame scales
    if (two || mean1)
      for (size_t t0 = 0; t0 < T; t0 += L) {
        const size_t nl = T - t0 < L ? T - t0 : L;
        typename V::Col cx, cr;
        for (size_t c = 0; c < C; ++c) {
          const float* xc = xb + c * T + t0;
          const typename V::F xv = nl == L ? V::load(xc) : V::load_part(xc, nl);
          if (mean1) V::abs_col(cx, c, xv);
          if (two) {
            const typename V::F d = m.t0 ? V::sub(xv, V::set1(m.t0[c])) : xv;
            typename V::F r = V::sub(xv, V::sign(d));
            if (m.t1) r = V::sub(r, V::set1(m.t1[c]));
            V::abs_col(cr, c, r);
          }
        }
        if (mean1) V::mean_col(cx, C, s1.get() + t0, nl);
        if (two) V::mean_col(cr, C, s2.get() + t0, nl);
      }
    // pass 2: v rows with zero halos
    const typename V::F zero = V::set1(0.0f);
    for (size_t c = 0; c < C; ++c) {
      float* vr = v.get() + c * RL;
      for (size_t i = 0; i < hl; ++i) vr[i] = 0.0f;
      for (size_t i = hl + T; i < RL; ++i) vr[i] = 0.0f;
      const float* xc = xb + c * T;
      for (size_t t0 = 0; t0 < T; t0 += L) {
        const size_t nl = T - t0 < L ? T - t0 : L;
        const typename V::F xv = nl == L ? V::load(xc + t0) : V::load_part(xc + t0, nl);
        typename V::F val = xv;
        if (m.binary) {
          const typename V::F d = m.t0 ? V::sub(xv, V::set1(m.t0[c])) : xv;
          const typename V::F b1 = V::sign(d);
          val = b1;
          if (m.s1_mode == S1Mode::mean_abs)
            val = V::mul(b1, nl == L ? V::load(s1.get() + t0) : V::load_part(s1.get() + t0, nl));
          else if (m.s1_mode == S1Mode::constant)
            val = V::mul(b1, V::set1(m.s1_const));
          if (two) {
            typename V::F r = V::sub(xv, b1);
            if (m.t1) r = V::sub(r, V::set1(m.t1[c]));
            const typename V::F s2v = nl == L ? V::load(s2.get() + t0) : V::load_part(s2.get() + t0, nl);
            val = V::add(val, V::mul(V::sign(r), s2v));
          }
          if (m.t2) val = V::sub(val, V::set1(m.t2[c]));
        }
        (nl == L ? V::store(vr + hl + t0, val) : V::store_part(vr + hl + t0, val, nl));
      }
    }
    (void)zero;
    // pass 3: taps, output step, post-ops, planes
    for (size_t t0 = 0; t0 < T; t0 += L) {
      const size_t nl = T - t0 < L ? T - t0 : L;
      ColPlanes<V> cp(q, b * T + t0, nl);
      for (size_t c = 0; c < C; ++c) {
        const float* vr = v.get() + c * RL + t0;
        const float* wc = m.wsf + c * taps;
        typename V::F acc = V::set1(0.0f);
        for (size_t k = 0; k < taps; ++k) acc = V::add(acc, V::mul(V::set1(wc[k]), V::load(vr + k * m.dil)));
        typename V::F y;
        if (m.fp_bias_only) {
          y = m.bias ? V::add(acc, V::set1(m.bias[c])) : acc;
        } else {
          y = m.sw ? V::mul(acc, V::set1(m.sw[c])) : acc;
          y = V::add(y, V::set1(m.bias ? m.bias[c] : 0.0f));
        }
        const size_t at = (b * C + c) * T + t0;
        if (m.residual != 0.0f) {
          const typename V::F xv = nl == L ? V::load(m.x + at) : V::load_part(m.x + at, nl);
          y = V::add(V::mul(xv, V::set1(m.residual)), y);
        }
        if (q.active()) y = post_value_col<V>(q, y, c, m.res ? m.res + at : nullptr, nl);
        if (m.y) (nl == L ? V::store(m.y + at, y) : V::store_part(m.y + at, y, nl));
        if (q.planes) cp.add(y, c);
      }
      if (q.planes) cp.finish();
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

// Runs the job on x/y/res with any strides: in place when channel-major and contiguous.
template <class V>
void memory_strided(MemoryJob m, const float* x, float* y, const PostOps* post, ptrdiff_t sb,
                    ptrdiff_t sc, ptrdiff_t st) {
  const size_t B = m.B, C = m.C, T = m.T;
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
  Scratch<float> wsf(a.C * taps);
  for (size_t i = 0; i < a.C * taps; ++i) wsf[i] = static_cast<float>(a.ws[i]);
  MemoryJob m{nullptr, nullptr, nullptr, a.B,  a.C,       a.T,      a.left,    a.right,     a.dilation,
              wsf.get(), a.sw,  a.bias,  a.residual, true, false, a.t0, a.t1, a.t2, a.planes,
              a.s1_mode, a.s1_const};
  memory_strided<V>(m, a.x, a.y, a.post, a.stride_b, a.stride_c, a.stride_t);
}

template <class V>
void memory_f32_v(const MemoryF32Args& a) {
  MemoryJob m{nullptr, nullptr, nullptr, a.B,     a.C,     a.T,     a.left,    a.right,
              a.dilation, a.w, nullptr,  a.bias,  a.residual, false, true, nullptr, nullptr,
              nullptr, 1, S1Mode::none, 1.0f};
  memory_strided<V>(m, a.x, a.y, a.post, a.stride_b, a.stride_c, a.stride_t);
}

}  // namespace
}  // namespace fbck
