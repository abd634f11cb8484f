// The evolution genome, laid out as mergekit-evolve's so that its users feel at home:
// [layer groups] x [models] x [filters + 1 (the default)] x [params], where params are the weight
// (and the density for ties, dare_ties, dare_linear); slerp has one t per layer group and filter.
// Every gene lives in [0, 1] (CMA-ES repairs candidates into that box). A genome decodes into a
// mergekit recipe: per-layer gradient lists (one entry per layer, so a layer takes exactly its
// group's value), filtered by tensor name where filters are given. Embeddings take the first
// group's value and the final norm / lm_head the last group's (mergekit's gradient rule).
// A density gene decodes as clamp(x, kMinDensity, 1): mergekit-evolve's clamp(|x|, 0, 1), except
// that a density of exactly 0 (which keeps nothing and which the merge refuses) becomes 0.01.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/merge/recipe.h"

namespace kh::evolve {

constexpr double kMinDensity = 0.01;

struct GenomeSpec {
  merge::Method method = merge::Method::Linear;
  std::string baseModel;            // "" = none (linear); required by the task-vector methods and slerp
  std::vector<std::string> models;  // the models the genes weight (the base is not among them)
  int64_t layers = 0;               // decoder layers of the models
  int64_t layerGranularity = 1;     // layers per group (the last group may be shorter)
  std::vector<std::string> filters; // e.g. {"self_attn", "mlp"}: own genes, plus a default
  std::optional<bool> normalize;    // recipe's top-level normalize; unset = the method's default
  std::string dtype = "bfloat16";
  uint64_t mergeSeed = 0;           // DARE masks: the same for every candidate (no mask noise)

  int64_t groups() const;
  bool hasDensity() const;
  size_t size() const;  // number of genes
  // Gene index of (group, model, filter slot (filters.size() = default), param (0 weight, 1 density)).
  size_t index(int64_t group, size_t model, size_t filter, size_t param) const;
  // kh::Error naming the field for a method evolution does not support, no models, slerp with other
  // than one model besides the base, a granularity below 1.
  void validate(const std::string& where) const;
};

// Where CMA-ES starts: weights 1 / models (linear) or 1 / models for task vectors too, density 0.5,
// t 0.5.
std::vector<double> initialGenome(const GenomeSpec& spec);
merge::Recipe decodeGenome(const GenomeSpec& spec, const std::vector<double>& x);
// The decoded parameters, readable: {"model path": {"weight": [per group], "density": [...]}, ...}
// (per filter when filters are given), or {"t": [...]} for slerp.
nlohmann::json describeGenome(const GenomeSpec& spec, const std::vector<double>& x);

}  // namespace kh::evolve
