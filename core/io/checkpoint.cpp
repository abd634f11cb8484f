// Lazy, validated access to a model folder's safetensors weights (see checkpoint.h).
#include "core/io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace kh {

namespace fs = std::filesystem;

static bool endsWith(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// A shard name from an index is untrusted: only a plain file name inside the folder is allowed.
static void checkShardName(const std::string& name, const std::string& indexPath) {
  if (name.empty() || name[0] == '/' || name.find('\\') != std::string::npos ||
      name.find('/') != std::string::npos || name == "." || name == ".." || name.find('\0') != std::string::npos)
    throw Error(indexPath, "shard name '" + name + "' is not a plain file name inside the folder",
                "an index may only name files beside it (no '..', no absolute paths)");
  if (!endsWith(name, ".safetensors")) throw Error(indexPath, "shard '" + name + "' is not a .safetensors file");
}

std::shared_ptr<CheckpointWeights> CheckpointWeights::open(const std::string& dirIn) {
  auto c = std::make_shared<CheckpointWeights>();
  c->dir_ = dirIn;
  const fs::path dir(dirIn);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dirIn, "not a folder");

  // What is there?
  std::vector<std::string> singles, indexes, pickles;
  for (const auto& de : fs::directory_iterator(dir, ec)) {
    const std::string n = de.path().filename().string();
    if (endsWith(n, ".safetensors.index.json")) indexes.push_back(n);
    else if (endsWith(n, ".safetensors")) singles.push_back(n);
    else if (endsWith(n, ".bin") || endsWith(n, ".pt") || endsWith(n, ".pth") || endsWith(n, ".bin.index.json"))
      pickles.push_back(n);
  }
  std::sort(singles.begin(), singles.end());
  std::sort(indexes.begin(), indexes.end());

  std::vector<std::string> shardNames;
  nlohmann::json weightMap;
  std::string indexPath;
  if (!indexes.empty()) {
    // Prefer the model's own index name; other indexes (e.g. consolidated.*) are ignored.
    std::string chosen = std::find(indexes.begin(), indexes.end(), "model.safetensors.index.json") != indexes.end()
                             ? "model.safetensors.index.json"
                             : indexes.front();
    indexPath = (dir / chosen).string();
    std::ifstream f(indexPath);
    nlohmann::json idx;
    try {
      f >> idx;
    } catch (const nlohmann::json::exception& e) {
      throw Error(indexPath, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      throw Error(indexPath, "no 'weight_map' object");
    weightMap = idx["weight_map"];
    std::set<std::string> uniq;
    for (auto it = weightMap.begin(); it != weightMap.end(); ++it) {
      if (!it.value().is_string()) throw Error(indexPath, "weight_map entry '" + it.key() + "' is not a file name");
      const std::string s = it.value().get<std::string>();
      checkShardName(s, indexPath);
      uniq.insert(s);
    }
    for (const auto& s : uniq) {
      if (!fs::is_regular_file(dir / s, ec))
        throw Error(indexPath, "names shard '" + s + "', which is missing from the folder");
      shardNames.push_back(s);
    }
  } else if (!singles.empty()) {
    shardNames = singles;
  } else if (!pickles.empty()) {
    throw Error(dirIn, "only PyTorch pickle weights (" + pickles.front() + ") were found, and pickle can run code when loaded",
                "convert them to safetensors with a trusted tool (e.g. transformers' save_pretrained(safe_serialization=True))");
  } else {
    throw Error(dirIn, "no *.safetensors weights found");
  }

  for (const auto& s : shardNames) {
    auto file = SafetensorsFile::open((dir / s).string());
    const size_t fi = c->files_.size();
    c->files_.push_back(file);
    for (const auto& e : file->tensors()) {
      if (!weightMap.is_null()) {
        auto w = weightMap.find(e.name);
        if (w == weightMap.end()) continue;  // not listed in the index: not part of this model
        if (w->get<std::string>() != s) continue;  // the index puts it elsewhere (checked below)
      }
      auto [it, fresh] = c->where_.emplace(e.name, std::make_pair(fi, &e));
      if (!fresh)
        throw Error(file->path(), "tensor '" + e.name + "' also appears in " + c->files_[it->second.first]->path());
    }
  }
  if (!weightMap.is_null()) {
    for (auto it = weightMap.begin(); it != weightMap.end(); ++it)
      if (!c->where_.count(it.key()))
        throw Error(indexPath, "tensor '" + it.key() + "' is mapped to '" + it.value().get<std::string>() +
                                   "', which does not contain it");
  }
  return c;
}

std::vector<std::string> CheckpointWeights::names() const {
  std::vector<std::string> r;
  r.reserve(where_.size());
  for (const auto& [n, _] : where_) r.push_back(n);
  std::sort(r.begin(), r.end());
  return r;
}

const st::TensorEntry& CheckpointWeights::entry(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(dir_, "no tensor named '" + name + "' in the checkpoint");
  return *it->second.second;
}

const SafetensorsFile& CheckpointWeights::fileOf(const std::string& name) const {
  entry(name);
  return *files_[where_.at(name).first];
}

at::Tensor CheckpointWeights::tensor(const std::string& name) const { return fileOf(name).tensor(entry(name)); }

uint64_t CheckpointWeights::bytesOnDisk() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->mapping()->size();
  return n;
}

uint64_t CheckpointWeights::parameterCount() const {
  uint64_t n = 0;
  for (const auto& [_, w] : where_) n += w.second->numel();
  return n;
}

}  // namespace kh
