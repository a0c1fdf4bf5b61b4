// The compiled-model runtime: a loaded program (artifact.h) ready to run in one native call.
//
// Building a Program makes each op (ops/, one file per op family), applies the fusion rules
// (fusion.h), places every value in one arena (first-fit over lifetimes) and works out which axis
// carries time for each value (for streaming). `run` is const and uses a per-thread workspace, so
// one Program serves many threads at once. A Stream (stream.h) runs the same ops frame by frame.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "artifact.h"
#include "fbck/kernels.h"
#include "fusion.h"
#include "op.h"

namespace fbck::rt {

class Stream;

// True when none of the n floats is NaN or infinite (vectorised integer test of the exponent).
bool all_finite(const float* x, size_t n);

class Program {
 public:
  // impl: "auto", "ref", "avx2", "avx512", "neon"; rules: the fusion rules to apply (fusion.h).
  Program(const LoadedProgram& p, const std::string& impl, unsigned rules = kAllRules);
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  // x: (B, input shape) float32, y: (B, output shape) float32, both contiguous. With op_ns
  // (num_ops() entries), each op's wall time in nanoseconds is added to it.
  void run(const float* x, size_t B, float* y, double* op_ns = nullptr) const;
  size_t num_ops() const { return ops_.size(); }
  const std::string& op_name(size_t i) const { return ops_[i]->name; }
  const std::string& op_kind(size_t i) const { return ops_[i]->kind; }

  const Dims& input_shape() const { return shapes_[input_]; }    // without the batch
  const Dims& output_shape() const { return shapes_[output_]; }  // without the batch
  std::string impl() const { return kern_->name; }
  const char* kernels_name() const { return kern_->name; }
  int input_time_axis() const { return time_axis_[input_]; }   // batch counted; -1: none
  int output_time_axis() const { return time_axis_[output_]; }  // -1: time reduced
  size_t input_frames() const { return input_time_axis() >= 1 ? shapes_[input_][input_time_axis() - 1] : 0; }
  // Ops that run frame by frame in a stream (the others wait for the whole utterance).
  size_t streamed_ops() const;
  std::unique_ptr<Stream> stream() const;

 private:
  friend class Stream;
  const Kernels* kern_;
  std::vector<Dims> shapes_;    // per value, without batch
  std::vector<int> alias_;      // value -> the value whose storage it views (itself if none)
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<std::vector<Dims>> in_dims_;  // per op: its inputs' dims with a batch of 1
  std::vector<Dims> out_dims_;              // per op: its output's dims with a batch of 1
  std::vector<TimeMap> time_maps_;          // per op
  std::vector<int> time_axis_;              // per value, batch counted; -1 when time was reduced
  std::vector<size_t> offset_;              // per storage value: its place in the arena (floats per sample)
  size_t arena_ = 0;
  int input_ = -1, output_ = -1;

  Dims with_batch(int v, size_t B) const;
  void plan();
  void propagate_time(int time_axis);
};

}  // namespace fbck::rt
