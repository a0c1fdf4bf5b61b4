// A small strict reader for the safetensors container as the safetensors library writes it:
// an 8-byte little-endian header length N, N bytes of JSON (an object: "__metadata__" -> an object
// of strings, every other key a tensor -> {"dtype": string, "shape": [ints], "data_offsets":
// [begin, end]}), then the data section. Only this subset of JSON is accepted (no floats, no
// nesting beyond it, no duplicate keys); anything else is an error, never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "printable.h"

namespace fbck::rt {

struct ContainerError : std::invalid_argument {
  explicit ContainerError(const std::string& why) : std::invalid_argument(printable(why)) {}
};

struct SafetensorsFile {
  struct Tensor {
    std::string dtype;
    std::vector<uint64_t> shape;
    uint64_t begin = 0, end = 0;  // within the data section
  };
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
  const uint8_t* data = nullptr;  // the data section (points into the caller's buffer)
  size_t data_size = 0;
};

// Parses the container; checks each tensor's dtype size * shape against its offsets, that the
// offsets lie in the data section and that no two tensors overlap.
SafetensorsFile parse_safetensors(const uint8_t* bytes, size_t size);

// Bytes per element of a safetensors dtype name ("F32", "U64"...), 0 if unknown.
size_t safetensors_dtype_size(const std::string& dtype);

}  // namespace fbck::rt
