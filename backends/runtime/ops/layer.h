// A layer: an op whose kernel applies the output transform (kernels.h PostOps) in its own
// epilogue: a BatchNorm affine, ReLU or PReLU and a residual add taken over by the fusion rules
// (fusion.cpp, fuse_epilogues) run on each output while it is in registers, and the kernel can
// emit the next binary layer's bit planes instead of (or beside) its floats (emit_planes).
#pragma once

#include <vector>

#include "../op.h"

namespace fbck::rt {

// The post-ops a layer took over, owned.
struct PostSpec {
  std::vector<float> scale, shift, slope;  // [N] each, or empty
  Act act = Act::none;
  int res = -1;  // the residual's index among the op's inputs, or -1
  bool active() const { return !scale.empty() || act != Act::none || res >= 0; }
};

class Layer : public Op {
 public:
  PostSpec post;
  // The output's channel axis (batch counted): the post-ops' channel n, the planes' bit index.
  virtual int channel_axis_out() const = 0;
  // Runs the layer with its post-ops, writing floats to y (or null) and the planes (or null).
  virtual void run_post(const Args& a, float* y, const PlanesOut* planes) const = 0;
  void run(const Args& a) const override { run_post(a, a.out, nullptr); }

 protected:
  // The kernels' PostOps for one call (nullptr when there is nothing to do).
  const PostOps* post_ops(const Args& a, const PlanesOut* planes, PostOps& buf) const {
    if (!post.active() && !planes) return nullptr;
    buf = PostOps{};
    if (!post.scale.empty()) buf.scale = post.scale.data(), buf.shift = post.shift.data();
    buf.act = post.act;
    if (post.act == Act::prelu) buf.slope = post.slope.data();
    if (post.res >= 0) buf.res = a.in[post.res];
    if (planes) buf.planes = *planes;
    return &buf;
  }
};

}  // namespace fbck::rt
