// Frame-by-frame execution of a Program for one utterance (batch 1). Every push runs each op on
// the output frames its inputs now allow (op.h TimeMap: a memory block waits for its right
// context, a convolution along time sees a zero-filled window of real and padding frames); ops
// whose output has no time axis run once, at finish. The result equals the whole-utterance call.
// Window buffers are kept per op, so after the first pushes nothing allocates.
#pragma once

#include <cstddef>
#include <vector>

#include "program.h"

namespace fbck::rt {

class Stream {
 public:
  explicit Stream(const Program& p);
  // frames: the input with `n` frames on the input's time axis (other sizes as the input shape).
  // Returns how many new output frames are ready (read them with output_buffer()).
  size_t push(const float* frames, size_t n);
  // Ends the utterance (all frames must have been pushed); computes everything left.
  void finish();
  // Starts the next utterance, keeping every buffer (an always-on spotter allocates once).
  void reset();
  size_t frames_in() const { return frames_in_; }
  size_t output_frames() const { return avail_[p_.alias_[p_.output_]]; }
  bool finished() const { return finished_; }
  const std::vector<float>& output_buffer() const { return bufs_[p_.alias_[p_.output_]]; }
  const Program& program() const { return p_; }

 private:
  const Program& p_;
  const Dims input_dims_;                 // the input's dims at batch 1
  std::vector<std::vector<float>> bufs_;  // full-utterance buffer per storage value
  std::vector<size_t> avail_;             // frames computed per storage value
  std::vector<size_t> done_;              // output frames computed per op
  std::vector<std::vector<std::vector<float>>> in_win_;  // per op and input: its window
  std::vector<std::vector<float>> out_win_;              // per op: its output window
  // Per storage value: the output window its producer wrote last (frames [a, b), no padding in
  // it), which a consumer asking for exactly those frames reads instead of a gathered copy.
  struct Fresh {
    const float* data = nullptr;
    size_t a = 0, b = 0, outer = 0, inner = 0;
  };
  std::vector<Fresh> fresh_;
  size_t frames_in_ = 0;
  bool finished_ = false;
  void advance();
  bool worth_running() const;
  size_t ready_frames(size_t i, size_t have) const;
  void run_terminal(size_t i);
  void run_window(size_t i);
};

}  // namespace fbck::rt
