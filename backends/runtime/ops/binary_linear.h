// binary_linear (ops/binary_linear.cpp), visible to the fusion rules: a layer can take its input
// already packed (one plane) and emit its output as packed bits (fusion.cpp, emit_bits).
#pragma once

#include <vector>

#include "binarizing.h"
#include "ops.h"

namespace fbck::rt {

class BinaryLinear : public Op, public Binarizing {
 public:
  int axis = 1;
  size_t K = 0, N = 0;
  int planes = 1;
  S1Mode s1 = S1Mode::none;
  float s1c = 1.0f;
  std::vector<float> t0, t1, sw, bias;
  std::vector<uint64_t> wbits;
  std::vector<uint32_t> w16;  // wbits as interleave_rows16, for the tables that want it
  bool wants_w16 = false;

  void prepare() override;
  void run(const Args& a) const override;
  TimeMap time_map(const std::vector<int>& t) const override;
  // The layer on input x (dims d), or on its one plane already packed (bits, positions as x's);
  // the output as floats y and/or as packed bits ybits with bit = !((y - thr[n]) >= 0).
  void compute(const Kernels& k, const float* x, const uint64_t* bits, const Dims& d, float* y, const float* thr,
               uint64_t* ybits) const;

  // -- Binarizing
  bool sign_only() const override { return planes == 1 && s1 != S1Mode::mean_abs; }
  int channel_axis() const override { return axis; }
  const std::vector<float>& thresholds() const override { return t0; }
  bool can_flip() const override { return true; }
  void rethreshold(const std::vector<float>& t, const std::vector<bool>& flip) override;
};

}  // namespace fbck::rt
