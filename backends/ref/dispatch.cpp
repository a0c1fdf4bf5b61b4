// Run-time choice of the FBCK dispatch table (portable code, compiled without SIMD flags).
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "fbck/impls.h"
#include "fbck/kernels.h"

#if defined(FBCK_HAVE_X86)
#include <cpuid.h>
#endif

namespace fbck {
namespace {

#if defined(FBCK_HAVE_X86)
struct X86Features {
  bool avx2 = false;    // AVX2 + POPCNT + FMA with OS-enabled ymm state
  bool avx512 = false;  // + AVX512F/BW/VL/VPOPCNTDQ with OS-enabled zmm state
};

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

X86Features detect_x86() {
  X86Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool popcnt = c & (1u << 23), fma = c & (1u << 12), osxsave = c & (1u << 27),
             avx = c & (1u << 28);
  if (!(osxsave && avx)) return f;
  const uint64_t xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return f;  // SSE and AVX state
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  f.avx2 = avx2 && popcnt && fma;
  const bool avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31),
             vpopcntdq = c & (1u << 14);
  f.avx512 = f.avx2 && avx512f && avx512bw && avx512vl && vpopcntdq && (xcr0 & 0xe0) == 0xe0;
  return f;
}

const X86Features& x86_features() {
  static const X86Features f = detect_x86();
  return f;
}
#endif

const Kernels* find_builtin(const std::string& name) {
  if (name == "ref") return &ref_kernels();
#if defined(FBCK_HAVE_X86)
  if (name == "avx2" && x86_features().avx2) return &avx2_kernels();
#if defined(FBCK_WITH_AVX512)
  if (name == "avx512" && x86_features().avx512) return &avx512_kernels();
#endif
#endif
#if defined(FBCK_HAVE_NEON)
  if (name == "neon") return &neon_kernels();
#endif
  return nullptr;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

const Kernels& resolve_auto() {
  const char* env = std::getenv("FBCK_IMPL");
  if (env && *env && std::string(env) != "auto") {
    const Kernels* k = find_builtin(env);
    if (!k)
      throw std::runtime_error(std::string("FBCK_IMPL=") + env +
                               " is not available on this machine/build (available: " +
                               join(available_impls()) + ")");
    return *k;
  }
  return *find_builtin(available_impls().back());
}

}  // namespace

std::vector<std::string> available_impls() {
  std::vector<std::string> v{"ref"};
  for (const char* n : {"avx2", "avx512", "neon"})
    if (find_builtin(n)) v.emplace_back(n);
  return v;
}

const Kernels* find_kernels(const std::string& name) {
  if (name == "auto") {
    try {
      return &kernels();
    } catch (const std::runtime_error&) {
      return nullptr;
    }
  }
  return find_builtin(name);
}

const Kernels& kernels() {
  static const Kernels* k = &resolve_auto();  // a throw leaves it unset; the next call retries
  return *k;
}

const Kernels& get_kernels(const std::string& name) {
  if (name == "auto") return kernels();
  const Kernels* k = find_builtin(name);
  if (!k)
    throw std::runtime_error("FBCK implementation '" + name +
                             "' is not available on this machine/build (available: " +
                             join(available_impls()) + ")");
  return *k;
}

}  // namespace fbck
