// Per-element ops and the chain that fuses them (elementwise.h). Every loop is a plain loop the
// compiler vectorises; the float operations are those of the PyTorch layers, in their order.
#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

// On x86-64 the hot loops are cloned for AVX2 and AVX-512 and picked at load time (ifunc); plain
// multiplies and adds (no FMA: -ffp-contract=off), so every clone computes the same floats.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FBCK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FBCK_CLONES
#endif

namespace fbck::rt {
namespace {

// The loops, branch-free (both sides computed, then selected) so they vectorise.
FBCK_CLONES void affine_c(const float* x, float* y, float s, float h, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] * s + h;
}
FBCK_CLONES void affine_e(const float* x, float* y, const float* s, const float* h, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] * s[e] + h[e];
}
FBCK_CLONES void prelu_c(const float* x, float* y, float sl, size_t n) {
  for (size_t e = 0; e < n; ++e) {
    const float v = x[e], m = v * sl;
    y[e] = v > 0.0f ? v : m;
  }
}
FBCK_CLONES void prelu_e(const float* x, float* y, const float* sl, size_t n) {
  for (size_t e = 0; e < n; ++e) {
    const float v = x[e], m = v * sl[e];
    y[e] = v > 0.0f ? v : m;
  }
}
FBCK_CLONES void add_c(const float* x, float* y, float a, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] + a;
}
FBCK_CLONES void sub_c(const float* x, float* y, float a, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] - a;
}
FBCK_CLONES void add_e(const float* x, float* y, const float* a, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] + a[e];
}
FBCK_CLONES void sub_e(const float* x, float* y, const float* a, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] - a[e];
}
FBCK_CLONES void relu(const float* x, float* y, size_t n) {
  for (size_t e = 0; e < n; ++e) {
    const float v = x[e];
    y[e] = v > 0.0f ? v : 0.0f;
  }
}
FBCK_CLONES void mul_c(const float* x, float* y, float m, size_t n) {
  for (size_t e = 0; e < n; ++e) y[e] = x[e] * m;
}

// Per-channel constants: v[c] for a span of one channel, or v[c + e] per element.
struct PerChannel {
  std::vector<float> v;
  bool shared = false;  // one value for every channel (PReLU with one slope)
  float at(size_t c) const { return v[shared ? 0 : c]; }
  void widen(size_t inner) {
    if (shared) return;
    std::vector<float> e(v.size() * inner);
    for (size_t c = 0; c < v.size(); ++c) std::fill_n(e.begin() + c * inner, inner, v[c]);
    v.swap(e);
  }
};

template <class Derived>
class Base : public Elementwise {
 public:
  std::unique_ptr<Elementwise> widened(size_t inner) const override {
    auto w = std::make_unique<Derived>(static_cast<const Derived&>(*this));
    w->widen(inner);
    return w;
  }
  virtual void widen(size_t) {}
};

class Affine : public Base<Affine> {
 public:
  PerChannel scale, shift;
  void widen(size_t inner) override { scale.widen(inner), shift.widen(inner); }
  void apply(const float* x, const float*, float* y, size_t c, size_t n, bool per_elem) const override {
    if (per_elem)
      affine_e(x, y, scale.v.data() + c, shift.v.data() + c, n);
    else
      affine_c(x, y, scale.at(c), shift.at(c), n);
  }
  float value(float x, size_t c) const override { return x * scale.at(c) + shift.at(c); }
  int monotone(size_t c) const override { return scale.at(c) >= 0.0f ? 1 : -1; }
  Step post_step(size_t C, std::vector<float>& a, std::vector<float>& b) const override {
    if (scale.v.size() != C || shift.v.size() != C) return Step::other;
    a = scale.v, b = shift.v;
    return Step::affine;
  }
};

class PRelu : public Base<PRelu> {
 public:
  PerChannel slope;
  void widen(size_t inner) override { slope.widen(inner); }
  void apply(const float* x, const float*, float* y, size_t c, size_t n, bool per_elem) const override {
    if (per_elem && !slope.shared)
      prelu_e(x, y, slope.v.data() + c, n);
    else
      prelu_c(x, y, slope.at(c), n);
  }
  float value(float x, size_t c) const override { return x > 0.0f ? x : x * slope.at(c); }
  int monotone(size_t c) const override { return slope.at(c) > 0.0f ? 1 : 0; }
  Step post_step(size_t C, std::vector<float>& a, std::vector<float>&) const override {
    if (!slope.shared && slope.v.size() != C) return Step::other;
    a.resize(C);
    for (size_t c = 0; c < C; ++c) a[c] = slope.at(c);
    return Step::prelu;
  }
};

class ChannelAdd : public Base<ChannelAdd> {
 public:
  PerChannel value_;
  bool subtract = false;
  void widen(size_t inner) override { value_.widen(inner); }
  void apply(const float* x, const float*, float* y, size_t c, size_t n, bool per_elem) const override {
    if (per_elem)
      (subtract ? sub_e : add_e)(x, y, value_.v.data() + c, n);
    else
      (subtract ? sub_c : add_c)(x, y, value_.at(c), n);
  }
  float value(float x, size_t c) const override { return subtract ? x - value_.at(c) : x + value_.at(c); }
  int monotone(size_t) const override { return 1; }
  Step post_step(size_t, std::vector<float>&, std::vector<float>&) const override { return Step::other; }
};

enum class ActFn { relu, hardtanh, leaky_relu, tanh, sigmoid };

class Act : public Base<Act> {
 public:
  ActFn fn = ActFn::relu;
  float a0 = 0.0f, a1 = 0.0f;
  void apply(const float* x, const float*, float* y, size_t, size_t n, bool) const override {
    switch (fn) {
      case ActFn::relu:
        relu(x, y, n);
        break;
      case ActFn::hardtanh: {
        const float lo = a0, hi = a1;
        for (size_t e = 0; e < n; ++e) y[e] = std::min(std::max(x[e], lo), hi);
        break;
      }
      case ActFn::leaky_relu:
        prelu_c(x, y, a0, n);
        break;
      case ActFn::tanh:
        for (size_t e = 0; e < n; ++e) y[e] = std::tanh(x[e]);
        break;
      case ActFn::sigmoid:
        for (size_t e = 0; e < n; ++e) y[e] = 1.0f / (1.0f + std::exp(-x[e]));
        break;
    }
  }
  float value(float x, size_t c) const override {
    float y = 0.0f;
    apply(&x, nullptr, &y, c, 1, false);
    return y;
  }
  Step post_step(size_t C, std::vector<float>& a, std::vector<float>&) const override {
    if (fn == ActFn::relu) return Step::relu;
    if (fn != ActFn::leaky_relu) return Step::other;
    a.assign(C, a0);  // a leaky ReLU is a PReLU with one slope
    return Step::prelu;
  }
  int monotone(size_t) const override {
    switch (fn) {
      case ActFn::relu: return 1;
      case ActFn::hardtanh: return a0 <= a1 ? 1 : 0;
      case ActFn::leaky_relu: return a0 > 0.0f ? 1 : 0;
      default: return 0;  // libm's tanh and exp are not promised to be monotone
    }
  }
};

class Scalar : public Base<Scalar> {
 public:
  float mul = 1.0f, add = 0.0f;
  void apply(const float* x, const float*, float* y, size_t, size_t n, bool) const override {
    const float m = mul, a = add;
    if (m != 1.0f && a != 0.0f)
      affine_c(x, y, m, a, n);
    else if (m != 1.0f)
      mul_c(x, y, m, n);
    else if (a != 0.0f)
      add_c(x, y, a, n);
    else if (y != x)
      std::memcpy(y, x, sizeof(float) * n);
  }
  float value(float x, size_t c) const override {
    float y = 0.0f;
    apply(&x, nullptr, &y, c, 1, false);
    return y;
  }
  int monotone(size_t) const override { return mul >= 0.0f ? 1 : -1; }
  Step post_step(size_t, std::vector<float>&, std::vector<float>&) const override { return Step::other; }
};

class Add : public Base<Add> {
 public:
  void apply(const float* x, const float* other, float* y, size_t, size_t n, bool) const override {
    add_e(x, y, other, n);
  }
  float value(float x, size_t) const override { return x; }  // never folded: it reads another value
  int monotone(size_t) const override { return 0; }
  Step post_step(size_t, std::vector<float>&, std::vector<float>&) const override { return Step::residual; }
};

// Per-channel runs shorter than this many floats are too short for one loop per channel.
constexpr size_t kWideBelow = 64;

}  // namespace

// An op on its own (not part of a chain), e.g. in a stream's window.
void Elementwise::run(const Args& a) const {
  const Dims& d = a.in_dims[0];
  const float* other = in.size() > 1 ? a.in[1] : nullptr;
  if (axis < 0) {
    apply(a.in[0], other, a.out, 0, prod(d), false);
    return;
  }
  const Split sp = split(d, axis);
  for (size_t o = 0; o < sp.outer; ++o) {
    const size_t base = o * sp.mid * sp.inner;
    if (sp.inner == 1) {
      apply(a.in[0] + base, nullptr, a.out + base, 0, sp.mid, true);
      continue;
    }
    for (size_t c = 0; c < sp.mid; ++c)
      apply(a.in[0] + base + c * sp.inner, nullptr, a.out + base + c * sp.inner, c, sp.inner, false);
  }
}

TimeMap Elementwise::time_map(const std::vector<int>& t) const {
  TimeMap m = Op::time_map(t);
  if (axis >= 0 && axis == m.out_axis) m.out_axis = -1;  // per-channel along time: whole utterance
  return m;
}

std::unique_ptr<Op> make_elementwise(const OpSpec& s, const std::vector<Dims>& x, const Dims&) {
  const std::string& k = s.kind;
  const int axis = s.ints.count("axis") ? static_cast<int>(s.ints.at("axis")) : -1;
  auto per = [&](const char* role) {
    PerChannel p;
    p.v = f32(s, role);
    p.shared = k == "prelu" && s.ints.at("shared") != 0;
    if (axis >= 0 && p.v.size() != (p.shared ? 1 : x[0][axis])) bad_op(s, std::string(role) + " size");
    return p;
  };
  std::unique_ptr<Elementwise> op;
  if (k == "affine") {
    auto a = std::make_unique<Affine>();
    a->scale = per("scale"), a->shift = per("shift");
    op = std::move(a);
  } else if (k == "prelu") {
    auto a = std::make_unique<PRelu>();
    a->slope = per("slope");
    op = std::move(a);
  } else if (k == "channel_add" || k == "channel_sub") {
    auto a = std::make_unique<ChannelAdd>();
    a->value_ = per("value");
    a->subtract = k == "channel_sub";
    op = std::move(a);
  } else if (k == "scalar") {
    auto a = std::make_unique<Scalar>();
    a->mul = static_cast<float>(s.floats.at("mul")), a->add = static_cast<float>(s.floats.at("add"));
    op = std::move(a);
  } else if (k == "add") {
    op = std::make_unique<Add>();
  } else {
    auto a = std::make_unique<Act>();
    if (k == "relu") a->fn = ActFn::relu;
    else if (k == "hardtanh") {
      a->fn = ActFn::hardtanh;
      a->a0 = static_cast<float>(s.floats.at("min")), a->a1 = static_cast<float>(s.floats.at("max"));
    } else if (k == "leaky_relu") {
      a->fn = ActFn::leaky_relu;
      a->a0 = static_cast<float>(s.floats.at("slope"));
    } else if (k == "tanh") a->fn = ActFn::tanh;
    else if (k == "sigmoid") a->fn = ActFn::sigmoid;
    else bad_op(s, "not an elementwise op");
    op = std::move(a);
  }
  op->axis = axis;
  return op;
}

// -- chains --------------------------------------------------------------------------------------
Chain::Chain(std::vector<std::unique_ptr<Elementwise>> members, const Dims& shape)
    : members_(std::move(members)), shape_(shape) {
  kind = "chain";
  name = members_.front()->name;
  in.push_back(members_.front()->in[0]);
  for (const auto& m : members_) {
    if (m->in.size() > 1) in.push_back(m->in[1]);
    if (m->axis >= 0) axis_ = m->axis;
  }
  out = members_.back()->out;
  // When the channel axis sits just outside a few frames (the (B, C, T) backbone), the
  // per-channel constants are expanded per element once and the chain runs over whole samples.
  if (axis_ >= 1) {
    const Split sp = split(shape_, axis_);
    if (sp.inner > 1 && sp.inner < kWideBelow)
      for (const auto& m : members_) wide_.push_back(m->widened(sp.inner));
  }
}

TimeMap Chain::time_map(const std::vector<int>& t) const {
  TimeMap m = Op::time_map(t);
  if (axis_ >= 0 && axis_ == m.out_axis) m.out_axis = -1;
  return m;
}

void Chain::exec(const float* x, const float* const* others, float* y, size_t B, const Dims& shape,
                 const std::vector<std::unique_ptr<Elementwise>>* wide) const {
  // split() of the batched shape, without building it
  Split sp{B, 1, prod(shape, 1)};
  if (axis_ >= 1) sp = {B * prod(shape, 1, axis_), shape[axis_], prod(shape, axis_ + 1)};
  // Each member runs over a whole span before the next one, so the span stays in L1: a channel's
  // `inner` run, or (channel axis innermost, or wide constants) one row of `mid * inner`.
  auto span = [&](bool per_elem, size_t base, size_t c, size_t n) {
    size_t extra = 0;
    for (size_t i = 0; i < members_.size(); ++i) {
      const Elementwise& m = wide ? *(*wide)[i] : *members_[i];
      const float* src = i == 0 ? x + base : y + base;
      const float* other = m.in.size() > 1 ? others[extra++] + base : nullptr;
      m.apply(src, other, y + base, c, n, per_elem);
    }
  };
  if (sp.inner == 1) {
    for (size_t o = 0; o < sp.outer; ++o) span(true, o * sp.mid, 0, sp.mid);
  } else if (wide) {
    const size_t n = sp.mid * sp.inner;
    for (size_t o = 0; o < sp.outer; ++o) span(true, o * n, 0, n);
  } else {
    for (size_t o = 0; o < sp.outer; ++o)
      for (size_t c = 0; c < sp.mid; ++c) span(false, (o * sp.mid + c) * sp.inner, c, sp.inner);
  }
}

void Chain::apply_in_place(float* y, const float* const* others, const Dims& d) const {
  run_on(y, others, y, d);
}

void Chain::run(const Args& a) const { run_on(a.in[0], a.in + 1, a.out, a.in_dims[0]); }

const std::vector<std::unique_ptr<Elementwise>>* Chain::wide_for(const Dims& d) const {
  if (d.size() == shape_.size() && std::equal(d.begin() + 1, d.end(), shape_.begin() + 1))
    return wide_.empty() ? nullptr : &wide_;
  if (axis_ < 1) return nullptr;
  // a stream's window: the same shape but along time
  const size_t inner = prod(d, axis_ + 1);
  if (inner <= 1 || inner >= kWideBelow) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = window_wide_.find(inner);
  if (it == window_wide_.end()) {
    std::vector<std::unique_ptr<Elementwise>> w;
    for (const auto& m : members_) w.push_back(m->widened(inner));
    it = window_wide_.emplace(inner, std::move(w)).first;
  }
  return &it->second;  // std::map never moves its nodes
}

void Chain::run_on(const float* x, const float* const* others, float* y, const Dims& d) const {
  exec(x, others, y, d[0], d, wide_for(d));
}

}  // namespace fbck::rt
