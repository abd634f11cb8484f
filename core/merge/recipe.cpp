// mergekit YAML recipes (see recipe.h), parsed with yaml-cpp (Debian libyaml-cpp-dev 0.7).
#include "core/merge/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace kh::merge {

namespace {

std::string at(const std::string& path, const YAML::Node& n) {
  return path + ":" + std::to_string(n.Mark().line + 1);
}

ParamValue parseValue(const YAML::Node& n, const std::string& path, const std::string& key) {
  ParamValue v;
  const std::string where = at(path, n);
  if (n.IsScalar()) {
    const std::string s = n.Scalar();
    if (s == "true" || s == "false") {
      v.isBool = true;
      v.gradient = {s == "true" ? 1.0 : 0.0};
      return v;
    }
    try {
      v.gradient = {n.as<double>()};
    } catch (const YAML::Exception&) {
      throw Error(where, "parameter '" + key + "' is '" + s + "', not a number");
    }
    return v;
  }
  if (n.IsSequence()) {
    if (n.size() == 0) throw Error(where, "parameter '" + key + "' is an empty list");
    if (n[0].IsMap()) {
      for (const auto& e : n) {
        if (!e.IsMap() || !e["value"]) throw Error(at(path, e), "parameter '" + key + "': each filtered entry needs a 'value'");
        for (const auto& kv : e) {
          const std::string k = kv.first.as<std::string>();
          if (k != "filter" && k != "value") throw Error(at(path, kv.first), "unknown key '" + k + "' in a filtered '" + key + "'");
        }
        ParamValue::Filtered f;
        if (e["filter"]) f.filter = e["filter"].as<std::string>();
        f.value = parseValue(e["value"], path, key);
        if (!f.value.filtered.empty())
          throw Error(at(path, e["value"]), "parameter '" + key + "': a filtered entry's value is a number or a gradient, not another filter list");
        v.filtered.push_back(std::move(f));
      }
      return v;
    }
    for (const auto& e : n) {
      if (!e.IsScalar()) throw Error(at(path, e), "parameter '" + key + "': a gradient holds numbers only");
      try {
        v.gradient.push_back(e.as<double>());
      } catch (const YAML::Exception&) {
        throw Error(at(path, e), "parameter '" + key + "' gradient entry '" + e.Scalar() + "' is not a number");
      }
    }
    return v;
  }
  throw Error(where, "parameter '" + key + "' must be a number, a list of numbers, or a list of {filter, value}");
}

std::map<std::string, ParamValue> parseParams(const YAML::Node& n, const std::string& path,
                                              const std::vector<std::string>& allowed, Method m, const char* scope) {
  std::map<std::string, ParamValue> out;
  if (!n) return out;
  if (!n.IsMap()) throw Error(at(path, n), std::string(scope) + " 'parameters' must be a mapping");
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw Error(at(path, kv.first), std::string(methodName(m)) + " does not take the " + scope + " parameter '" + k + "'",
                  "it takes: " + (list.empty() ? std::string("none") : list));
    }
    out[k] = parseValue(kv.second, path, k);
  }
  return out;
}

std::string resolvePath(const std::string& p, const std::string& baseDir) {
  if (p.empty() || p[0] == '/' || baseDir.empty()) return p;
  std::filesystem::path full = std::filesystem::path(baseDir) / p;
  return std::filesystem::exists(full) ? full.lexically_normal().string() : p;
}

void checkKeys(const YAML::Node& n, const std::string& path, std::initializer_list<const char*> keys, const char* what) {
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    if (std::none_of(keys.begin(), keys.end(), [&](const char* x) { return k == x; })) {
      std::string list;
      for (const char* x : keys) list += (list.empty() ? "" : ", ") + std::string(x);
      throw Error(at(path, kv.first), std::string("unknown key '") + k + "' in " + what, "known keys: " + list);
    }
  }
}

}  // namespace

double ParamValue::resolve(const std::string& tensor, int64_t layer, int64_t layers, bool late, const std::string& where) const {
  double t;
  if (layer < 0) t = late ? 1.0 : 0.0;
  else t = layers > 1 ? static_cast<double>(layer) / static_cast<double>(layers - 1) : 1.0;  // mergekit plan_slice: t = 1
  return resolveAt(tensor, t, where);
}

double ParamValue::resolveAt(const std::string& tensor, double t, const std::string& where) const {
  if (auto v = valueAt(tensor, t)) return *v;
  throw Error(where, "no filter entry matches tensor '" + tensor + "' and there is no entry without a filter");
}

std::optional<double> ParamValue::valueAt(const std::string& tensor, double t) const {
  if (!filtered.empty()) {
    // mergekit's evaluate_setting: the first entry without a filter, with "*", or whose filter is
    // a substring of the tensor name; none matching = no value here.
    for (const auto& f : filtered)
      if (f.filter.empty() || f.filter == "*" || tensor.find(f.filter) != std::string::npos) return f.value.valueAt(tensor, t);
    return std::nullopt;
  }
  KH_ASSERT(!gradient.empty());
  if (gradient.size() == 1) return gradient[0];
  // Piecewise-linear over equally spaced anchors (numpy.interp over linspace(0, 1, n)).
  const double pos = t * static_cast<double>(gradient.size() - 1);
  const size_t i = std::min(static_cast<size_t>(std::floor(pos)), gradient.size() - 2);
  const double frac = pos - static_cast<double>(i);
  return gradient[i] * (1 - frac) + gradient[i + 1] * frac;
}

Recipe parseRecipe(const std::string& text, const std::string& path, const std::string& baseDir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(path + ":" + std::to_string(e.mark.line + 1), "not valid YAML (" + e.msg + ")");
  }
  if (!root.IsMap()) throw Error(path, "a recipe is a YAML mapping (merge_method, models, ...)");
  // mergekit keys (mergekit/config.py MergeConfiguration) that Kumihimo cannot honour: refused by
  // name rather than merged as if they were not there.
  struct Unsupported {
    const char* key;
    const char* hint;
  };
  for (const Unsupported& u : {Unsupported{"tokenizer", "use tokenizer_source: base, union or a model path"},
                               Unsupported{"chat_template", "remove it and set chat_template in the merged model's tokenizer_config.json"},
                               Unsupported{"modules", "merge each module's models with a 'models:' or 'slices:' recipe of its own"}})
    if (root[u.key])
      throw Error(at(path, root[u.key]), std::string("the mergekit key '") + u.key + "' is not supported by kumihimo", u.hint);
  checkKeys(root, path,
            {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source", "slices",
             "name", "random_seed"},
            "the recipe");
  Recipe r;
  r.path = path;
  if (!root["merge_method"]) throw Error(path, "no merge_method");
  const std::string mname = root["merge_method"].as<std::string>();
  auto m = parseMethod(mname);
  if (!m) throw Error(at(path, root["merge_method"]), "unknown merge_method '" + mname + "'");
  r.method = *m;
  if (root["base_model"]) r.baseModel = resolvePath(root["base_model"].as<std::string>(), baseDir);
  if (root["dtype"]) r.dtype = root["dtype"].as<std::string>();
  if (root["out_dtype"]) r.outDtype = root["out_dtype"].as<std::string>();
  if (root["tokenizer_source"]) r.tokenizerSource = root["tokenizer_source"].as<std::string>();
  if (root["random_seed"]) r.seed = root["random_seed"].as<uint64_t>();
  for (const auto* d : {&r.dtype, &r.outDtype})
    if (!d->empty() && *d != "bfloat16" && *d != "float16" && *d != "float32")
      throw Error(path, "dtype '" + *d + "' is not one of bfloat16, float16, float32");
  // Top-level and slice parameters serve both lookups (mergekit's ConfigReader.parameter): the
  // method's own, and per-model ones as the fallback for every model that does not set them.
  std::vector<std::string> both = globalParamNames(r.method);
  for (const auto& k : modelParamNames(r.method))
    if (std::find(both.begin(), both.end(), k) == both.end()) both.push_back(k);
  r.parameters = parseParams(root["parameters"], path, both, r.method, "top-level");
  if (root["models"]) {
    if (!root["models"].IsSequence()) throw Error(at(path, root["models"]), "'models' must be a list");
    for (const auto& e : root["models"]) {
      if (!e.IsMap() || !e["model"]) throw Error(at(path, e), "each entry of 'models' needs a 'model'");
      checkKeys(e, path, {"model", "parameters"}, "a model entry");
      RecipeModel rm;
      rm.model = resolvePath(e["model"].as<std::string>(), baseDir);
      rm.line = e.Mark().line + 1;
      rm.parameters = parseParams(e["parameters"], path, modelParamNames(r.method), r.method, "per-model");
      r.models.push_back(std::move(rm));
    }
  }
  if (root["slices"]) {
    if (!root["slices"].IsSequence()) throw Error(at(path, root["slices"]), "'slices' must be a list");
    for (const auto& s : root["slices"]) {
      if (s["residual_weight"])
        throw Error(at(path, s["residual_weight"]), "the mergekit slice key 'residual_weight' is not supported by kumihimo",
                    "remove it (mergekit reads it but no merge method of it uses it)");
      checkKeys(s, path, {"sources", "base_model", "parameters"}, "a slice");
      Slice sl;
      if (s["base_model"]) sl.baseModel = resolvePath(s["base_model"].as<std::string>(), baseDir);
      sl.parameters = parseParams(s["parameters"], path, both, r.method, "slice");
      if (!s["sources"] || !s["sources"].IsSequence()) throw Error(at(path, s), "a slice needs a 'sources' list");
      for (const auto& src : s["sources"]) {
        checkKeys(src, path, {"model", "layer_range", "parameters"}, "a slice source");
        SliceSource ss;
        if (!src["model"]) throw Error(at(path, src), "a slice source needs a 'model'");
        ss.model = resolvePath(src["model"].as<std::string>(), baseDir);
        const auto lr = src["layer_range"];
        if (!lr || !lr.IsSequence() || lr.size() != 2) throw Error(at(path, src), "a slice source needs layer_range: [begin, end]");
        ss.layerBegin = lr[0].as<int64_t>();
        ss.layerEnd = lr[1].as<int64_t>();
        if (ss.layerBegin < 0 || ss.layerEnd <= ss.layerBegin)
          throw Error(at(path, lr), "layer_range [" + std::to_string(ss.layerBegin) + ", " + std::to_string(ss.layerEnd) + "] is empty or negative");
        ss.parameters = parseParams(src["parameters"], path, modelParamNames(r.method), r.method, "per-model");
        sl.sources.push_back(std::move(ss));
      }
      r.slices.push_back(std::move(sl));
    }
  }
  if (r.models.empty() && r.slices.empty()) throw Error(path, "the recipe names no models (neither 'models' nor 'slices')");
  if (!r.models.empty() && !r.slices.empty()) throw Error(path, "give either 'models' or 'slices', not both");
  if (needsBase(r.method) && r.baseModel.empty() && r.slices.empty())
    throw Error(path, std::string(methodName(r.method)) + " needs a base_model");
  return r;
}

Recipe loadRecipe(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot read the recipe");
  std::stringstream ss;
  ss << f.rdbuf();
  return parseRecipe(ss.str(), path, std::filesystem::path(path).parent_path().string());
}

namespace {
void emitValue(YAML::Emitter& e, const ParamValue& v) {
  if (!v.filtered.empty()) {
    e << YAML::BeginSeq;
    for (const auto& f : v.filtered) {
      e << YAML::BeginMap;
      if (!f.filter.empty()) e << YAML::Key << "filter" << YAML::Value << f.filter;
      e << YAML::Key << "value" << YAML::Value;
      emitValue(e, f.value);
      e << YAML::EndMap;
    }
    e << YAML::EndSeq;
  } else if (v.isBool) {
    e << (v.gradient[0] != 0.0);
  } else if (v.gradient.size() == 1) {
    e << v.gradient[0];
  } else {
    e << YAML::Flow << YAML::BeginSeq;
    for (double x : v.gradient) e << x;
    e << YAML::EndSeq;
  }
}
void emitParams(YAML::Emitter& e, const std::map<std::string, ParamValue>& p) {
  if (p.empty()) return;
  e << YAML::Key << "parameters" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : p) {
    e << YAML::Key << k << YAML::Value;
    emitValue(e, v);
  }
  e << YAML::EndMap;
}
}  // namespace

std::string recipeToYaml(const Recipe& r) {
  YAML::Emitter e;
  e.SetDoublePrecision(17);
  e << YAML::BeginMap;
  e << YAML::Key << "merge_method" << YAML::Value << methodName(r.method);
  if (!r.baseModel.empty()) e << YAML::Key << "base_model" << YAML::Value << r.baseModel;
  if (!r.models.empty()) {
    e << YAML::Key << "models" << YAML::Value << YAML::BeginSeq;
    for (const auto& m : r.models) {
      e << YAML::BeginMap << YAML::Key << "model" << YAML::Value << m.model;
      emitParams(e, m.parameters);
      e << YAML::EndMap;
    }
    e << YAML::EndSeq;
  }
  if (!r.slices.empty()) {
    e << YAML::Key << "slices" << YAML::Value << YAML::BeginSeq;
    for (const auto& s : r.slices) {
      e << YAML::BeginMap;
      if (!s.baseModel.empty()) e << YAML::Key << "base_model" << YAML::Value << s.baseModel;
      e << YAML::Key << "sources" << YAML::Value << YAML::BeginSeq;
      for (const auto& src : s.sources) {
        e << YAML::BeginMap << YAML::Key << "model" << YAML::Value << src.model;
        e << YAML::Key << "layer_range" << YAML::Value << YAML::Flow << YAML::BeginSeq << src.layerBegin << src.layerEnd
          << YAML::EndSeq;
        emitParams(e, src.parameters);
        e << YAML::EndMap;
      }
      e << YAML::EndSeq;
      emitParams(e, s.parameters);
      e << YAML::EndMap;
    }
    e << YAML::EndSeq;
  }
  emitParams(e, r.parameters);
  if (!r.dtype.empty()) e << YAML::Key << "dtype" << YAML::Value << r.dtype;
  if (!r.outDtype.empty()) e << YAML::Key << "out_dtype" << YAML::Value << r.outDtype;
  if (!r.tokenizerSource.empty()) e << YAML::Key << "tokenizer_source" << YAML::Value << r.tokenizerSource;
  if (r.seed) e << YAML::Key << "random_seed" << YAML::Value << *r.seed;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace kh::merge
