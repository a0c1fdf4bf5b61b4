// aarch64 layer driver for the ARM instruction-count benchmark (benchmarks/arm.py): runs one
// model layer ITERS times with the FBCK NEON kernels (or, for element-wise ops, loops written the
// way the runtime writes them), on random inputs, so its executed guest instructions can be
// counted under qemu-user (tests/native/count_insns.py: runs of 1 and 3 iterations, difference
// halved).
//
// Usage: layers_aarch64 OP ITERS ARGS...
//   conv2d C H W O KH KW SH SW PH PW GROUPS FUSED   NEON conv2d_f32 (direct for C <= 4, else
//                                                   im2col + 12x8 FMLA GEMM); FUSED=1: BN + ReLU
//                                                   in the epilogue, weights packed once; 2: the
//                                                   same as post-ops emitting the next layer's bits
//   linear OUTER K INNER N FUSED                    NEON linear_f32 (x (outer, K, inner)), bias;
//                                                   FUSED (weights packed once): 1 + BN + ReLU,
//                                                   2 + BN + PReLU + residual, 3 + ReLU
//   binary_linear OUTER K INNER N PLANES FUSED      NEON binary_linear on interleaved weights (made
//                                                   once); FUSED=0: packing of the float input
//                                                   first; 1: input planes given, BN + ReLU + the
//                                                   next layer's planes fused (2: planes only)
//   binary_conv2d C H W O KH KW SH SW PH PW FUSED   NEON binary_conv2d (plan made once); FUSED=0:
//                                                   packing of the float input; 1: input bits given,
//                                                   BN + ReLU fused
//   binary_memory C T LEFT RIGHT PLANES RESIDUAL [FUSED]  NEON binary_memory, (1, C, T); FUSED=1:
//                                                   BN + PReLU + residual + next planes fused
//   fp_memory C T LEFT RIGHT FUSED                  NEON memory_f32; FUSED=1:
//                                                   y = x + PReLU(BN(dw(x))) in one pass
//   channel KIND OUTER MID INNER                    affine | prelu | prelu1 | channel_add
//   act N | add N | scalar N                        ReLU / add / scale + shift, one loop each
//   permute RANK D0.. P0..                          transpose copy (the runtime's index walk)
//   im2col C H W KH KW SH SW PH PW                  (C, H, W) -> rows of (kh, kw, c) per output
//                                                   position, zero padded (for binary conv2d)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fbck/kernels.h"

namespace {

std::mt19937_64 rng(7);

std::vector<float> floats(size_t n) {
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

std::vector<uint64_t> bits(size_t rows, size_t K) {
  const size_t W = fbck::row_words(K);
  std::vector<uint64_t> v(rows * W, 0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < K; j += 64) {
      uint64_t x = rng();
      if (K - j < 64) x &= (uint64_t(1) << (K - j)) - 1;
      v[r * W + j / 64] = x;
    }
  return v;
}

size_t arg(char** argv, int i) { return std::strtoull(argv[i], nullptr, 10); }

// The runtime's per-channel loop (backends/runtime/program.cpp, per_channel).
template <class F>
__attribute__((noinline)) void per_channel(const float* x, float* y, size_t outer, size_t mid,
                                           size_t inner, const float* a, const float* b,
                                           bool scalar_a, F f) {
  for (size_t o = 0; o < outer; ++o) {
    const float* xo = x + o * mid * inner;
    float* yo = y + o * mid * inner;
    if (inner == 1) {
      for (size_t c = 0; c < mid; ++c) yo[c] = f(xo[c], a[scalar_a ? 0 : c], b ? b[c] : 0.0f);
      continue;
    }
    for (size_t c = 0; c < mid; ++c) {
      const float ac = a[scalar_a ? 0 : c], bc = b ? b[c] : 0.0f;
      const float* xc = xo + c * inner;
      float* yc = yo + c * inner;
      for (size_t i = 0; i < inner; ++i) yc[i] = f(xc[i], ac, bc);
    }
  }
}

__attribute__((noinline)) void relu(const float* a, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] > 0.0f ? a[i] : 0.0f;
}
__attribute__((noinline)) void add(const float* a, const float* b, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
__attribute__((noinline)) void scalar(const float* a, float* y, size_t n, float mul, float add) {
  for (size_t i = 0; i < n; ++i) {
    float v = a[i];
    if (mul != 1.0f) v = v * mul;
    if (add != 0.0f) v = v + add;
    y[i] = v;
  }
}

}  // namespace

// Post-ops of a fused step: BatchNorm (scale, shift), an activation, a residual and bit planes.
struct Post {
  std::vector<float> p;
  std::vector<uint64_t> b1, b2;
  std::vector<float> s2;
  fbck::PostOps ops;
  Post(size_t P, size_t N, fbck::Act act, const float* res, int planes) : p(floats(5 * N)) {
    ops.scale = p.data(), ops.shift = p.data() + N, ops.act = act, ops.res = res;
    if (act == fbck::Act::prelu) ops.slope = p.data() + 2 * N;
    if (planes) {
      const size_t WN = fbck::row_words(N);
      b1.assign(P * WN, 0), b2.assign(P * WN, 0), s2.assign(P, 0.0f);
      ops.planes.t0 = p.data() + 3 * N;
      ops.planes.bits1 = b1.data();
      if (planes == 2) ops.planes.t1 = p.data() + 4 * N, ops.planes.bits2 = b2.data(), ops.planes.s2 = s2.data();
    }
  }
};

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OP ITERS ARGS...\n", argv[0]);
    return 2;
  }
  const std::string op = argv[1];
  const size_t iters = arg(argv, 2);
  const fbck::Kernels& k = fbck::get_kernels("neon");
  double checksum = 0;
  auto need = [&](int n) {
    if (argc < 3 + n) {
      std::fprintf(stderr, "%s needs %d arguments\n", op.c_str(), n);
      std::exit(2);
    }
  };
  if (op == "conv2d") {
    need(12);
    const size_t C = arg(argv, 3), H = arg(argv, 4), W = arg(argv, 5), O = arg(argv, 6),
                 KH = arg(argv, 7), KW = arg(argv, 8), SH = arg(argv, 9), SW = arg(argv, 10),
                 PH = arg(argv, 11), PW = arg(argv, 12), G = arg(argv, 13);
    const int fused = static_cast<int>(arg(argv, 14));
    const auto x = floats(C * H * W), w = floats(O * (C / G) * KH * KW), ep = floats(4 * O);
    const size_t OH = fbck::conv_out_size(H, KH, SH, PH, 1), OW = fbck::conv_out_size(W, KW, SW, PW, 1);
    std::vector<float> y(O * OH * OW);
    fbck::Conv2dF32Args g;
    g.x = x.data(), g.C = C, g.H = H, g.W = W, g.w = w.data(), g.O = O, g.KH = KH, g.KW = KW;
    g.stride_h = SH, g.stride_w = SW, g.pad_h = PH, g.pad_w = PW, g.groups = G;
    g.ep.bias = ep.data();
    if (fused == 1) g.ep.scale = ep.data() + O, g.ep.shift = ep.data() + 2 * O, g.ep.relu = true;
    Post post(OH * OW, O, fbck::Act::relu, nullptr, 1);
    if (fused == 2) g.post = &post.ops;  // the runtime's fusion: BN + ReLU + the next layer's bits
    std::vector<float> wp;
    if (fused && G == 1 && C > 4) {  // weights packed once, as any engine does at load time
      wp = k.pack_f32_weights(w.data(), O, C * KH * KW);
      g.wp = wp.data();
    }
    g.y = fused == 2 ? nullptr : y.data();
    for (size_t it = 0; it < iters; ++it) k.conv2d_f32(g);
    for (float v : y) checksum += v;
  } else if (op == "linear") {
    need(5);
    const size_t outer = arg(argv, 3), K = arg(argv, 4), inner = arg(argv, 5), N = arg(argv, 6);
    const int fused = static_cast<int>(arg(argv, 7));
    const auto x = floats(outer * K * inner), w = floats(N * K), ep = floats(4 * N);
    const auto res = floats(outer * N * inner);
    std::vector<float> y(outer * N * inner);
    fbck::LinearF32Args g;
    g.x = x.data(), g.outer = outer, g.K = K, g.inner = inner, g.w = w.data(), g.N = N;
    g.ep.bias = ep.data();
    // 1: + BN + ReLU; 2: + BN + PReLU + residual (post-ops); 3: + ReLU
    if (fused == 1 || fused == 2) g.ep.scale = ep.data() + N, g.ep.shift = ep.data() + 2 * N;
    if (fused == 1 || fused == 3) g.ep.relu = true;
    fbck::PostOps post;
    if (fused == 2) post.act = fbck::Act::prelu, post.slope = ep.data() + 3 * N, post.res = res.data(), g.post = &post;
    std::vector<float> wp;
    if (fused) {
      wp = k.pack_f32_weights(w.data(), N, K);
      g.wp = wp.data();
    }
    g.y = y.data();
    for (size_t it = 0; it < iters; ++it) k.linear_f32(g);
    for (float v : y) checksum += v;
  } else if (op == "binary_linear") {
    need(6);
    const size_t outer = arg(argv, 3), K = arg(argv, 4), inner = arg(argv, 5), N = arg(argv, 6);
    const int planes = static_cast<int>(arg(argv, 7));
    const int fused = static_cast<int>(arg(argv, 8));
    const size_t P = outer * inner, Wd = fbck::row_words(K);
    const auto x = floats(P * K), t = floats(2 * K), ep = floats(3 * N);
    const auto w = bits(N, K), b1 = bits(P, K), b2 = bits(P, K);
    std::vector<uint64_t> pb1(P * Wd), pb2(P * Wd);
    std::vector<float> s2(P, 0.5f), y(P * N);
    const auto w16 = fbck::interleave_rows16(w.data(), N, K);  // once, as the runtime does
    fbck::BinaryLinearArgs g;
    g.w = w.data(), g.w16 = w16.data();
    g.outer = outer, g.inner = inner, g.N = N, g.K = K, g.sw = ep.data(), g.bias = ep.data() + N;
    g.y = y.data();
    // fused: the planes come from the previous kernel's post-ops (no packing here), and this
    // layer's post-ops (BN + ReLU) emit the next layer's two planes; fused == 1 keeps the float
    // output too (a residual reads it), fused == 2 only the planes
    Post post(P, N, fbck::Act::relu, nullptr, 2);
    if (fused) {
      g.a1 = b1.data(), g.a2 = planes == 2 ? b2.data() : nullptr, g.s2 = s2.data(), g.post = &post.ops;
      if (fused == 2) g.y = nullptr;
    } else {
      g.a1 = pb1.data(), g.a2 = planes == 2 ? pb2.data() : nullptr, g.s2 = s2.data();
    }
    for (size_t it = 0; it < iters; ++it) {
      if (!fused) {
        if (planes == 2)
          k.pack_dual(x.data(), outer, K, inner, t.data(), t.data() + K, pb1.data(), pb2.data(),
                      s2.data(), nullptr);
        else
          k.pack_threshold(x.data(), outer, K, inner, t.data(), pb1.data(), nullptr);
      }
      k.binary_linear(g);
    }
    for (float v : y) checksum += v;
  } else if (op == "binary_conv2d") {
    need(11);
    const size_t C = arg(argv, 3), H = arg(argv, 4), W = arg(argv, 5), O = arg(argv, 6),
                 KH = arg(argv, 7), KW = arg(argv, 8), SH = arg(argv, 9), SW = arg(argv, 10),
                 PH = arg(argv, 11), PW = arg(argv, 12);
    const int fused = static_cast<int>(arg(argv, 13));
    fbck::BinaryConv2dGeometry geo;
    geo.C = C, geo.H = H, geo.W = W, geo.O = O, geo.KH = KH, geo.KW = KW;
    geo.stride_h = SH, geo.stride_w = SW, geo.pad_h = PH, geo.pad_w = PW;
    const size_t Kb = KH * KW * C;
    const auto w = bits(O, Kb), xb = bits(H * W, C);
    const auto x = floats(C * H * W), p = floats(2 * C + 2 * O);
    const fbck::BinaryConv2dPlan plan = fbck::plan_binary_conv2d(geo, w.data(), p.data());  // once
    const auto w16 = fbck::interleave_rows16(w.data(), O, Kb);
    std::vector<uint64_t> packed(H * W * fbck::row_words(C));
    std::vector<float> y(O * plan.Ho * plan.Wo);
    fbck::BinaryConv2dArgs a;
    a.plan = &plan, a.w = w.data(), a.w16 = w16.data(), a.sw = p.data() + 2 * C, a.bias = p.data() + 2 * C + O;
    a.y = y.data();
    Post post(plan.Ho * plan.Wo, O, fbck::Act::relu, nullptr, 0);
    a.xbits = fused ? xb.data() : packed.data();
    if (fused) a.post = &post.ops;  // input bits from the FP conv's post-ops; BN + ReLU fused
    for (size_t it = 0; it < iters; ++it) {
      if (!fused) k.pack_threshold(x.data(), 1, C, H * W, p.data() + C, packed.data(), nullptr);
      k.binary_conv2d(a);
    }
    for (float v : y) checksum += v;
  } else if (op == "binary_memory") {
    need(6);
    const size_t C = arg(argv, 3), T = arg(argv, 4), L = arg(argv, 5), R = arg(argv, 6);
    const int planes = static_cast<int>(arg(argv, 7));
    const bool residual = arg(argv, 8) != 0;
    const int fused = argc > 9 ? static_cast<int>(arg(argv, 9)) : 0;
    const auto x = floats(C * T), p = floats(5 * C);
    std::vector<int8_t> ws(C * (L + R + 1));
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = static_cast<int8_t>(rng() % 3) - 1;
    std::vector<float> y(C * T);
    fbck::BinaryMemoryArgs m;
    m.x = x.data(), m.y = y.data(), m.B = 1, m.C = C, m.T = T;
    m.stride_b = C * T, m.stride_c = T, m.stride_t = 1;
    m.t0 = p.data(), m.planes = planes, m.t1 = p.data() + C, m.t2 = p.data() + 2 * C;
    m.ws = ws.data(), m.left = L, m.right = R, m.sw = p.data() + 3 * C, m.bias = p.data() + 4 * C;
    m.residual = residual ? 1.0f : 0.0f;
    // fused: BN + PReLU + the block's residual, and the next layer's two planes
    Post post(T, C, fbck::Act::prelu, x.data(), 2);
    if (fused) m.post = &post.ops;
    for (size_t it = 0; it < iters; ++it) k.binary_memory(m);
    for (float v : y) checksum += v;
  } else if (op == "fp_memory") {
    need(5);
    const size_t C = arg(argv, 3), T = arg(argv, 4), L = arg(argv, 5), R = arg(argv, 6);
    const bool fused = arg(argv, 7) != 0;
    const auto x = floats(C * T), taps = floats(C * (L + R + 1)), p = floats(C);
    std::vector<float> y(C * T);
    fbck::MemoryF32Args m;
    m.x = x.data(), m.y = y.data(), m.B = 1, m.C = C, m.T = T;
    m.stride_b = C * T, m.stride_c = T, m.stride_t = 1;
    m.w = taps.data(), m.left = L, m.right = R, m.bias = p.data();
    // fused: y = x + PReLU(BN(memory(x))) in the same pass (the D-FSMN block's memory)
    Post post(T, C, fbck::Act::prelu, x.data(), 0);
    if (fused) m.post = &post.ops;
    for (size_t it = 0; it < iters; ++it) k.memory_f32(m);
    for (float v : y) checksum += v;
  } else if (op == "channel") {
    need(4);
    const std::string kind = argv[3];
    const size_t outer = arg(argv, 4), mid = arg(argv, 5), inner = arg(argv, 6);
    const auto x = floats(outer * mid * inner), p = floats(2 * mid);
    std::vector<float> y(x.size());
    for (size_t it = 0; it < iters; ++it) {
      if (kind == "affine")
        per_channel(x.data(), y.data(), outer, mid, inner, p.data(), p.data() + mid, false,
                    [](float v, float sc, float sh) { return v * sc + sh; });
      else if (kind == "prelu" || kind == "prelu1")
        per_channel(x.data(), y.data(), outer, mid, inner, p.data(), nullptr, kind == "prelu1",
                    [](float v, float sl, float) { return v > 0.0f ? v : v * sl; });
      else
        per_channel(x.data(), y.data(), outer, mid, inner, p.data(), nullptr, false,
                    [](float v, float a, float) { return v + a; });
    }
    for (float v : y) checksum += v;
  } else if (op == "act" || op == "add" || op == "scalar") {
    need(1);
    const size_t n = arg(argv, 3);
    const auto x = floats(n), x2 = floats(n);
    std::vector<float> y(n);
    float* yp = y.data();
    const float *a = x.data(), *b = x2.data();
    for (size_t it = 0; it < iters; ++it) {
      if (op == "act")
        relu(a, yp, n);
      else if (op == "add")
        add(a, b, yp, n);
      else
        scalar(a, yp, n, 0.5f, 0.25f);
    }
    for (float v : y) checksum += v;
  } else if (op == "permute") {
    need(1);
    const size_t rank = arg(argv, 3);
    need(1 + 2 * static_cast<int>(rank));
    std::vector<size_t> d(rank), perm(rank);
    for (size_t i = 0; i < rank; ++i) d[i] = arg(argv, 4 + i), perm[i] = arg(argv, 4 + rank + i);
    size_t n = 1;
    for (size_t v : d) n *= v;
    const auto x = floats(n);
    std::vector<float> y(n);
    std::vector<size_t> od(rank);
    for (size_t i = 0; i < rank; ++i) od[i] = d[perm[i]];
    for (size_t it = 0; it < iters; ++it) {  // the runtime's index walk (Kind::permute)
      std::vector<size_t> in_stride(rank, 1), idx(rank, 0);
      for (size_t i = rank - 1; i-- > 0;) in_stride[i] = in_stride[i + 1] * d[i + 1];
      for (size_t o = 0; o < n; ++o) {
        size_t src = 0;
        for (size_t i = 0; i < rank; ++i) src += idx[i] * in_stride[perm[i]];
        y[o] = x[src];
        for (size_t i = rank; i-- > 0;) {
          if (++idx[i] < od[i]) break;
          idx[i] = 0;
        }
      }
      __asm__ volatile("" ::: "memory");
    }
    for (float v : y) checksum += v;
  } else if (op == "im2col") {
    need(9);
    const size_t C = arg(argv, 3), H = arg(argv, 4), W = arg(argv, 5), KH = arg(argv, 6),
                 KW = arg(argv, 7), SH = arg(argv, 8), SW = arg(argv, 9), PH = arg(argv, 10),
                 PW = arg(argv, 11);
    const size_t OH = fbck::conv_out_size(H, KH, SH, PH, 1), OW = fbck::conv_out_size(W, KW, SW, PW, 1);
    const auto x = floats(C * H * W);
    std::vector<float> y(OH * OW * KH * KW * C);
    for (size_t it = 0; it < iters; ++it) {
      float* d = y.data();
      for (size_t oh = 0; oh < OH; ++oh)
        for (size_t ow = 0; ow < OW; ++ow)
          for (size_t i = 0; i < KH; ++i)
            for (size_t j = 0; j < KW; ++j) {
              const ptrdiff_t h = (ptrdiff_t)(oh * SH + i) - (ptrdiff_t)PH;
              const ptrdiff_t w = (ptrdiff_t)(ow * SW + j) - (ptrdiff_t)PW;
              const bool in = h >= 0 && h < (ptrdiff_t)H && w >= 0 && w < (ptrdiff_t)W;
              for (size_t c = 0; c < C; ++c) *d++ = in ? x[(c * H + h) * W + w] : 0.0f;
            }
      __asm__ volatile("" ::: "memory");
    }
    for (float v : y) checksum += v;
  } else {
    std::fprintf(stderr, "unknown op %s\n", op.c_str());
    return 2;
  }
  std::printf("checksum %.6g\n", checksum);
  return 0;
}
