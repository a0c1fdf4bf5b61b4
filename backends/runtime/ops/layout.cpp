// permute (a layout change, the batch stays first) and mean (over axes other than the batch).
#include <algorithm>

#include "ops.h"

namespace fbck::rt {
namespace {

class Permute : public Op {
 public:
  std::vector<int> perm;

  void run(const Args& a) const override {
    // out[..., j] = x[src + j * step]: an index walk over the outer output dims, then a strided
    // inner loop over the last one
    const Dims& xd = a.in_dims[0];
    const Dims& od = *a.out_dims;
    const float* x = a.in[0];
    const size_t rank = xd.size();
    size_t in_stride[8], idx[8] = {0};
    in_stride[rank - 1] = 1;
    for (size_t i = rank - 1; i-- > 0;) in_stride[i] = in_stride[i + 1] * xd[i + 1];
    const size_t inner = od[rank - 1], step = in_stride[perm[rank - 1]];
    const size_t rows = prod(od) / inner;
    for (size_t r = 0; r < rows; ++r) {
      size_t src = 0;
      for (size_t i = 0; i + 1 < rank; ++i) src += idx[i] * in_stride[perm[i]];
      float* o = a.out + r * inner;
      for (size_t j = 0; j < inner; ++j) o[j] = x[src + j * step];
      for (size_t i = rank - 1; i-- > 0;) {
        if (++idx[i] < od[i]) break;
        idx[i] = 0;
      }
    }
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m;
    for (int j = 0; j < (int)perm.size(); ++j)
      if (!t.empty() && perm[j] == t[0]) m.out_axis = j;
    return m;
  }
};

class Mean : public Op {
 public:
  std::vector<int> dims;
  bool keepdim = false;

  void run(const Args& a) const override {
    const Dims& xd = a.in_dims[0];
    const float* x = a.in[0];
    const size_t rank = xd.size();
    bool reduce[8] = {false};
    for (int d : dims) reduce[d] = true;
    size_t idx[8] = {0};
    thread_local std::vector<double> acc;
    acc.assign(prod(*a.out_dims), 0.0);
    size_t count = 1;
    for (int d : dims) count *= xd[d];
    const size_t n = prod(xd);
    for (size_t i = 0; i < n; ++i) {
      size_t o = 0;
      for (size_t j = 0; j < rank; ++j)
        if (!reduce[j]) o = o * xd[j] + idx[j];
      acc[o] += x[i];
      for (size_t j = rank; j-- > 0;) {
        if (++idx[j] < xd[j]) break;
        idx[j] = 0;
      }
    }
    for (size_t o = 0; o < acc.size(); ++o) a.out[o] = static_cast<float>(acc[o] / count);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m;
    if (t.empty() || t[0] < 0 || std::find(dims.begin(), dims.end(), t[0]) != dims.end()) return m;
    int shift = 0;
    for (int d : dims) shift += (!keepdim && d < t[0]);
    m.out_axis = t[0] - shift;
    return m;
  }
};

}  // namespace

std::unique_ptr<Op> make_permute(const OpSpec& s, const std::vector<Dims>&, const Dims&, const Kernels&) {
  auto op = std::make_unique<Permute>();
  for (int64_t d : s.lists.at("perm")) op->perm.push_back(static_cast<int>(d));
  return op;
}

std::unique_ptr<Op> make_mean(const OpSpec& s, const std::vector<Dims>&, const Dims&, const Kernels&) {
  auto op = std::make_unique<Mean>();
  for (int64_t d : s.lists.at("dims")) op->dims.push_back(static_cast<int>(d));
  op->keepdim = s.ints.at("keepdim") != 0;
  return op;
}

}  // namespace fbck::rt
