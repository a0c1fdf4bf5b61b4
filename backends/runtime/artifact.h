// The artifact loader (format version 2, backends/README.md "Artifact format"): the safetensors
// container, the version, the CRC-32 of the data section, the op records, and every op against the
// op schema, before anything reaches the runtime. Any problem is an ArtifactError with a message
// that says what is wrong; no input makes it read out of bounds or crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "op.h"
#include "printable.h"

namespace fbck::rt {

constexpr int kFormatVersion = 2;

struct ArtifactError : std::invalid_argument {
  explicit ArtifactError(const std::string& why) : std::invalid_argument(printable(why)) {}
};

// One depth option's program, checked, with its constants decoded (f32 / bits / int8 taps).
struct LoadedProgram {
  int thin = 0;
  int time_axis = -1;
  int input = -1, output = -1;
  std::vector<std::vector<size_t>> values;
  std::vector<std::pair<int, int>> aliases;  // value -> the value it views
  std::vector<OpSpec> ops;
  std::map<std::string, std::string> meta;
};

struct Artifact {
  std::map<std::string, std::string> metadata;  // the safetensors __metadata__
  std::vector<LoadedProgram> programs;
};

Artifact read_artifact(const uint8_t* data, size_t size);
Artifact read_artifact_file(const std::string& path);

// CRC-32 (the zlib / PNG polynomial, as Python's zlib.crc32).
uint32_t crc32(const uint8_t* data, size_t size);

// IEEE binary16 -> binary32 (exact).
float half_to_float(uint16_t h);

}  // namespace fbck::rt
