// nanobind glue for the FBCK kernels: binarize.backends._fbck.
//
// Only argument checking, output allocation and GIL handling live here; the kernels and the
// dispatch table are plain C++ (backends/include/fbck/kernels.h). Inputs must be C-contiguous CPU
// arrays of the documented dtype (no implicit conversion): a wrong dtype raises TypeError, a wrong
// shape, size or layout raises ValueError. Outputs are new numpy arrays.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <random>
#include <tuple>
#include <string>
#include <vector>

#include "fbck/bench.h"
#include "fbck/kernels.h"

namespace nb = nanobind;
using namespace nb::literals;

#if defined(FBCK_WITH_RUNTIME)
void bind_runtime(nb::module_& m);  // backends/bindings/runtime.cpp
#endif

namespace {

using In = nb::ndarray<nb::ro, nb::device::cpu>;
using OptIn = std::optional<In>;

const char* const kKnownImpls[] = {"auto", "ref", "avx2", "avx512", "neon"};

const fbck::Kernels& pick(const std::string& impl) {
  bool known = false;
  for (const char* n : kKnownImpls) known = known || impl == n;
  if (!known)
    throw nb::value_error(("unknown impl '" + impl +
                           "' (expected one of auto, ref, avx2, avx512, neon)").c_str());
  return fbck::get_kernels(impl);  // std::runtime_error -> RuntimeError when unavailable
}

template <class T>
const char* dtype_name() {
  if (std::is_same_v<T, float>) return "float32";
  if (std::is_same_v<T, uint64_t>) return "uint64";
  if (std::is_same_v<T, int8_t>) return "int8";
  if (std::is_same_v<T, int32_t>) return "int32";
  if (std::is_same_v<T, uint32_t>) return "uint32";
  return "?";
}

std::string shape_str(const In& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype (TypeError), rank and C-contiguity (ValueError); returns the data pointer.
template <class T>
const T* checked(const In& a, const char* fn, const char* name, std::initializer_list<size_t> ranks) {
  if (a.dtype() != nb::dtype<T>())
    throw nb::type_error((std::string(fn) + "(): '" + name + "' must be a " + dtype_name<T>() +
                          " array")
                             .c_str());
  bool rank_ok = false;
  for (size_t r : ranks) rank_ok = rank_ok || a.ndim() == r;
  if (!rank_ok) {
    std::string rs;
    for (size_t r : ranks) rs += (rs.empty() ? "" : " or ") + std::to_string(r);
    throw nb::value_error((std::string(fn) + "(): '" + name + "' must have " + rs +
                           " dimensions, got shape " + shape_str(a))
                              .c_str());
  }
  int64_t expect = 1;
  for (size_t i = a.ndim(); a.size() > 0 && i-- > 0;) {
    if (a.shape(i) > 1 && a.stride(i) != expect)
      throw nb::value_error((std::string(fn) + "(): '" + name +
                             "' must be C-contiguous (use numpy.ascontiguousarray)")
                                .c_str());
    expect *= static_cast<int64_t>(a.shape(i));
  }
  return static_cast<const T*>(a.data());
}

void expect_dim(const In& a, size_t dim, size_t want, const char* fn, const char* name,
                const char* what) {
  if (a.shape(dim) != want)
    throw nb::value_error((std::string(fn) + "(): '" + name + "' has shape " + shape_str(a) +
                           ", expected size " + std::to_string(want) + " on axis " +
                           std::to_string(dim) + " (" + what + ")")
                              .c_str());
}

// A float32 vector of length n, or null when absent.
const float* opt_vec(const OptIn& a, size_t n, const char* fn, const char* name) {
  if (!a) return nullptr;
  const float* p = checked<float>(*a, fn, name, {1});
  expect_dim(*a, 0, n, fn, name, "one value per channel");
  return p;
}

void fail(const std::string& msg) { throw nb::value_error(msg.c_str()); }

template <class T>
using Out = nb::ndarray<nb::numpy, T>;

template <class T>
Out<T> new_array(std::initializer_list<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T* data = new T[n ? n : 1]();
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return Out<T>(data, shape.size(), shape.begin(), owner);
}

// (outer, K, inner) view of an activation array: 2-D (P, K) or 3-D (outer, K, inner).
struct ActShape {
  size_t outer, K, inner;
};
ActShape act_shape(const In& x) {
  if (x.ndim() == 2) return {x.shape(0), x.shape(1), 1};
  return {x.shape(0), x.shape(1), x.shape(2)};
}

void check_k(size_t K, const char* fn) {
  if (K < 1 || K > (size_t(1) << 30)) fail(std::string(fn) + "(): K must be in 1..2^30");
}

// Packed rows: uint64 [rows, row_words(K)].
const uint64_t* packed(const In& a, size_t K, const char* fn, const char* name) {
  const uint64_t* p = checked<uint64_t>(a, fn, name, {2});
  expect_dim(a, 1, fbck::row_words(K), fn, name, "row_words(K) words per packed row");
  return p;
}

nb::dict bench_dict(const fbck::BenchResult& b, double bmacs) {
  nb::dict d;
  d["best_ns"] = b.best_ns;
  d["median_ns"] = b.median_ns;
  d["best_ticks"] = b.best_ticks;
  d["median_ticks"] = b.median_ticks;
  d["ticks_kind"] = std::string(b.ticks_kind);
  d["tick_hz"] = b.tick_hz;
  d["samples"] = b.samples;
  d["reps"] = b.reps;
  d["macs"] = bmacs;
  if (b.best_ticks > 0) d["macs_per_tick"] = bmacs / b.best_ticks;
  return d;
}

std::vector<uint64_t> random_bits(size_t rows, size_t K, std::mt19937_64& rng) {
  const size_t W = fbck::row_words(K);
  std::vector<uint64_t> v(rows * W, 0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t k = 0; k < K; k += 64) {
      uint64_t x = rng();
      if (K - k < 64) x &= (uint64_t(1) << (K - k)) - 1;
      v[r * W + k / 64] = x;
    }
  return v;
}

std::vector<float> random_floats(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::pair<size_t, size_t> pair_arg(const nb::object& o, const char* fn, const char* name) {
  if (nb::isinstance<nb::int_>(o)) {
    const long long v = nb::cast<long long>(o);
    if (v < 0) fail(std::string(fn) + "(): '" + name + "' must be >= 0");
    return {size_t(v), size_t(v)};
  }
  auto t = nb::cast<std::vector<long long>>(o);
  if (t.size() != 2 || t[0] < 0 || t[1] < 0)
    fail(std::string(fn) + "(): '" + name + "' must be an int or a pair of ints >= 0");
  return {size_t(t[0]), size_t(t[1])};
}

// The post-ops of kernels.h (PostOps) from a Python dict, with the plane outputs it asks for:
//   scale, shift: [N] (an affine, both or neither); act: 'none' | 'relu' | 'prelu'; slope: [N]
//   (with 'prelu'); res: the residual, shaped like the float output; planes: 0, 1 or 2 bit planes
//   of the result (t0, t1: [N] thresholds, s1: True for mean |y| per position); float: False to
//   skip the float output (planes only).
struct PostSpec {
  fbck::PostOps ops;
  bool want_float = true;
  Out<uint64_t> bits1, bits2;
  Out<float> s1, s2;
  int planes = 0;
  bool with_s1 = false;
};

std::unique_ptr<PostSpec> parse_post(const std::optional<nb::dict>& d, size_t N, size_t P,
                                     size_t ysize, const char* fn) {
  if (!d) return nullptr;
  auto ps = std::make_unique<PostSpec>();
  const std::string f(fn);
  auto arr = [&](const char* key, size_t n) -> const float* {
    if (!d->contains(key) || (*d)[key].is_none()) return nullptr;
    const In a = nb::cast<In>((*d)[key]);
    const float* p = checked<float>(a, fn, key, {1, 2, 3, 4});
    if (a.size() != n)
      fail(f + "(): post['" + key + "'] has " + std::to_string(a.size()) + " values, expected " +
           std::to_string(n));
    return p;
  };
  for (auto item : *d) {
    const std::string key = nb::cast<std::string>(item.first);
    static const char* known[] = {"scale", "shift", "act", "slope", "res", "t0", "t1", "planes", "s1", "float"};
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok)
      fail(f + "(): unknown post key '" + key +
           "' (expected scale, shift, act, slope, res, t0, t1, planes, s1, float)");
  }
  ps->ops.scale = arr("scale", N);
  ps->ops.shift = arr("shift", N);
  if (!ps->ops.scale != !ps->ops.shift) fail(f + "(): post needs both 'scale' and 'shift' (an affine)");
  const std::string act = d->contains("act") ? nb::cast<std::string>((*d)["act"]) : "none";
  if (act == "relu") ps->ops.act = fbck::Act::relu;
  else if (act == "prelu") ps->ops.act = fbck::Act::prelu;
  else if (act != "none") fail(f + "(): post['act'] must be 'none', 'relu' or 'prelu'");
  ps->ops.slope = arr("slope", N);
  if ((ps->ops.act == fbck::Act::prelu) != (ps->ops.slope != nullptr))
    fail(f + "(): post['slope'] goes with act='prelu' (and only with it)");
  ps->ops.res = arr("res", ysize);
  ps->planes = d->contains("planes") ? nb::cast<int>((*d)["planes"]) : 0;
  if (ps->planes < 0 || ps->planes > 2) fail(f + "(): post['planes'] must be 0, 1 or 2");
  ps->with_s1 = d->contains("s1") && nb::cast<bool>((*d)["s1"]);
  ps->want_float = !d->contains("float") || nb::cast<bool>((*d)["float"]);
  if (!ps->want_float && ps->planes == 0) fail(f + "(): post with float=False needs planes");
  ps->ops.planes.t0 = arr("t0", N);
  ps->ops.planes.t1 = arr("t1", N);
  if (ps->ops.planes.t1 && ps->planes != 2) fail(f + "(): post['t1'] needs planes=2");
  const size_t WN = fbck::row_words(N);
  ps->bits1 = new_array<uint64_t>({ps->planes >= 1 ? P : 0, WN});
  ps->bits2 = new_array<uint64_t>({ps->planes == 2 ? P : 0, WN});
  ps->s2 = new_array<float>({ps->planes == 2 ? P : 0});
  ps->s1 = new_array<float>({ps->with_s1 && ps->planes ? P : 0});
  if (ps->planes >= 1) ps->ops.planes.bits1 = ps->bits1.data();
  if (ps->planes == 2) ps->ops.planes.bits2 = ps->bits2.data(), ps->ops.planes.s2 = ps->s2.data();
  if (ps->with_s1 && ps->planes) ps->ops.planes.s1 = ps->s1.data();
  return ps;
}

// (y or None, planes dict) when post-ops were given, else y.
nb::object with_post(const nb::object& y, const std::unique_ptr<PostSpec>& ps) {
  if (!ps) return y;
  nb::dict d;
  if (ps->planes >= 1) d["bits1"] = ps->bits1;
  if (ps->planes == 2) d["bits2"] = ps->bits2, d["s2"] = ps->s2;
  if (ps->with_s1 && ps->planes) d["s1"] = ps->s1;
  return nb::make_tuple(ps->want_float ? y : nb::none(), d);
}

}  // namespace

NB_MODULE(_fbck, m) {
  m.doc() =
      "FBCK: fast bitwise computation kernels for binarize (see backends/README.md).\n"
      "Every kernel takes impl='auto'|'ref'|'avx2'|'avx512'|'neon'.";

  m.def("row_words", [](size_t K) { return fbck::row_words(K); }, "K"_a,
        "uint64 words per packed row of K bits: 2 * ceil(K / 128).");
  m.def("available_impls", &fbck::available_impls,
        "Implementations usable on this machine ('ref' first, the best last).");
  m.def("default_impl", []() { return std::string(fbck::kernels().name); },
        "The implementation impl='auto' uses ($FBCK_IMPL or the best for this CPU).");

  // ------------------------------------------------------------------------- packing
  m.def(
      "pack_threshold",
      [](const In& x, const OptIn& t0, bool with_scale, const std::string& impl) -> nb::object {
        const char* fn = "pack_threshold";
        const float* xp = checked<float>(x, fn, "x", {2, 3});
        const auto s = act_shape(x);
        check_k(s.K, fn);
        const float* t0p = opt_vec(t0, s.K, fn, "t0");
        const auto& k = pick(impl);
        const size_t P = s.outer * s.inner;
        auto bits = new_array<uint64_t>({P, fbck::row_words(s.K)});
        auto s1 = new_array<float>({with_scale ? P : 0});
        {
          nb::gil_scoped_release r;
          k.pack_threshold(xp, s.outer, s.K, s.inner, t0p, bits.data(),
                           with_scale ? s1.data() : nullptr);
        }
        if (with_scale) return nb::make_tuple(bits, s1);
        return nb::cast(bits);
      },
      "x"_a, "t0"_a = nb::none(), "with_scale"_a = false, "impl"_a = "auto",
      "x float32 (P, K) or (outer, K, inner) -> bits uint64 [P, row_words(K)] with\n"
      "bit = !((x - t0[k]) >= 0); with_scale=True also returns s1[P] = mean_k |x|.");

  m.def(
      "pack_dual",
      [](const In& x, const OptIn& t0, const OptIn& t1, bool with_s1,
         const std::string& impl) -> nb::object {
        const char* fn = "pack_dual";
        const float* xp = checked<float>(x, fn, "x", {2, 3});
        const auto s = act_shape(x);
        check_k(s.K, fn);
        const float* t0p = opt_vec(t0, s.K, fn, "t0");
        const float* t1p = opt_vec(t1, s.K, fn, "t1");
        const auto& k = pick(impl);
        const size_t P = s.outer * s.inner, W = fbck::row_words(s.K);
        auto b1 = new_array<uint64_t>({P, W});
        auto b2 = new_array<uint64_t>({P, W});
        auto s2 = new_array<float>({P});
        auto s1 = new_array<float>({with_s1 ? P : 0});
        {
          nb::gil_scoped_release r;
          k.pack_dual(xp, s.outer, s.K, s.inner, t0p, t1p, b1.data(), b2.data(), s2.data(),
                      with_s1 ? s1.data() : nullptr);
        }
        if (with_s1) return nb::make_tuple(b1, b2, s2, s1);
        return nb::make_tuple(b1, b2, s2);
      },
      "x"_a, "t0"_a = nb::none(), "t1"_a = nb::none(), "with_s1"_a = false, "impl"_a = "auto",
      "DTA dual-scale packing -> (bits1, bits2, s2[P]) (+ s1[P] with with_s1=True).");

  m.def(
      "pack_weights",
      [](const In& w, const std::string& impl) {
        const char* fn = "pack_weights";
        const float* wp = checked<float>(w, fn, "w", {2});
        const size_t N = w.shape(0), K = w.shape(1);
        check_k(K, fn);
        const auto& k = pick(impl);
        auto bits = new_array<uint64_t>({N, fbck::row_words(K)});
        {
          nb::gil_scoped_release r;
          k.pack_weights(wp, N, K, bits.data());
        }
        return bits;
      },
      "w"_a, "impl"_a = "auto", "w float32 [N, K] -> bits uint64 [N, row_words(K)], bit = w < 0.");

  // ------------------------------------------------------------------------- bgemm
  m.def(
      "bgemm",
      [](const In& a, const In& w, size_t K, const std::string& impl) {
        const char* fn = "bgemm";
        check_k(K, fn);
        const uint64_t* ap = packed(a, K, fn, "a");
        const uint64_t* wp = packed(w, K, fn, "w");
        const auto& k = pick(impl);
        const size_t P = a.shape(0), N = w.shape(0);
        auto out = new_array<int32_t>({P, N});
        {
          nb::gil_scoped_release r;
          k.bgemm(ap, P, wp, N, K, out.data());
        }
        return out;
      },
      "a"_a, "w"_a, "K"_a, "impl"_a = "auto",
      "out int32 [P, N] = K - 2 * popcount(a[p] XOR w[n]).");

  // ------------------------------------------------------------------------- binary linear
  m.def(
      "binary_linear",
      [](const In& a1, const In& w, size_t K, const OptIn& sw, const OptIn& bias, const OptIn& s1,
         const OptIn& a2, const OptIn& s2, const OptIn& slope, size_t inner, const OptIn& thr,
         const std::string& out, const std::optional<nb::dict>& post, bool use_w16,
         const std::string& impl) -> nb::object {
        const char* fn = "binary_linear";
        check_k(K, fn);
        const uint64_t* a1p = packed(a1, K, fn, "a1");
        const uint64_t* wp = packed(w, K, fn, "w");
        const size_t P = a1.shape(0), N = w.shape(0);
        if (inner < 1 || P % inner) fail("binary_linear(): inner must divide the number of rows P");
        fbck::BinaryLinearArgs g;
        g.a1 = a1p;
        g.w = wp;
        g.K = K;
        g.N = N;
        g.inner = inner;
        g.outer = P / inner;
        g.sw = opt_vec(sw, N, fn, "sw");
        g.bias = opt_vec(bias, N, fn, "bias");
        g.slope = opt_vec(slope, N, fn, "slope");
        g.s1 = opt_vec(s1, P, fn, "s1");
        if (a2) {
          g.a2 = packed(*a2, K, fn, "a2");
          expect_dim(*a2, 0, P, fn, "a2", "same rows as a1");
          if (!s2) fail("binary_linear(): s2 is required with a2");
          g.s2 = opt_vec(s2, P, fn, "s2");
        } else if (s2) {
          fail("binary_linear(): s2 given without a2");
        }
        const bool want_f = out == "float" || out == "both";
        const bool want_b = out == "bits" || out == "both";
        if (!want_f && !want_b) fail("binary_linear(): out must be 'float', 'bits' or 'both'");
        if (want_b && !thr) fail("binary_linear(): out='bits' needs thr");
        g.thr = opt_vec(thr, N, fn, "thr");
        const auto& k = pick(impl);
        std::vector<uint32_t> w16;
        if (k.wants_w16 && use_w16) {
          w16 = fbck::interleave_rows16(wp, N, K);
          g.w16 = w16.data();
        }
        const auto ps = parse_post(post, N, P, P * N, fn);
        if (ps) g.post = &ps->ops;
        const bool keep_f = want_f && (!ps || ps->want_float);
        auto y = inner == 1 ? new_array<float>({keep_f ? P : 0, N})
                            : new_array<float>({keep_f ? g.outer : 0, N, inner});
        auto yb = new_array<uint64_t>({want_b ? P : 0, fbck::row_words(N)});
        g.y = keep_f ? y.data() : nullptr;
        g.ybits = want_b ? yb.data() : nullptr;
        {
          nb::gil_scoped_release r;
          k.binary_linear(g);
        }
        if (ps) return with_post(want_b ? nb::object(nb::make_tuple(y, yb)) : nb::cast(y), ps);
        if (want_f && want_b) return nb::make_tuple(y, yb);
        return want_f ? nb::cast(y) : nb::cast(yb);
      },
      "a1"_a, "w"_a, "K"_a, "sw"_a = nb::none(), "bias"_a = nb::none(), "s1"_a = nb::none(),
      "a2"_a = nb::none(), "s2"_a = nb::none(), "slope"_a = nb::none(), "inner"_a = 1,
      "thr"_a = nb::none(), "out"_a = "float", "post"_a = nb::none(), "w16"_a = true,
      "impl"_a = "auto",
      "Fused binary GEMM + epilogue (README float order). Float output (P, N) when inner == 1,\n"
      "else (P // inner, N, inner); out='bits' gives uint64 [P, row_words(N)] with\n"
      "bit = !((y - thr[n]) >= 0); out='both' returns (y, bits). post: a dict of post-ops and\n"
      "bit planes (kernels.h PostOps: scale, shift, act, slope, res, planes, t0, t1, s1, float);\n"
      "the result is then (that output, planes dict). w16=False: no interleaved weights.");

  // ------------------------------------------------------------------------- binary memory
  m.def(
      "binary_memory",
      [](const In& x, const In& ws, size_t left, size_t dilation, int channel_axis,
         const OptIn& t0, int planes, const nb::object& s1, const OptIn& t1, const OptIn& t2,
         const OptIn& sw, const OptIn& bias, float residual, const std::optional<nb::dict>& post,
         const std::string& impl) -> nb::object {
        const char* fn = "binary_memory";
        const float* xp = checked<float>(x, fn, "x", {3});
        if (channel_axis < 0) channel_axis += 3;
        if (channel_axis != 1 && channel_axis != 2) fail("binary_memory(): channel_axis must be 1 or 2");
        fbck::BinaryMemoryArgs g;
        g.x = xp;
        g.B = x.shape(0);
        g.C = x.shape(channel_axis);
        g.T = x.shape(3 - channel_axis);
        if (g.C < 1) fail("binary_memory(): need at least one channel");
        const ptrdiff_t s1d = static_cast<ptrdiff_t>(x.shape(2)), s0d = s1d * x.shape(1);
        g.stride_b = s0d;
        g.stride_c = channel_axis == 1 ? s1d : 1;
        g.stride_t = channel_axis == 1 ? 1 : s1d;
        const int8_t* wsp = checked<int8_t>(ws, fn, "ws", {2});
        expect_dim(ws, 0, g.C, fn, "ws", "one row of taps per channel");
        const size_t taps = ws.shape(1);
        if (taps < 1 || left >= taps) fail("binary_memory(): need ws.shape[1] = left + right + 1 > left");
        for (size_t i = 0; i < g.C * taps; ++i)
          if (wsp[i] < -1 || wsp[i] > 1) fail("binary_memory(): ws values must be -1, 0 or +1");
        if (dilation < 1) fail("binary_memory(): dilation must be >= 1");
        if (planes != 1 && planes != 2) fail("binary_memory(): planes must be 1 or 2");
        if (planes == 1 && t1) fail("binary_memory(): t1 needs planes=2");
        g.ws = wsp;
        g.left = left;
        g.right = taps - 1 - left;
        g.dilation = dilation;
        g.planes = planes;
        g.t0 = opt_vec(t0, g.C, fn, "t0");
        g.t1 = opt_vec(t1, g.C, fn, "t1");
        g.t2 = opt_vec(t2, g.C, fn, "t2");
        g.sw = opt_vec(sw, g.C, fn, "sw");
        g.bias = opt_vec(bias, g.C, fn, "bias");
        g.residual = residual;
        if (s1.is_none()) {
          g.s1_mode = fbck::S1Mode::none;
        } else if (nb::isinstance<nb::str>(s1)) {
          if (nb::cast<std::string>(s1) != "mean_abs")
            fail("binary_memory(): s1 must be None, 'mean_abs' or a float");
          g.s1_mode = fbck::S1Mode::mean_abs;
        } else {
          g.s1_mode = fbck::S1Mode::constant;
          g.s1_const = nb::cast<float>(s1);
        }
        const auto& k = pick(impl);
        const auto ps = parse_post(post, g.C, g.B * g.T, g.B * g.C * g.T, fn);
        if (ps) g.post = &ps->ops;
        const bool keep_f = !ps || ps->want_float;
        auto y = new_array<float>({keep_f ? x.shape(0) : 0, x.shape(1), x.shape(2)});
        g.y = keep_f ? y.data() : nullptr;
        {
          nb::gil_scoped_release r;
          k.binary_memory(g);
        }
        return with_post(nb::cast(y), ps);
      },
      "x"_a, "ws"_a, "left"_a, "dilation"_a = 1, "channel_axis"_a = 1, "t0"_a = nb::none(),
      "planes"_a = 1, "s1"_a = nb::none(), "t1"_a = nb::none(), "t2"_a = nb::none(),
      "sw"_a = nb::none(), "bias"_a = nb::none(), "residual"_a = 0.0f, "post"_a = nb::none(),
      "impl"_a = "auto",
      "BiFSMN binary memory block on x (B, C, T) (channel_axis=1) or (B, T, C) (channel_axis=2);\n"
      "ws int8 [C, left + right + 1]; s1: None, 'mean_abs' or a float. Output has x's shape.\n"
      "post: post-ops and planes as binary_linear's (planes [B * T, row_words(C)]).");

  // ------------------------------------------------------------------------- FP32
  m.def(
      "linear_f32",
      [](const In& x, const In& w, const OptIn& bias, const OptIn& scale, const OptIn& shift,
         const OptIn& slope, bool relu, const std::optional<nb::dict>& post, bool prepacked,
         const std::string& impl) -> nb::object {
        const char* fn = "linear_f32";
        fbck::LinearF32Args g;
        g.x = checked<float>(x, fn, "x", {2, 3});
        const auto s = act_shape(x);
        g.outer = s.outer;
        g.K = s.K;
        g.inner = s.inner;
        g.w = checked<float>(w, fn, "w", {2});
        expect_dim(w, 1, s.K, fn, "w", "K input features");
        g.N = w.shape(0);
        g.ep.bias = opt_vec(bias, g.N, fn, "bias");
        g.ep.scale = opt_vec(scale, g.N, fn, "scale");
        g.ep.shift = opt_vec(shift, g.N, fn, "shift");
        g.ep.slope = opt_vec(slope, g.N, fn, "slope");
        g.ep.relu = relu;
        const auto& k = pick(impl);
        std::vector<float> wpk;
        if (prepacked) {
          wpk = k.pack_f32_weights(g.w, g.N, g.K);
          g.wp = wpk.data();
        }
        const auto ps = parse_post(post, g.N, s.outer * s.inner, s.outer * g.N * s.inner, fn);
        if (ps) g.post = &ps->ops;
        const size_t rows = (!ps || ps->want_float) ? s.outer : 0;
        auto y = x.ndim() == 2 ? new_array<float>({rows, g.N}) : new_array<float>({rows, g.N, s.inner});
        g.y = rows ? y.data() : nullptr;
        {
          nb::gil_scoped_release r;
          k.linear_f32(g);
        }
        return with_post(nb::cast(y), ps);
      },
      "x"_a, "w"_a, "bias"_a = nb::none(), "scale"_a = nb::none(), "shift"_a = nb::none(),
      "slope"_a = nb::none(), "relu"_a = false, "post"_a = nb::none(), "prepacked"_a = false,
      "impl"_a = "auto",
      "y = W x over the K axis of x (P, K) or (outer, K, inner), then per-channel\n"
      "y = ((y + bias) * scale + shift), ReLU (relu=True) and PReLU(slope), each step optional;\n"
      "post: post-ops and planes as binary_linear's. prepacked=True: the weights go through the\n"
      "table's pack_f32_weights first (the same result).");

  m.def(
      "conv2d_f32",
      [](const In& x, const In& w, const nb::object& stride, const nb::object& padding,
         const nb::object& dilation, size_t groups, const OptIn& bias, const OptIn& scale,
         const OptIn& shift, const OptIn& slope, bool relu, const std::optional<nb::dict>& post,
         bool prepacked, const std::string& impl) -> nb::object {
        const char* fn = "conv2d_f32";
        fbck::Conv2dF32Args g;
        g.x = checked<float>(x, fn, "x", {4});
        g.w = checked<float>(w, fn, "w", {4});
        g.B = x.shape(0);
        g.C = x.shape(1);
        g.H = x.shape(2);
        g.W = x.shape(3);
        g.O = w.shape(0);
        g.KH = w.shape(2);
        g.KW = w.shape(3);
        g.groups = groups;
        if (groups < 1 || g.C % groups || g.O % groups)
          fail("conv2d_f32(): groups must divide the input and output channels");
        expect_dim(w, 1, g.C / groups, fn, "w", "C / groups input channels");
        if (g.KH < 1 || g.KW < 1) fail("conv2d_f32(): empty kernel");
        std::tie(g.stride_h, g.stride_w) = pair_arg(stride, fn, "stride");
        std::tie(g.pad_h, g.pad_w) = pair_arg(padding, fn, "padding");
        std::tie(g.dil_h, g.dil_w) = pair_arg(dilation, fn, "dilation");
        if (!g.stride_h || !g.stride_w || !g.dil_h || !g.dil_w)
          fail("conv2d_f32(): stride and dilation must be >= 1");
        g.ep.bias = opt_vec(bias, g.O, fn, "bias");
        g.ep.scale = opt_vec(scale, g.O, fn, "scale");
        g.ep.shift = opt_vec(shift, g.O, fn, "shift");
        g.ep.slope = opt_vec(slope, g.O, fn, "slope");
        const size_t OH = fbck::conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
        const size_t OW = fbck::conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
        if (!OH || !OW) fail("conv2d_f32(): the kernel does not fit the padded input");
        g.ep.relu = relu;
        const auto& k = pick(impl);
        std::vector<float> wpk;
        if (prepacked && groups == 1) {
          wpk = k.pack_f32_weights(g.w, g.O, g.C * g.KH * g.KW);
          g.wp = wpk.data();
        }
        const auto ps = parse_post(post, g.O, g.B * OH * OW, g.B * g.O * OH * OW, fn);
        if (ps) g.post = &ps->ops;
        const size_t b = (!ps || ps->want_float) ? g.B : 0;
        auto y = new_array<float>({b, g.O, OH, OW});
        g.y = b ? y.data() : nullptr;
        {
          nb::gil_scoped_release r;
          k.conv2d_f32(g);
        }
        return with_post(nb::cast(y), ps);
      },
      "x"_a, "w"_a, "stride"_a = 1, "padding"_a = 0, "dilation"_a = 1, "groups"_a = 1,
      "bias"_a = nb::none(), "scale"_a = nb::none(), "shift"_a = nb::none(),
      "slope"_a = nb::none(), "relu"_a = false, "post"_a = nb::none(), "prepacked"_a = false,
      "impl"_a = "auto",
      "NCHW conv2d (zero padding) with the per-output-channel epilogue of linear_f32; post-ops\n"
      "and planes (positions (b, oh, ow)) as binary_linear's. A direct convolution for <= 4 input\n"
      "channels, im2col + GEMM otherwise; every table sums in the same order.");

  m.def(
      "memory_f32",
      [](const In& x, const In& w, size_t left, size_t dilation, int channel_axis, const OptIn& bias,
         float residual, const std::optional<nb::dict>& post, const std::string& impl) -> nb::object {
        const char* fn = "memory_f32";
        const float* xp = checked<float>(x, fn, "x", {3});
        if (channel_axis < 0) channel_axis += 3;
        if (channel_axis != 1 && channel_axis != 2) fail("memory_f32(): channel_axis must be 1 or 2");
        fbck::MemoryF32Args g;
        g.x = xp;
        g.B = x.shape(0);
        g.C = x.shape(channel_axis);
        g.T = x.shape(3 - channel_axis);
        const ptrdiff_t s1d = static_cast<ptrdiff_t>(x.shape(2)), s0d = s1d * x.shape(1);
        g.stride_b = s0d;
        g.stride_c = channel_axis == 1 ? s1d : 1;
        g.stride_t = channel_axis == 1 ? 1 : s1d;
        g.w = checked<float>(w, fn, "w", {2});
        expect_dim(w, 0, g.C, fn, "w", "one row of taps per channel");
        const size_t taps = w.shape(1);
        if (taps < 1 || left >= taps) fail("memory_f32(): need w.shape[1] = left + right + 1 > left");
        if (dilation < 1) fail("memory_f32(): dilation must be >= 1");
        g.left = left, g.right = taps - 1 - left, g.dilation = dilation;
        g.bias = opt_vec(bias, g.C, fn, "bias");
        g.residual = residual;
        const auto& k = pick(impl);
        const auto ps = parse_post(post, g.C, g.B * g.T, g.B * g.C * g.T, fn);
        if (ps) g.post = &ps->ops;
        const bool keep_f = !ps || ps->want_float;
        auto y = new_array<float>({keep_f ? x.shape(0) : 0, x.shape(1), x.shape(2)});
        g.y = keep_f ? y.data() : nullptr;
        {
          nb::gil_scoped_release r;
          k.memory_f32(g);
        }
        return with_post(nb::cast(y), ps);
      },
      "x"_a, "w"_a, "left"_a, "dilation"_a = 1, "channel_axis"_a = 1, "bias"_a = nb::none(),
      "residual"_a = 0.0f, "post"_a = nb::none(), "impl"_a = "auto",
      "FP FSMN memory (Memory.exact_forward's order) on x (B, C, T) or (B, T, C); w float32\n"
      "[C, left + right + 1]; post-ops and planes as binary_memory's.");

  m.def(
      "post_ops",
      [](const In& x, const nb::dict& post, const std::string& impl) -> nb::object {
        const char* fn = "post_ops";
        const float* xp = checked<float>(x, fn, "x", {2, 3});
        const auto s = act_shape(x);
        const auto ps = parse_post(std::optional<nb::dict>(post), s.K, s.outer * s.inner, x.size(), fn);
        const auto& k = pick(impl);
        auto y = x.ndim() == 2 ? new_array<float>({ps->want_float ? s.outer : 0, s.K})
                               : new_array<float>({ps->want_float ? s.outer : 0, s.K, s.inner});
        {
          nb::gil_scoped_release r;
          k.post_ops(xp, s.outer, s.K, s.inner, ps->ops, ps->want_float ? y.data() : nullptr);
        }
        return with_post(nb::cast(y), ps);
      },
      "x"_a, "post"_a, "impl"_a = "auto",
      "The post-ops alone on x (P, N) or (outer, N, inner) (channels on axis 1 of 3-D x): returns\n"
      "(y or None, planes dict) as binary_linear(post=...).");

  m.def(
      "interleave_rows16",
      [](const In& w, size_t K) {
        const uint64_t* wp = packed(w, K, "interleave_rows16", "w");
        const size_t N = w.shape(0);
        auto v = fbck::interleave_rows16(wp, N, K);
        auto out = new_array<uint32_t>({v.size()});
        std::memcpy(out.data(), v.data(), v.size() * sizeof(uint32_t));
        return out;
      },
      "w"_a, "K"_a, "Packed weights [N, row_words(K)] -> the 16-row interleaved copy (uint32).");

  m.def(
      "binary_conv2d",
      [](const In& xbits, const In& w, size_t C, size_t H, size_t W, const nb::object& kernel,
         const nb::object& stride, const nb::object& padding, const nb::object& dilation,
         const OptIn& t2, const OptIn& s1, const OptIn& sw, const OptIn& bias, const nb::object& valid_h,
         const nb::object& valid_w, const std::optional<nb::dict>& post, bool use_w16,
         const std::string& impl) -> nb::object {
        const char* fn = "binary_conv2d";
        fbck::BinaryConv2dGeometry geo;
        geo.C = C, geo.H = H, geo.W = W;
        std::tie(geo.KH, geo.KW) = pair_arg(kernel, fn, "kernel");
        std::tie(geo.stride_h, geo.stride_w) = pair_arg(stride, fn, "stride");
        std::tie(geo.pad_h, geo.pad_w) = pair_arg(padding, fn, "padding");
        std::tie(geo.dil_h, geo.dil_w) = pair_arg(dilation, fn, "dilation");
        if (!valid_h.is_none()) std::tie(geo.h_lo, geo.h_hi) = pair_arg(valid_h, fn, "valid_h");
        if (!valid_w.is_none()) std::tie(geo.w_lo, geo.w_hi) = pair_arg(valid_w, fn, "valid_w");
        if (C < 1 || H < 1 || W < 1) fail("binary_conv2d(): C, H and W must be >= 1");
        const uint64_t* xb = packed(xbits, C, fn, "xbits");
        if (xbits.shape(0) % (H * W)) fail("binary_conv2d(): xbits must hold B * H * W rows");
        const size_t B = xbits.shape(0) / (H * W), K = geo.KH * geo.KW * C;
        const uint64_t* wb = packed(w, K, fn, "w");
        geo.O = w.shape(0);
        const float* t2p = opt_vec(t2, C, fn, "t2");
        fbck::BinaryConv2dPlan plan;
        try {
          plan = fbck::plan_binary_conv2d(geo, wb, t2p);
        } catch (const std::invalid_argument& e) {
          fail(e.what());
        }
        fbck::BinaryConv2dArgs a;
        a.plan = &plan, a.B = B, a.xbits = xb, a.w = wb;
        a.s1 = opt_vec(s1, 1, fn, "s1");
        a.sw = opt_vec(sw, geo.O, fn, "sw");
        a.bias = opt_vec(bias, geo.O, fn, "bias");
        const auto& k = pick(impl);
        std::vector<uint32_t> w16;
        if (k.wants_w16 && use_w16) {
          w16 = fbck::interleave_rows16(wb, geo.O, K);
          a.w16 = w16.data();
        }
        const size_t P = B * plan.Ho * plan.Wo;
        const auto ps = parse_post(post, geo.O, P, P * geo.O, fn);
        if (ps) a.post = &ps->ops;
        const size_t b = (!ps || ps->want_float) ? B : 0;
        auto y = new_array<float>({b, geo.O, plan.Ho, plan.Wo});
        a.y = b ? y.data() : nullptr;
        {
          nb::gil_scoped_release r;
          k.binary_conv2d(a);
        }
        return with_post(nb::cast(y), ps);
      },
      "xbits"_a, "w"_a, "C"_a, "H"_a, "W"_a, "kernel"_a, "stride"_a = 1, "padding"_a = 0,
      "dilation"_a = 1, "t2"_a = nb::none(), "s1"_a = nb::none(), "sw"_a = nb::none(),
      "bias"_a = nb::none(), "valid_h"_a = nb::none(), "valid_w"_a = nb::none(),
      "post"_a = nb::none(), "w16"_a = true, "impl"_a = "auto",
      "Binary k x k conv on bits (kernels.h BinaryConv2dArgs): xbits uint64 [B*H*W, row_words(C)]\n"
      "(position-major rows), w uint64 [O, row_words(KH*KW*C)] (bit (kh*KW + kw)*C + c); exact zero\n"
      "padding; valid_h/valid_w: (lo, hi) input rows/columns holding real values. Output\n"
      "(B, O, Ho, Wo) float32 (or with post: (y, planes)).");

#if defined(FBCK_WITH_RUNTIME)
  bind_runtime(m);
#endif

  // ------------------------------------------------------------------------- benchmarks
  m.def(
      "bench_bgemm",
      [](size_t P, size_t N, size_t K, const std::string& impl, size_t samples, size_t reps) {
        check_k(K, "bench_bgemm");
        const auto& k = pick(impl);
        std::mt19937_64 rng(1);
        const auto a = random_bits(P, K, rng), w = random_bits(N, K, rng);
        std::vector<int32_t> out(P * N);
        fbck::BenchResult b;
        {
          nb::gil_scoped_release r;
          b = fbck::bench([&] { k.bgemm(a.data(), P, w.data(), N, K, out.data()); }, samples, reps);
        }
        return bench_dict(b, double(P) * N * K);
      },
      "P"_a, "N"_a, "K"_a, "impl"_a = "auto", "samples"_a = 30, "reps"_a = 0,
      "Time bgemm on random bits: dict with best/median ns and ticks per call, 'macs' (binary\n"
      "MACs per call = P*N*K) and 'macs_per_tick'. ticks_kind 'tsc' = x86 reference cycles.");

  m.def(
      "bench_binary_linear",
      [](size_t P, size_t N, size_t K, int planes, bool bits_out, const std::string& impl,
         size_t samples, size_t reps) {
        check_k(K, "bench_binary_linear");
        const auto& k = pick(impl);
        std::mt19937_64 rng(2);
        const auto a1 = random_bits(P, K, rng), a2 = random_bits(P, K, rng),
                   w = random_bits(N, K, rng);
        const auto s = random_floats(P + 3 * N, rng);
        std::vector<float> y(P * N);
        std::vector<uint64_t> yb(P * fbck::row_words(N));
        fbck::BinaryLinearArgs g;
        g.a1 = a1.data();
        g.a2 = planes == 2 ? a2.data() : nullptr;
        g.s2 = s.data();
        g.w = w.data();
        g.outer = P;
        g.N = N;
        g.K = K;
        g.sw = s.data() + P;
        g.bias = s.data() + P + N;
        g.thr = s.data() + P + 2 * N;
        g.y = bits_out ? nullptr : y.data();
        g.ybits = bits_out ? yb.data() : nullptr;
        std::vector<uint32_t> w16;  // prepared once, as the compiled model does
        if (k.wants_w16) {
          w16 = fbck::interleave_rows16(w.data(), N, K);
          g.w16 = w16.data();
        }
        fbck::BenchResult b;
        {
          nb::gil_scoped_release r;
          b = fbck::bench([&] { k.binary_linear(g); }, samples, reps);
        }
        return bench_dict(b, double(P) * N * K * planes);
      },
      "P"_a, "N"_a, "K"_a, "planes"_a = 2, "bits_out"_a = false, "impl"_a = "auto",
      "samples"_a = 30, "reps"_a = 0, "Time binary_linear on random inputs (see bench_bgemm).");

  m.def(
      "bench_linear_f32",
      [](size_t outer, size_t K, size_t inner, size_t N, const std::string& impl, size_t samples,
         size_t reps) {
        const auto& k = pick(impl);
        std::mt19937_64 rng(3);
        const auto x = random_floats(outer * K * inner, rng), w = random_floats(N * K, rng),
                   bias = random_floats(N, rng);
        std::vector<float> y(outer * N * inner);
        fbck::LinearF32Args g;
        g.x = x.data();
        g.outer = outer;
        g.K = K;
        g.inner = inner;
        g.w = w.data();
        g.N = N;
        g.ep.bias = bias.data();
        g.y = y.data();
        fbck::BenchResult b;
        {
          nb::gil_scoped_release r;
          b = fbck::bench([&] { k.linear_f32(g); }, samples, reps);
        }
        return bench_dict(b, double(outer) * inner * N * K);
      },
      "outer"_a, "K"_a, "inner"_a, "N"_a, "impl"_a = "auto", "samples"_a = 30, "reps"_a = 0,
      "Time linear_f32 on random inputs; 'macs' counts FP32 multiply-adds.");

  m.def(
      "bench_conv2d_f32",
      [](size_t B, size_t C, size_t H, size_t W, size_t O, size_t KH, size_t KW, size_t stride,
         size_t padding, size_t dilation, size_t groups, const std::string& impl, size_t samples,
         size_t reps) {
        const auto& k = pick(impl);
        if (groups < 1 || C % groups || O % groups) fail("bench_conv2d_f32(): bad groups");
        std::mt19937_64 rng(4);
        const auto x = random_floats(B * C * H * W, rng),
                   w = random_floats(O * (C / groups) * KH * KW, rng);
        fbck::Conv2dF32Args g;
        g.x = x.data();
        g.B = B;
        g.C = C;
        g.H = H;
        g.W = W;
        g.w = w.data();
        g.O = O;
        g.KH = KH;
        g.KW = KW;
        g.stride_h = g.stride_w = stride;
        g.pad_h = g.pad_w = padding;
        g.dil_h = g.dil_w = dilation;
        g.groups = groups;
        const size_t OH = fbck::conv_out_size(H, KH, stride, padding, dilation);
        const size_t OW = fbck::conv_out_size(W, KW, stride, padding, dilation);
        std::vector<float> y(B * O * OH * OW);
        g.y = y.data();
        fbck::BenchResult b;
        {
          nb::gil_scoped_release r;
          b = fbck::bench([&] { k.conv2d_f32(g); }, samples, reps);
        }
        return bench_dict(b, double(B) * O * OH * OW * (C / groups) * KH * KW);
      },
      "B"_a, "C"_a, "H"_a, "W"_a, "O"_a, "KH"_a, "KW"_a, "stride"_a = 1, "padding"_a = 0,
      "dilation"_a = 1, "groups"_a = 1, "impl"_a = "auto", "samples"_a = 30, "reps"_a = 0,
      "Time conv2d_f32 on random inputs; 'macs' counts FP32 multiply-adds.");
}
