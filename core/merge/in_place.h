// In-place merging (for evolution): the merged model stays resident on a device, and a new set of
// recipe parameters rewrites only the tensors whose resolved parameters changed. Every tensor is
// computed exactly as the streaming executor computes it (mergeTensor on the fp32 inputs, cast to
// the output dtype, then to the model's compute dtype), so the resident weights equal, bit for
// bit, Model::load of runMerge's output on the same device.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/merge/recipe.h"

namespace kh {
class Model;
}

namespace kh::merge {

namespace detail {
struct Resolved;
struct TensorParams;
struct TensorInputs;
}  // namespace detail

struct InPlaceOptions {
  std::string device = "cpu";
  std::string dtype;             // compute dtype of the resident model: "" = Model::load's policy
  std::optional<uint64_t> seed;  // overrides the recipe's random_seed (as MergeOptions::seed)
  uint64_t cacheBytes = 0;       // device memory for cached fp32 inputs per tensor; 0 = cache nothing
};

class InPlaceMerger {
 public:
  // Resolves the recipe against its model folders and merges every tensor into a resident model.
  // The recipe fixes the method, the base and the model list; only parameters may change later.
  InPlaceMerger(const Recipe& recipe, const InPlaceOptions& options = {});
  ~InPlaceMerger();
  InPlaceMerger(const InPlaceMerger&) = delete;
  InPlaceMerger& operator=(const InPlaceMerger&) = delete;

  // Re-merges the tensors whose resolved parameters (every model's and the method's) differ from
  // the last applied ones, one at a time (peak memory: the model plus one tensor); returns how
  // many were rewritten. kh::Error when the recipe changes the method, the base, the models or the
  // output dtype. The model is left as it was on any error: tensors already rewritten are merged
  // back with their old parameters (only if that fails as well do they keep the new ones).
  size_t apply(const Recipe& newParams);

  const std::shared_ptr<Model>& model() const { return model_; }
  const Recipe& recipe() const { return recipe_; }
  uint64_t cachedBytes() const { return cachedBytes_; }
  size_t cachedTensors() const;

 private:
  at::Tensor mergeOne(size_t i, const detail::TensorParams& tp, c10::ScalarType outType, c10::ScalarType dtype);

  Recipe recipe_;
  InPlaceOptions options_;
  std::unique_ptr<detail::Resolved> x_;
  std::vector<detail::TensorParams> params_;  // per output tensor: the last applied
  std::vector<std::unique_ptr<detail::TensorInputs>> cache_;  // per output tensor, null = not cached
  uint64_t cachedBytes_ = 0;
  std::shared_ptr<Model> model_;
};

}  // namespace kh::merge
