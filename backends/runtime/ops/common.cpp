// Helpers every op shares (op.h).
#include <algorithm>
#include <stdexcept>

#include "../op.h"

namespace fbck::rt {

size_t prod(const Dims& d, size_t from, size_t to) {
  const size_t end = std::min(to, d.size());
  size_t p = 1;
  for (size_t i = from; i < end; ++i) p *= d[i];
  return p;
}

Split split(const Dims& d, int axis) { return {prod(d, 0, axis), d[axis], prod(d, axis + 1)}; }

void bad_op(const OpSpec& s, const std::string& why) {
  throw std::invalid_argument("op " + s.kind + " '" + s.name + "': " + why);
}

const std::vector<float>& f32(const OpSpec& s, const char* role) {
  auto it = s.f32.find(role);
  if (it == s.f32.end()) bad_op(s, std::string("missing '") + role + "'");
  return it->second;
}

TimeMap Op::time_map(const std::vector<int>& t) const {
  TimeMap m;
  m.out_axis = t.empty() ? -1 : t[0];
  for (int v : t)
    if (v != m.out_axis) m.out_axis = -1;
  return m;
}

}  // namespace fbck::rt
