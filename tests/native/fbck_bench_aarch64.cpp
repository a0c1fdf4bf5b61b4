// aarch64 micro-benchmark driver for the FBCK NEON kernels: runs one kernel ITERS times on random
// inputs, so that its executed guest instructions can be counted under qemu-user (run with ITERS
// and 2 * ITERS and take the difference; see tests/native/count_insns.py), or timed natively on an
// ARM board (it also prints the wall time per call and the generic-timer ticks).
//
// Usage: fbck_bench_aarch64 KERNEL P N K ITERS [IMPL]
//   bgemm          P x N binary dots of K bits                (IMPL default neon)
//   bgemm_ref      the same with the scalar reference
//   binary_linear  two-plane binary linear, float output
//   linear_f32     y[P, N] = x[P, K] W[N, K]^T (+ bias)       (FP32 GEMM through the driver)
//   sgemm          y[N, P] = W[N, K] x[K, P]: linear_f32 with the positions on the inner axis
//   pack_dual      DTA packing of P rows of K floats (N ignored)
// Prints "checksum <v>" (so the work cannot be optimised away) and "ns_per_call <t>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fbck/bench.h"
#include "fbck/kernels.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s KERNEL P N K ITERS [IMPL]\n", argv[0]);
    return 2;
  }
  const std::string kernel = argv[1];
  const size_t P = std::strtoull(argv[2], nullptr, 10), N = std::strtoull(argv[3], nullptr, 10),
               K = std::strtoull(argv[4], nullptr, 10), iters = std::strtoull(argv[5], nullptr, 10);
  std::string impl = argc > 6 ? argv[6] : "neon";
  if (kernel == "bgemm_ref") impl = "ref";
  const fbck::Kernels& k = fbck::get_kernels(impl);
  const size_t W = fbck::row_words(K);
  std::mt19937_64 rng(42);
  std::normal_distribution<float> nd;
  auto bits = [&](size_t rows) {
    std::vector<uint64_t> v(rows * W, 0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < K; j += 64) {
        uint64_t x = rng();
        if (K - j < 64) x &= (uint64_t(1) << (K - j)) - 1;
        v[r * W + j / 64] = x;
      }
    return v;
  };
  auto floats = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  };
  double checksum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t c0 = fbck::read_ticks();
  if (kernel == "bgemm" || kernel == "bgemm_ref") {
    const auto a = bits(P), w = bits(N);
    std::vector<int32_t> out(P * N);
    for (size_t it = 0; it < iters; ++it) k.bgemm(a.data(), P, w.data(), N, K, out.data());
    for (int32_t v : out) checksum += v;
  } else if (kernel == "binary_linear") {
    const auto a1 = bits(P), a2 = bits(P), w = bits(N);
    const auto s = floats(P + 2 * N);
    std::vector<float> y(P * N);
    fbck::BinaryLinearArgs g;
    g.a1 = a1.data();
    g.a2 = a2.data();
    g.s2 = s.data();
    g.w = w.data();
    g.outer = P;
    g.N = N;
    g.K = K;
    g.sw = s.data() + P;
    g.bias = s.data() + P + N;
    g.y = y.data();
    for (size_t it = 0; it < iters; ++it) k.binary_linear(g);
    for (float v : y) checksum += v;
  } else if (kernel == "linear_f32" || kernel == "sgemm") {
    const auto x = floats(P * K), w = floats(N * K), bias = floats(N);
    std::vector<float> y(P * N);
    fbck::LinearF32Args g;
    g.x = x.data();
    g.K = K;
    if (kernel == "linear_f32") {
      g.outer = P;
      g.inner = 1;
    } else {
      g.outer = 1;
      g.inner = P;
    }
    g.w = w.data();
    g.N = N;
    g.ep.bias = bias.data();
    g.y = y.data();
    for (size_t it = 0; it < iters; ++it) k.linear_f32(g);
    for (float v : y) checksum += v;
  } else if (kernel == "pack_dual") {
    const auto x = floats(P * K);
    std::vector<uint64_t> b1(P * W), b2(P * W);
    std::vector<float> s2(P);
    for (size_t it = 0; it < iters; ++it)
      k.pack_dual(x.data(), P, K, 1, nullptr, nullptr, b1.data(), b2.data(), s2.data(), nullptr);
    for (size_t i = 0; i < P * W; ++i) checksum += static_cast<double>(b1[i] % 1000 + b2[i] % 1000);
  } else {
    std::fprintf(stderr, "unknown kernel %s\n", kernel.c_str());
    return 2;
  }
  const uint64_t c1 = fbck::read_ticks();
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  std::printf("kernel %s impl %s P %zu N %zu K %zu iters %zu\n", kernel.c_str(), impl.c_str(), P, N,
              K, iters);
  std::printf("checksum %.6g\n", checksum);
  if (iters) {
    std::printf("ns_per_call %.1f\n", ns / iters);
    std::printf("%s_ticks_per_call %.1f (tick_hz %.0f)\n", fbck::ticks_kind(),
                static_cast<double>(c1 - c0) / iters, fbck::tick_hz());
  }
  return 0;
}
