// mergekit YAML recipes: every field mergekit users write, parameter resolution (filters,
// gradients interpolated as numpy.interp over equally spaced anchors), write-then-read round
// trips, and every malformed recipe refused with file:line and the cause.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/merge/recipe.h"

using kh::merge::parseRecipe;

namespace {

const char* kTies = R"(merge_method: ties
base_model: /models/base
models:
  - model: /models/a
    parameters:
      weight:
        - filter: self_attn
          value: 0.3
        - filter: mlp
          value: [0.0, 1.0, 0.5]
        - value: 0.5
      density: 0.7
  - model: /models/b
    parameters:
      weight: 0.25
      density: [0.2, 0.8]
parameters:
  normalize: true
dtype: bfloat16
out_dtype: float16
tokenizer_source: base
)";

void expectError(const std::string& yaml, std::initializer_list<std::string> fragments) {
  try {
    parseRecipe(yaml, "r.yaml", "");
    FAIL() << "accepted: " << yaml;
  } catch (const kh::Error& e) {
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
  }
}

}  // namespace

TEST(MergeRecipe, ReadsWhatMergekitUsersWrite) {
  auto r = parseRecipe(kTies, "r.yaml", "");
  EXPECT_EQ(r.method, kh::merge::Method::Ties);
  EXPECT_EQ(r.baseModel, "/models/base");
  ASSERT_EQ(r.models.size(), 2u);
  EXPECT_EQ(r.dtype, "bfloat16");
  EXPECT_EQ(r.outDtype, "float16");
  EXPECT_EQ(r.tokenizerSource, "base");
  const auto& w = r.models[0].parameters.at("weight");
  const std::string q = "model.layers.2.self_attn.q_proj.weight", up = "model.layers.2.mlp.up_proj.weight";
  EXPECT_DOUBLE_EQ(w.resolve(q, 2, 5, false, "x"), 0.3);
  EXPECT_DOUBLE_EQ(w.resolve("model.norm.weight", -1, 5, true, "x"), 0.5);  // default entry
  // Gradient [0, 1, 0.5] over 5 layers: t = 0, .25, .5, .75, 1 -> 0, .5, 1, .75, .5 (numpy.interp).
  const double want[] = {0.0, 0.5, 1.0, 0.75, 0.5};
  for (int layer = 0; layer < 5; ++layer)
    EXPECT_DOUBLE_EQ(w.resolve("model.layers." + std::to_string(layer) + ".mlp.up_proj.weight", layer, 5, false, "x"), want[layer]);
  EXPECT_DOUBLE_EQ(r.models[1].parameters.at("density").resolve(up, 2, 5, false, "x"), 0.5);
  EXPECT_DOUBLE_EQ(r.models[1].parameters.at("density").resolve("model.embed_tokens.weight", -1, 5, false, "x"), 0.2);
  EXPECT_TRUE(r.parameters.at("normalize").isBool);
}

TEST(MergeRecipe, WriteThenReadMeansTheSame) {
  auto r = parseRecipe(kTies, "r.yaml", "");
  auto back = parseRecipe(kh::merge::recipeToYaml(r), "back.yaml", "");
  EXPECT_EQ(back.method, r.method);
  EXPECT_EQ(back.baseModel, r.baseModel);
  ASSERT_EQ(back.models.size(), r.models.size());
  for (size_t i = 0; i < r.models.size(); ++i)
    for (const auto& [k, v] : r.models[i].parameters)
      for (int layer = -1; layer < 5; ++layer)
        for (const char* t : {"model.layers.1.self_attn.k_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"})
          EXPECT_DOUBLE_EQ(back.models[i].parameters.at(k).resolve(t, layer, 5, true, "x"), v.resolve(t, layer, 5, true, "x"));
  EXPECT_EQ(back.outDtype, r.outDtype);
}

TEST(MergeRecipe, SlicesForFrankenmerges) {
  auto r = parseRecipe(R"(merge_method: passthrough
slices:
  - sources:
      - model: /m/a
        layer_range: [0, 8]
  - sources:
      - model: /m/b
        layer_range: [4, 12]
dtype: bfloat16
)", "r.yaml", "");
  ASSERT_EQ(r.slices.size(), 2u);
  EXPECT_EQ(r.slices[1].sources[0].model, "/m/b");
  EXPECT_EQ(r.slices[1].sources[0].layerBegin, 4);
  EXPECT_EQ(r.slices[1].sources[0].layerEnd, 12);
  auto back = parseRecipe(kh::merge::recipeToYaml(r), "b.yaml", "");
  EXPECT_EQ(back.slices[0].sources[0].layerEnd, 8);
}

TEST(MergeRecipe, MalformedRecipesAreNamedWithTheirLine) {
  expectError("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\nweird_key: 1\n", {"r.yaml:5", "unknown key 'weird_key'"});
  expectError("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      density: 0.5\n",
              {"r.yaml:5", "linear does not take the per-model parameter 'density'"});
  expectError("merge_method: ties\nmodels:\n  - model: a\n", {"ties needs a base_model"});
  expectError("merge_method: frobnicate\nmodels:\n  - model: a\n", {"r.yaml:1", "unknown merge_method 'frobnicate'"});
  expectError("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: lots\n", {"r.yaml:5", "'weight' is 'lots', not a number"});
  expectError("merge_method: linear\nmodels: [\n", {"r.yaml", "not valid YAML"});
  expectError("merge_method: linear\n", {"names no models"});
  expectError("merge_method: linear\ndtype: float8\nmodels:\n  - model: a\n", {"dtype 'float8'"});
  expectError("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [4, 2]\n", {"r.yaml:5", "is empty"});
}
