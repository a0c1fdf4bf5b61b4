// Micro-benchmark helper: run a callable many times, report best / median time per call and the
// matching cycle-counter readings where one is available.
//
// Counters: x86-64 reads the TSC (rdtsc). TSC ticks are *reference* cycles at the nominal TSC
// frequency, not core clock cycles: with turbo or power saving the core clock differs, so
// "per cycle" figures from it are per reference cycle. aarch64 reads CNTVCT_EL0, the generic timer
// (a fixed frequency, typically 1 to 100 MHz: not CPU cycles, reported as "cntvct").
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <x86intrin.h>
#endif

namespace fbck {

struct BenchResult {
  double best_ns = 0, median_ns = 0;        // per call
  double best_ticks = 0, median_ticks = 0;  // per call, in counter ticks (0 when none)
  const char* ticks_kind = "none";          // "tsc" (x86 reference cycles), "cntvct", "none"
  double tick_hz = 0;                       // counter frequency when known (cntvct), else 0
  size_t samples = 0, reps = 0;             // samples of `reps` calls each
};

inline uint64_t read_ticks() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_lfence();
  const uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
#elif defined(__aarch64__)
  uint64_t t;
  __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(t));
  return t;
#else
  return 0;
#endif
}

inline const char* ticks_kind() {
#if defined(__x86_64__) || defined(_M_X64)
  return "tsc";
#elif defined(__aarch64__)
  return "cntvct";
#else
  return "none";
#endif
}

inline double tick_hz() {
#if defined(__aarch64__)
  uint64_t f;
  __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(f));
  return static_cast<double>(f);
#else
  return 0.0;
#endif
}

// Runs fn() in `samples` samples; each sample repeats it `reps` times, with reps chosen (when 0)
// so that a sample lasts at least min_sample_ns. A few warm-up calls come first.
template <class F>
BenchResult bench(F&& fn, size_t samples = 30, size_t reps = 0, double min_sample_ns = 2e5) {
  using clk = std::chrono::steady_clock;
  for (int i = 0; i < 3; ++i) fn();
  if (reps == 0) {
    reps = 1;
    for (;;) {
      const auto t0 = clk::now();
      for (size_t r = 0; r < reps; ++r) fn();
      const double ns = std::chrono::duration<double, std::nano>(clk::now() - t0).count();
      if (ns >= min_sample_ns || reps >= (size_t(1) << 24)) break;
      reps *= 2;
    }
  }
  if (samples == 0) samples = 1;
  std::vector<double> ns(samples), tk(samples);
  for (size_t s = 0; s < samples; ++s) {
    const auto t0 = clk::now();
    const uint64_t c0 = read_ticks();
    for (size_t r = 0; r < reps; ++r) fn();
    const uint64_t c1 = read_ticks();
    ns[s] = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / reps;
    tk[s] = static_cast<double>(c1 - c0) / reps;
  }
  BenchResult b;
  auto med = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  b.best_ns = *std::min_element(ns.begin(), ns.end());
  b.median_ns = med(ns);
  b.best_ticks = *std::min_element(tk.begin(), tk.end());
  b.median_ticks = med(tk);
  b.ticks_kind = ticks_kind();
  b.tick_hz = tick_hz();
  b.samples = samples;
  b.reps = reps;
  return b;
}

}  // namespace fbck
