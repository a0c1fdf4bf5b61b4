// The compiled-model runtime (see program.h). Elementwise float operations here follow the
// student's evaluation order exactly (backends/README.md); this file is built with
// -ffp-contract=off so no multiply and add are fused behind our back.
#include "program.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <type_traits>

namespace fbck::rt {
namespace {

size_t prod(const Dims& d, size_t from = 0, size_t to = SIZE_MAX) {
  const size_t end = std::min(to, d.size());
  size_t p = 1;
  for (size_t i = from; i < end; ++i) p *= d[i];
  return p;
}

[[noreturn]] void bad(const OpSpec& s, const std::string& why) {
  throw std::invalid_argument("op " + s.kind + " '" + s.name + "': " + why);
}

template <class M, class K>
const auto& need(const OpSpec& s, const M& m, const K& key) {
  auto it = m.find(key);
  if (it == m.end()) bad(s, std::string("missing '") + key + "'");
  return it->second;
}

const std::vector<float>& f32(const OpSpec& s, const char* key, size_t size) {
  const auto& v = need(s, s.f32, key);
  if (v.size() != size) bad(s, std::string(key) + " has " + std::to_string(v.size()) +
                                   " values, expected " + std::to_string(size));
  return v;
}

// (outer, K, inner) split of dims around `axis`.
struct Split {
  size_t outer, mid, inner;
};
Split split(const Dims& d, int axis) {
  return {prod(d, 0, axis), d[axis], prod(d, axis + 1)};
}

S1Mode s1_mode(const OpSpec& s) {
  const auto& m = need(s, s.strs, "scale1");
  if (m == "none") return S1Mode::none;
  if (m == "mean_abs") return S1Mode::mean_abs;
  if (m == "const") return S1Mode::constant;
  bad(s, "scale1 must be none, mean_abs or const");
}

// Input position (ih * W + iw) read by each (output position, tap), or -1 where the tap falls on
// padding (outside the input, or outside the window's real frames along `time_axis`).
std::vector<int32_t> conv_sources(const Op& op, size_t H, size_t W, size_t Ho, size_t Wo, size_t pad_h,
                                  size_t pad_w, int time_axis, const Window* window) {
  const size_t taps = op.KH * op.KW;
  std::vector<int32_t> src(Ho * Wo * taps, -1);
  for (size_t oh = 0; oh < Ho; ++oh)
    for (size_t ow = 0; ow < Wo; ++ow)
      for (size_t i = 0; i < op.KH; ++i)
        for (size_t j = 0; j < op.KW; ++j) {
          const ptrdiff_t ih = (ptrdiff_t)(oh * op.stride[0] + i * op.dilation[0]) - (ptrdiff_t)pad_h;
          const ptrdiff_t iw = (ptrdiff_t)(ow * op.stride[1] + j * op.dilation[1]) - (ptrdiff_t)pad_w;
          bool ok = ih >= 0 && ih < (ptrdiff_t)H && iw >= 0 && iw < (ptrdiff_t)W;
          if (ok && window && window->on) {
            const ptrdiff_t tc = time_axis == 2 ? ih : iw;
            ok = tc >= window->valid_lo && tc < window->valid_hi;
          }
          if (ok) src[(oh * Wo + ow) * taps + i * op.KW + j] = static_cast<int32_t>(ih * W + iw);
        }
  return src;
}

// Group output positions by which taps are valid; per group and out channel, the weights of the
// padded taps (counted as +1 activations by the GEMM) and the t2 offset of the valid ones.
void conv_corrections(const Op& op, const std::vector<int32_t>& src, size_t positions,
                      std::vector<int32_t>& pattern, std::vector<int32_t>& pad_fix,
                      std::vector<float>& offset) {
  const size_t taps = op.KH * op.KW, O = op.O;
  std::vector<std::vector<bool>> seen;
  pattern.assign(positions, 0);
  std::vector<bool> valid(taps);
  for (size_t p = 0; p < positions; ++p) {
    for (size_t t = 0; t < taps; ++t) valid[t] = src[p * taps + t] >= 0;
    auto it = std::find(seen.begin(), seen.end(), valid);
    pattern[p] = static_cast<int32_t>(it - seen.begin());
    if (it == seen.end()) seen.push_back(valid);
  }
  pad_fix.assign(seen.size() * O, 0);
  offset.assign(seen.size() * O, 0.0f);
  for (size_t q = 0; q < seen.size(); ++q)
    for (size_t o = 0; o < O; ++o) {
      int32_t fix = 0;
      double off = 0.0;
      for (size_t t = 0; t < taps; ++t) {
        if (seen[q][t])
          off += op.t2w[o * taps + t];
        else
          fix += op.wsum[o * taps + t];
      }
      pad_fix[q * O + o] = fix;
      offset[q * O + o] = static_cast<float>(off);
    }
}

// pad_fix and offset spread per (out channel, output position), so the epilogue is a plain loop.
void conv_plane_corrections(size_t O, const std::vector<int32_t>& pattern,
                            const std::vector<int32_t>& pad_fix, const std::vector<float>& offset,
                            std::vector<float>& fix_t, std::vector<float>& off_t) {
  const size_t HoWo = pattern.size();
  fix_t.resize(O * HoWo);
  off_t.resize(O * HoWo);
  for (size_t o = 0; o < O; ++o)
    for (size_t hw = 0; hw < HoWo; ++hw) {
      fix_t[o * HoWo + hw] = static_cast<float>(pad_fix[pattern[hw] * O + o]);  // exact: |fix| < 2^24
      off_t[o * HoWo + hw] = offset[pattern[hw] * O + o];
    }
}

}  // namespace

// -- building ------------------------------------------------------------------------------------
Program::Program(const std::string& impl) : kern_(&get_kernels(impl)) {}

int Program::add_value(const std::vector<size_t>& shape) {
  if (final_) throw std::logic_error("program already finalized");
  for (size_t d : shape)
    if (d == 0) throw std::invalid_argument("value shapes must be positive");
  shapes_.push_back(shape);
  alias_.push_back(static_cast<int>(shapes_.size()) - 1);
  return static_cast<int>(shapes_.size()) - 1;
}

void Program::set_alias(int value, int base) {
  if (value < 0 || base < 0 || value >= (int)shapes_.size() || base >= (int)shapes_.size() ||
      prod(shapes_[value]) != prod(shapes_[base]))
    throw std::invalid_argument("invalid alias");
  alias_[value] = base;
}

int Program::root(int v) const {
  while (alias_[v] != v) v = alias_[v];
  return v;
}

Dims Program::with_batch(int v, size_t B) const {
  Dims d{B};
  d.insert(d.end(), shapes_[v].begin(), shapes_[v].end());
  return d;
}

void Program::add_op(const OpSpec& s) {
  if (final_) throw std::logic_error("program already finalized");
  const int nv = static_cast<int>(shapes_.size());
  for (int v : s.inputs)
    if (v < 0 || v >= nv) bad(s, "input id out of range");
  if (s.output < 0 || s.output >= nv) bad(s, "output id out of range");
  Op op;
  op.name = s.name;
  op.in = s.inputs;
  op.out = s.output;
  const Dims x = with_batch(s.inputs.at(0), 1), y = with_batch(s.output, 1);
  const int rank = static_cast<int>(x.size());
  auto axis_of = [&](const char* key) {
    const int a = static_cast<int>(need(s, s.ints, key));
    if (a < 1 || a >= rank) bad(s, std::string(key) + " out of range");
    return a;
  };
  const std::string& k = s.kind;
  if (k == "linear") {
    op.kind = Kind::linear;
    op.axis = axis_of("axis");
    op.K = x[op.axis];
    op.N = y[op.axis];
    op.w = f32(s, "weight", op.N * op.K);
    op.bias = f32(s, "bias", op.N);
  } else if (k == "binary_linear") {
    op.kind = Kind::binary_linear;
    op.axis = axis_of("axis");
    op.K = x[op.axis];
    op.N = y[op.axis];
    if ((size_t)need(s, s.ints, "k") != op.K || (size_t)need(s, s.ints, "n") != op.N)
      bad(s, "k/n do not match the shapes");
    op.planes = static_cast<int>(need(s, s.ints, "planes"));
    if (op.planes != 1 && op.planes != 2) bad(s, "planes must be 1 or 2");
    op.s1 = s1_mode(s);
    op.s1c = static_cast<float>(need(s, s.floats, "scale1_value"));
    op.t0 = f32(s, "t0", op.K);
    op.t1 = f32(s, "t1", op.K);
    op.sw = f32(s, "sw", op.N);
    op.bias = f32(s, "bias", op.N);
    op.wbits = need(s, s.u64, "wbits");
    if (op.wbits.size() != op.N * row_words(op.K)) bad(s, "wbits size");
    if (kern_->wants_w16) op.w16 = interleave_rows16(op.wbits.data(), op.N, op.K);
  } else if (k == "memory" || k == "binary_memory") {
    op.kind = Kind::memory;
    if (rank != 3 || x != y) bad(s, "memory needs a (B, C, T) input and output");
    op.ch_axis = static_cast<int>(need(s, s.ints, "channel_axis"));
    op.t_axis = static_cast<int>(need(s, s.ints, "time_axis"));
    if (!((op.ch_axis == 1 && op.t_axis == 2) || (op.ch_axis == 2 && op.t_axis == 1)))
      bad(s, "channel/time axes must be (1, 2) or (2, 1)");
    const int64_t l = need(s, s.ints, "left"), r = need(s, s.ints, "right"),
                  d = need(s, s.ints, "dilation"), res = need(s, s.ints, "residual");
    if (l < 0 || r < 0 || d < 1 || res < 0) bad(s, "bad context");
    op.left = l, op.right = r, op.dil = d, op.residual = static_cast<float>(res);
    op.K = x[op.ch_axis];
    const size_t taps = op.left + op.right + 1;
    op.binary = k == "binary_memory";
    op.bias = f32(s, "bias", op.K);
    if (op.binary) {
      op.planes = static_cast<int>(need(s, s.ints, "planes"));
      if (op.planes != 1 && op.planes != 2) bad(s, "planes must be 1 or 2");
      op.s1 = s1_mode(s);
      op.s1c = static_cast<float>(need(s, s.floats, "scale1_value"));
      op.has_t2 = need(s, s.ints, "has_t2") != 0;
      op.t0 = f32(s, "t0", op.K);
      op.t1 = f32(s, "t1", op.K);
      op.t2 = f32(s, "t2", op.K);
      op.sw = f32(s, "sw", op.K);
      op.ws = need(s, s.i8, "taps");
      if (op.ws.size() != op.K * taps) bad(s, "taps size");
      for (int8_t t : op.ws)
        if (t < -1 || t > 1) bad(s, "binary taps must be -1, 0 or +1");
    } else {
      op.taps = f32(s, "taps", op.K * taps);
    }
  } else if (k == "conv2d") {
    op.kind = Kind::conv2d;
    if (rank != 4 || y.size() != 4) bad(s, "conv2d needs (B, C, H, W)");
    const auto& st = need(s, s.lists, "stride");
    const auto& pd = need(s, s.lists, "padding");
    const auto& dl = need(s, s.lists, "dilation");
    if (st.size() != 2 || pd.size() != 2 || dl.size() != 2) bad(s, "2-D attributes");
    for (int i = 0; i < 2; ++i) {
      if (st[i] < 1 || pd[i] < 0 || dl[i] < 1) bad(s, "bad stride/padding/dilation");
      op.stride[i] = st[i], op.pad[i] = pd[i], op.dilation[i] = dl[i];
    }
    op.groups = static_cast<size_t>(need(s, s.ints, "groups"));
    op.O = y[1];
    if (op.groups < 1 || x[1] % op.groups || op.O % op.groups) bad(s, "bad groups");
    const auto& kernel = need(s, s.lists, "kernel");
    if (kernel.size() != 2 || kernel[0] < 1 || kernel[1] < 1) bad(s, "kernel must be [kh, kw]");
    op.KH = kernel[0], op.KW = kernel[1];
    const auto& w = f32(s, "weight", op.O * (x[1] / op.groups) * op.KH * op.KW);
    if (conv_out_size(x[2], op.KH, op.stride[0], op.pad[0], op.dilation[0]) != y[2] ||
        conv_out_size(x[3], op.KW, op.stride[1], op.pad[1], op.dilation[1]) != y[3])
      bad(s, "output size does not match the input, kernel, stride and padding");
    op.w = w;
    op.bias = f32(s, "bias", op.O);
  } else if (k == "binary_conv2d") {
    op.kind = Kind::binary_conv2d;
    if (rank != 4 || y.size() != 4) bad(s, "binary_conv2d needs (B, C, H, W)");
    const auto& kernel = need(s, s.lists, "kernel");
    const auto& st = need(s, s.lists, "stride");
    const auto& pd = need(s, s.lists, "padding");
    const auto& dl = need(s, s.lists, "dilation");
    if (kernel.size() != 2 || st.size() != 2 || pd.size() != 2 || dl.size() != 2) bad(s, "2-D attributes");
    for (int i = 0; i < 2; ++i) {
      if (kernel[i] < 1 || st[i] < 1 || pd[i] < 0 || dl[i] < 1) bad(s, "bad kernel/stride/padding/dilation");
      op.stride[i] = st[i], op.pad[i] = pd[i], op.dilation[i] = dl[i];
    }
    op.KH = kernel[0], op.KW = kernel[1];
    op.O = y[1];
    op.K = x[1];  // input channels
    if (conv_out_size(x[2], op.KH, op.stride[0], op.pad[0], op.dilation[0]) != y[2] ||
        conv_out_size(x[3], op.KW, op.stride[1], op.pad[1], op.dilation[1]) != y[3])
      bad(s, "output size does not match the input, kernel, stride and padding");
    op.s1 = s1_mode(s);
    if (op.s1 == S1Mode::mean_abs) bad(s, "a binary conv2d takes no per-position scale");
    op.s1c = static_cast<float>(need(s, s.floats, "scale1_value"));
    op.has_t2 = need(s, s.ints, "has_t2") != 0;
    op.t0 = f32(s, "t0", op.K);
    op.t2 = f32(s, "t2", op.K);
    op.sw = f32(s, "sw", op.O);
    op.bias = f32(s, "bias", op.O);
    const size_t taps = op.KH * op.KW, kbits = taps * op.K, words = row_words(kbits);
    op.wbits = need(s, s.u64, "wbits");
    if (op.wbits.size() != op.O * words) bad(s, "wbits size");
    op.wsum.assign(op.O * taps, 0);
    op.t2w.assign(op.O * taps, 0.0);
    for (size_t o = 0; o < op.O; ++o)
      for (size_t t = 0; t < taps; ++t)
        for (size_t c = 0; c < op.K; ++c) {
          const size_t bit = t * op.K + c;
          const int sgn = ((op.wbits[o * words + bit / 64] >> (bit % 64)) & 1u) ? -1 : 1;
          op.wsum[o * taps + t] += sgn;
          op.t2w[o * taps + t] += sgn * static_cast<double>(op.t2[c]);
        }
    op.geo.H = x[2], op.geo.W = x[3];
    op.geo.src = conv_sources(op, x[2], x[3], y[2], y[3], op.pad[0], op.pad[1], -1, nullptr);
    conv_corrections(op, op.geo.src, y[2] * y[3], op.geo.pattern, op.geo.pad_fix, op.geo.offset);
    conv_plane_corrections(op.O, op.geo.pattern, op.geo.pad_fix, op.geo.offset, op.geo.fix_t,
                           op.geo.off_t);
    if (kern_->wants_w16) op.w16 = interleave_rows16(op.wbits.data(), op.O, kbits);
  } else if (k == "affine" || k == "prelu" || k == "channel_add" || k == "channel_sub") {
    op.kind = k == "affine" ? Kind::affine
              : k == "prelu" ? Kind::prelu
              : k == "channel_add" ? Kind::channel_add
                                   : Kind::channel_sub;
    op.axis = axis_of("axis");
    if (x != y) bad(s, "shape must not change");
    const size_t c = x[op.axis];
    auto per = [&](const char* key) {
      const auto& v = need(s, s.f32, key);
      const bool shared = op.kind == Kind::prelu && need(s, s.ints, "shared") != 0;
      if (v.size() != (shared ? 1 : c)) bad(s, std::string(key) + " size");
      return v;
    };
    if (op.kind == Kind::affine) {
      op.scale = per("scale");
      op.shift = per("shift");
    } else if (op.kind == Kind::prelu) {
      op.slope = per("slope");
    } else {
      op.value = per("value");
    }
  } else if (k == "relu" || k == "hardtanh" || k == "tanh" || k == "sigmoid" || k == "leaky_relu") {
    op.kind = Kind::act;
    if (x != y) bad(s, "shape must not change");
    if (k == "relu") op.act = Act::relu;
    else if (k == "hardtanh") {
      op.act = Act::hardtanh;
      op.a0 = static_cast<float>(need(s, s.floats, "min"));
      op.a1 = static_cast<float>(need(s, s.floats, "max"));
    } else if (k == "tanh") op.act = Act::tanh;
    else if (k == "sigmoid") op.act = Act::sigmoid;
    else {
      op.act = Act::leaky_relu;
      op.a0 = static_cast<float>(need(s, s.floats, "slope"));
    }
  } else if (k == "add") {
    op.kind = Kind::add;
    if (s.inputs.size() != 2 || with_batch(s.inputs[1], 1) != x || x != y) bad(s, "add needs equal shapes");
  } else if (k == "scalar") {
    op.kind = Kind::scalar;
    if (x != y) bad(s, "shape must not change");
    op.mul = static_cast<float>(need(s, s.floats, "mul"));
    op.add = static_cast<float>(need(s, s.floats, "add"));
  } else if (k == "permute") {
    op.kind = Kind::permute;
    const auto& pm = need(s, s.lists, "perm");
    if ((int)pm.size() != rank) bad(s, "perm rank");
    std::vector<bool> seen(rank, false);
    for (int64_t d : pm) {
      if (d < 0 || d >= rank || seen[d]) bad(s, "bad permutation");
      seen[d] = true;
      op.perm.push_back(static_cast<int>(d));
    }
    if (op.perm[0] != 0) bad(s, "the batch axis must stay first");
    for (int i = 0; i < rank; ++i)
      if (y[i] != x[op.perm[i]]) bad(s, "permuted shape mismatch");
  } else if (k == "mean") {
    op.kind = Kind::mean;
    for (int64_t d : need(s, s.lists, "dims")) {
      if (d < 1 || d >= rank) bad(s, "mean dims");
      op.dims.push_back(static_cast<int>(d));
    }
    op.keepdim = need(s, s.ints, "keepdim") != 0;
  } else {
    bad(s, "unknown op kind");
  }
  if (op.kind != Kind::add && s.inputs.size() != 1) bad(s, "expects one input");
  ops_.push_back(std::move(op));
}

void Program::finalize(int input, int output, int time_axis) {
  const int nv = static_cast<int>(shapes_.size());
  if (input < 0 || input >= nv || output < 0 || output >= nv)
    throw std::invalid_argument("input/output id out of range");
  input_ = input;
  output_ = output;
  // every value must be defined before it is used
  std::vector<bool> defined(nv, false);
  defined[root(input)] = true;
  for (const Op& op : ops_) {
    for (int v : op.in)
      if (!defined[root(v)]) throw std::invalid_argument("op '" + op.name + "' reads an undefined value");
    if (root(op.out) != op.out) throw std::invalid_argument("op '" + op.name + "' writes into a view");
    defined[op.out] = true;
  }
  if (!defined[root(output)]) throw std::invalid_argument("the output is never computed");
  fuse();
  plan();
  propagate_time(time_axis);
  final_ = true;
}

namespace {

bool elementwise(Kind k) {
  return k == Kind::affine || k == Kind::prelu || k == Kind::channel_add || k == Kind::channel_sub ||
         k == Kind::act || k == Kind::scalar || k == Kind::add;
}

bool per_channel_kind(Kind k) {
  return k == Kind::affine || k == Kind::prelu || k == Kind::channel_add || k == Kind::channel_sub;
}

}  // namespace

// Chains of elementwise ops (BatchNorm affine, PReLU, activation, residual add...) over one shape
// run as one loop in run(): each element goes through the same float operations in the same
// order, the intermediate values are never stored.
void Program::fuse() {
  const size_t n = ops_.size();
  std::vector<int> uses(shapes_.size(), 0);
  for (const Op& op : ops_)
    for (int v : op.in) ++uses[root(v)];
  group_end_.resize(n);
  for (size_t i = 0; i < n; ++i) group_end_[i] = i;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    if (elementwise(ops_[i].kind)) {
      const Dims d = with_batch(ops_[i].out, 1);
      int axis = per_channel_kind(ops_[i].kind) ? ops_[i].axis : -1;
      while (j + 1 < n) {
        const Op& next = ops_[j + 1];
        const int mid = ops_[j].out;
        if (!elementwise(next.kind) || next.in[0] != mid || uses[mid] != 1 || mid == root(output_) ||
            with_batch(next.out, 1) != d)
          break;
        if (next.kind == Kind::add && root(next.in[1]) == mid) break;
        if (per_channel_kind(next.kind)) {
          if (axis >= 0 && next.axis != axis) break;
          axis = next.axis;
        }
        bool viewed = false;  // the intermediate must not be read through another view
        for (size_t v = 0; v < alias_.size(); ++v) viewed |= (alias_[v] == mid && (int)v != mid);
        if (viewed) break;
        ++j;
      }
    }
    group_end_[i] = j;
    i = j + 1;
  }
  widen();
}

// Per-channel runs shorter than this many floats are too short for the chain loop to pay off.
constexpr size_t kWideBelow = 64;

void Program::widen() {
  wide_ops_.clear();
  wide_of_.assign(ops_.size(), -1);
  for (size_t i = 0; i < ops_.size(); i = group_end_[i] + 1) {
    const size_t last = group_end_[i];
    if (last == i) continue;
    int axis = 1;
    for (size_t k = i; k <= last; ++k)
      if (per_channel_kind(ops_[k].kind)) axis = ops_[k].axis;
    const Split sp = split(with_batch(ops_[i].out, 1), axis);
    if (sp.inner <= 1 || sp.inner >= kWideBelow) continue;
    for (size_t k = i; k <= last; ++k) {
      Op w = ops_[k];
      auto expand = [&](std::vector<float>& v) {
        if (v.size() != sp.mid) return;  // a single shared value (PReLU with one slope)
        std::vector<float> e(sp.mid * sp.inner);
        for (size_t c = 0; c < sp.mid; ++c) std::fill_n(e.begin() + c * sp.inner, sp.inner, v[c]);
        v.swap(e);
      };
      if (per_channel_kind(w.kind)) {
        expand(w.scale);
        expand(w.shift);
        expand(w.slope);
        expand(w.value);
      }
      wide_of_[k] = static_cast<int>(wide_ops_.size());
      wide_ops_.push_back(std::move(w));
    }
  }
}

namespace {

// One elementwise op over n contiguous floats. `c` is the channel of the whole span (per_elem
// false: the channel axis is outside the span) or the channel of its first element (per_elem
// true: the span runs along the channel axis, one channel per element). Every branch is a plain
// loop the compiler vectorises; the arithmetic is the same in both layouts.
template <bool per_elem>
void apply_elementwise(const Op& op, const float* in, float* y, const float* other, size_t c,
                       size_t n) {
  auto at = [&](const std::vector<float>& v, size_t e) { return v[per_elem ? c + e : c]; };
  switch (op.kind) {
    case Kind::affine:
      if constexpr (per_elem) {
        const float* sc = op.scale.data() + c;
        const float* sh = op.shift.data() + c;
        for (size_t e = 0; e < n; ++e) y[e] = in[e] * sc[e] + sh[e];
      } else {
        const float sc = op.scale[c], sh = op.shift[c];
        for (size_t e = 0; e < n; ++e) y[e] = in[e] * sc + sh;
      }
      break;
    case Kind::prelu:
      if (op.slope.size() == 1 || !per_elem) {
        const float sl = op.slope[op.slope.size() == 1 ? 0 : c];
        for (size_t e = 0; e < n; ++e) y[e] = in[e] > 0.0f ? in[e] : in[e] * sl;
      } else {
        const float* sl = op.slope.data() + c;
        for (size_t e = 0; e < n; ++e) y[e] = in[e] > 0.0f ? in[e] : in[e] * sl[e];
      }
      break;
    case Kind::channel_add:
      for (size_t e = 0; e < n; ++e) y[e] = in[e] + at(op.value, e);
      break;
    case Kind::channel_sub:
      for (size_t e = 0; e < n; ++e) y[e] = in[e] - at(op.value, e);
      break;
    case Kind::add:
      for (size_t e = 0; e < n; ++e) y[e] = in[e] + other[e];
      break;
    case Kind::scalar: {
      const float m = op.mul, a = op.add;
      if (m != 1.0f && a != 0.0f)
        for (size_t e = 0; e < n; ++e) y[e] = in[e] * m + a;
      else if (m != 1.0f)
        for (size_t e = 0; e < n; ++e) y[e] = in[e] * m;
      else if (a != 0.0f)
        for (size_t e = 0; e < n; ++e) y[e] = in[e] + a;
      else if (y != in)
        std::memcpy(y, in, sizeof(float) * n);
      break;
    }
    case Kind::act:
      switch (op.act) {
        case Act::relu:
          for (size_t e = 0; e < n; ++e) y[e] = in[e] > 0.0f ? in[e] : 0.0f;
          break;
        case Act::hardtanh: {
          const float lo = op.a0, hi = op.a1;
          for (size_t e = 0; e < n; ++e) y[e] = std::min(std::max(in[e], lo), hi);
          break;
        }
        case Act::tanh:
          for (size_t e = 0; e < n; ++e) y[e] = std::tanh(in[e]);
          break;
        case Act::sigmoid:
          for (size_t e = 0; e < n; ++e) y[e] = 1.0f / (1.0f + std::exp(-in[e]));
          break;
        case Act::leaky_relu: {
          const float sl = op.a0;
          for (size_t e = 0; e < n; ++e) y[e] = in[e] > 0.0f ? in[e] : in[e] * sl;
          break;
        }
      }
      break;
    default:
      break;
  }
}

// One elementwise op on its own (not part of a fused chain), e.g. in a stream's window.
void run_elementwise(const Op& op, const float* x, const float* other, float* y, const Dims& d) {
  if (!per_channel_kind(op.kind)) {
    apply_elementwise<false>(op, x, y, other, 0, prod(d));
    return;
  }
  const Split sp = split(d, op.axis);
  for (size_t o = 0; o < sp.outer; ++o) {
    const size_t base = o * sp.mid * sp.inner;
    if (sp.inner == 1) {
      apply_elementwise<true>(op, x + base, y + base, nullptr, 0, sp.mid);
      continue;
    }
    for (size_t c = 0; c < sp.mid; ++c)
      apply_elementwise<false>(op, x + base + c * sp.inner, y + base + c * sp.inner, nullptr, c,
                               sp.inner);
  }
}

}  // namespace

void Program::exec_chain(size_t first, size_t last, const std::vector<const float*>& ptrs, float* out,
                         size_t B) const {
  // ptrs[k]: input 0 of op first, then the second input of every add in the chain, in order
  int axis = 1;
  for (size_t i = first; i <= last; ++i)
    if (per_channel_kind(ops_[i].kind)) axis = ops_[i].axis;
  // split() of the batched shape, without building it
  const Dims& s = shapes_[ops_[first].out];
  Split sp{B, 1, prod(s)};
  if (axis >= 1) sp = {B * prod(s, 0, axis - 1), s[axis - 1], prod(s, axis)};
  // Each op runs over a whole span before the next one, so the span should stay in L1: a channel's
  // `inner` run, or (channel axis innermost) one row of `mid` channels.
  auto run_span = [&](auto per_elem, size_t base, size_t c, size_t n) {
    float* y = out + base;
    size_t extra = 1;
    for (size_t i = first; i <= last; ++i) {
      const Op& op = wide_of_[first] >= 0 ? wide_ops_[wide_of_[i]] : ops_[i];
      const float* in = (i == first) ? ptrs[0] + base : y;
      const float* other = op.kind == Kind::add ? ptrs[extra++] + base : nullptr;
      apply_elementwise<decltype(per_elem)::value>(op, in, y, other, c, n);
    }
  };
  if (sp.inner == 1) {
    for (size_t o = 0; o < sp.outer; ++o) run_span(std::true_type{}, o * sp.mid, 0, sp.mid);
  } else if (wide_of_[first] >= 0) {
    const size_t n = sp.mid * sp.inner;
    for (size_t o = 0; o < sp.outer; ++o) run_span(std::true_type{}, o * n, 0, n);
  } else {
    for (size_t o = 0; o < sp.outer; ++o)
      for (size_t c = 0; c < sp.mid; ++c)
        run_span(std::false_type{}, (o * sp.mid + c) * sp.inner, c, sp.inner);
  }
}

bool all_finite(const float* x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// Greedy first-fit placement of storage values in one arena (per-sample floats, 64-byte aligned).
void Program::plan() {
  const int nv = static_cast<int>(shapes_.size());
  std::vector<int> first(nv, -2), last(nv, -2);
  first[root(input_)] = -1;
  for (int i = 0; i < (int)ops_.size(); ++i) {
    // a fused chain reads all its inputs while writing its last output: keep them live until then
    const int until = static_cast<int>(group_end_[i]);
    for (int v : ops_[i].in) last[root(v)] = std::max(last[root(v)], std::max(i, until));
    first[ops_[i].out] = i;
  }
  for (size_t i = 0; i < ops_.size(); ++i)
    for (size_t j = i + 1; j <= group_end_[i]; ++j)
      for (int v : ops_[j].in) last[root(v)] = std::max(last[root(v)], static_cast<int>(group_end_[i]));
  last[root(output_)] = static_cast<int>(ops_.size());
  offset_.assign(nv, 0);
  struct Block { size_t off, size; int until; };
  std::vector<Block> live;
  arena_ = 0;
  std::vector<int> order;
  for (int v = 0; v < nv; ++v)
    if (root(v) == v && first[v] != -2) order.push_back(v);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return first[a] < first[b]; });
  for (int v : order) {
    live.erase(std::remove_if(live.begin(), live.end(), [&](const Block& b) { return b.until < first[v]; }),
               live.end());
    const size_t size = (prod(shapes_[v]) + 15) / 16 * 16;
    std::sort(live.begin(), live.end(), [](const Block& a, const Block& b) { return a.off < b.off; });
    size_t off = 0;
    for (const Block& b : live) {
      if (off + size <= b.off) break;
      off = std::max(off, b.off + b.size);
    }
    offset_[v] = off;
    live.push_back({off, size, std::max(last[v], first[v])});
    arena_ = std::max(arena_, off + size);
  }
}

// Which axis carries time for every value, and which ops only make sense on whole utterances.
void Program::propagate_time(int time_axis) {
  const int nv = static_cast<int>(shapes_.size());
  time_axis_.assign(nv, -1);
  const int rank_in = static_cast<int>(shapes_[input_].size()) + 1;
  if (time_axis >= 1 && time_axis < rank_in) time_axis_[input_] = time_axis;
  auto alias_time = [&](int v) {
    // views keep the time axis when it survives the reshape as a dimension of its own
    const int b = alias_[v];
    if (b == v || time_axis_[b] < 0) return;
    const Dims in = with_batch(b, 1), out = with_batch(v, 1);
    const int t = time_axis_[b];
    const size_t after = prod(in, t + 1);
    for (int j = 1; j < (int)out.size(); ++j)
      if (out[j] == in[t] && prod(out, j + 1) == after) time_axis_[v] = j;
  };
  for (int v = 0; v < nv; ++v) alias_time(v);
  terminal_.assign(ops_.size(), false);
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    const int t = time_axis_[op.in[0]];
    int out_t = -1;
    if (t >= 1) {
      switch (op.kind) {
        case Kind::linear:
        case Kind::binary_linear:
        case Kind::affine:
        case Kind::prelu:
        case Kind::channel_add:
        case Kind::channel_sub:
          out_t = (op.axis == t) ? -1 : t;
          break;
        case Kind::memory:
          out_t = (op.t_axis == t) ? t : -1;
          break;
        case Kind::conv2d:
        case Kind::binary_conv2d:
          out_t = (t >= 2) ? t : -1;
          break;
        case Kind::act:
        case Kind::scalar:
          out_t = t;
          break;
        case Kind::add:
          out_t = (time_axis_[op.in[1]] == t) ? t : -1;
          break;
        case Kind::permute:
          for (int j = 0; j < (int)op.perm.size(); ++j)
            if (op.perm[j] == t) out_t = j;
          break;
        case Kind::mean: {
          if (std::find(op.dims.begin(), op.dims.end(), t) != op.dims.end()) break;
          int shift = 0;
          for (int d : op.dims) shift += (!op.keepdim && d < t);
          out_t = t - shift;
          break;
        }
      }
    }
    terminal_[i] = out_t < 0;
    time_axis_[op.out] = out_t;
    for (int v = 0; v < nv; ++v)
      if (alias_[v] == op.out) alias_time(v);
  }
}

// -- execution ----------------------------------------------------------------------------------
// Runs one op on buffers of the given dims. With window_time, a conv2d's padding along the time
// axis is taken as already applied (the stream zero-fills its window).
void Program::exec(const Op& op, const std::vector<const float*>& in, const std::vector<Dims>& in_dims,
                   float* out, const Dims& out_dims, const Window& window) const {
  const float* x = in[0];
  const Dims& xd = in_dims[0];
  const Kernels& k = *kern_;
  switch (op.kind) {
    case Kind::linear: {
      const Split sp = split(xd, op.axis);
      LinearF32Args a;
      a.x = x, a.outer = sp.outer, a.K = sp.mid, a.inner = sp.inner, a.w = op.w.data(), a.N = op.N;
      a.ep.bias = op.bias.data();
      a.y = out;
      k.linear_f32(a);
      break;
    }
    case Kind::binary_linear: {
      const Split sp = split(xd, op.axis);
      const size_t P = sp.outer * sp.inner, words = row_words(op.K);
      thread_local std::vector<uint64_t> b1, b2;  // reused: no allocation per call
      thread_local std::vector<float> s1, s2;
      b1.assign(P * words, 0);
      b2.assign(op.planes == 2 ? P * words : 0, 0);
      s1.assign(op.s1 == S1Mode::none ? 0 : P, 0.0f);
      s2.assign(op.planes == 2 ? P : 0, 0.0f);
      float* s1p = op.s1 == S1Mode::mean_abs ? s1.data() : nullptr;
      if (op.planes == 2)
        k.pack_dual(x, sp.outer, op.K, sp.inner, op.t0.data(), op.t1.data(), b1.data(), b2.data(),
                    s2.data(), s1p);
      else
        k.pack_threshold(x, sp.outer, op.K, sp.inner, op.t0.data(), b1.data(), s1p);
      if (op.s1 == S1Mode::constant) std::fill(s1.begin(), s1.end(), op.s1c);
      BinaryLinearArgs a;
      a.a1 = b1.data();
      a.s1 = op.s1 == S1Mode::none ? nullptr : s1.data();
      a.a2 = op.planes == 2 ? b2.data() : nullptr;
      a.s2 = op.planes == 2 ? s2.data() : nullptr;
      a.w = op.wbits.data();
      a.w16 = op.w16.empty() ? nullptr : op.w16.data();
      a.outer = sp.outer, a.inner = sp.inner, a.N = op.N, a.K = op.K;
      a.sw = op.sw.data(), a.bias = op.bias.data(), a.y = out;
      k.binary_linear(a);
      break;
    }
    case Kind::memory: {
      const size_t B = xd[0], C = xd[op.ch_axis], T = xd[op.t_axis];
      const ptrdiff_t sb = C * T, sc = op.ch_axis == 1 ? T : 1, st = op.ch_axis == 1 ? 1 : C;
      if (op.binary) {
        BinaryMemoryArgs m;
        m.x = x, m.y = out, m.B = B, m.C = C, m.T = T, m.stride_b = sb, m.stride_c = sc, m.stride_t = st;
        m.t0 = op.t0.data(), m.planes = op.planes, m.s1_mode = op.s1, m.s1_const = op.s1c;
        m.t1 = op.t1.data(), m.t2 = op.has_t2 ? op.t2.data() : nullptr, m.ws = op.ws.data();
        m.left = op.left, m.right = op.right, m.dilation = op.dil;
        m.sw = op.sw.data(), m.bias = op.bias.data(), m.residual = op.residual;
        k.binary_memory(m);
      } else {  // FP memory: the same fixed-order tap loop as Memory.exact_forward
        const size_t taps = op.left + op.right + 1;
        for (size_t b = 0; b < B; ++b)
          for (size_t c = 0; c < C; ++c)
            for (size_t t = 0; t < T; ++t) {
              float acc = 0.0f;
              for (size_t j = 0; j < taps; ++j) {
                const ptrdiff_t tt = (ptrdiff_t)t + ((ptrdiff_t)j - (ptrdiff_t)op.left) * (ptrdiff_t)op.dil;
                if (tt < 0 || tt >= (ptrdiff_t)T) continue;
                acc = acc + op.taps[c * taps + j] * x[b * sb + c * sc + tt * st];
              }
              float yv = acc + op.bias[c];
              const size_t at = b * sb + c * sc + t * st;
              if (op.residual != 0.0f) yv = x[at] * op.residual + yv;
              out[at] = yv;
            }
      }
      break;
    }
    case Kind::conv2d: {
      Conv2dF32Args a;
      a.x = x, a.B = xd[0], a.C = xd[1], a.H = xd[2], a.W = xd[3];
      a.w = op.w.data(), a.O = op.O, a.KH = op.KH, a.KW = op.KW;
      a.stride_h = op.stride[0], a.stride_w = op.stride[1];
      a.pad_h = op.pad[0], a.pad_w = op.pad[1];
      a.dil_h = op.dilation[0], a.dil_w = op.dilation[1], a.groups = op.groups;
      if (window.on) (time_axis_[op.in[0]] == 2 ? a.pad_h : a.pad_w) = 0;
      a.ep.bias = op.bias.data();
      a.y = out;
      k.conv2d_f32(a);
      break;
    }
    case Kind::binary_conv2d:
      binary_conv2d(op, x, xd, out, out_dims, time_axis_[op.in[0]], window);
      break;
    case Kind::affine:
    case Kind::prelu:
    case Kind::channel_add:
    case Kind::channel_sub:
    case Kind::act:
    case Kind::add:
    case Kind::scalar:
      run_elementwise(op, x, op.kind == Kind::add ? in[1] : nullptr, out, xd);
      break;
    case Kind::permute: {
      // out[..., j] = x[src + j * step]: an index walk over the outer output dims, then a strided
      // inner loop over the last one
      const size_t rank = xd.size();
      std::vector<size_t> in_stride(rank, 1), idx(rank, 0);
      for (size_t i = rank - 1; i-- > 0;) in_stride[i] = in_stride[i + 1] * xd[i + 1];
      const size_t inner = out_dims[rank - 1], step = in_stride[op.perm[rank - 1]];
      const size_t rows = prod(out_dims) / inner;
      for (size_t r = 0; r < rows; ++r) {
        size_t src = 0;
        for (size_t i = 0; i + 1 < rank; ++i) src += idx[i] * in_stride[op.perm[i]];
        float* o = out + r * inner;
        for (size_t j = 0; j < inner; ++j) o[j] = x[src + j * step];
        for (size_t i = rank - 1; i-- > 0;) {
          if (++idx[i] < out_dims[i]) break;
          idx[i] = 0;
        }
      }
      break;
    }
    case Kind::mean: {
      const size_t rank = xd.size();
      std::vector<bool> reduce(rank, false);
      for (int d : op.dims) reduce[d] = true;
      std::vector<size_t> in_stride(rank, 1), idx(rank, 0);
      for (size_t i = rank - 1; i-- > 0;) in_stride[i] = in_stride[i + 1] * xd[i + 1];
      // output index: the kept dims in order
      std::vector<double> acc(prod(out_dims), 0.0);
      size_t count = 1;
      for (int d : op.dims) count *= xd[d];
      const size_t n = prod(xd);
      for (size_t i = 0; i < n; ++i) {
        size_t o = 0;
        for (size_t j = 0; j < rank; ++j)
          if (!reduce[j]) o = o * xd[j] + idx[j];
        acc[o] += x[i];
        for (size_t j = rank; j-- > 0;) {
          if (++idx[j] < xd[j]) break;
          idx[j] = 0;
        }
      }
      for (size_t o = 0; o < acc.size(); ++o) out[o] = static_cast<float>(acc[o] / count);
      break;
    }
  }
}

// Binary k x k convolution: pack every input position's channels into bits, gather them per output
// position into rows of K = taps * C bits (tap-major, zero bits = +1 for padded taps), one binary
// GEMM, then an epilogue that removes the padded taps' weights from the exact integer dot and
// applies ((d [* s1]) - sum_valid(sign * t2)) * sw + bias in the student's float order.
void Program::binary_conv2d(const Op& op, const float* x, const Dims& xd, float* out, const Dims& od,
                            int time_axis, const Window& window) const {
  const Kernels& k = *kern_;
  const size_t B = xd[0], C = xd[1], H = xd[2], W = xd[3], Ho = od[2], Wo = od[3], O = op.O;
  const size_t taps = op.KH * op.KW, cw = row_words(C), words = row_words(taps * C);
  thread_local std::vector<uint64_t> pos, rows;  // reused: no allocation per call
  pos.assign(B * H * W * cw, 0);
  k.pack_threshold(x, B, C, H * W, op.t0.data(), pos.data(), nullptr);
  // the whole-utterance geometry is precomputed; a stream's window computes its own
  const bool fixed = !window.on && H == op.geo.H && W == op.geo.W;
  std::vector<int32_t> src_w, pattern_w, fix_w;
  std::vector<float> offset_w, fix_tw, off_tw;
  if (!fixed) {
    const size_t pad_h = (window.on && time_axis == 2) ? 0 : op.pad[0];
    const size_t pad_w = (window.on && time_axis == 3) ? 0 : op.pad[1];
    src_w = conv_sources(op, H, W, Ho, Wo, pad_h, pad_w, time_axis, &window);
    conv_corrections(op, src_w, Ho * Wo, pattern_w, fix_w, offset_w);
    conv_plane_corrections(O, pattern_w, fix_w, offset_w, fix_tw, off_tw);
  }
  const std::vector<int32_t>& src = fixed ? op.geo.src : src_w;
  const float* fix_t = fixed ? op.geo.fix_t.data() : fix_tw.data();
  const float* off_t = fixed ? op.geo.off_t.data() : off_tw.data();
  const size_t HoWo = Ho * Wo, P = B * HoWo;
  rows.assign(P * words, 0);
  for (size_t b = 0; b < B; ++b)
    for (size_t hw = 0; hw < HoWo; ++hw) {
      uint64_t* row = rows.data() + (b * HoWo + hw) * words;
      const int32_t* s = src.data() + hw * taps;
      for (size_t t = 0; t < taps; ++t) {
        if (s[t] < 0) continue;  // padding: 0 bits (+1), corrected below
        const uint64_t* chunk = pos.data() + (b * H * W + s[t]) * cw;
        const size_t base = t * C;
        for (size_t w = 0; w * 64 < C; ++w) {
          const size_t at = base + w * 64, shift = at % 64;
          row[at / 64] |= chunk[w] << shift;
          if (shift && shift + std::min<size_t>(64, C - w * 64) > 64) row[at / 64 + 1] |= chunk[w] >> (64 - shift);
        }
      }
    }
  // The dot products as exact floats straight into the (B, O, Ho*Wo) output, then the
  // corrections and the affine in place.
  BinaryLinearArgs a;
  a.a1 = rows.data();
  a.w = op.wbits.data();
  a.w16 = op.w16.empty() ? nullptr : op.w16.data();
  a.outer = B, a.inner = HoWo, a.N = O, a.K = taps * C;
  a.y = out;
  k.binary_linear(a);
  const bool scaled = op.s1 == S1Mode::constant;
  for (size_t b = 0; b < B; ++b)
    for (size_t o = 0; o < O; ++o) {
      float* y = out + (b * O + o) * HoWo;
      const float* f = fix_t + o * HoWo;
      const float* off = off_t + o * HoWo;
      const float sw = op.sw[o], bias = op.bias[o], s1c = op.s1c;
      if (scaled && op.has_t2)
        for (size_t hw = 0; hw < HoWo; ++hw) y[hw] = ((y[hw] - f[hw]) * s1c - off[hw]) * sw + bias;
      else if (scaled)
        for (size_t hw = 0; hw < HoWo; ++hw) y[hw] = ((y[hw] - f[hw]) * s1c) * sw + bias;
      else if (op.has_t2)
        for (size_t hw = 0; hw < HoWo; ++hw) y[hw] = ((y[hw] - f[hw]) - off[hw]) * sw + bias;
      else
        for (size_t hw = 0; hw < HoWo; ++hw) y[hw] = (y[hw] - f[hw]) * sw + bias;
    }
}

std::string Program::op_kind(size_t i) const {
  static const char* names[] = {"linear", "conv2d", "binary_linear", "memory", "affine", "prelu",
                                "channel_add", "channel_sub", "act", "add", "scalar", "permute",
                                "mean", "binary_conv2d"};
  return names[static_cast<int>(ops_.at(i).kind)];
}

void Program::run(const float* x, size_t B, float* y, double* op_ns) const {
  if (!final_) throw std::logic_error("program not finalized");
  if (B == 0) return;
  // One workspace per thread, grown as needed and reused: no allocation or zero-fill per call
  // (every value is written by its op before it is read).
  thread_local std::vector<float> arena;
  if (arena.size() < arena_ * B + 16) arena.resize(arena_ * B + 16);
  float* base = arena.data();
  auto ptr = [&](int v) { return base + offset_[root(v)] * B; };
  std::memcpy(ptr(input_), x, sizeof(float) * prod(shapes_[input_]) * B);
  // Reused per thread: after the first call nothing here allocates (vector copy-assignment keeps
  // its capacity).
  thread_local std::vector<const float*> ins;
  thread_local std::vector<Dims> dims;
  thread_local Dims od;
  auto batched = [&](Dims& d, int v) {
    const Dims& s = shapes_[v];
    d.resize(s.size() + 1);
    d[0] = B;
    std::copy(s.begin(), s.end(), d.begin() + 1);
  };
  for (size_t i = 0; i < ops_.size();) {
    const Op& op = ops_[i];
    const size_t end = group_end_[i];
    const auto t0 = op_ns ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    ins.clear();
    if (end > i) {
      ins.push_back(ptr(op.in[0]));
      for (size_t j = i; j <= end; ++j)
        if (ops_[j].kind == Kind::add) ins.push_back(ptr(ops_[j].in[1]));
      exec_chain(i, end, ins, ptr(ops_[end].out), B);
    } else {
      dims.resize(op.in.size());
      for (size_t j = 0; j < op.in.size(); ++j) {
        ins.push_back(ptr(op.in[j]));
        batched(dims[j], op.in[j]);
      }
      batched(od, op.out);
      exec(op, ins, dims, ptr(op.out), od, Window{});
    }
    if (op_ns)
      op_ns[i] += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    i = end + 1;
  }
  std::memcpy(y, ptr(output_), sizeof(float) * prod(shapes_[output_]) * B);
}

std::unique_ptr<Stream> Program::stream() const {
  if (!final_) throw std::logic_error("program not finalized");
  if (time_axis_[input_] < 1) throw std::invalid_argument("the program's input has no time axis");
  return std::make_unique<Stream>(*this);
}

// -- streaming ------------------------------------------------------------------------------------
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
void scatter(const float* src, const Dims& wd, int t, size_t from, size_t n, float* dst, size_t T,
             size_t at) {
  const size_t outer = prod(wd, 0, t), w = wd[t], inner = prod(wd, t + 1);
  for (size_t o = 0; o < outer; ++o)
    std::memcpy(dst + (o * T + at) * inner, src + (o * w + from) * inner, sizeof(float) * n * inner);
}

}  // namespace

Stream::Stream(const Program& p) : p_(p) {
  const int nv = static_cast<int>(p.shapes_.size());
  bufs_.resize(nv);
  for (int v = 0; v < nv; ++v)
    if (p.root(v) == v) bufs_[v].assign(prod(p.shapes_[v]), 0.0f);
  avail_.assign(nv, 0);
  done_.assign(p.ops_.size(), 0);
}

size_t Stream::push(const float* frames, size_t n) {
  if (finished_) throw std::logic_error("the stream is finished");
  const int in = p_.root(p_.input_);
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
  const Program& p = p_;
  std::vector<const float*> ins;
  std::vector<Dims> dims;
  for (size_t i = 0; i < p.ops_.size(); ++i) {
    const Op& op = p.ops_[i];
    const int out = op.out;
    const Dims od = p.with_batch(out, 1);
    if (p.terminal_[i]) {  // time was reduced: run once on the whole utterance
      if (!finished_ || done_[i]) continue;
      ins.clear();
      dims.clear();
      for (int v : op.in) {
        ins.push_back(bufs_[p.root(v)].data());
        dims.push_back(p.with_batch(v, 1));
      }
      p.exec(op, ins, dims, bufs_[out].data(), od, Window{});
      done_[i] = 1;
      avail_[out] = 1;
      continue;
    }
    const int t_in = p.time_axis_[op.in[0]], t_out = p.time_axis_[out];
    const Dims xd = p.with_batch(op.in[0], 1);
    const size_t T_in = xd[t_in], T_out = od[t_out];
    size_t have = avail_[p.root(op.in[0])];
    if (op.kind == Kind::add) have = std::min(have, avail_[p.root(op.in[1])]);
    size_t ready;
    ptrdiff_t lo_ctx = 0, hi_ctx = 0;  // input frames needed around an output window
    size_t stride = 1;
    if (op.kind == Kind::memory) {
      lo_ctx = op.left * op.dil;
      hi_ctx = op.right * op.dil;
      ready = (finished_ || have == T_in) ? T_out : (have > (size_t)hi_ctx ? have - hi_ctx : 0);
    } else if (op.kind == Kind::conv2d || op.kind == Kind::binary_conv2d) {
      const int d = t_in - 2;  // 0: H, 1: W
      const size_t kk = d == 0 ? op.KH : op.KW;
      stride = op.stride[d];
      lo_ctx = op.pad[d];
      hi_ctx = (ptrdiff_t)(op.dilation[d] * (kk - 1)) - (ptrdiff_t)op.pad[d];
      if (finished_ || have == T_in) {
        ready = T_out;
      } else {
        const ptrdiff_t num = (ptrdiff_t)have - 1 - hi_ctx;
        ready = num < 0 ? 0 : std::min(T_out, (size_t)(num / (ptrdiff_t)stride) + 1);
      }
    } else {
      ready = std::min(have, T_out);
    }
    if (ready <= done_[i]) continue;
    const size_t a = done_[i], b = ready;
    // input window, zero-filled outside the utterance
    ptrdiff_t wa = (ptrdiff_t)(a * stride) - lo_ctx, wb = (ptrdiff_t)((b - 1) * stride) + hi_ctx + 1;
    if (op.kind == Kind::memory) {  // the kernel pads itself: clip to the utterance
      wa = std::max<ptrdiff_t>(wa, 0);
      wb = std::min<ptrdiff_t>(wb, (ptrdiff_t)T_in);
    }
    ins.clear();
    dims.clear();
    std::vector<std::vector<float>> tmp(op.in.size());
    for (size_t j = 0; j < op.in.size(); ++j) {
      Dims wd = p.with_batch(op.in[j], 1);
      const int tj = p.time_axis_[op.in[j]];
      const Dims full = wd;
      wd[tj] = wb - wa;
      tmp[j].resize(prod(wd));
      gather(bufs_[p.root(op.in[j])].data(), full, tj, wa, wb, tmp[j].data());
      ins.push_back(tmp[j].data());
      dims.push_back(wd);
    }
    Dims owd = od;
    owd[t_out] = (op.kind == Kind::memory) ? (size_t)(wb - wa) : b - a;
    std::vector<float> y(prod(owd));
    Window window;
    if (op.kind == Kind::conv2d || op.kind == Kind::binary_conv2d) {
      window.on = true;
      window.valid_lo = std::max<ptrdiff_t>(0, -wa);
      window.valid_hi = std::min<ptrdiff_t>(wb, (ptrdiff_t)T_in) - wa;
    }
    p.exec(op, ins, dims, y.data(), owd, window);
    const size_t from = (op.kind == Kind::memory) ? a - wa : 0;
    scatter(y.data(), owd, t_out, from, b - a, bufs_[out].data(), T_out, a);
    done_[i] = b;
    avail_[out] = b;
  }
}

}  // namespace fbck::rt
