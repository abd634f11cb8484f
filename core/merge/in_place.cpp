// In-place merging on a resident model (see in_place.h).
#include "core/merge/in_place.h"

#include <ATen/ATen.h>

#include <unordered_map>

#include "core/error.h"
#include "core/io/tensor_load.h"
#include "core/merge/resolved.h"
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

}  // namespace

InPlaceMerger::InPlaceMerger(const Recipe& recipe, const InPlaceOptions& options)
    : recipe_(recipe), options_(options), x_(std::make_unique<detail::Resolved>(detail::resolve(recipe_))) {
  const c10::Device device = parseDevice(options_.device);
  const auto outType = toScalarType(x_->outDtype, "in-place merge");
  const c10::ScalarType dtype = Model::computeDtype(outType, device, options_.dtype);
  const uint64_t seed = options_.seed ? *options_.seed : recipe_.seed.value_or(0);
  cache_.resize(x_->outputs.size());
  std::unordered_map<std::string, at::Tensor> weights;
  for (size_t i = 0; i < x_->outputs.size(); ++i) {
    const auto& name = x_->outputs[i].first;
    params_.push_back(detail::tensorParams(recipe_, *x_, name, seed));
    detail::TensorInputs in = inputsOf(i);
    at::Tensor merged = mergeTensor(recipe_.method, in.base, in.others, params_[i].models, params_[i].method);
    weights[name] = merged.to(outType).to(dtype).contiguous();
  }
  model_ = Model::fromWeights(x_->refFolder(), std::move(weights), device, dtype);
}

InPlaceMerger::~InPlaceMerger() = default;

size_t InPlaceMerger::cachedTensors() const {
  size_t n = 0;
  for (const auto& c : cache_) n += c ? 1 : 0;
  return n;
}

detail::TensorInputs InPlaceMerger::inputsOf(size_t i) {
  if (cache_[i]) return *cache_[i];
  const auto& [name, shape] = x_->outputs[i];
  detail::TensorInputs in = detail::loadInputs(*x_, name, shape, parseDevice(options_.device));
  const uint64_t n = bytesOf(in);
  if (options_.cacheBytes > 0 && cachedBytes_ + n <= options_.cacheBytes) {
    cache_[i] = std::make_unique<detail::TensorInputs>(in);
    cachedBytes_ += n;
  }
  return in;
}

size_t InPlaceMerger::apply(const Recipe& r) {
  requireSameModels(recipe_, r);
  const uint64_t seed = options_.seed ? *options_.seed : r.seed.value_or(0);
  const auto outType = toScalarType(x_->outDtype, "in-place merge");
  // Resolve every tensor's parameters first, so that a bad recipe changes nothing.
  std::vector<detail::TensorParams> next;
  next.reserve(x_->outputs.size());
  for (const auto& [name, shape] : x_->outputs) next.push_back(detail::tensorParams(r, *x_, name, seed));
  std::vector<std::pair<size_t, at::Tensor>> rewritten;
  for (size_t i = 0; i < x_->outputs.size(); ++i) {
    if (next[i] == params_[i]) continue;
    detail::TensorInputs in = inputsOf(i);
    at::Tensor merged = mergeTensor(r.method, in.base, in.others, next[i].models, next[i].method);
    rewritten.emplace_back(i, merged.to(outType).to(model_->dtype()).contiguous());
  }
  for (auto& [i, t] : rewritten) model_->setWeight(x_->outputs[i].first, std::move(t));
  params_ = std::move(next);
  recipe_ = r;
  return rewritten.size();
}

}  // namespace kh::merge
