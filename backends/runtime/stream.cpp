// See stream.h.
#include "stream.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fbck::rt {
namespace {

// Copy frames [a, b) of `src` (dims d, time axis t) into dst (b - a frames), zeros outside [0, T).
void gather(const float* src, const Dims& d, int t, ptrdiff_t a, ptrdiff_t b, float* dst) {
  const size_t outer = prod(d, 0, t), T = d[t], inner = prod(d, t + 1), w = b - a;
  for (size_t o = 0; o < outer; ++o)
    for (ptrdiff_t f = a; f < b; ++f) {
      float* to = dst + (o * w + (f - a)) * inner;
      if (f < 0 || f >= (ptrdiff_t)T)
        std::fill(to, to + inner, 0.0f);
      else
        std::memcpy(to, src + (o * T + f) * inner, sizeof(float) * inner);
    }
}

// Copy window frames [from, from + n) of `src` (dims wd: the window) to frames [at, at + n) of dst.
void scatter(const float* src, const Dims& wd, int t, size_t from, size_t n, float* dst, size_t T, size_t at) {
  const size_t outer = prod(wd, 0, t), w = wd[t], inner = prod(wd, t + 1);
  for (size_t o = 0; o < outer; ++o)
    std::memcpy(dst + (o * T + at) * inner, src + (o * w + from) * inner, sizeof(float) * n * inner);
}

}  // namespace

Stream::Stream(const Program& p) : p_(p) {
  const int nv = static_cast<int>(p.shapes_.size());
  bufs_.resize(nv);
  for (int v = 0; v < nv; ++v)
    if (p.alias_[v] == v) bufs_[v].assign(prod(p.shapes_[v]), 0.0f);
  avail_.assign(nv, 0);
  done_.assign(p.ops_.size(), 0);
  in_win_.resize(p.ops_.size());
  for (size_t i = 0; i < p.ops_.size(); ++i) in_win_[i].resize(p.ops_[i]->in.size());
  out_win_.resize(p.ops_.size());
}

size_t Stream::push(const float* frames, size_t n) {
  if (finished_) throw std::logic_error("the stream is finished");
  const int in = p_.alias_[p_.input_];
  const Dims d = p_.with_batch(p_.input_, 1);
  const int t = p_.time_axis_[p_.input_];
  if (frames_in_ + n > d[t])
    throw std::invalid_argument("too many frames: the model takes " + std::to_string(d[t]) +
                                " input frames per utterance");
  Dims wd = d;
  wd[t] = n;
  scatter(frames, wd, t, 0, n, bufs_[in].data(), d[t], frames_in_);
  frames_in_ += n;
  avail_[in] = frames_in_;
  const size_t before = output_frames();
  advance();
  return output_frames() - before;
}

void Stream::finish() {
  if (finished_) return;
  const Dims d = p_.with_batch(p_.input_, 1);
  const int t = p_.time_axis_[p_.input_];
  if (frames_in_ != d[t])
    throw std::invalid_argument("the stream ended after " + std::to_string(frames_in_) +
                                " frames; the model takes " + std::to_string(d[t]));
  finished_ = true;
  advance();
}

void Stream::advance() {
  for (size_t i = 0; i < p_.ops_.size(); ++i) {
    if (p_.time_maps_[i].out_axis < 0)
      run_terminal(i);
    else
      run_window(i);
  }
}

// An op whose output has no time axis: once, on the whole utterance, at the end.
void Stream::run_terminal(size_t i) {
  const Op& op = *p_.ops_[i];
  if (!finished_ || done_[i]) return;
  std::vector<const float*> ins;
  for (int v : op.in) ins.push_back(bufs_[p_.alias_[v]].data());
  Args a;
  a.k = p_.kern_, a.in = ins.data(), a.in_dims = p_.in_dims_[i].data(), a.out = bufs_[op.out].data();
  a.out_dims = &p_.out_dims_[i];
  a.time_axis = p_.time_axis_[op.in[0]];
  op.run(a);
  done_[i] = 1;
  avail_[op.out] = 1;
}

// An op along time: the output frames its inputs allow, on a window of its inputs.
void Stream::run_window(size_t i) {
  const Op& op = *p_.ops_[i];
  const TimeMap& m = p_.time_maps_[i];
  const int t_in = p_.time_axis_[op.in[0]], t_out = m.out_axis;
  const Dims& xd = p_.in_dims_[i][0];
  const Dims& od = p_.out_dims_[i];
  const size_t T_in = xd[t_in], T_out = od[t_out];
  size_t have = SIZE_MAX;
  for (int v : op.in) have = std::min(have, avail_[p_.alias_[v]]);
  size_t ready;
  if (finished_ || have == T_in) {
    ready = T_out;
  } else {
    const ptrdiff_t num = (ptrdiff_t)have - 1 - m.hi;
    ready = num < 0 ? 0 : std::min(T_out, (size_t)(num / (ptrdiff_t)m.stride) + 1);
  }
  if (ready <= done_[i]) return;
  const size_t a = done_[i], b = ready;
  // the input window, zero-filled outside the utterance (or clipped for ops that pad themselves)
  ptrdiff_t wa = (ptrdiff_t)(a * m.stride) - m.lo, wb = (ptrdiff_t)((b - 1) * m.stride) + m.hi + 1;
  if (m.pads_itself) {
    wa = std::max<ptrdiff_t>(wa, 0);
    wb = std::min<ptrdiff_t>(wb, (ptrdiff_t)T_in);
  }
  thread_local std::vector<const float*> ins;
  thread_local std::vector<Dims> dims;
  ins.resize(op.in.size());
  dims.resize(op.in.size());
  for (size_t j = 0; j < op.in.size(); ++j) {
    const Dims& full = p_.in_dims_[i][j];
    const int tj = p_.time_axis_[op.in[j]];
    dims[j] = full;
    dims[j][tj] = wb - wa;
    std::vector<float>& w = in_win_[i][j];
    w.resize(prod(dims[j]));
    gather(bufs_[p_.alias_[op.in[j]]].data(), full, tj, wa, wb, w.data());
    ins[j] = w.data();
  }
  Dims owd = od;
  owd[t_out] = m.pads_itself ? (size_t)(wb - wa) : b - a;
  std::vector<float>& y = out_win_[i];
  y.resize(prod(owd));
  Args args;
  args.k = p_.kern_, args.in = ins.data(), args.in_dims = dims.data(), args.out = y.data(), args.out_dims = &owd;
  args.time_axis = t_in;
  if (m.window) {
    args.window.on = true;
    args.window.valid_lo = std::max<ptrdiff_t>(0, -wa);
    args.window.valid_hi = std::min<ptrdiff_t>(wb, (ptrdiff_t)T_in) - wa;
  }
  op.run(args);
  const size_t from = m.pads_itself ? a - wa : 0;
  scatter(y.data(), owd, t_out, from, b - a, bufs_[op.out].data(), T_out, a);
  done_[i] = b;
  avail_[op.out] = b;
}

}  // namespace fbck::rt
