// In-place merging on a resident model (see in_place.h).
#include "core/merge/in_place.h"

#include <ATen/ATen.h>

#include <optional>
#include <unordered_map>

#include "core/error.h"
#include "core/io/tensor_load.h"
#include "core/merge/resolved.h"
#include "core/merge/scratch.h"
#include "core/model/runtime.h"

namespace kh::merge {

namespace {

uint64_t bytesOf(const detail::TensorInputs& in) {
  uint64_t n = in.base.defined() ? in.base.nbytes() : 0;
  for (const auto& t : in.others) n += t.nbytes();
  return n;
}

// The same models, base, method and output dtype: what an in-place merger cannot change.
void requireSameModels(const Recipe& a, const Recipe& b) {
  auto fail = [&](const std::string& what) {
    throw Error(b.path.empty() ? std::string("in-place merge") : b.path, "changes " + what + " of the in-place merge",
                "only parameters may change; start a new merger for other models");
  };
  if (a.method != b.method) fail("the merge method");
  if (a.baseModel != b.baseModel) fail("the base model");
  if (a.models.size() != b.models.size()) fail("the number of models");
  for (size_t i = 0; i < a.models.size(); ++i)
    if (a.models[i].model != b.models[i].model) fail("model " + std::to_string(i + 1));
  if ((!a.outDtype.empty() ? a.outDtype : a.dtype) != (!b.outDtype.empty() ? b.outDtype : b.dtype)) fail("the output dtype");
  if (!b.slices.empty()) fail("the slices");
}

detail::Resolved resolveInPlace(const Recipe& r) {
  if (!r.slices.empty())
    throw Error(r.path.empty() ? std::string("in-place merge") : r.path,
                "in-place merging does not take slices (the merged model's layers are not any input's)",
                "merge the recipe with `kumihimo-cli merge` (the streaming executor), which runs slices");
  return detail::resolve(r);
}

}  // namespace

InPlaceMerger::InPlaceMerger(const Recipe& recipe, const InPlaceOptions& options)
    : recipe_(recipe), options_(options), x_(std::make_unique<detail::Resolved>(resolveInPlace(recipe_))) {
  const c10::Device device = parseDevice(options_.device);
  const auto outType = toScalarType(x_->outDtype, "in-place merge");
  const c10::ScalarType dtype = Model::computeDtype(outType, device, options_.dtype);
  const uint64_t seed = options_.seed ? *options_.seed : recipe_.seed.value_or(0);
  cache_.resize(x_->outputs.size());
  std::unordered_map<std::string, at::Tensor> weights;
  for (size_t i = 0; i < x_->outputs.size(); ++i) {
    const auto& name = x_->outputs[i].first;
    params_.push_back(detail::tensorParams(recipe_, *x_, i, seed));
    weights[name] = mergeOne(i, params_[i], outType, dtype);
  }
  model_ = Model::fromWeights(x_->refFolder(), std::move(weights), device, dtype);
}

InPlaceMerger::~InPlaceMerger() = default;

size_t InPlaceMerger::cachedTensors() const {
  size_t n = 0;
  for (const auto& c : cache_) n += c ? 1 : 0;
  return n;
}

// Merges output tensor i by the executor's code path (mergeRows, chunk by chunk, cast to the
// output dtype), from the cached fp32 inputs or straight from the mapped files.
at::Tensor InPlaceMerger::mergeOne(size_t i, const detail::TensorParams& tp, c10::ScalarType outType,
                                   c10::ScalarType dtype) {
  const auto& [name, shape] = x_->outputs[i];
  const c10::Device device = parseDevice(options_.device);
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  const int64_t rows = shape.size() > 1 ? shape[0] : 1, cols = rows > 0 ? numel / std::max<int64_t>(rows, 1) : 0;
  const uint64_t inputs = x_->inputs(i);
  const uint64_t need = static_cast<uint64_t>(numel) * 4 * inputs;
  if (!cache_[i] && options_.cacheBytes > 0 && cachedBytes_ + need <= options_.cacheBytes) {
    cache_[i] = std::make_unique<detail::TensorInputs>(detail::loadInputs(*x_, i, device));
    cachedBytes_ += bytesOf(*cache_[i]);
  }
  std::optional<detail::RowReader> reader;
  if (!cache_[i]) reader.emplace(*x_, i, device);
  const detail::TensorInputs* cached = cache_[i].get();
  at::Tensor out = at::empty({rows, cols}, at::TensorOptions().dtype(dtype).device(device));
  // Chunk buffers from fixed free lists, as in the executor: allocated between long-lived outputs,
  // glibc's heap would fragment and hold several times the live memory.
  ScratchScope scratch;
  mergeRows(
      recipe_.method, x_->sources[i].hasBase(), x_->sources[i].others.size(), shape,
      [&](int input, int64_t r0, int64_t r1) {
        if (!cached) return reader->rows(input, r0, r1);
        const at::Tensor& t = input < 0 ? cached->base : cached->others[static_cast<size_t>(input)];
        return t.reshape({rows, cols}).narrow(0, r0, r1 - r0);
      },
      [&](int64_t r0, int64_t r1, const at::Tensor& merged) {
        out.narrow(0, r0, r1 - r0).copy_(merged.to(outType).to(dtype));
      },
      tp.models, tp.method);
  return out.view(shape);
}

size_t InPlaceMerger::apply(const Recipe& r) {
  requireSameModels(recipe_, r);
  const uint64_t seed = options_.seed ? *options_.seed : r.seed.value_or(0);
  const auto outType = toScalarType(x_->outDtype, "in-place merge");
  // Resolve every tensor's parameters first, so that a bad recipe changes nothing.
  std::vector<detail::TensorParams> next;
  next.reserve(x_->outputs.size());
  for (size_t i = 0; i < x_->outputs.size(); ++i) next.push_back(detail::tensorParams(r, *x_, i, seed));
  // Each changed tensor goes into the model as soon as it is merged, replacing (and freeing) the
  // old one: the extra memory is one tensor, not every changed tensor at once (in evolution that
  // is most of the model). params_[i] always describes the resident tensor i.
  std::vector<size_t> rewritten;
  try {
    for (size_t i = 0; i < x_->outputs.size(); ++i) {
      if (next[i] == params_[i]) continue;
      model_->setWeight(x_->outputs[i].first, mergeOne(i, next[i], outType, model_->dtype()));
      rewritten.push_back(i);
    }
  } catch (...) {
    // Put back the tensors already rewritten by merging them again with their old parameters: a
    // merge is deterministic, so this restores the old weights bit for bit. Should that fail too,
    // the tensor keeps the new weights and its parameters say so, and the next apply() still brings
    // every tensor to its recipe.
    for (size_t i : rewritten) {
      try {
        model_->setWeight(x_->outputs[i].first, mergeOne(i, params_[i], outType, model_->dtype()));
      } catch (...) {
        params_[i] = next[i];
      }
    }
    throw;
  }
  params_ = std::move(next);
  recipe_ = r;
  return rewritten.size();
}

}  // namespace kh::merge
