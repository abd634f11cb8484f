// Merge recipes in mergekit's YAML: merge_method, base_model, models with parameters, top-level
// parameters, per-tensor-name filters, per-layer gradient lists, dtype, out_dtype,
// tokenizer_source and slices. Read with line numbers for every error; written back so that a
// recipe read and written means the same thing. Never accepts a key it does not understand, nor
// one mergekit knows that Kumihimo cannot honour (tokenizer, chat_template, modules,
// residual_weight): those are refused by name.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/merge/methods.h"

namespace kh::merge {

// A parameter value as mergekit allows it: a number, a gradient (a list interpolated over the
// layers), or a list of {filter, value} entries (mergekit's ConditionalParameter: the value is a
// number or a gradient).
// Filters as mergekit's evaluate_setting (mergekit/config.py): the FIRST entry whose filter is
// absent, "*", or a substring of the tensor name gives the value; an unfiltered entry before a
// filtered one hides it. When no entry matches there is no value at this level, and the lookup
// falls through to the next (a model's parameters, the slice's, the top level, the default).
struct ParamValue {
  struct Filtered;
  std::vector<double> gradient;        // one entry = a plain number
  std::vector<Filtered> filtered;      // non-empty = chosen by filter
  bool isBool = false;                 // true/false given (normalize, rescale, ...)
  // The value at gradient position t in [0, 1], or none when no filter entry matches `tensor`.
  // Gradients are piecewise linear over equally spaced anchors (numpy.interp over linspace(0, 1, n)).
  std::optional<double> valueAt(const std::string& tensor, double t) const;
  // The value for a tensor: `layer` is its layer index (-1 for tensors outside the layers) and
  // `layers` the number of layers. Gradients are evaluated at t = layer / (layers - 1), t = 1 for
  // a one-layer model (mergekit's plan_slice); tensors outside the layers take the gradient's
  // first value (embeddings) or last value (final norm, lm_head), by `late`. kh::Error naming
  // `where` when no filter entry matches.
  double resolve(const std::string& tensor, int64_t layer, int64_t layers, bool late, const std::string& where) const;
  // valueAt(), with kh::Error naming `where` when no filter entry matches.
  double resolveAt(const std::string& tensor, double t, const std::string& where) const;
};
struct ParamValue::Filtered {
  std::string filter;  // "" = default
  ParamValue value;
};

struct RecipeModel {
  std::string model;  // path of a model folder
  std::map<std::string, ParamValue> parameters;
  int line = 0;
};

struct SliceSource {
  std::string model;
  int64_t layerBegin = 0, layerEnd = 0;  // [begin, end)
  std::map<std::string, ParamValue> parameters;
};
// One output slice (mergekit's OutputSliceDefinition): its layers are the recipe's merge_method
// over the sources' corresponding layers; every source spans the same number of layers.
struct Slice {
  std::vector<SliceSource> sources;
  std::string baseModel;  // optional per-slice base (one of the sources); "" = the recipe's
  std::map<std::string, ParamValue> parameters;  // per slice: between a source's own and the top level
};

struct Recipe {
  std::string path;  // the YAML file (for errors)
  Method method = Method::Linear;
  std::string baseModel;  // "" when none
  std::vector<RecipeModel> models;
  std::map<std::string, ParamValue> parameters;  // top level: method and per-model (fallback) parameters
  std::string dtype, outDtype;                   // mergekit names: bfloat16, float16, float32
  std::string tokenizerSource;                   // "base", "union", a model path, or ""
  std::vector<Slice> slices;
  std::optional<uint64_t> seed;
};

// Reads a mergekit YAML recipe. Relative model paths are resolved against the recipe's folder.
// kh::Error("<file>:<line>", cause) for unknown keys, parameters the method does not take,
// wrong types, a missing base model for a method that needs one, an empty model list.
Recipe loadRecipe(const std::string& path);
Recipe parseRecipe(const std::string& yamlText, const std::string& pathForErrors, const std::string& baseDir);
// mergekit YAML for a recipe (what evolution writes for every candidate).
std::string recipeToYaml(const Recipe& recipe);

}  // namespace kh::merge
