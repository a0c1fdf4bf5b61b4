// Case runner for the FBCK kernels on another architecture (aarch64 under qemu-user on x86 CI).
//
// Usage: fbck_driver CASE_FILE...
// Each case file (written by tests/native/fbck_cases.py: write_case) holds a kernel name, its
// inputs and the expected outputs computed on the host (the x86 reference kernels for the binary
// kernels, float64 numpy for the FP32 ones). Every implementation available here (ref, neon) runs
// the case; binary kernels must match bit for bit, FP32 kernels within the given bound.
// Prints one line per case and implementation ("OK ..." / "FAIL ..."), exits 1 on any failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "fbck/kernels.h"

namespace {

struct Entry {
  char code = 0;
  std::vector<uint64_t> shape;
  std::vector<unsigned char> data;
};
using Case = std::map<std::string, Entry>;

Case read_case(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<unsigned char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const char magic[] = "FBCKCASE1\n";
  if (buf.size() < 10 || std::memcmp(buf.data(), magic, 10) != 0)
    throw std::runtime_error("bad magic in " + path);
  size_t pos = 10;
  auto take = [&](void* dst, size_t n) {
    if (pos + n > buf.size()) throw std::runtime_error("truncated " + path);
    std::memcpy(dst, buf.data() + pos, n);
    pos += n;
  };
  Case c;
  while (pos < buf.size()) {
    uint32_t nl, nd;
    take(&nl, 4);
    std::string name(nl, '\0');
    take(&name[0], nl);
    Entry e;
    take(&e.code, 1);
    take(&nd, 4);
    e.shape.resize(nd);
    size_t count = 1;
    for (auto& s : e.shape) {
      take(&s, 8);
      count *= s;
    }
    size_t item = 0;
    switch (e.code) {
      case 'f': case 'i': item = 4; break;
      case 'd': case 'q': case 'u': item = 8; break;
      case 'b': case 's': item = 1; break;
      default: throw std::runtime_error("bad dtype code in " + path);
    }
    e.data.resize(count * item);
    if (!e.data.empty()) take(e.data.data(), e.data.size());
    c[name] = std::move(e);
  }
  return c;
}

struct View {
  const Case& c;
  bool has(const std::string& k) const { return c.count(k) != 0; }
  template <class T>
  const T* ptr(const std::string& k) const {
    auto it = c.find(k);
    return it == c.end() ? nullptr : reinterpret_cast<const T*>(it->second.data.data());
  }
  const Entry& at(const std::string& k) const {
    auto it = c.find(k);
    if (it == c.end()) throw std::runtime_error("missing entry " + k);
    return it->second;
  }
  int64_t i(const std::string& k) const { return *reinterpret_cast<const int64_t*>(at(k).data.data()); }
  double d(const std::string& k) const { return *reinterpret_cast<const double*>(at(k).data.data()); }
  std::string str(const std::string& k) const {
    const auto& e = at(k);
    return std::string(e.data.begin(), e.data.end());
  }
  size_t count(const std::string& k) const { return at(k).data.size(); }
};

// Bitwise comparison of a produced buffer against an expected entry.
std::string same(const View& v, const std::string& key, const void* got, size_t bytes) {
  const Entry& e = v.at(key);
  if (e.data.size() != bytes) return key + ": size " + std::to_string(bytes) + " != " + std::to_string(e.data.size());
  if (std::memcmp(e.data.data(), got, bytes) == 0) return "";
  const auto* g = static_cast<const unsigned char*>(got);
  size_t first = 0;
  while (g[first] == e.data[first]) ++first;
  return key + ": differs from byte " + std::to_string(first);
}

std::string close(const View& v, const std::vector<float>& y) {
  const Entry& e = v.at("expect_y");
  const double* want = reinterpret_cast<const double*>(e.data.data());
  const double* bound = v.ptr<double>("bound");
  const double rel = v.d("rel");
  if (e.data.size() != y.size() * 8) return "expect_y: size mismatch";
  for (size_t i = 0; i < y.size(); ++i) {
    const double err = std::fabs(static_cast<double>(y[i]) - want[i]);
    if (!(err <= rel * bound[i] + 1e-30))
      return "y[" + std::to_string(i) + "] = " + std::to_string(y[i]) + ", want " +
             std::to_string(want[i]) + " (err " + std::to_string(err) + ")";
  }
  return "";
}

fbck::Epilogue epilogue(const View& v) {
  fbck::Epilogue ep;
  ep.bias = v.ptr<float>("bias");
  ep.scale = v.ptr<float>("scale");
  ep.shift = v.ptr<float>("shift");
  ep.slope = v.ptr<float>("slope");
  ep.relu = v.has("relu") && v.i("relu") != 0;
  return ep;
}

// The post-ops of a case (entries post_*) and their plane outputs, checked against expect_p*.
struct PostCase {
  fbck::PostOps ops;
  bool on = false;
  size_t P = 0, N = 0;
  std::vector<uint64_t> b1, b2;
  std::vector<float> s1, s2;
  PostCase(const View& v, size_t positions, size_t channels) : P(positions), N(channels) {
    on = v.has("post_planes");
    if (!on) return;
    ops.scale = v.ptr<float>("post_scale");
    ops.shift = v.ptr<float>("post_shift");
    ops.act = static_cast<fbck::Act>(v.i("post_act"));
    ops.slope = v.ptr<float>("post_slope");
    ops.res = v.ptr<float>("post_res");
    ops.planes.t0 = v.ptr<float>("post_t0");
    ops.planes.t1 = v.ptr<float>("post_t1");
    const int planes = static_cast<int>(v.i("post_planes"));
    const size_t WN = fbck::row_words(N);
    b1.assign(P * WN, ~0ull), b2.assign(P * WN, ~0ull), s1.assign(P, -1.0f), s2.assign(P, -1.0f);
    if (planes >= 1) ops.planes.bits1 = b1.data();
    if (planes == 2) ops.planes.bits2 = b2.data(), ops.planes.s2 = s2.data();
    if (planes >= 1 && v.i("post_s1")) ops.planes.s1 = s1.data();
  }
  const fbck::PostOps* get() const { return on ? &ops : nullptr; }
  std::string check(const View& v) const {
    if (!on) return "";
    std::string r;
    if (ops.planes.bits1) r = same(v, "expect_pb1", b1.data(), b1.size() * 8);
    if (r.empty() && ops.planes.bits2) r = same(v, "expect_pb2", b2.data(), b2.size() * 8);
    if (r.empty() && ops.planes.s2) r = same(v, "expect_ps2", s2.data(), s2.size() * 4);
    if (r.empty() && ops.planes.s1) r = same(v, "expect_ps1", s1.data(), s1.size() * 4);
    return r;
  }
};

// FP32 results: bit-exact against the x86 reference when the case says so (kernels.h fixes the
// float order), else within the float64 bound.
std::string fp_check(const View& v, const std::vector<float>& y) {
  if (v.has("expect_exact")) return same(v, "expect_exact", y.data(), y.size() * 4);
  return close(v, y);
}

std::string run_case(const fbck::Kernels& k, const View& v) {
  const std::string kernel = v.str("kernel");
  if (kernel == "pack_threshold" || kernel == "pack_dual") {
    const auto& xs = v.at("x").shape;  // (outer, K, inner)
    const size_t outer = xs[0], K = xs[1], inner = xs[2], P = outer * inner, W = fbck::row_words(K);
    std::vector<uint64_t> b1(P * W, ~0ull), b2(P * W, ~0ull);
    std::vector<float> s1(P, -1.0f), s2(P, -1.0f);
    const bool ws1 = v.i("with_s1") != 0;
    if (kernel == "pack_threshold") {
      k.pack_threshold(v.ptr<float>("x"), outer, K, inner, v.ptr<float>("t0"), b1.data(),
                       ws1 ? s1.data() : nullptr);
      std::string r = same(v, "expect_bits1", b1.data(), b1.size() * 8);
      if (r.empty() && ws1) r = same(v, "expect_s1", s1.data(), s1.size() * 4);
      return r;
    }
    k.pack_dual(v.ptr<float>("x"), outer, K, inner, v.ptr<float>("t0"), v.ptr<float>("t1"),
                b1.data(), b2.data(), s2.data(), ws1 ? s1.data() : nullptr);
    std::string r = same(v, "expect_bits1", b1.data(), b1.size() * 8);
    if (r.empty()) r = same(v, "expect_bits2", b2.data(), b2.size() * 8);
    if (r.empty()) r = same(v, "expect_s2", s2.data(), s2.size() * 4);
    if (r.empty() && ws1) r = same(v, "expect_s1", s1.data(), s1.size() * 4);
    return r;
  }
  if (kernel == "pack_weights") {
    const auto& ws = v.at("w").shape;
    std::vector<uint64_t> b(ws[0] * fbck::row_words(ws[1]), ~0ull);
    k.pack_weights(v.ptr<float>("w"), ws[0], ws[1], b.data());
    return same(v, "expect_bits1", b.data(), b.size() * 8);
  }
  if (kernel == "bgemm") {
    const size_t K = v.i("K"), P = v.at("a").shape[0], N = v.at("w").shape[0];
    std::vector<int32_t> out(P * N, 0x7eadbeef);
    k.bgemm(v.ptr<uint64_t>("a"), P, v.ptr<uint64_t>("w"), N, K, out.data());
    return same(v, "expect_out", out.data(), out.size() * 4);
  }
  if (kernel == "binary_linear") {
    fbck::BinaryLinearArgs g;
    g.a1 = v.ptr<uint64_t>("a1");
    g.a2 = v.ptr<uint64_t>("a2");
    g.s1 = v.ptr<float>("s1");
    g.s2 = v.ptr<float>("s2");
    g.w = v.ptr<uint64_t>("w");
    g.K = v.i("K");
    g.N = v.at("w").shape[0];
    g.inner = v.i("inner");
    const size_t P = v.at("a1").shape[0];
    g.outer = P / g.inner;
    g.sw = v.ptr<float>("sw");
    g.bias = v.ptr<float>("bias");
    g.slope = v.ptr<float>("slope");
    g.thr = v.ptr<float>("thr");
    std::vector<float> y(P * g.N, -7.0f);
    std::vector<uint64_t> yb(P * fbck::row_words(g.N), ~0ull);
    if (v.has("expect_y")) g.y = y.data();
    if (v.has("expect_ybits")) g.ybits = yb.data();
    std::vector<uint32_t> w16;
    if (v.has("w16") && v.i("w16") && k.wants_w16) {
      w16 = fbck::interleave_rows16(g.w, g.N, g.K);
      g.w16 = w16.data();
    }
    const PostCase post(v, P, g.N);
    g.post = post.get();
    k.binary_linear(g);
    std::string r;
    if (g.y) r = same(v, "expect_y", y.data(), y.size() * 4);
    if (r.empty() && g.ybits) r = same(v, "expect_ybits", yb.data(), yb.size() * 8);
    if (r.empty()) r = post.check(v);
    return r;
  }
  if (kernel == "binary_memory") {
    const auto& xs = v.at("x").shape;
    const int axis = static_cast<int>(v.i("channel_axis"));
    fbck::BinaryMemoryArgs g;
    g.x = v.ptr<float>("x");
    g.B = xs[0];
    g.C = xs[axis];
    g.T = xs[3 - axis];
    g.stride_b = static_cast<ptrdiff_t>(xs[1] * xs[2]);
    g.stride_c = axis == 1 ? static_cast<ptrdiff_t>(xs[2]) : 1;
    g.stride_t = axis == 1 ? 1 : static_cast<ptrdiff_t>(xs[2]);
    g.t0 = v.ptr<float>("t0");
    g.t1 = v.ptr<float>("t1");
    g.t2 = v.ptr<float>("t2");
    g.sw = v.ptr<float>("sw");
    g.bias = v.ptr<float>("bias");
    g.planes = static_cast<int>(v.i("planes"));
    g.s1_mode = static_cast<fbck::S1Mode>(v.i("s1_mode"));
    g.s1_const = static_cast<float>(v.d("s1_const"));
    g.ws = v.ptr<int8_t>("ws");
    g.left = v.i("left");
    g.right = v.at("ws").shape[1] - 1 - g.left;
    g.dilation = v.i("dilation");
    g.residual = static_cast<float>(v.d("residual"));
    std::vector<float> y(xs[0] * xs[1] * xs[2], -7.0f);
    g.y = v.has("expect_y") ? y.data() : nullptr;
    const PostCase post(v, g.B * g.T, g.C);
    g.post = post.get();
    k.binary_memory(g);
    std::string r = g.y ? same(v, "expect_y", y.data(), y.size() * 4) : "";
    return r.empty() ? post.check(v) : r;
  }
  if (kernel == "memory_f32") {
    const auto& xs = v.at("x").shape;
    const int axis = static_cast<int>(v.i("channel_axis"));
    fbck::MemoryF32Args g;
    g.x = v.ptr<float>("x");
    g.B = xs[0];
    g.C = xs[axis];
    g.T = xs[3 - axis];
    g.stride_b = static_cast<ptrdiff_t>(xs[1] * xs[2]);
    g.stride_c = axis == 1 ? static_cast<ptrdiff_t>(xs[2]) : 1;
    g.stride_t = axis == 1 ? 1 : static_cast<ptrdiff_t>(xs[2]);
    g.w = v.ptr<float>("w");
    g.left = v.i("left");
    g.right = v.at("w").shape[1] - 1 - g.left;
    g.dilation = v.i("dilation");
    g.bias = v.ptr<float>("bias");
    g.residual = static_cast<float>(v.d("residual"));
    std::vector<float> y(xs[0] * xs[1] * xs[2], -7.0f);
    g.y = y.data();
    k.memory_f32(g);
    return same(v, "expect_y", y.data(), y.size() * 4);
  }
  if (kernel == "post_ops") {
    const auto& xs = v.at("x").shape;  // (outer, N, inner)
    const size_t outer = xs[0], N = xs[1], inner = xs[2];
    const PostCase post(v, outer * inner, N);
    std::vector<float> y(outer * N * inner, -7.0f);
    k.post_ops(v.ptr<float>("x"), outer, N, inner, post.ops, v.has("expect_y") ? y.data() : nullptr);
    std::string r = v.has("expect_y") ? same(v, "expect_y", y.data(), y.size() * 4) : "";
    return r.empty() ? post.check(v) : r;
  }
  if (kernel == "binary_conv2d") {
    fbck::BinaryConv2dGeometry geo;
    geo.C = v.i("C"), geo.H = v.i("H"), geo.W = v.i("W"), geo.KH = v.i("KH"), geo.KW = v.i("KW");
    geo.stride_h = v.i("stride_h"), geo.stride_w = v.i("stride_w");
    geo.pad_h = v.i("pad_h"), geo.pad_w = v.i("pad_w"), geo.dil_h = v.i("dil_h"), geo.dil_w = v.i("dil_w");
    geo.h_lo = v.i("h_lo"), geo.h_hi = v.i("h_hi"), geo.w_lo = v.i("w_lo"), geo.w_hi = v.i("w_hi");
    geo.O = v.at("w").shape[0];
    const fbck::BinaryConv2dPlan plan = fbck::plan_binary_conv2d(geo, v.ptr<uint64_t>("w"), v.ptr<float>("t2"));
    fbck::BinaryConv2dArgs a;
    a.plan = &plan;
    a.B = v.at("xbits").shape[0] / (geo.H * geo.W);
    a.xbits = v.ptr<uint64_t>("xbits");
    a.w = v.ptr<uint64_t>("w");
    a.s1 = v.ptr<float>("s1");
    a.sw = v.ptr<float>("sw");
    a.bias = v.ptr<float>("bias");
    std::vector<uint32_t> w16;
    if (v.i("w16") && k.wants_w16) {
      w16 = fbck::interleave_rows16(a.w, geo.O, plan.K);
      a.w16 = w16.data();
    }
    const size_t P = a.B * plan.Ho * plan.Wo;
    const PostCase post(v, P, geo.O);
    a.post = post.get();
    std::vector<float> y(P * geo.O, -7.0f);
    a.y = v.has("expect_y") ? y.data() : nullptr;
    k.binary_conv2d(a);
    std::string r = a.y ? same(v, "expect_y", y.data(), y.size() * 4) : "";
    return r.empty() ? post.check(v) : r;
  }
  if (kernel == "linear_f32") {
    const auto& xs = v.at("x").shape;  // (outer, K, inner)
    fbck::LinearF32Args g;
    g.x = v.ptr<float>("x");
    g.outer = xs[0];
    g.K = xs[1];
    g.inner = xs[2];
    g.w = v.ptr<float>("w");
    g.N = v.at("w").shape[0];
    g.ep = epilogue(v);
    std::vector<float> y(g.outer * g.N * g.inner, NAN), wp;
    if (v.has("prepacked") && v.i("prepacked")) {
      wp = k.pack_f32_weights(g.w, g.N, g.K);
      g.wp = wp.data();
    }
    g.y = y.data();
    k.linear_f32(g);
    return fp_check(v, y);
  }
  if (kernel == "conv2d_f32") {
    const auto& xs = v.at("x").shape;
    const auto& wsh = v.at("w").shape;
    fbck::Conv2dF32Args g;
    g.x = v.ptr<float>("x");
    g.B = xs[0];
    g.C = xs[1];
    g.H = xs[2];
    g.W = xs[3];
    g.w = v.ptr<float>("w");
    g.O = wsh[0];
    g.KH = wsh[2];
    g.KW = wsh[3];
    g.stride_h = v.i("stride_h");
    g.stride_w = v.i("stride_w");
    g.pad_h = v.i("pad_h");
    g.pad_w = v.i("pad_w");
    g.dil_h = v.i("dil_h");
    g.dil_w = v.i("dil_w");
    g.groups = v.i("groups");
    g.ep = epilogue(v);
    const size_t OH = fbck::conv_out_size(g.H, g.KH, g.stride_h, g.pad_h, g.dil_h);
    const size_t OW = fbck::conv_out_size(g.W, g.KW, g.stride_w, g.pad_w, g.dil_w);
    std::vector<float> y(g.B * g.O * OH * OW, NAN), wp;
    if (v.has("prepacked") && v.i("prepacked") && g.groups == 1) {
      wp = k.pack_f32_weights(g.w, g.O, g.C * g.KH * g.KW);
      g.wp = wp.data();
    }
    const PostCase post(v, g.B * OH * OW, g.O);
    g.post = post.get();
    g.y = y.data();
    k.conv2d_f32(g);
    std::string r = fp_check(v, y);
    return r.empty() ? post.check(v) : r;
  }
  return "unknown kernel " + kernel;
}

}  // namespace

int main(int argc, char** argv) {
  int failures = 0, cases = 0;
  const auto impls = fbck::available_impls();
  std::printf("impls:");
  for (const auto& n : impls) std::printf(" %s", n.c_str());
  std::printf("\n");
  for (int a = 1; a < argc; ++a) {
    try {
      const Case c = read_case(argv[a]);
      const View v{c};
      ++cases;
      for (const auto& name : impls) {
        const std::string r = run_case(fbck::get_kernels(name), v);
        if (!r.empty()) ++failures;
        std::printf("%s %s %s %s%s\n", r.empty() ? "OK" : "FAIL", argv[a], v.str("kernel").c_str(),
                    name.c_str(), r.empty() ? "" : (": " + r).c_str());
      }
    } catch (const std::exception& e) {
      ++failures;
      std::printf("FAIL %s: %s\n", argv[a], e.what());
    }
  }
  std::printf("%d cases, %d failures\n", cases, failures);
  return failures ? 1 : 0;
}
