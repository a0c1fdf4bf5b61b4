// Ops whose input only meets a per-channel sign test, sign(x[c] - t0[c]) (one bit plane, no
// per-position scale): a monotone per-channel chain before them folds into their thresholds
// (fusion.cpp, fold_thresholds).
#pragma once

#include <vector>

namespace fbck::rt {

class Binarizing {
 public:
  virtual ~Binarizing() = default;
  // Whether the input meets nothing but the sign test (else nothing may be folded).
  virtual bool sign_only() const = 0;
  virtual int channel_axis() const = 0;  // batch counted
  virtual const std::vector<float>& thresholds() const = 0;
  // Whether a channel's comparison can turn around (x <= t: the weights of that channel flip).
  virtual bool can_flip() const = 0;
  // New thresholds on a new input; channels with flip[c] take bit = (x - t0[c] >= 0) ? -1 : +1
  // and their weights flip sign, which gives the same products.
  virtual void rethreshold(const std::vector<float>& t0, const std::vector<bool>& flip) = 0;
};

}  // namespace fbck::rt
