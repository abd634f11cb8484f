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

// mergekit/config.py ConfigReader.parameter: the top level supplies per-model parameters to every
// model that does not set them.
TEST(MergeRecipe, TopLevelParametersTakePerModelKeys) {
  auto r = parseRecipe("merge_method: ties\nbase_model: /m/base\nmodels:\n  - model: /m/a\nparameters:\n  density: 0.5\n"
                       "  weight: 0.25\n  normalize: false\n",
                       "r.yaml", "");
  EXPECT_DOUBLE_EQ(r.parameters.at("density").resolveAt("model.layers.0.mlp.up_proj.weight", 0.0, "x"), 0.5);
  EXPECT_DOUBLE_EQ(r.parameters.at("weight").resolveAt("model.layers.0.mlp.up_proj.weight", 0.0, "x"), 0.25);
  // Still only what the method takes: linear has no density at any level.
  expectError("merge_method: linear\nmodels:\n  - model: a\nparameters:\n  density: 0.5\n",
              {"r.yaml:5", "linear does not take the top-level parameter 'density'"});
}

// mergekit/config.py evaluate_setting: the first entry with no filter, "*", or a filter that is a
// substring of the tensor name; none matching gives no value (the lookup falls through).
TEST(MergeRecipe, FiltersTakeTheFirstMatchingEntryAndOtherwiseGiveNoValue) {
  auto r = parseRecipe(R"(merge_method: linear
models:
  - model: /m/a
    parameters:
      weight:
        - value: 0.1
        - filter: mlp
          value: 0.9
  - model: /m/b
    parameters:
      weight:
        - filter: mlp
          value: 0.5
  - model: /m/c
    parameters:
      weight:
        - filter: self_attn
          value: [0.0, 1.0]
        - filter: "*"
          value: 0.7
        - value: 0.3
)", "r.yaml", "");
  const std::string mlp = "model.layers.1.mlp.up_proj.weight", attn = "model.layers.1.self_attn.q_proj.weight";
  // An unfiltered entry first hides the filtered one after it.
  EXPECT_DOUBLE_EQ(*r.models[0].parameters.at("weight").valueAt(mlp, 0.5), 0.1);
  EXPECT_DOUBLE_EQ(*r.models[1].parameters.at("weight").valueAt(mlp, 0.5), 0.5);
  EXPECT_FALSE(r.models[1].parameters.at("weight").valueAt(attn, 0.5).has_value());
  EXPECT_THROW(r.models[1].parameters.at("weight").resolveAt(attn, 0.5, "x"), kh::Error);
  // A gradient inside a filter entry; "*" matches every tensor before the default.
  EXPECT_DOUBLE_EQ(*r.models[2].parameters.at("weight").valueAt(attn, 0.25), 0.25);
  EXPECT_DOUBLE_EQ(*r.models[2].parameters.at("weight").valueAt(mlp, 0.25), 0.7);
  EXPECT_DOUBLE_EQ(*r.models[2].parameters.at("weight").valueAt("lm_head.weight", 1.0), 0.7);
  // mergekit's ConditionalParameter holds a number or a gradient, not another filter list.
  expectError("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight:\n        - filter: mlp\n"
              "          value:\n            - filter: up\n              value: 1\n",
              {"r.yaml:8", "not another filter list"});
}

// mergekit/plan.py plan_slice: a one-layer slice (and so a one-layer model) is at t = 1.
TEST(MergeRecipe, AOneLayerModelIsAtTheGradientsEnd) {
  auto r = parseRecipe("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: [0.2, 0.8]\n", "r.yaml", "");
  EXPECT_DOUBLE_EQ(r.models[0].parameters.at("weight").resolve("model.layers.0.mlp.up_proj.weight", 0, 1, false, "x"), 0.8);
  EXPECT_DOUBLE_EQ(r.models[0].parameters.at("weight").resolve("model.embed_tokens.weight", -1, 1, false, "x"), 0.2);
}

// mergekit's parameters()/tensor_parameters() per method (mergekit/merge_methods/*.py).
TEST(MergeRecipe, EachMethodTakesMergekitsParameters) {
  EXPECT_NO_THROW(parseRecipe("merge_method: task_arithmetic\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n"
                              "      weight: 0.5\n      density: 1.0\nparameters:\n  rescale: false\n  lambda: 0.8\n",
                              "r.yaml", ""));
  EXPECT_NO_THROW(parseRecipe("merge_method: model_stock\nbase_model: b\nmodels:\n  - model: a\n  - model: c\n"
                              "parameters:\n  filter_wise: true\n",
                              "r.yaml", ""));
  auto p = parseRecipe("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n"
                       "        parameters:\n          scale:\n            - filter: o_proj\n              value: 0.0\n"
                       "            - value: 1.0\n",
                       "r.yaml", "");
  EXPECT_DOUBLE_EQ(p.slices[0].sources[0].parameters.at("scale").resolveAt("model.layers.0.self_attn.o_proj.weight", 0, "x"), 0.0);
  expectError("merge_method: slerp\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n      weight: 0.5\n",
              {"r.yaml:6", "slerp does not take the per-model parameter 'weight'"});
}

TEST(MergeRecipe, MergekitKeysKumihimoCannotHonourAreRefusedByName) {
  const std::string models = "merge_method: linear\nmodels:\n  - model: a\n";
  expectError(models + "tokenizer:\n  source: union\n", {"r.yaml:5", "'tokenizer' is not supported", "tokenizer_source"});
  expectError(models + "chat_template: chatml\n", {"r.yaml:4", "'chat_template' is not supported"});
  expectError("merge_method: linear\nmodules:\n  text:\n    models:\n      - model: a\n", {"r.yaml:3", "'modules' is not supported"});
  expectError("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n    residual_weight: 0.5\n",
              {"r.yaml:6", "'residual_weight' is not supported"});
  for (const char* y : {"tokenizer:\n  source: union\n", "chat_template: chatml\n"}) {
    try {
      parseRecipe(models + y, "r.yaml", "");
    } catch (const kh::Error& e) {
      EXPECT_EQ(std::string(e.what()).find("unknown key"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}
