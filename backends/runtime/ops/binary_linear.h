// binary_linear (ops/binary_linear.cpp), visible to the fusion rules: a layer can take its input
// already packed (one plane) and emit its output as packed bits (fusion.cpp, emit_bits).
#pragma once

#include <vector>

#include "binarizing.h"
#include "layer.h"
#include "ops.h"

namespace fbck::rt {

// The input planes a layer before emitted (emit_planes): bits1 (and bits2, s2 for two planes; s1
// for a mean-|x| scale), positions as the input's.
struct PlanesIn {
  const uint64_t* bits1 = nullptr;
  const uint64_t* bits2 = nullptr;
  const float* s2 = nullptr;
  const float* s1 = nullptr;
};

class BinaryLinear : public Layer, public Binarizing {
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
  int channel_axis_out() const override { return axis; }
  void run_post(const Args& a, float* y, const PlanesOut* next) const override;
  TimeMap time_map(const std::vector<int>& t) const override;
  // The layer on input x (dims d), or on its planes already packed (positions as x's), then the
  // post-ops; the output as floats y (or null) and/or the next layer's planes (or null).
  void compute(const Args& a, const float* x, const PlanesIn* in, const Dims& d, float* y,
               const PlanesOut* next) const;
  // The planes this layer reads, for the layer before to emit (buffers for P positions).
  PlanesOut planes_for(size_t P, std::vector<uint64_t>& b1, std::vector<uint64_t>& b2, std::vector<float>& s2,
                       std::vector<float>& s1) const;

  // -- Binarizing
  bool sign_only() const override { return planes == 1 && s1 != S1Mode::mean_abs; }
  int channel_axis() const override { return axis; }
  const std::vector<float>& thresholds() const override { return t0; }
  bool can_flip() const override { return true; }
  void rethreshold(const std::vector<float>& t, const std::vector<bool>& flip) override;
};

}  // namespace fbck::rt
