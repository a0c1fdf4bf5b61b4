// Fusion rules: rewrites of a program's op list that the runtime applies when it builds a
// program, each exact (the fused program computes the same floats as the unfused one; tests/
// test_fusion.py checks every rule fused == unfused). One rule, one function:
//
// - fold_thresholds: a per-channel monotone chain (BatchNorm affine, ReLU, PReLU with a positive
//   slope...) whose only reader is a one-plane binarizer is replaced by exact per-channel
//   thresholds on the chain's input: sign(f(x) - t0) == sign(x - t') for the float t' found by
//   bisection over the floats, with the comparison turned around (and the channel's weights
//   flipped) where f decreases (a negative BatchNorm scale).
// - fuse_chains: consecutive elementwise ops over one shape run as one loop (ops/elementwise.h).
// - fuse_epilogues: a chain right after a layer becomes the layer kernel's output transform
//   (kernels.h PostOps: BatchNorm affine, then ReLU or PReLU, then a residual add), computed on
//   each output in registers: memory + BatchNorm + PReLU + residual in one pass, binary linear +
//   BatchNorm + ReLU in one pass. A chain of another form runs on the layer's output in the same
//   call, while it is in cache.
// - emit_planes: a layer whose output only feeds a binary linear emits that layer's input bit
//   planes (one or two, with the dual scale s2) straight from its output transform, in the
//   packing's own order: the value between them is never stored as floats.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "op.h"

namespace fbck::rt {

enum Rule : unsigned {
  kFoldThresholds = 1u << 0,
  kFuseChains = 1u << 1,
  kFuseEpilogues = 1u << 2,
  kEmitPlanes = 1u << 3,
  kAllRules = kFoldThresholds | kFuseChains | kFuseEpilogues | kEmitPlanes,
};
// "fold_thresholds", "emit_planes", "fuse_chains", "fuse_epilogues"
const std::vector<std::pair<std::string, unsigned>>& rule_names();

// What the rules need to know about the program around the ops.
struct Graph {
  std::vector<std::unique_ptr<Op>>& ops;
  const std::vector<Dims>& shapes;  // per value, batch 1 (batch first)
  const std::vector<int>& alias;    // value -> the value whose storage it views (itself if none)
  int output = -1;                  // the program's output value (its storage root)
  std::vector<int> readers() const;  // per value: how many op inputs read it (views count for their base)
  bool viewed(int v) const;          // another value views v's storage
};

void fold_thresholds(Graph& g);
void emit_planes(Graph& g);
void fuse_chains(Graph& g);
void fuse_epilogues(Graph& g);

void apply_rules(Graph& g, unsigned rules);

}  // namespace fbck::rt
