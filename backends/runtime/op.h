// One op of a runtime program: built from its checked record (OpSpec), it prepares what it needs
// once (packed or interleaved weights, conv geometry) and then runs on buffers. Each kind lives
// in its own file under ops/ (parse, prepare, eval); ops/registry.cpp maps schema kinds to them.
//
// The float operations of every op follow backends/README.md ("Exact float order"); the runtime is
// compiled with -ffp-contract=off so no multiply and add are fused behind our back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fbck/kernels.h"

namespace fbck::rt {

using Dims = std::vector<size_t>;  // with the batch first

size_t prod(const Dims& d, size_t from = 0, size_t to = SIZE_MAX);

// (outer, K, inner) around `axis`.
struct Split {
  size_t outer, mid, inner;
};
Split split(const Dims& d, int axis);

// One op as the artifact loader decodes it (attributes by type, constants decoded).
struct OpSpec {
  std::string kind, name;
  std::vector<int> inputs;
  int output = -1;
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> floats;
  std::map<std::string, std::string> strs;
  std::map<std::string, std::vector<int64_t>> lists;
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<uint64_t>> u64;
  std::map<std::string, std::vector<int8_t>> i8;
};

// A stream's window: frames [valid_lo, valid_hi) of an op's input time axis are real, the rest
// padding (zero-filled); a convolution's time padding is already applied.
struct Window {
  bool on = false;
  ptrdiff_t valid_lo = 0, valid_hi = 0;
};

// Everything one run of an op sees.
struct Args {
  const Kernels* k = nullptr;
  const float* const* in = nullptr;  // input buffers
  const Dims* in_dims = nullptr;     // their dims
  float* out = nullptr;
  const Dims* out_dims = nullptr;
  Window window;
  int time_axis = -1;  // input 0's time axis in this run (batch counted), -1: none
  // The output frames the caller reads: an op that pads itself gets context frames around them
  // (a stream's window) and may leave the others unspecified.
  size_t out_lo = 0, out_hi = SIZE_MAX;
};

// How output frames depend on input frames along time (for streaming).
struct TimeMap {
  int out_axis = -1;       // the output's time axis, -1: time is reduced (runs once at the end)
  ptrdiff_t lo = 0, hi = 0;  // input frames needed before / after an output frame's own
  size_t stride = 1;
  bool pads_itself = false;  // give it only real frames, it pads time itself (memory)
  bool window = false;       // it reads Args::window (convolutions)
};

class Op {
 public:
  std::string kind;  // the schema kind ("chain" for a fused elementwise chain)
  std::string name;  // the layer it came from
  std::vector<int> in;
  int out = -1;

  virtual ~Op() = default;
  // Precomputes what run() needs (interleaved weights, conv geometry): once, after the fusion
  // rules (which may change the op's weights).
  virtual void prepare() {}
  virtual void run(const Args& a) const = 0;
  // t: the time axis of each input (-1: none); the default keeps an axis all inputs share.
  virtual TimeMap time_map(const std::vector<int>& t) const;
};

// A per-element op that a chain can fuse (affine, prelu, channel add/sub, activations, scalar,
// add): it runs over n contiguous floats. `per_elem`: the span runs along the channel axis (or its
// constants are expanded per element), so constant e belongs to element e; otherwise the whole
// span has channel `c`.
class Elementwise : public Op {
 public:
  int axis = -1;  // channel axis (batch counted) of per-channel ops, -1 for the others
  virtual void apply(const float* x, const float* other, float* y, size_t c, size_t n, bool per_elem) const = 0;
  // A copy whose per-channel constants are expanded `inner` times (run per element over whole
  // samples when a channel's run is short).
  virtual std::unique_ptr<Elementwise> widened(size_t inner) const = 0;
  // For a threshold fold: y = f(x) as this op computes it on one value of channel c, and whether
  // f is monotone (+1 non-decreasing, -1 non-increasing, 0 neither) on channel c.
  virtual float value(float x, size_t c) const = 0;
  virtual int monotone(size_t c) const = 0;
  // As a step of a kernel's output transform (kernels.h PostOps), when it is one: kind and its
  // per-channel constants for C channels.
  enum class Step { other, affine, relu, prelu, residual };
  virtual Step post_step(size_t C, std::vector<float>& a, std::vector<float>& b) const = 0;
  void run(const Args& a) const override;
  TimeMap time_map(const std::vector<int>& t) const override;
};

// Builds the op of one checked record; `x` are the inputs' dims and `y` the output's (batch 1).
std::unique_ptr<Op> make_op(const OpSpec& s, const std::vector<Dims>& x, const Dims& y, const Kernels& k);

[[noreturn]] void bad_op(const OpSpec& s, const std::string& why);
const std::vector<float>& f32(const OpSpec& s, const char* role);

}  // namespace fbck::rt
