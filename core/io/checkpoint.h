// The weights of a Hugging Face model folder: one model.safetensors or shards + index, opened
// as a lazy name -> tensor map over mmap. Nothing is read until a tensor is asked for.
// Never loads pickle (pytorch_model.bin): it can run code; such folders are refused with a hint.
#pragma once

#include <ATen/Tensor.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/io/safetensors.h"

namespace kh {

class CheckpointWeights {
 public:
  // Opens <dir>/model.safetensors.index.json (validated: every shard name is a plain file name in
  // `dir`, every shard exists, every tensor sits in the shard the index names) or the single
  // *.safetensors file(s). Throws kh::Error naming the file and the cause.
  static std::shared_ptr<CheckpointWeights> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const st::TensorEntry& entry(const std::string& name) const;  // kh::Error naming the tensor
  const SafetensorsFile& fileOf(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;  // zero-copy view (see SafetensorsFile)
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t bytesOnDisk() const;     // sum of the weight files' sizes
  uint64_t parameterCount() const;  // sum of numel over every tensor
  size_t count() const { return where_.size(); }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, std::pair<size_t, const st::TensorEntry*>> where_;
};

}  // namespace kh
