// config.json / generation_config.json parsing helpers and the family lookup.
#include "core/model/config.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace kh {

namespace cfg {

static std::string where2(const std::string& where, const char* key) { return where + ": field '" + key + "'"; }

int64_t requireInt(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    throw Error(where, std::string("missing required field '") + key + "'", "the config is incomplete or not a model config");
  if (!it->is_number_integer()) throw Error(where2(where, key), "is not an integer (" + it->dump() + ")");
  int64_t v = it->get<int64_t>();
  if (v <= 0) throw Error(where2(where, key), "must be positive, is " + std::to_string(v));
  return v;
}

int64_t intOr(const nlohmann::json& j, const char* key, int64_t dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number_integer()) throw Error(where2(where, key), "is not an integer (" + it->dump() + ")");
  return it->get<int64_t>();
}

double numberOr(const nlohmann::json& j, const char* key, double dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number()) throw Error(where2(where, key), "is not a number (" + it->dump() + ")");
  return it->get<double>();
}

bool boolOr(const nlohmann::json& j, const char* key, bool dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) throw Error(where2(where, key), "is not true/false (" + it->dump() + ")");
  return it->get<bool>();
}

std::string stringOr(const nlohmann::json& j, const char* key, const std::string& dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_string()) throw Error(where2(where, key), "is not a string (" + it->dump() + ")");
  return it->get<std::string>();
}

std::vector<int> idList(const nlohmann::json& j, const char* key, const std::string& where) {
  std::vector<int> r;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return r;
  auto one = [&](const nlohmann::json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      throw Error(where2(where, key), "holds " + v.dump() + ", not a token id");
    r.push_back(v.get<int>());
  };
  if (it->is_array())
    for (const auto& v : *it) one(v);
  else
    one(*it);
  return r;
}

std::optional<int> optionalId(const nlohmann::json& j, const char* key, const std::string& where) {
  auto v = idList(j, key, where);
  if (v.empty()) return std::nullopt;
  return v.front();
}

RopeScaling ropeScaling(const nlohmann::json& j, const std::string& where) {
  RopeScaling r;
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return r;
  if (!it->is_object()) throw Error(where2(where, "rope_scaling"), "is not an object");
  r.raw = *it;
  const std::string w = where + " rope_scaling";
  r.type = stringOr(*it, "rope_type", stringOr(*it, "type", "", w), w);
  if (r.type == "default") r.type = "";
  r.factor = numberOr(*it, "factor", 1.0, w);
  r.lowFreqFactor = numberOr(*it, "low_freq_factor", 1.0, w);
  r.highFreqFactor = numberOr(*it, "high_freq_factor", 4.0, w);
  r.originalMaxPositions = intOr(*it, "original_max_position_embeddings", 0, w);
  return r;
}

bool layerTypes(ModelConfig& c, const nlohmann::json& j, int64_t window, const std::string& where) {
  auto it = j.find("layer_types");
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_array() || static_cast<int64_t>(it->size()) != c.numLayers)
    throw Error(where2(where, "layer_types"), "must list one type for each of the " + std::to_string(c.numLayers) + " layers");
  c.layerWindow.assign(static_cast<size_t>(c.numLayers), 0);
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& t = (*it)[i];
    if (t != "sliding_attention" && t != "full_attention")
      throw Error(where2(where, "layer_types"), "entry " + std::to_string(i) + " is " + t.dump() +
                                                   ", not \"sliding_attention\" or \"full_attention\"");
    if (t == "sliding_attention") c.layerWindow[i] = window;
  }
  return true;
}

void common(ModelConfig& c, const nlohmann::json& j, const std::string& family, const std::string& where) {
  c.family = family;
  c.raw = j;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    c.architecture = j["architectures"][0].get<std::string>();
  c.modelType = stringOr(j, "model_type", "", where);
  c.eosIds = idList(j, "eos_token_id", where);
  c.bosId = optionalId(j, "bos_token_id", where);
  c.padId = optionalId(j, "pad_token_id", where);
  c.torchDtype = stringOr(j, "torch_dtype", stringOr(j, "dtype", "", where), where);
}

}  // namespace cfg

int64_t ModelConfig::slidingLayers() const {
  int64_t n = 0;
  for (auto w : layerWindow) n += w > 0;
  return n;
}

const FamilySpec* findFamily(const std::string& name) {
  for (const auto* f : families())
    if (f->name == name) return f;
  return nullptr;
}

const FamilySpec& familyFor(const nlohmann::json& j, const std::string& where) {
  std::string arch, type;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch = j["architectures"][0].get<std::string>();
  if (j.contains("model_type") && j["model_type"].is_string()) type = j["model_type"].get<std::string>();
  for (const auto* f : families())
    for (const auto& a : f->architectures)
      if (a == arch) return *f;
  if (arch.empty() || arch.find("ForCausalLM") == std::string::npos)
    for (const auto* f : families())
      for (const auto& t : f->modelTypes)
        if (t == type) return *f;
  std::string known;
  for (const auto* f : families())
    for (const auto& a : f->architectures) known += (known.empty() ? "" : ", ") + a;
  throw Error(where, "unknown architecture '" + (arch.empty() ? std::string("(none)") : arch) + "' (model_type '" + type + "')",
              "supported: " + known);
}

static nlohmann::json readJsonFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot read");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    std::string m = e.what();
    throw Error(path, "not valid JSON (" + m.substr(0, 200) + ")");
  }
}

ModelConfig loadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(dir, "no config.json", "is this a Hugging Face model folder?");
  nlohmann::json j = readJsonFile(path);
  if (!j.is_object()) throw Error(path, "is not a JSON object");
  const FamilySpec& fam = familyFor(j, path);
  return fam.parse(j, path);
}

GenerationConfig loadGenerationConfig(const std::string& dir, const ModelConfig& config) {
  GenerationConfig g;
  const std::string path = dir + "/generation_config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    g.raw = readJsonFile(path);
    if (!g.raw.is_object()) throw Error(path, "is not a JSON object");
    g.present = true;
    g.eosIds = cfg::idList(g.raw, "eos_token_id", path);
    g.bosId = cfg::optionalId(g.raw, "bos_token_id", path);
    g.padId = cfg::optionalId(g.raw, "pad_token_id", path);
  } else {
    g.raw = nlohmann::json::object();
  }
  if (g.eosIds.empty()) g.eosIds = config.eosIds;
  if (!g.bosId) g.bosId = config.bosId;
  if (!g.padId) g.padId = config.padId;
  return g;
}

}  // namespace kh
