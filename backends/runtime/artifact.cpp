// The artifact loader (see artifact.h and backends/README.md "Artifact format"); the Python
// reader (backends/artifact.py) accepts and rejects the same files.
#include "artifact.h"

#include <cmath>
#include <cstring>
#include <cstdio>

#include "safetensors.h"
#include "schema.h"

namespace fbck::rt {
namespace {

constexpr int kMaxRank = 8;
constexpr uint64_t kMaxElems = UINT64_C(1) << 31;
const char* const kFormat = "binarize-fbck";

[[noreturn]] void fail(const std::string& why) { throw ArtifactError(why); }

enum Codec : uint8_t { f32 = 0, f16 = 1, q8 = 2, bits = 3, i8 = 4, tern = 5, num_codecs = 6 };
const char* const kCodecNames[] = {"f32", "f16", "q8", "bits", "i8", "tern"};
// the pool each codec's values live in, and its safetensors dtype
const char* const kCodecPool[] = {"f32", "f16", "i8", "u64", "i8", "u8"};

struct Pool {
  const uint8_t* p = nullptr;
  size_t n = 0;  // elements
};

struct Pools {
  Pool f32, f16, i8, u8, u64;
  const Pool& of(Codec c) const {
    switch (c) {
      case Codec::f32: return f32;
      case Codec::f16: return f16;
      case Codec::q8:
      case Codec::i8: return i8;
      case Codec::bits: return u64;
      default: return u8;
    }
  }
};

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // the formats are little-endian, as every target we build for
  return v;
}

// A constant, decoded to its logical dtype.
struct Decoded {
  schema::ConstType type = schema::ConstType::f32;
  std::vector<size_t> shape;
  std::vector<float> f;
  std::vector<uint64_t> u;
  std::vector<int8_t> i;
};

class Records {
 public:
  Records(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  [[noreturn]] void fail(const std::string& why) const {
    throw ArtifactError("the program records are corrupt at byte " + std::to_string(pos_) + ": " + why);
  }
  uint64_t uint(uint64_t limit = UINT64_C(1) << 62) {
    uint64_t v = 0;
    int shift = 0;
    while (true) {
      if (pos_ >= n_) fail("truncated");
      const uint8_t b = p_[pos_++];
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) break;
      shift += 7;
      if (shift > 62) fail("varint too long");
    }
    if (v > limit) fail("value " + std::to_string(v) + " exceeds " + std::to_string(limit));
    return v;
  }
  int64_t sint() {
    const uint64_t u = uint();
    return (u & 1) ? -static_cast<int64_t>((u + 1) >> 1) : static_cast<int64_t>(u >> 1);
  }
  // A number of items, each at least one byte: never more than the bytes left after it.
  size_t count() {
    const uint64_t v = uint();
    if (v > n_ - pos_) fail("a count of " + std::to_string(v) + " exceeds the " + std::to_string(n_ - pos_) + " bytes left");
    return static_cast<size_t>(v);
  }
  int id() { return static_cast<int>(uint(kMaxElems)); }
  float f32() {
    if (n_ - pos_ < 4) fail("truncated");
    const float v = load_le<float>(p_ + pos_);
    pos_ += 4;
    return v;
  }
  std::string raw() {
    const size_t n = count();
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }
  bool end() const { return pos_ == n_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

Decoded read_constant(Records& r, const Pools& pools) {
  const uint64_t code = r.uint();
  if (code >= Codec::num_codecs) r.fail("unknown codec " + std::to_string(code));
  const Codec c = static_cast<Codec>(code);
  const int rank = static_cast<int>(r.uint(kMaxRank));
  Decoded d;
  uint64_t n = 1;
  for (int k = 0; k < rank; ++k) {
    const uint64_t dim = r.uint(kMaxElems);
    if (dim < 1) r.fail("a constant has a zero dimension");
    n *= dim;
    if (n >= kMaxElems) r.fail("a constant is too large");
    d.shape.push_back(static_cast<size_t>(dim));
  }
  const uint64_t offset = r.uint();
  uint64_t scale_offset = 0;
  if (c == Codec::q8) scale_offset = r.uint();
  const Pool& pool = pools.of(c);
  if (!pool.p) r.fail(std::string("a ") + kCodecNames[c] + " constant but no " + kCodecPool[c] + " pool");
  const uint64_t stored = c == Codec::tern ? (n + 3) / 4 : n;
  if (offset > pool.n || stored > pool.n - offset)
    fail("a constant lies outside the " + std::string(kCodecPool[c]) + " pool");
  switch (c) {
    case Codec::f32:
      d.f.resize(n);
      std::memcpy(d.f.data(), pool.p + offset * 4, n * 4);
      break;
    case Codec::f16:
      d.f.resize(n);
      for (uint64_t k = 0; k < n; ++k) d.f[k] = half_to_float(load_le<uint16_t>(pool.p + (offset + k) * 2));
      break;
    case Codec::q8: {
      const uint64_t rows = rank >= 2 ? d.shape[0] : 1, cols = n / rows;
      if (scale_offset > pools.f32.n || rows > pools.f32.n - scale_offset)
        fail("int8 scales lie outside the f32 pool");
      d.f.resize(n);
      for (uint64_t row = 0; row < rows; ++row) {
        const float s = load_le<float>(pools.f32.p + (scale_offset + row) * 4);
        for (uint64_t k = 0; k < cols; ++k) {
          const int8_t q = static_cast<int8_t>(pool.p[offset + row * cols + k]);
          d.f[row * cols + k] = static_cast<float>(q) * s;
        }
      }
      break;
    }
    case Codec::bits:
      d.type = schema::ConstType::bits;
      d.u.resize(n);
      std::memcpy(d.u.data(), pool.p + offset * 8, n * 8);
      break;
    case Codec::i8:
      d.type = schema::ConstType::i8;
      d.i.resize(n);
      std::memcpy(d.i.data(), pool.p + offset, n);
      break;
    case Codec::tern:
      d.type = schema::ConstType::i8;
      d.i.resize(n);
      for (uint64_t k = 0; k < n; ++k) {
        const int code2 = (pool.p[offset + k / 4] >> (2 * (k % 4))) & 3;
        if (code2 == 3) fail("a 2-bit tap code is 3 (only 0, +1, -1 exist)");
        d.i[k] = code2 == 1 ? 1 : code2 == 2 ? -1 : 0;
      }
      break;
    default:
      break;
  }
  return d;
}

std::string shape_str(const std::vector<size_t>& s) {
  std::string out = "(";
  for (size_t k = 0; k < s.size(); ++k) out += (k ? ", " : "") + std::to_string(s[k]);
  return out + (s.size() == 1 ? ",)" : ")");
}

schema::Value list_value(const std::vector<int64_t>& v) {
  schema::Value r;
  r.is_list = true;
  r.list = v;
  return r;
}

schema::Value shape_value(const std::vector<size_t>& s) {
  std::vector<int64_t> v{1};
  for (size_t d : s) v.push_back(static_cast<int64_t>(d));
  return list_value(v);
}

// Reads one op record into `s` (attributes by type, constants decoded), then checks it against
// its schema with the values' shapes.
void read_op(Records& r, const std::vector<Decoded>& consts, const std::string& prev,
             const LoadedProgram& p, OpSpec& s) {
  const uint64_t kind = r.uint();
  if (kind >= static_cast<uint64_t>(schema::num_ops())) r.fail("unknown op kind " + std::to_string(kind));
  const schema::OpDef& def = schema::ops()[kind];
  s.kind = def.kind;
  const size_t common = static_cast<size_t>(r.uint(prev.size()));
  s.name = prev.substr(0, common) + r.raw();
  for (int k = 0; k < def.inputs; ++k) s.inputs.push_back(r.id());
  s.output = r.id();
  schema::Env env;
  for (int k = 0; k < def.n_attrs; ++k) {
    const schema::AttrDef& a = def.attrs[k];
    switch (a.type) {
      case schema::AttrType::int_: {
        const int64_t v = r.sint();
        s.ints[a.name] = v;
        env[a.name].i = v;
        break;
      }
      case schema::AttrType::bool_: {
        const int64_t v = static_cast<int64_t>(r.uint(1));
        s.ints[a.name] = v;
        env[a.name].i = v;
        break;
      }
      case schema::AttrType::float_:
        s.floats[a.name] = r.f32();
        break;
      case schema::AttrType::enum_: {
        const auto names = schema::choices(a);
        const uint64_t v = r.uint(names.size() - 1);
        s.strs[a.name] = names[v];
        env[a.name].i = static_cast<int64_t>(v);
        break;
      }
      case schema::AttrType::ints: {
        std::vector<int64_t> v(r.count());
        for (auto& x : v) x = r.sint();
        s.lists[a.name] = v;
        env[a.name] = list_value(v);
        break;
      }
    }
  }
  std::vector<const Decoded*> mine;
  for (int k = 0; k < def.n_consts; ++k) {
    const uint64_t idx = r.uint();
    if (idx >= consts.size()) r.fail("constant index " + std::to_string(idx) + " of " + std::to_string(consts.size()));
    mine.push_back(&consts[idx]);
  }

  // -- the checks of backends/artifact.py validate_program, op by op
  const std::string where = "op " + std::to_string(p.ops.size()) + " (" + s.kind + " '" + s.name + "') is invalid: ";
  const int nv = static_cast<int>(p.values.size());
  for (int k = 0; k < def.n_attrs; ++k) {
    const schema::AttrDef& a = def.attrs[k];
    if (a.type == schema::AttrType::float_) {
      if (!std::isfinite(s.floats[a.name])) fail(where + "attribute '" + a.name + "' must be a finite number");
      continue;
    }
    if (a.type == schema::AttrType::enum_) continue;
    std::vector<int64_t> vals = a.type == schema::AttrType::ints ? s.lists[a.name] : std::vector<int64_t>{s.ints[a.name]};
    if (a.type == schema::AttrType::ints && a.length && (int)vals.size() != a.length)
      fail(where + "attribute '" + a.name + "' must have " + std::to_string(a.length) + " entries");
    for (int64_t v : vals)
      if (v < a.min || v > a.max)
        fail(where + "attribute '" + a.name + "' must lie in [" + std::to_string(a.min) + ", " + std::to_string(a.max) + "]");
  }
  std::vector<std::vector<size_t>> in_shapes;
  for (int k = 0; k < def.inputs; ++k) {
    if (s.inputs[k] >= nv) fail(where + "input " + std::to_string(s.inputs[k]) + " is not defined yet");
    env["in" + std::to_string(k)] = shape_value(p.values[s.inputs[k]]);
  }
  if (s.output >= nv) fail(where + "bad output id " + std::to_string(s.output));
  env["out"] = shape_value(p.values[s.output]);
  schema::Value rank, out_rank;
  rank.i = static_cast<int64_t>(p.values[s.inputs[0]].size()) + 1;
  out_rank.i = static_cast<int64_t>(p.values[s.output].size()) + 1;
  env["rank"] = rank;
  env["out_rank"] = out_rank;
  try {
    for (int k = 0; k < def.n_checks; ++k)
      if (!schema::evaluate(def.checks[k], env).i) fail(where + "check `" + def.checks[k] + "` failed");
    for (int k = 0; k < def.n_consts; ++k) {
      const schema::ConstDef& c = def.consts[k];
      const Decoded& d = *mine[k];
      if (d.type != c.dtype) fail(where + "constant '" + c.role + "' has the wrong dtype");
      std::vector<size_t> want;
      for (int j = 0; j < c.rank; ++j) want.push_back(static_cast<size_t>(schema::evaluate(c.shape[j], env).i));
      if (want != d.shape)
        fail(where + "constant '" + c.role + "' has shape " + shape_str(d.shape) + ", expected " + shape_str(want));
      if (d.type == schema::ConstType::f32) s.f32[c.role] = d.f;
      if (d.type == schema::ConstType::bits) s.u64[c.role] = d.u;
      if (d.type == schema::ConstType::i8) {
        if (s.kind == "binary_memory")
          for (int8_t t : d.i)
            if (t < -1 || t > 1) fail(where + "binary taps must be -1, 0 or +1");
        s.i8[c.role] = d.i;
      }
    }
  } catch (const schema::SchemaError& e) {
    fail(where + e.what());
  }
}

LoadedProgram read_program(Records& r, const std::vector<Decoded>& consts) {
  LoadedProgram p;
  p.thin = static_cast<int>(r.sint());
  const int64_t time_axis = r.sint();
  p.input = r.id();
  p.output = r.id();
  const size_t nv = r.count();
  for (size_t v = 0; v < nv; ++v) {
    const int rank = static_cast<int>(r.uint(kMaxRank));
    std::vector<size_t> shape;
    uint64_t n = 1;
    for (int k = 0; k < rank; ++k) {
      const uint64_t d = r.uint(kMaxElems);
      n *= d ? d : 1;
      if (n >= kMaxElems) fail("a value is too large");
      shape.push_back(static_cast<size_t>(d));
    }
    if (rank < 1 || rank >= kMaxRank || n == 0)
      fail("values must be non-empty lists of positive sizes (rank below 8)");
    for (size_t d : shape)
      if (d == 0) fail("values must be non-empty lists of positive sizes (rank below 8)");
    p.values.push_back(shape);
  }
  const int n = static_cast<int>(nv);
  if (p.input >= n || p.output >= n) fail("input/output value ids out of range");
  if (time_axis != -1 && (time_axis < 1 || time_axis > static_cast<int64_t>(p.values[p.input].size())))
    fail("the time axis is out of range");
  p.time_axis = static_cast<int>(time_axis);
  std::vector<int> alias(n, -1);
  const size_t na = r.count();
  for (size_t k = 0; k < na; ++k) {
    const int a = r.id(), b = r.id();
    p.aliases.emplace_back(a, b);
  }
  auto numel = [&](int v) {
    size_t e = 1;
    for (size_t d : p.values[v]) e *= d;
    return e;
  };
  for (auto [a, b] : p.aliases)
    if (a >= n || b >= n || a == b || alias[a] >= 0) fail("alias " + std::to_string(a) + " -> " + std::to_string(b) + " is invalid");
    else alias[a] = b;
  for (auto [a, b] : p.aliases) {
    if (alias[b] >= 0) fail("alias " + std::to_string(a) + " -> " + std::to_string(b) + " is invalid");
    if (numel(a) != numel(b)) fail("alias " + std::to_string(a) + " -> " + std::to_string(b) + " changes the size");
  }
  auto root = [&](int v) { return alias[v] >= 0 ? alias[v] : v; };
  std::vector<bool> defined(n, false);
  defined[root(p.input)] = true;
  const size_t nops = r.count();
  std::string prev;
  for (size_t k = 0; k < nops; ++k) {
    OpSpec s;
    read_op(r, consts, prev, p, s);
    prev = s.name;
    const std::string where = "op " + std::to_string(k) + " (" + s.kind + " '" + s.name + "') is invalid: ";
    for (int v : s.inputs)
      if (!defined[root(v)]) fail(where + "input " + std::to_string(v) + " is not defined yet");
    if (alias[s.output] >= 0 || defined[s.output]) fail(where + "bad output id " + std::to_string(s.output));
    defined[s.output] = true;
    p.ops.push_back(std::move(s));
  }
  const size_t nm = r.count();
  for (size_t k = 0; k < nm; ++k) {
    std::string key = r.raw();
    p.meta[key] = r.raw();
  }
  if (!defined[root(p.output)]) fail("the output value is never computed");
  return p;
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    int e = -1;
    uint32_t m = mant;
    do {
      ++e;
      m <<= 1;
    } while (!(m & 0x400));
    bits = sign | ((112 - e) << 23) | ((m & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

Artifact read_artifact(const uint8_t* data, size_t size) {
  SafetensorsFile st;
  try {
    st = parse_safetensors(data, size);
  } catch (const ContainerError& e) {
    fail(e.what());
  }
  Artifact art;
  art.metadata = st.metadata;
  const auto& m = st.metadata;
  auto get = [&](const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  if (get("format") != kFormat) fail("not a binarize artifact (no binarize-fbck metadata)");
  const std::string version = get("format_version");
  if (version != std::to_string(kFormatVersion)) {
    const bool digits = !version.empty() && version.size() < 9 &&
                        version.find_first_not_of("0123456789") == std::string::npos;
    const bool old = digits && std::stoi(version) < kFormatVersion;
    fail("artifact format version '" + version + "'" + (old ? " (written by an older binarize)" : "") +
         "; this runtime reads version " + std::to_string(kFormatVersion) +
         ". Re-compile the model and save it again: binarize.compile(student).save(path)");
  }
  char want[9];
  std::snprintf(want, sizeof want, "%08x", crc32(st.data, st.data_size));
  if (get("crc32") != want) fail("checksum mismatch: the artifact is corrupt or was modified");

  Pools pools;
  const Pool* program = nullptr;
  Pool prog;
  for (const auto& [name, t] : st.tensors) {
    struct Want {
      const char* name;
      const char* dtype;
      Pool* pool;
    };
    const Want wants[] = {{"program", "U8", &prog},  {"f32", "F32", &pools.f32}, {"f16", "F16", &pools.f16},
                          {"i8", "I8", &pools.i8},   {"u8", "U8", &pools.u8},    {"u64", "U64", &pools.u64}};
    const Want* w = nullptr;
    for (const Want& c : wants)
      if (name == c.name) w = &c;
    if (!w || t.dtype != w->dtype) fail("unexpected tensor '" + name + "' (" + t.dtype + ") in the artifact");
    if (t.shape.size() != 1) fail("tensor '" + name + "' is not flat");
    w->pool->p = st.data + t.begin;
    w->pool->n = static_cast<size_t>(t.shape[0]);
    if (w->pool == &prog) program = &prog;
  }
  if (!program) fail("the artifact has no program records");
  Records r(prog.p, prog.n);
  std::vector<Decoded> consts;
  const size_t nc = r.count();
  for (size_t k = 0; k < nc; ++k) consts.push_back(read_constant(r, pools));
  const size_t np = r.count();
  for (size_t k = 0; k < np; ++k) art.programs.push_back(read_program(r, consts));
  if (!r.end()) r.fail("trailing bytes");
  if (art.programs.empty()) fail("the artifact holds no program");
  return art;
}

Artifact read_artifact_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot open the artifact " + path);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  std::fclose(f);
  return read_artifact(bytes.data(), bytes.size());
}

}  // namespace fbck::rt
