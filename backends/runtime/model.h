// A loaded artifact ready to run: one Program per depth option, built from the checked op records.
// This is what the Python extension, the C API and the CLI all run (one implementation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "artifact.h"
#include "program.h"
#include "stream.h"

namespace fbck::rt {

class Model {
 public:
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  // impl: "auto" (the best kernels for this CPU, or $FBCK_IMPL), "ref", "avx2", "avx512", "neon";
  // rules: the fusion rules to apply (fusion.h; all by default).
  static std::unique_ptr<Model> from_bytes(const uint8_t* data, size_t size, const std::string& impl = "auto",
                                           unsigned rules = kAllRules);
  static std::unique_ptr<Model> from_file(const std::string& path, const std::string& impl = "auto",
                                          unsigned rules = kAllRules);

  // The depth options in file order; the first is the default.
  const std::vector<int>& options() const { return options_; }
  bool has(int thin) const { return programs_.count(thin) != 0; }
  // Throws std::invalid_argument naming the compiled options when `thin` is not one of them.
  const Program& program(int thin) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  Model() = default;
  static std::unique_ptr<Model> from_artifact(Artifact&& art, const std::string& impl, unsigned rules);
  std::vector<int> options_;
  std::map<int, std::unique_ptr<Program>> programs_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fbck::rt
