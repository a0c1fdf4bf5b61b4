// The fusion rules (fusion.h), one function each.
#include "fusion.h"

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <limits>

#include "ops/binarizing.h"
#include "ops/binary_linear.h"
#include "ops/elementwise.h"
#include "ops/layer.h"

namespace fbck::rt {

const std::vector<std::pair<std::string, unsigned>>& rule_names() {
  static const std::vector<std::pair<std::string, unsigned>> names = {{"fold_thresholds", kFoldThresholds},
                                                                       {"emit_planes", kEmitPlanes},
                                                                       {"fuse_chains", kFuseChains},
                                                                       {"fuse_epilogues", kFuseEpilogues}};
  return names;
}

std::vector<int> Graph::readers() const {
  std::vector<int> n(shapes.size(), 0);
  for (const auto& op : ops)
    for (int v : op->in) ++n[alias[v]];
  return n;
}

bool Graph::viewed(int v) const {
  for (size_t u = 0; u < alias.size(); ++u)
    if (alias[u] == v && static_cast<int>(u) != v) return true;
  return false;
}

namespace {

// The index of the op writing value v, or -1.
int producer(const Graph& g, int v, size_t before) {
  for (size_t i = before; i-- > 0;)
    if (g.ops[i] && g.ops[i]->out == v) return static_cast<int>(i);
  return -1;
}

// A value that only flows from one op to the next: one reader, no view, not the output.
bool private_value(const Graph& g, const std::vector<int>& readers, int v) {
  return g.alias[v] == v && readers[v] == 1 && !g.viewed(v) && v != g.output;
}

void drop_null(std::vector<std::unique_ptr<Op>>& ops) {
  ops.erase(std::remove(ops.begin(), ops.end(), nullptr), ops.end());
}

// Floats in their order as integers: +-0 -> 0, the negatives below (so ord is monotone).
int32_t ord(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return (b & 0x80000000u) ? -static_cast<int32_t>(b & 0x7FFFFFFFu) : static_cast<int32_t>(b);
}
float from_ord(int32_t o) {
  const uint32_t b = o >= 0 ? static_cast<uint32_t>(o) : (0x80000000u | static_cast<uint32_t>(-o));
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// The threshold on x equivalent to sign(f(x) - t0), f the chain on channel c (monotone in
// direction dir): with dir > 0 the smallest x with f(x) - t0 >= 0, compared as x - t' >= 0; with
// dir < 0 the bit turns around: x - t' >= 0 for the x with f(x) - t0 < 0 (t' just above the
// largest x with f(x) - t0 >= 0). +-inf where the sign never changes over the finite floats.
float threshold(const std::vector<const Elementwise*>& chain, size_t c, float t0, int dir) {
  auto sign = [&](int64_t o) {
    float v = from_ord(static_cast<int32_t>(o));
    for (const Elementwise* e : chain) v = e->value(v, c);
    return v - t0 >= 0.0f;
  };
  int64_t lo = ord(-FLT_MAX), hi = ord(FLT_MAX);
  const float inf = std::numeric_limits<float>::infinity();
  if (dir > 0) {
    if (sign(lo)) return -inf;
    if (!sign(hi)) return inf;
    while (hi - lo > 1) {  // sign(lo) false, sign(hi) true
      const int64_t mid = lo + (hi - lo) / 2;
      (sign(mid) ? hi : lo) = mid;
    }
    return from_ord(static_cast<int32_t>(hi));
  }
  if (!sign(lo)) return -inf;  // never +1: the flipped bit is always +1
  if (sign(hi)) return inf;
  while (hi - lo > 1) {  // sign(lo) true, sign(hi) false
    const int64_t mid = lo + (hi - lo) / 2;
    (sign(mid) ? lo : hi) = mid;
  }
  return from_ord(static_cast<int32_t>(hi));
}

// A chain right after a layer, run on the layer's output in the same pass.
class Fused : public Op {
 public:
  Fused(std::unique_ptr<Op> layer, std::unique_ptr<Chain> chain) : layer_(std::move(layer)), chain_(std::move(chain)) {
    kind = layer_->kind;
    name = layer_->name;
    in = layer_->in;
    in.insert(in.end(), chain_->in.begin() + 1, chain_->in.end());
    out = chain_->out;
  }
  void prepare() override { layer_->prepare(); }
  void run(const Args& a) const override {
    layer_->run(a);
    chain_->apply_in_place(a.out, a.in + layer_->in.size(), *a.out_dims);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    const std::vector<int> own(t.begin(), t.begin() + layer_->in.size());
    TimeMap m = layer_->time_map(own);
    std::vector<int> ct{m.out_axis};
    ct.insert(ct.end(), t.begin() + layer_->in.size(), t.end());
    if (chain_->time_map(ct).out_axis != m.out_axis) m.out_axis = -1;
    return m;
  }

 private:
  std::unique_ptr<Op> layer_;
  std::unique_ptr<Chain> chain_;
};

// A layer that emits the next binary linear's input planes from its output transform: the value
// between them is never stored as floats.
class PlanesPair : public Op {
 public:
  PlanesPair(std::unique_ptr<Layer> first, std::unique_ptr<BinaryLinear> second)
      : first_(std::move(first)), second_(std::move(second)) {
    kind = second_->kind;
    name = first_->name + " -> " + second_->name;
    in = first_->in;
    in.insert(in.end(), second_->in.begin() + 1, second_->in.end());
    out = second_->out;
  }
  void prepare() override {
    first_->prepare();
    second_->prepare();
  }
  void run(const Args& a) const override {
    thread_local std::vector<uint64_t> b1, b2;
    thread_local std::vector<float> s2, s1;
    // the value between them: the output's dims with the second layer's input channels (the
    // second is pointwise in time, so a stream's window has the same frames on both sides)
    thread_local Dims mid;
    mid = *a.out_dims;
    mid[second_->axis] = second_->K;
    const Split sp = split(mid, second_->axis);
    const PlanesOut planes = second_->planes_for(sp.outer * sp.inner, b1, b2, s2, s1);
    first_->run_post(a, nullptr, &planes);
    // the second layer's own inputs: the planes, then its residual (if it took one over)
    const size_t n = first_->in.size();
    const float* ins[4] = {nullptr, nullptr, nullptr, nullptr};
    Dims dims[4];
    dims[0] = mid;
    for (size_t j = 1; j < second_->in.size() && j < 4; ++j) ins[j] = a.in[n + j - 1], dims[j] = a.in_dims[n + j - 1];
    Args b = a;
    b.in = ins, b.in_dims = dims;
    const PlanesIn pin{planes.bits1, planes.bits2, planes.s2, planes.s1};
    second_->compute(b, nullptr, &pin, mid, a.out, nullptr);
  }
  TimeMap time_map(const std::vector<int>& t) const override {
    TimeMap m = first_->time_map(std::vector<int>(t.begin(), t.begin() + first_->in.size()));
    if (m.out_axis >= 0 && second_->time_map({m.out_axis}).out_axis < 0) m.out_axis = -1;
    return m;
  }

 private:
  std::unique_ptr<Layer> first_;
  std::unique_ptr<BinaryLinear> second_;
};

bool is_layer(const Op& op) {
  static const char* const kinds[] = {"binary_linear", "binary_conv2d", "binary_memory", "memory", "linear", "conv2d"};
  for (const char* k : kinds)
    if (op.kind == k) return true;
  return false;
}

}  // namespace

void fold_thresholds(Graph& g) {
  const std::vector<int> readers = g.readers();
  for (size_t qi = 0; qi < g.ops.size(); ++qi) {
    auto* q = dynamic_cast<Binarizing*>(g.ops[qi].get());
    if (!q || !q->sign_only()) continue;
    Op& Q = *g.ops[qi];
    const int axis = q->channel_axis();
    std::vector<int> found;  // producers, nearest first
    int v = Q.in[0];
    while (private_value(g, readers, v)) {
      const int p = producer(g, v, qi);
      auto* e = p >= 0 ? dynamic_cast<Elementwise*>(g.ops[p].get()) : nullptr;
      if (!e || e->in.size() != 1 || (e->axis >= 0 && e->axis != axis) || g.shapes[e->in[0]] != g.shapes[v]) break;
      found.push_back(p);
      v = e->in[0];
    }
    if (found.empty()) continue;
    std::vector<const Elementwise*> chain;  // in execution order
    for (auto it = found.rbegin(); it != found.rend(); ++it) chain.push_back(static_cast<const Elementwise*>(g.ops[*it].get()));
    const size_t C = g.shapes[v][axis];
    std::vector<float> t(C);
    std::vector<bool> flip(C, false);
    bool ok = true;
    for (size_t c = 0; c < C && ok; ++c) {
      int dir = 1;
      for (const Elementwise* e : chain) dir *= e->monotone(c);
      ok = dir != 0 && (dir > 0 || q->can_flip());
      if (!ok) break;
      t[c] = threshold(chain, c, q->thresholds()[c], dir);
      flip[c] = dir < 0;
    }
    if (!ok) continue;
    q->rethreshold(t, flip);
    Q.in[0] = v;
    for (int p : found) g.ops[p].reset();
  }
  drop_null(g.ops);
}

void emit_planes(Graph& g) {
  const std::vector<int> readers = g.readers();
  for (size_t qi = 0; qi < g.ops.size(); ++qi) {
    auto* second = dynamic_cast<BinaryLinear*>(g.ops[qi].get());
    if (!second || !private_value(g, readers, second->in[0]) || second->in.size() > 4) continue;
    const int p = producer(g, second->in[0], qi);
    auto* first = p >= 0 ? dynamic_cast<Layer*>(g.ops[p].get()) : nullptr;
    if (!first || first->channel_axis_out() != second->axis) continue;
    // a convolution's stream window is wider than its output: the second layer's residual would
    // not line up with it
    const bool conv = first->kind == "conv2d" || first->kind == "binary_conv2d";
    if (conv && second->in.size() > 1) continue;
    std::unique_ptr<Layer> a(static_cast<Layer*>(g.ops[p].release()));
    std::unique_ptr<BinaryLinear> b(static_cast<BinaryLinear*>(g.ops[qi].release()));
    g.ops[qi] = std::make_unique<PlanesPair>(std::move(a), std::move(b));
  }
  drop_null(g.ops);
}

void fuse_chains(Graph& g) {
  const std::vector<int> readers = g.readers();
  std::vector<std::unique_ptr<Op>> out;
  for (size_t i = 0; i < g.ops.size();) {
    auto* first = dynamic_cast<Elementwise*>(g.ops[i].get());
    if (!first) {
      out.push_back(std::move(g.ops[i++]));
      continue;
    }
    const Dims& shape = g.shapes[first->out];
    int axis = first->axis;
    size_t j = i;
    while (j + 1 < g.ops.size()) {
      auto* next = dynamic_cast<Elementwise*>(g.ops[j + 1].get());
      const int mid = g.ops[j]->out;
      // x + y == y + x exactly in IEEE arithmetic: an add that reads the chain's value second
      // takes it first
      if (next && next->in.size() == 2 && next->in[1] == mid && next->in[0] != mid) std::swap(next->in[0], next->in[1]);
      if (!next || next->in[0] != mid || !private_value(g, readers, mid) || g.shapes[next->out] != shape) break;
      if (next->axis >= 0 && axis >= 0 && next->axis != axis) break;
      if (next->axis >= 0) axis = next->axis;
      ++j;
    }
    std::vector<std::unique_ptr<Elementwise>> members;
    for (size_t k = i; k <= j; ++k) members.emplace_back(static_cast<Elementwise*>(g.ops[k].release()));
    out.push_back(std::make_unique<Chain>(std::move(members), shape));
    i = j + 1;
  }
  g.ops.swap(out);
}

namespace {

// The chain as the layer's output transform (affine, then ReLU or PReLU, then a residual add, each
// optional, in this order, on the layer's output channels), or false.
bool as_post(const Chain& chain, int axis, size_t C, PostSpec& post) {
  int stage = 0;  // 1: affine seen, 2: activation seen, 3: residual seen
  size_t extra = 1;
  for (const auto& m : chain.members()) {
    if (m->axis >= 0 && m->axis != axis) return false;
    std::vector<float> a, b;
    const Elementwise::Step step = m->post_step(C, a, b);
    if (step == Elementwise::Step::affine && stage < 1) {
      post.scale = a, post.shift = b, stage = 1;
    } else if ((step == Elementwise::Step::relu || step == Elementwise::Step::prelu) && stage < 2) {
      post.act = step == Elementwise::Step::relu ? Act::relu : Act::prelu;
      post.slope = a, stage = 2;
    } else if (step == Elementwise::Step::residual && stage < 3) {
      post.res = static_cast<int>(extra++), stage = 3;  // placed after the layer's own inputs
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

void fuse_epilogues(Graph& g) {
  const std::vector<int> readers = g.readers();
  for (size_t i = 0; i + 1 < g.ops.size(); ++i) {
    Op* layer = g.ops[i].get();
    auto* chain = dynamic_cast<Chain*>(g.ops[i + 1].get());
    if (!layer || !chain || !is_layer(*layer) || chain->in[0] != layer->out) continue;
    if (!private_value(g, readers, layer->out) || g.shapes[layer->out] != g.shapes[chain->out]) continue;
    // a convolution's stream window is wider than its output: its chain may read nothing else
    if ((layer->kind == "conv2d" || layer->kind == "binary_conv2d") && chain->in.size() > 1) continue;
    auto* l = dynamic_cast<Layer*>(layer);
    PostSpec post;
    if (l && !l->post.active() && as_post(*chain, l->channel_axis_out(), g.shapes[layer->out][l->channel_axis_out()], post)) {
      // the kernel's own output transform: one pass, in registers
      if (post.res >= 0) post.res = static_cast<int>(l->in.size());
      l->post = std::move(post);
      l->in.insert(l->in.end(), chain->in.begin() + 1, chain->in.end());
      l->out = chain->out;
      g.ops[i + 1].reset();
      ++i;
      continue;
    }
    std::unique_ptr<Chain> c(static_cast<Chain*>(g.ops[i + 1].release()));
    g.ops[i] = std::make_unique<Fused>(std::move(g.ops[i]), std::move(c));
  }
  drop_null(g.ops);
}

void apply_rules(Graph& g, unsigned rules) {
  if (rules & kFoldThresholds) fold_thresholds(g);
  if (rules & kFuseChains) fuse_chains(g);
  if (rules & kFuseEpilogues) fuse_epilogues(g);
  if (rules & kEmitPlanes) emit_planes(g);
}

}  // namespace fbck::rt
