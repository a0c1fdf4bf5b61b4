// See safetensors.h.
#include "safetensors.h"

#include <algorithm>

namespace fbck::rt {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // the safetensors library's own limit

class Json {
 public:
  Json(const char* p, size_t n) : p_(p), end_(p + n) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw ContainerError("the safetensors header is malformed: " + why + " at byte " +
                         std::to_string(8 + (at_ - begin())));
  }
  void ws() {
    while (at_ < end_ && (*at_ == ' ' || *at_ == '\t' || *at_ == '\n' || *at_ == '\r')) ++at_;
  }
  bool peek(char c) {
    ws();
    return at_ < end_ && *at_ == c;
  }
  void expect(char c) {
    if (!peek(c)) fail(std::string("expected '") + c + "'");
    ++at_;
  }
  bool done() {
    ws();
    return at_ == end_;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (at_ >= end_) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(*at_++);
      if (c == '"') return out;
      if (c < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (at_ >= end_) fail("unterminated escape");
      const char e = *at_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': utf8(out, hex4()); break;
        default: fail("bad escape");
      }
    }
  }

  uint64_t integer() {
    ws();
    if (at_ >= end_ || *at_ < '0' || *at_ > '9') fail("expected a non-negative integer");
    if (*at_ == '0' && at_ + 1 < end_ && at_[1] >= '0' && at_[1] <= '9') fail("leading zero");
    uint64_t v = 0;
    while (at_ < end_ && *at_ >= '0' && *at_ <= '9') {
      if (v > (UINT64_C(1) << 53)) fail("integer too large");
      v = v * 10 + static_cast<uint64_t>(*at_++ - '0');
    }
    return v;
  }

  std::vector<uint64_t> integers() {
    std::vector<uint64_t> out;
    expect('[');
    if (peek(']')) {
      ++at_;
      return out;
    }
    while (true) {
      out.push_back(integer());
      if (out.size() > 64) fail("too many dimensions");
      if (peek(']')) {
        ++at_;
        return out;
      }
      expect(',');
    }
  }

  // Calls item(key) for each member of an object; duplicate keys are an error.
  template <class F>
  void object(F&& item) {
    expect('{');
    std::vector<std::string> seen;
    if (peek('}')) {
      ++at_;
      return;
    }
    while (true) {
      std::string key = string();
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) fail("duplicate key '" + key + "'");
      seen.push_back(key);
      expect(':');
      item(key);
      if (peek('}')) {
        ++at_;
        return;
      }
      expect(',');
    }
  }

 private:
  const char* p_;
  const char* end_;
  const char* at_ = p_;
  const char* begin() const { return p_; }

  uint32_t hex4() {
    if (end_ - at_ < 4) fail("short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = *at_++;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }
  void utf8(std::string& out, uint32_t cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) fail("surrogate \\u escape");
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
};

}  // namespace

size_t safetensors_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL") return 1;
  return 0;
}

SafetensorsFile parse_safetensors(const uint8_t* bytes, size_t size) {
  if (size < 8)
    throw ContainerError("the file is " + std::to_string(size) + " bytes long: too short for an artifact");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n < 2 || n > kMaxHeader || n > size - 8)
    throw ContainerError("the file is truncated or not a safetensors file (bad header length)");
  SafetensorsFile f;
  f.data = bytes + 8 + n;
  f.data_size = size - 8 - n;
  Json js(reinterpret_cast<const char*>(bytes + 8), n);
  js.object([&](const std::string& key) {
    if (key == "__metadata__") {
      js.object([&](const std::string& k) { f.metadata[k] = js.string(); });
      return;
    }
    SafetensorsFile::Tensor t;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    js.object([&](const std::string& field) {
      if (field == "dtype") {
        t.dtype = js.string();
        has_dtype = true;
      } else if (field == "shape") {
        t.shape = js.integers();
        has_shape = true;
      } else if (field == "data_offsets") {
        const auto o = js.integers();
        if (o.size() != 2) js.fail("data_offsets needs two entries");
        t.begin = o[0], t.end = o[1];
        has_offsets = true;
      } else {
        js.fail("unknown tensor field '" + field + "'");
      }
    });
    if (!has_dtype || !has_shape || !has_offsets) js.fail("tensor '" + key + "' lacks a field");
    const size_t es = safetensors_dtype_size(t.dtype);
    if (!es) js.fail("unknown dtype '" + t.dtype + "'");
    uint64_t count = 1;
    for (uint64_t d : t.shape) {
      if (d != 0 && count > (UINT64_C(1) << 40) / d) js.fail("tensor too large");
      count *= d;
    }
    if (t.begin > t.end || t.end > f.data_size || t.end - t.begin != count * es)
      throw ContainerError("tensor '" + key + "' does not fit the data section (truncated file?)");
    f.tensors[key] = t;
  });
  if (!js.done()) js.fail("trailing characters");
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [k, t] : f.tensors)
    if (t.end > t.begin) spans.emplace_back(t.begin, t.end);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) throw ContainerError("two tensors overlap in the data section");
  return f;
}

}  // namespace fbck::rt
