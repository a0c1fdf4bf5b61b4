// The per-element ops (affine, prelu, channel add/sub, activations, scalar, add) and the chain
// that runs several of them as one loop (built by the fusion rules, fusion.cpp).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "../op.h"

namespace fbck::rt {

std::unique_ptr<Op> make_elementwise(const OpSpec& s, const std::vector<Dims>& x, const Dims& y);

// Elementwise ops over one shape run as one loop: each element goes through the same float
// operations in the same order, the intermediate values are never stored. Each member still runs
// as its own vectorised pass over a short span that stays in L1. Inputs: member 0's input, then
// the second input of every add, in order.
class Chain : public Op {
 public:
  Chain(std::vector<std::unique_ptr<Elementwise>> members, const Dims& shape);
  void run(const Args& a) const override;
  TimeMap time_map(const std::vector<int>& t) const override;
  const std::vector<std::unique_ptr<Elementwise>>& members() const { return members_; }
  // Runs the chain in place on y (dims d: the output of the op before it) with the adds' other
  // inputs.
  void apply_in_place(float* y, const float* const* others, const Dims& d) const;

 private:
  std::vector<std::unique_ptr<Elementwise>> members_;
  std::vector<std::unique_ptr<Elementwise>> wide_;  // per-element constants, when channels are short
  // the same for a stream's windows, by their inner size (built on first use)
  mutable std::mutex mu_;
  mutable std::map<size_t, std::vector<std::unique_ptr<Elementwise>>> window_wide_;
  const std::vector<std::unique_ptr<Elementwise>>* wide_for(const Dims& d) const;
  int axis_ = -1;
  Dims shape_;  // batch 1
  void run_on(const float* x, const float* const* others, float* y, const Dims& d) const;
  void exec(const float* x, const float* const* others, float* y, size_t B, const Dims& shape,
            const std::vector<std::unique_ptr<Elementwise>>* wide) const;
};

}  // namespace fbck::rt
