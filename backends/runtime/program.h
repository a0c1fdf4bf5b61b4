// The compiled-model runtime: executes a lowered program (backends/lower.py) in one native call.
//
// A Program is built once from the lowering's values and ops (parameters are copied in, binary
// weights arrive packed), then `run` executes the whole utterance for a batch. `run` is const and
// allocates its workspace per call, so one Program may serve many threads at once. A Stream runs
// the same program frame by frame: every op computes the output frames its inputs already allow
// (memory blocks wait for their right context), and the result equals the whole-utterance call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fbck/kernels.h"

namespace fbck::rt {

// One op as the lowering describes it (see backends/README.md for the kinds and their floats).
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

enum class Kind {
  linear, conv2d, binary_linear, memory, affine, prelu, channel_add, channel_sub, act, add,
  scalar, permute, mean, binary_conv2d
};
enum class Act { relu, hardtanh, tanh, sigmoid, leaky_relu };

using Dims = std::vector<size_t>;  // with the batch first

struct Op {
  Kind kind;
  std::string name;
  std::vector<int> in;
  int out = -1;
  int axis = 1;
  // binary linear / memory activations
  size_t K = 0, N = 0;
  int planes = 1;
  S1Mode s1 = S1Mode::none;
  float s1c = 1.0f;
  std::vector<float> t0, t1, t2, sw, bias, w, scale, shift, slope, value, taps;
  std::vector<uint64_t> wbits;
  std::vector<uint32_t> w16;  // binary_linear: wbits as interleave_rows16, for tables that want it
  std::vector<int8_t> ws;
  bool has_t2 = false, binary = false;
  // memory
  int ch_axis = 1, t_axis = 2;
  size_t left = 0, right = 0, dil = 1;
  float residual = 0.0f;
  // conv2d
  size_t O = 0, KH = 1, KW = 1, stride[2] = {1, 1}, pad[2] = {0, 0}, dilation[2] = {1, 1},
         groups = 1;
  // binary conv2d: per (out channel, tap) sums of the +-1 weights and of sign * t2, and the
  // geometry of the whole-utterance shape: per output position and tap the input position (-1:
  // padding), the position's validity pattern, and per pattern and out channel the corrections.
  std::vector<int32_t> wsum;
  std::vector<double> t2w;
  struct ConvGeometry {
    size_t H = 0, W = 0;
    std::vector<int32_t> src, pattern, pad_fix;
    std::vector<float> offset;
    std::vector<float> fix_t, off_t;  // pad_fix and offset per (out channel, position), as floats
  } geo;
  // act, scalar, permute, mean
  Act act = Act::relu;
  float a0 = 0.0f, a1 = 0.0f, mul = 1.0f, add = 0.0f;
  std::vector<int> perm, dims;
  bool keepdim = false;
};

class Stream;

// True when none of the n floats is NaN or infinite (vectorised integer test of the exponent).
bool all_finite(const float* x, size_t n);

// A stream's window: frames [valid_lo, valid_hi) of an op's input time axis are real, the rest
// padding (zero-filled), and a convolution's time padding is already applied.
struct Window {
  bool on = false;
  ptrdiff_t valid_lo = 0, valid_hi = 0;
};

class Program {
 public:
  explicit Program(const std::string& impl);
  int add_value(const std::vector<size_t>& shape);  // shape without the batch
  void set_alias(int value, int base);
  void add_op(const OpSpec& spec);
  void finalize(int input, int output, int time_axis);

  // x: (B, input shape) float32, y: (B, output shape) float32, both contiguous. With op_ns
  // (ops_.size() entries), each op's wall time in nanoseconds is added to it.
  void run(const float* x, size_t B, float* y, double* op_ns = nullptr) const;
  const std::string& op_name(size_t i) const { return ops_[i].name; }
  std::string op_kind(size_t i) const;

  const Dims& input_shape() const { return shapes_[input_]; }
  const Dims& output_shape() const { return shapes_[output_]; }
  std::string impl() const { return kern_->name; }
  const char* kernels_name() const { return kern_->name; }
  size_t num_ops() const { return ops_.size(); }
  int output_time_axis() const { return time_axis_[output_]; }  // with batch; -1: terminal
  int input_time_axis() const { return time_axis_[input_]; }
  size_t input_frames() const { return shapes_[input_][time_axis_[input_] - 1]; }
  // Ops that run frame by frame in a stream (the rest need the whole utterance).
  size_t streamed_ops() const { return std::count(terminal_.begin(), terminal_.end(), false); }
  std::unique_ptr<Stream> stream() const;

 private:
  friend class Stream;
  const Kernels* kern_;
  std::vector<Dims> shapes_;  // per value, without batch
  std::vector<int> alias_;    // value -> the value whose storage it views (itself if none)
  std::vector<size_t> offset_;
  std::vector<int> time_axis_;  // per value, counting the batch; -1 when time was reduced away
  std::vector<bool> terminal_;  // per op: runs on whole utterances only (time reduced)
  std::vector<size_t> group_end_;  // per op: last op of the elementwise chain it starts (run())
  // Chains whose per-channel runs are short (channel axis just outside a few frames) run over a
  // whole sample at once with their per-channel constants expanded per element: per op, the index
  // of its expanded copy in wide_ops_, or -1.
  std::vector<Op> wide_ops_;
  std::vector<int> wide_of_;
  size_t arena_ = 0;
  std::vector<Op> ops_;
  int input_ = -1, output_ = -1;
  bool final_ = false;

  int root(int v) const;
  Dims with_batch(int v, size_t B) const;
  void fuse();
  void widen();
  void plan();
  void exec_chain(size_t first, size_t last, const std::vector<const float*>& ptrs, float* out,
                  size_t B) const;
  void propagate_time(int time_axis);
  void exec(const Op& op, const std::vector<const float*>& in, const std::vector<Dims>& in_dims,
            float* out, const Dims& out_dims, const Window& window) const;
  void binary_conv2d(const Op& op, const float* x, const Dims& xd, float* out, const Dims& od,
                     int time_axis, const Window& window) const;
};

// Frame-by-frame execution of a Program for one utterance (batch 1).
class Stream {
 public:
  explicit Stream(const Program& p);
  // frames: the input with `n` frames on the input's time axis (other sizes as the input shape).
  // Returns how many new output frames are ready (read them with output()).
  size_t push(const float* frames, size_t n);
  // Ends the utterance (all frames must have been pushed); computes everything left.
  void finish();
  size_t frames_in() const { return frames_in_; }
  size_t output_frames() const { return avail_[p_.root(p_.output_)]; }
  bool finished() const { return finished_; }
  const std::vector<float>& output_buffer() const { return bufs_[p_.root(p_.output_)]; }
  const Program& program() const { return p_; }

 private:
  const Program& p_;
  std::vector<std::vector<float>> bufs_;  // full-utterance buffer per storage value
  std::vector<size_t> avail_;             // frames computed per storage value
  std::vector<size_t> done_;              // output frames computed per op
  size_t frames_in_ = 0;
  bool finished_ = false;
  void advance();
};

}  // namespace fbck::rt
