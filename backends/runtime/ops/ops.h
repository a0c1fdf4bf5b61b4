// The op constructors of ops/*.cpp (registry.cpp maps schema kinds to them).
#pragma once

#include <memory>
#include <vector>

#include "../op.h"

namespace fbck::rt {

using MakeOp = std::unique_ptr<Op> (*)(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);

std::unique_ptr<Op> make_linear(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_conv2d(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_binary_linear(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_binary_conv2d(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_memory(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_binary_memory(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_permute(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_mean(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);
std::unique_ptr<Op> make_softmax(const OpSpec&, const std::vector<Dims>&, const Dims&, const Kernels&);

// The conv ops' shared time behaviour: time on H (axis 2) or W (axis 3), zero padding applied by
// the stream's window.
TimeMap conv_time_map(const std::vector<int>& t, const size_t kernel[2], const size_t stride[2],
                      const size_t pad[2], const size_t dilation[2]);

S1Mode s1_mode(const OpSpec& s);

}  // namespace fbck::rt
