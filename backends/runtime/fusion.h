// Fusion rules: rewrites of a program's op list that the runtime applies when it builds a
// program, each exact (the fused program computes the same floats as the unfused one; tests/
// test_fusion.py checks every rule fused == unfused). One rule, one function:
//
// - fold_thresholds: a per-channel monotone chain (BatchNorm affine, ReLU, PReLU with a positive
//   slope...) whose only reader is a one-plane binarizer is replaced by exact per-channel
//   thresholds on the chain's input: sign(f(x) - t0) == sign(x - t') for the float t' found by
//   bisection over the floats, with the comparison turned around (and the channel's weights
//   flipped) where f decreases (a negative BatchNorm scale).
// - emit_bits: a binary linear whose output only feeds a one-plane binary linear (after
//   fold_thresholds took the BatchNorm and activation between them into the thresholds) emits that
//   layer's input bits straight from its epilogue (the kernels' thresholded output,
//   bit = !((y - t0[n]) >= 0), the packing's own test): no float round trip.
// - fuse_chains: consecutive elementwise ops over one shape run as one loop (ops/elementwise.h).
// - fuse_epilogues: a chain right after a layer (its BatchNorm, activation and residual add) runs
//   on that layer's output while it is in cache, in the same pass: memory + activation + residual,
//   binary linear + BatchNorm + ReLU.
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
  kEmitBits = 1u << 3,
  kAllRules = kFoldThresholds | kFuseChains | kFuseEpilogues | kEmitBits,
};
// "fold_thresholds", "emit_bits", "fuse_chains", "fuse_epilogues"
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
void emit_bits(Graph& g);
void fuse_chains(Graph& g);
void fuse_epilogues(Graph& g);

void apply_rules(Graph& g, unsigned rules);

}  // namespace fbck::rt
