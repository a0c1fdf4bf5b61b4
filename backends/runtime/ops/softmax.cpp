// softmax / log_softmax along `axis`: m = max_k x, s = sum_k exp(x - m) (in double, k in order),
// y = (float)(exp(x - m) / s) or y = (x - m) - (float)log(s). PyTorch sums in its own order, so
// the two agree to float rounding (not bit for bit).
#include <algorithm>
#include <cmath>

#include "ops.h"

namespace fbck::rt {
namespace {

class Softmax : public Op {
 public:
  int axis = 1;
  bool log = false;

  void run(const Args& a) const override {
    const Split sp = split(a.in_dims[0], axis);
    const float* x = a.in[0];
    for (size_t o = 0; o < sp.outer; ++o)
      for (size_t i = 0; i < sp.inner; ++i) {
        const float* xs = x + o * sp.mid * sp.inner + i;
        float* ys = a.out + o * sp.mid * sp.inner + i;
        float m = xs[0];
        for (size_t k = 1; k < sp.mid; ++k) m = std::max(m, xs[k * sp.inner]);
        double s = 0.0;
        for (size_t k = 0; k < sp.mid; ++k) s += std::exp(static_cast<double>(xs[k * sp.inner] - m));
        if (log) {
          const float ls = static_cast<float>(std::log(s));
          for (size_t k = 0; k < sp.mid; ++k) ys[k * sp.inner] = (xs[k * sp.inner] - m) - ls;
        } else {
          for (size_t k = 0; k < sp.mid; ++k)
            ys[k * sp.inner] = static_cast<float>(std::exp(static_cast<double>(xs[k * sp.inner] - m)) / s);
        }
      }
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m = Op::time_map(t);
    if (m.out_axis == axis) m.out_axis = -1;
    return m;
  }
};

}  // namespace

std::unique_ptr<Op> make_softmax(const OpSpec& s, const std::vector<Dims>&, const Dims&, const Kernels&) {
  auto op = std::make_unique<Softmax>();
  op->axis = static_cast<int>(s.ints.at("axis"));
  op->log = s.kind == "log_softmax";
  return op;
}

}  // namespace fbck::rt
