// See model.h.
#include "model.h"

#include <stdexcept>

namespace fbck::rt {

std::unique_ptr<Model> Model::from_artifact(Artifact&& art, const std::string& impl, unsigned rules) {
  auto m = std::unique_ptr<Model>(new Model());
  m->metadata_ = std::move(art.metadata);
  for (const LoadedProgram& lp : art.programs) {
    if (m->programs_.count(lp.thin)) throw ArtifactError("two programs for depth option " + std::to_string(lp.thin));
    m->programs_[lp.thin] = std::make_unique<Program>(lp, impl, rules);
    m->options_.push_back(lp.thin);
  }
  return m;
}

std::unique_ptr<Model> Model::from_bytes(const uint8_t* data, size_t size, const std::string& impl,
                                         unsigned rules) {
  return from_artifact(read_artifact(data, size), impl, rules);
}

std::unique_ptr<Model> Model::from_file(const std::string& path, const std::string& impl, unsigned rules) {
  return from_artifact(read_artifact_file(path), impl, rules);
}

const Program& Model::program(int thin) const {
  auto it = programs_.find(thin);
  if (it == programs_.end()) {
    std::string opts;
    for (int k : options_) opts += (opts.empty() ? "" : ", ") + std::to_string(k);
    throw std::invalid_argument("depth option " + std::to_string(thin) + " was not compiled; options: [" + opts + "]");
  }
  return *it->second;
}

}  // namespace fbck::rt
