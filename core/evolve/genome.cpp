// Genome layout and decoding (see genome.h).
#include "core/evolve/genome.h"

#include <algorithm>

#include "core/error.h"

namespace kh::evolve {

using merge::Method;

int64_t GenomeSpec::groups() const { return (layers + layerGranularity - 1) / layerGranularity; }

bool GenomeSpec::hasDensity() const {
  return method == Method::Ties || method == Method::DareTies || method == Method::DareLinear;
}

size_t GenomeSpec::size() const {
  const size_t slots = filters.size() + 1;
  if (method == Method::Slerp) return static_cast<size_t>(groups()) * slots;
  return static_cast<size_t>(groups()) * models.size() * slots * (hasDensity() ? 2 : 1);
}

size_t GenomeSpec::index(int64_t group, size_t model, size_t filter, size_t param) const {
  const size_t slots = filters.size() + 1, params = hasDensity() ? 2 : 1;
  if (method == Method::Slerp) return static_cast<size_t>(group) * slots + filter;
  return ((static_cast<size_t>(group) * models.size() + model) * slots + filter) * params + param;
}

void GenomeSpec::validate(const std::string& where) const {
  switch (method) {
    case Method::Linear:
    case Method::TaskArithmetic:
    case Method::Ties:
    case Method::DareTies:
    case Method::DareLinear:
    case Method::Slerp: break;
    default:
      throw Error(where, std::string("merge_method '") + merge::methodName(method) + "' cannot be evolved",
                  "use linear, task_arithmetic, ties, dare_ties, dare_linear or slerp");
  }
  if (models.empty()) throw Error(where, "no models to merge", "list them under 'models:'");
  if (method != Method::Linear && baseModel.empty())
    throw Error(where, std::string(merge::methodName(method)) + " needs a base_model");
  if (method == Method::Slerp && models.size() != 1)
    throw Error(where, "slerp evolves one model besides the base, got " + std::to_string(models.size()));
  if (layerGranularity < 1) throw Error(where, "layer_granularity must be at least 1");
  if (layers < 1) throw Error(where, "the models have no layers");
}

std::vector<double> initialGenome(const GenomeSpec& spec) {
  std::vector<double> x(spec.size(), 0.5);
  if (spec.method == Method::Slerp) return x;
  const double w = 1.0 / static_cast<double>(spec.models.size());
  for (int64_t g = 0; g < spec.groups(); ++g)
    for (size_t m = 0; m < spec.models.size(); ++m)
      for (size_t f = 0; f <= spec.filters.size(); ++f) x[spec.index(g, m, f, 0)] = w;
  return x;
}

namespace {

// One value per layer: the layer's group's gene.
merge::ParamValue perLayer(const GenomeSpec& spec, const std::vector<double>& x, size_t model, size_t filter,
                           size_t param) {
  merge::ParamValue v;
  for (int64_t l = 0; l < spec.layers; ++l) {
    const double g = x[spec.index(l / spec.layerGranularity, model, filter, param)];
    v.gradient.push_back(param == 1 ? std::clamp(g, kMinDensity, 1.0) : g);
  }
  if (spec.groups() == 1) v.gradient.resize(1);
  return v;
}

merge::ParamValue filtered(const GenomeSpec& spec, const std::vector<double>& x, size_t model, size_t param) {
  if (spec.filters.empty()) return perLayer(spec, x, model, 0, param);
  merge::ParamValue v;
  for (size_t f = 0; f <= spec.filters.size(); ++f)
    v.filtered.push_back({f < spec.filters.size() ? spec.filters[f] : std::string(), perLayer(spec, x, model, f, param)});
  return v;
}

std::vector<double> groupValues(const GenomeSpec& spec, const std::vector<double>& x, size_t model, size_t filter,
                                size_t param) {
  std::vector<double> out;
  for (int64_t g = 0; g < spec.groups(); ++g) out.push_back(x[spec.index(g, model, filter, param)]);
  return out;
}

}  // namespace

merge::Recipe decodeGenome(const GenomeSpec& spec, const std::vector<double>& x) {
  KH_ASSERT(x.size() == spec.size(), "genome of the wrong size");
  merge::Recipe r;
  r.path = "evolved recipe";
  r.method = spec.method;
  r.baseModel = spec.baseModel;
  r.dtype = spec.dtype;
  r.seed = spec.mergeSeed;
  if (spec.method == Method::Slerp) {
    r.models.push_back({spec.models[0], {}, 0});
    r.parameters["t"] = filtered(spec, x, 0, 0);
    return r;
  }
  for (size_t m = 0; m < spec.models.size(); ++m) {
    merge::RecipeModel rm;
    rm.model = spec.models[m];
    rm.parameters["weight"] = filtered(spec, x, m, 0);
    if (spec.hasDensity()) rm.parameters["density"] = filtered(spec, x, m, 1);
    r.models.push_back(rm);
  }
  if (spec.normalize) {
    merge::ParamValue v;
    v.gradient = {*spec.normalize ? 1.0 : 0.0};
    v.isBool = true;
    r.parameters["normalize"] = v;
  }
  return r;
}

nlohmann::json describeGenome(const GenomeSpec& spec, const std::vector<double>& x) {
  auto slots = [&](size_t model, size_t param) {
    if (spec.filters.empty()) return nlohmann::json(groupValues(spec, x, model, 0, param));
    nlohmann::json j = nlohmann::json::object();
    for (size_t f = 0; f <= spec.filters.size(); ++f)
      j[f < spec.filters.size() ? spec.filters[f] : "default"] = groupValues(spec, x, model, f, param);
    return j;
  };
  nlohmann::json out = nlohmann::json::object();
  if (spec.method == Method::Slerp) {
    out["t"] = slots(0, 0);
    return out;
  }
  for (size_t m = 0; m < spec.models.size(); ++m) {
    nlohmann::json p;
    p["weight"] = slots(m, 0);
    if (spec.hasDensity()) p["density"] = slots(m, 1);
    out[spec.models[m]] = p;
  }
  return out;
}

}  // namespace kh::evolve
