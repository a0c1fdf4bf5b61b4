// See stream.h.
#include "stream.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fbck::rt {
namespace {

// `rows` rows of n floats from src (row stride ss) to dst (row stride ds). A stream's windows are
// a few frames per row (time innermost) over hundreds of rows: with n a constant the row is a
// couple of moves, where a loop of unknown length (or memcpy's call) costs more than the copy.
// Straight from src to dst: a bounce through a stack copy made its overlapping stores fail
// store-to-load forwarding (a stall per row, a third of a stream's copy time at 7 floats).
template <size_t N>
void copy_rows_n(float* dst, size_t ds, const float* src, size_t ss, size_t rows) {
  for (size_t r = 0; r < rows; ++r, dst += ds, src += ss) std::memcpy(dst, src, N * sizeof(float));
}

void copy_rows(float* dst, size_t ds, const float* src, size_t ss, size_t rows, size_t n) {
  if (ds == n && ss == n) {  // both contiguous: one copy
    std::memcpy(dst, src, sizeof(float) * rows * n);
    return;
  }
  switch (n) {
    case 0: return;
    case 1: return copy_rows_n<1>(dst, ds, src, ss, rows);
    case 2: return copy_rows_n<2>(dst, ds, src, ss, rows);
    case 3: return copy_rows_n<3>(dst, ds, src, ss, rows);
    case 4: return copy_rows_n<4>(dst, ds, src, ss, rows);
    case 5: return copy_rows_n<5>(dst, ds, src, ss, rows);
    case 6: return copy_rows_n<6>(dst, ds, src, ss, rows);
    case 7: return copy_rows_n<7>(dst, ds, src, ss, rows);
    case 8: return copy_rows_n<8>(dst, ds, src, ss, rows);
    default:
      for (size_t r = 0; r < rows; ++r) std::memcpy(dst + r * ds, src + r * ss, sizeof(float) * n);
  }
}

// `rows` rows of n zeros at dst (row stride ds), constant-length like copy_rows (a memset call per
// row of one or two padding frames cost more than the zeros).
template <size_t N>
void zero_rows_n(float* dst, size_t ds, size_t rows) {
  for (size_t r = 0; r < rows; ++r, dst += ds) std::memset(dst, 0, N * sizeof(float));
}

void zero_rows(float* dst, size_t ds, size_t rows, size_t n) {
  switch (n) {
    case 0: return;
    case 1: return zero_rows_n<1>(dst, ds, rows);
    case 2: return zero_rows_n<2>(dst, ds, rows);
    case 3: return zero_rows_n<3>(dst, ds, rows);
    case 4: return zero_rows_n<4>(dst, ds, rows);
    default:
      for (size_t r = 0; r < rows; ++r) std::memset(dst + r * ds, 0, sizeof(float) * n);
  }
}

// Copy frames [a, b) of `src` (dims d, time axis t) into dst (b - a frames), zeros outside [0, T):
// per outer row the real frames (one strided row copy over all rows) and zeros around them.
void gather(const float* src, const Dims& d, int t, ptrdiff_t a, ptrdiff_t b, float* dst) {
  const size_t outer = prod(d, 0, t), T = d[t], inner = prod(d, t + 1), w = b - a;
  const ptrdiff_t lo = std::max<ptrdiff_t>(a, 0), hi = std::min<ptrdiff_t>(b, (ptrdiff_t)T);
  const size_t before = (lo - a) * inner, real = hi > lo ? (hi - lo) * inner : 0, row = w * inner;
  zero_rows(dst, row, outer, before);
  zero_rows(dst + before + real, row, outer, row - before - real);
  if (real) copy_rows(dst + before, row, src + lo * inner, T * inner, outer, real);
}

// Copy window frames [from, from + n) of `src` (dims wd: the window) to frames [at, at + n) of dst.
void scatter(const float* src, const Dims& wd, int t, size_t from, size_t n, float* dst, size_t T, size_t at) {
  const size_t outer = prod(wd, 0, t), w = wd[t], inner = prod(wd, t + 1);
  copy_rows(dst + at * inner, T * inner, src + from * inner, w * inner, outer, n * inner);
}

}  // namespace

Stream::Stream(const Program& p) : p_(p), input_dims_(p.with_batch(p.input_, 1)) {
  const int nv = static_cast<int>(p.shapes_.size());
  bufs_.resize(nv);
  for (int v = 0; v < nv; ++v)
    if (p.alias_[v] == v) bufs_[v].assign(prod(p.shapes_[v]), 0.0f);
  avail_.assign(nv, 0);
  done_.assign(p.ops_.size(), 0);
  in_win_.resize(p.ops_.size());
  for (size_t i = 0; i < p.ops_.size(); ++i) in_win_[i].resize(p.ops_[i]->in.size());
  out_win_.resize(p.ops_.size());
  fresh_.resize(nv);
}

void Stream::reset() {
  // every value's frames are written before they are read (advance() follows what is available),
  // so only the bookkeeping restarts; the output is cleared as a fresh stream's is
  std::fill(avail_.begin(), avail_.end(), 0);
  std::fill(done_.begin(), done_.end(), 0);
  std::fill(fresh_.begin(), fresh_.end(), Fresh{});
  auto& out = bufs_[p_.alias_[p_.output_]];
  std::fill(out.begin(), out.end(), 0.0f);
  frames_in_ = 0;
  finished_ = false;
}

size_t Stream::push(const float* frames, size_t n) {
  if (finished_) throw std::logic_error("the stream is finished");
  const int in = p_.alias_[p_.input_];
  const Dims& d = input_dims_;
  const int t = p_.time_axis_[p_.input_];
  if (frames_in_ + n > d[t])
    throw std::invalid_argument("too many frames: the model takes " + std::to_string(d[t]) +
                                " input frames per utterance");
  thread_local Dims wd;  // reused: a push allocates nothing
  wd = d;
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
  const Dims& d = input_dims_;
  const int t = p_.time_axis_[p_.input_];
  if (frames_in_ != d[t])
    throw std::invalid_argument("the stream ended after " + std::to_string(frames_in_) +
                                " frames; the model takes " + std::to_string(d[t]));
  finished_ = true;
  advance();
}

// How many output frames op i can produce from `have` input frames.
size_t Stream::ready_frames(size_t i, size_t have) const {
  const TimeMap& m = p_.time_maps_[i];
  const size_t T_in = p_.in_dims_[i][0][p_.time_axis_[p_.ops_[i]->in[0]]], T_out = p_.out_dims_[i][m.out_axis];
  if (finished_ || have == T_in) return T_out;
  const ptrdiff_t num = (ptrdiff_t)have - 1 - m.hi;
  return num < 0 ? 0 : std::min(T_out, (size_t)(num / (ptrdiff_t)m.stride) + 1);
}

// Whether running the ops now would give a value that leaves the streamed part of the program (the
// output, or the input of an op that waits for the whole utterance) a new frame. If not, the frames
// wait: a strided front end then runs once per hop of the network instead of once per frame, and
// no output frame comes later than it could.
bool Stream::worth_running() const {
  if (finished_) return true;
  thread_local std::vector<size_t> sim;
  sim = avail_;
  bool gains = false;
  for (size_t i = 0; i < p_.ops_.size(); ++i) {
    const Op& op = *p_.ops_[i];
    if (p_.time_maps_[i].out_axis < 0) {
      for (int v : op.in) gains = gains || sim[p_.alias_[v]] > avail_[p_.alias_[v]];
      continue;
    }
    size_t have = SIZE_MAX;
    for (int v : op.in) have = std::min(have, sim[p_.alias_[v]]);
    sim[op.out] = std::max(sim[op.out], ready_frames(i, have));
  }
  const int out = p_.alias_[p_.output_];
  return gains || sim[out] > avail_[out];
}

void Stream::advance() {
  if (!worth_running()) return;
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
  const size_t ready = ready_frames(i, have);
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
    // the same value twice (a memory block's input and its residual): one window, one pointer
    // (which a kernel may also recognise)
    size_t same = 0;
    while (same < j && !(p_.alias_[op.in[same]] == p_.alias_[op.in[j]] && dims[same] == dims[j])) ++same;
    if (same < j) {
      ins[j] = ins[same];
      continue;
    }
    // the frames its producer just wrote, in the same layout: its output window, no copy
    const Fresh& f = fresh_[p_.alias_[op.in[j]]];
    if (f.data && (ptrdiff_t)f.a == wa && (ptrdiff_t)f.b == wb && f.outer == prod(full, 0, tj) &&
        f.inner == prod(full, tj + 1)) {
      ins[j] = f.data;
      continue;
    }
    std::vector<float>& w = in_win_[i][j];
    if (w.size() < prod(dims[j])) w.resize(prod(dims[j]));  // grows only: windows vary by a frame
    gather(bufs_[p_.alias_[op.in[j]]].data(), full, tj, wa, wb, w.data());
    ins[j] = w.data();
  }
  thread_local Dims owd;  // reused, as the input dims above
  owd = od;
  owd[t_out] = m.pads_itself ? (size_t)(wb - wa) : b - a;
  std::vector<float>& y = out_win_[i];
  if (y.size() < prod(owd)) y.resize(prod(owd));
  Args args;
  args.k = p_.kern_, args.in = ins.data(), args.in_dims = dims.data(), args.out = y.data(), args.out_dims = &owd;
  args.time_axis = t_in;
  if (m.window) {
    args.window.on = true;
    args.window.valid_lo = std::max<ptrdiff_t>(0, -wa);
    args.window.valid_hi = std::min<ptrdiff_t>(wb, (ptrdiff_t)T_in) - wa;
  }
  const size_t from = m.pads_itself ? a - wa : 0;
  args.out_lo = from, args.out_hi = from + (b - a);
  op.run(args);
  scatter(y.data(), owd, t_out, from, b - a, bufs_[op.out].data(), T_out, a);
  const bool exact = from == 0 && owd[t_out] == b - a;  // the window holds exactly frames [a, b)
  fresh_[op.out] = exact ? Fresh{y.data(), a, b, prod(owd, 0, t_out), prod(owd, t_out + 1)} : Fresh{};
  done_[i] = b;
  avail_[op.out] = b;
}

}  // namespace fbck::rt
