// The compiled-model runtime (program.h): building (ops, fusion, memory plan, time axes) and the
// whole-utterance run loop. This file is built with -ffp-contract=off like the ops.
#include "program.h"

#include <chrono>
#include <cstring>
#include <stdexcept>

#include "stream.h"

namespace fbck::rt {

bool all_finite(const float* x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

Dims Program::with_batch(int v, size_t B) const {
  Dims d{B};
  d.insert(d.end(), shapes_[v].begin(), shapes_[v].end());
  return d;
}

Program::Program(const LoadedProgram& p, const std::string& impl, unsigned rules)
    : kern_(&get_kernels(impl)), shapes_(p.values), input_(p.input), output_(p.output) {
  // the loader has checked the program (artifact.cpp): ids in range, views of roots of the same
  // size, every value defined before it is read, every op against its schema
  const int nv = static_cast<int>(shapes_.size());
  alias_.resize(nv);
  for (int v = 0; v < nv; ++v) alias_[v] = v;
  for (const auto& [value, base] : p.aliases) alias_[value] = base;
  std::vector<Dims> dims1(nv);
  for (int v = 0; v < nv; ++v) dims1[v] = with_batch(v, 1);
  for (const OpSpec& s : p.ops) {
    std::vector<Dims> x;
    for (int v : s.inputs) x.push_back(dims1[v]);
    ops_.push_back(make_op(s, x, dims1[s.output], *kern_));
  }
  Graph g{ops_, dims1, alias_, alias_[output_]};
  apply_rules(g, rules);
  for (const auto& op : ops_) {
    op->prepare();
    std::vector<Dims> x;
    for (int v : op->in) x.push_back(dims1[v]);
    in_dims_.push_back(x);
    out_dims_.push_back(dims1[op->out]);
  }
  plan();
  propagate_time(p.time_axis);
}

// Greedy first-fit placement of storage values in one arena (per-sample floats, 64-byte aligned).
void Program::plan() {
  const int nv = static_cast<int>(shapes_.size());
  std::vector<int> first(nv, -2), last(nv, -2);
  first[alias_[input_]] = -1;
  for (int i = 0; i < (int)ops_.size(); ++i) {
    for (int v : ops_[i]->in) last[alias_[v]] = std::max(last[alias_[v]], i);
    first[ops_[i]->out] = i;
  }
  last[alias_[output_]] = static_cast<int>(ops_.size());
  offset_.assign(nv, 0);
  struct Block {
    size_t off, size;
    int until;
  };
  std::vector<Block> live;
  std::vector<int> order;
  for (int v = 0; v < nv; ++v)
    if (alias_[v] == v && first[v] != -2) order.push_back(v);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return first[a] < first[b]; });
  arena_ = 0;
  for (int v : order) {
    live.erase(std::remove_if(live.begin(), live.end(), [&](const Block& b) { return b.until < first[v]; }),
               live.end());
    const size_t size = (prod(shapes_[v]) + 15) / 16 * 16;
    std::sort(live.begin(), live.end(), [](const Block& a, const Block& b) { return a.off < b.off; });
    size_t off = 0;
    for (const Block& b : live) {
      if (off + size <= b.off) break;
      off = std::max(off, b.off + b.size);
    }
    offset_[v] = off;
    live.push_back({off, size, std::max(last[v], first[v])});
    arena_ = std::max(arena_, off + size);
  }
}

// Which axis carries time for every value (each op says how it maps time, op.h TimeMap).
void Program::propagate_time(int time_axis) {
  const int nv = static_cast<int>(shapes_.size());
  time_axis_.assign(nv, -1);
  const int rank_in = static_cast<int>(shapes_[input_].size()) + 1;
  if (time_axis >= 1 && time_axis < rank_in) time_axis_[input_] = time_axis;
  auto view_time = [&](int v) {
    // views keep the time axis when it survives the reshape as a dimension of its own
    const int b = alias_[v];
    if (b == v || time_axis_[b] < 0) return;
    const Dims in = with_batch(b, 1), out = with_batch(v, 1);
    const int t = time_axis_[b];
    const size_t after = prod(in, t + 1);
    for (int j = 1; j < (int)out.size(); ++j)
      if (out[j] == in[t] && prod(out, j + 1) == after) time_axis_[v] = j;
  };
  for (int v = 0; v < nv; ++v) view_time(v);
  time_maps_.clear();
  for (const auto& op : ops_) {
    std::vector<int> t;
    for (int v : op->in) t.push_back(time_axis_[v]);
    TimeMap m;
    if (t[0] >= 1) m = op->time_map(t);
    time_maps_.push_back(m);
    time_axis_[op->out] = m.out_axis;
    for (int v = 0; v < nv; ++v)
      if (alias_[v] == op->out) view_time(v);
  }
}

size_t Program::streamed_ops() const {
  return std::count_if(time_maps_.begin(), time_maps_.end(), [](const TimeMap& m) { return m.out_axis >= 0; });
}

void Program::run(const float* x, size_t B, float* y, double* op_ns) const {
  if (B == 0) return;
  // One workspace per thread, grown as needed and reused: no allocation or zero-fill per call
  // (every value is written by its op before it is read).
  thread_local std::vector<float> arena;
  if (arena.size() < arena_ * B + 16) arena.resize(arena_ * B + 16);
  float* base = arena.data();
  auto ptr = [&](int v) { return base + offset_[alias_[v]] * B; };
  std::memcpy(ptr(input_), x, sizeof(float) * prod(shapes_[input_]) * B);
  // reused per thread: after the first call nothing here allocates
  thread_local std::vector<const float*> ins;
  thread_local std::vector<Dims> dims;
  thread_local Dims od;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = *ops_[i];
    const auto t0 = op_ns ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    ins.resize(op.in.size());
    dims.resize(op.in.size());
    for (size_t j = 0; j < op.in.size(); ++j) {
      ins[j] = ptr(op.in[j]);
      dims[j] = in_dims_[i][j];
      dims[j][0] = B;
    }
    od = out_dims_[i];
    od[0] = B;
    Args a;
    a.k = kern_, a.in = ins.data(), a.in_dims = dims.data(), a.out = ptr(op.out), a.out_dims = &od;
    a.time_axis = time_axis_[op.in[0]];
    op.run(a);
    if (op_ns)
      op_ns[i] += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  }
  std::memcpy(y, ptr(output_), sizeof(float) * prod(shapes_[output_]) * B);
}

std::unique_ptr<Stream> Program::stream() const {
  if (input_time_axis() < 1) throw std::invalid_argument("the program's input has no time axis");
  return std::make_unique<Stream>(*this);
}

}  // namespace fbck::rt
