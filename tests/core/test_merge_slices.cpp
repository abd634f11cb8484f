// mergekit `slices:` run by the streaming executor, on tiny checkpoints: a passthrough
// frankenmerge copies its source layers bit for bit under renumbered names and runs; a linear
// slice merge equals the formula on the chosen layers with per-slice gradients; Gemma2 layers
// keep their sliding/full kind; the plan and `merge --plan` follow the slices; every malformed
// slice is refused in one line naming the slice and model. Also tokenizer_source: union, and the
// recipe semantics mergekit defines (parameter fall-through, one-layer gradients, linear's base,
// passthrough scale, bad parameters refused by the plan).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/merge/executor.h"
#include "core/merge/in_place.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::runCli;
using kh::test::TempDir;

namespace {

class SliceMerge : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto make = [](const std::string& name, const std::string& family, uint64_t seed, int64_t layers, double std = 0.05) {
      kh::TinyOptions o;
      o.family = family;
      o.seed = seed;
      o.layers = layers;
      o.initStd = std;
      kh::makeTinyCheckpoint(dir_->file(name), o);
    };
    make("a", "llama", 1, 3);
    make("b", "llama", 2, 4);
    make("a2", "llama", 1, 3, 0.08);  // A's tokenizer (same seed), other weights
    make("g", "gemma2", 3, 4);
    make("g2", "gemma2", 4, 4);
    make("p", "gpt2", 5, 2);
    make("q", "gpt2", 6, 2);
    make("one", "llama", 7, 1);
    make("one2", "llama", 7, 1, 0.08);  // one's tokenizer, other weights
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string m(const std::string& name) { return dir_->file(name); }
  static kh::merge::Recipe recipe(const std::string& yaml) { return kh::merge::parseRecipe(yaml, "r.yaml", ""); }
  static std::string src(const std::string& model, int b, int e, const std::string& params = "") {
    return "      - model: " + m(model) + "\n        layer_range: [" + std::to_string(b) + ", " + std::to_string(e) + "]\n" + params;
  }
  static std::string merge(const std::string& yaml, const std::string& out) {
    kh::merge::MergeOptions o;
    o.outDir = out;
    kh::merge::runMerge(recipe(yaml), o);
    return out;
  }
  // The one-line kh::Error a recipe fails with.
  static std::string failure(const std::string& yaml) {
    TempDir out;
    try {
      merge(yaml, out.file("x"));
    } catch (const kh::Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      EXPECT_FALSE(fs::exists(out.file("x")));
      return e.what();
    }
    ADD_FAILURE() << "no error for\n" << yaml;
    return "";
  }
  static TempDir* dir_;
};
TempDir* SliceMerge::dir_ = nullptr;

at::Tensor raw(const std::string& dir, const std::string& name) { return kh::CheckpointWeights::open(dir)->tensor(name); }
at::Tensor f32(const std::string& dir, const std::string& name) { return raw(dir, name).to(at::kFloat); }
// Rows of a vocab tensor fitted to `rows` as the merge does (padding from `fill`).
at::Tensor fit(const at::Tensor& t, const at::Tensor& fill) {
  const int64_t rows = fill.size(0);
  if (t.size(0) >= rows) return t.narrow(0, 0, rows);
  return at::cat({t, fill.narrow(0, t.size(0), rows - t.size(0))}, 0);
}
void expectContains(const std::string& text, std::initializer_list<const char*> parts) {
  for (const char* p : parts) EXPECT_NE(text.find(p), std::string::npos) << "'" << p << "' not in: " << text;
}

}  // namespace

TEST_F(SliceMerge, PassthroughFrankenmergeStacksTheSourceLayersBitForBit) {
  TempDir out;
  const std::string yaml = "merge_method: passthrough\nslices:\n  - sources:\n" + src("a", 0, 2) + "  - sources:\n" + src("b", 1, 3);
  merge(yaml, out.file("fr"));
  const std::string o = out.file("fr");
  const auto names = kh::CheckpointWeights::open(o);
  // Output layer -> (model, source layer).
  const std::vector<std::pair<std::string, int>> from = {{"a", 0}, {"a", 1}, {"b", 1}, {"b", 2}};
  for (size_t L = 0; L < from.size(); ++L)
    for (const char* t : {"self_attn.q_proj.weight", "self_attn.o_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"}) {
      const std::string outName = "model.layers." + std::to_string(L) + "." + t;
      const std::string inName = "model.layers." + std::to_string(from[L].second) + "." + t;
      EXPECT_TRUE(at::equal(raw(o, outName), raw(m(from[L].first), inName))) << outName << " vs " << from[L].first << " " << inName;
    }
  EXPECT_FALSE(names->has("model.layers.4.mlp.down_proj.weight"));
  // mergekit: embeddings from the first slice's source, final norm and head from the last slice's.
  EXPECT_TRUE(at::equal(raw(o, "model.embed_tokens.weight"), raw(m("a"), "model.embed_tokens.weight")));
  EXPECT_TRUE(at::equal(raw(o, "model.norm.weight"), raw(m("b"), "model.norm.weight")));
  at::Tensor head = raw(o, "lm_head.weight"), bHead = raw(m("b"), "lm_head.weight");
  const int64_t common = std::min(head.size(0), bHead.size(0));
  EXPECT_TRUE(at::equal(head.narrow(0, 0, common), bHead.narrow(0, 0, common)));

  auto folder = kh::ModelFolder::open(o);
  EXPECT_EQ(folder.config.numLayers, 4);  // A has 3: the count is the slices', not the config source's
  EXPECT_EQ(folder.config.raw["num_hidden_layers"], 4);
  EXPECT_TRUE(folder.layout.ok());
  EXPECT_TRUE(fs::exists(o + "/tokenizer.model"));
  auto inspect = runCli({"inspect", o});
  EXPECT_EQ(inspect.exitCode, 0) << inspect.err;
  auto logits = runCli({"logits", o, "--ids", "1,5,9", "--json"});
  ASSERT_EQ(logits.exitCode, 0) << logits.err;
  EXPECT_NE(logits.out.find("\"top\""), std::string::npos);
  // What the recipe said travels with the model.
  auto back = kh::merge::loadRecipe(o + "/mergekit_config.yml");
  ASSERT_EQ(back.slices.size(), 2u);
  EXPECT_EQ(back.slices[1].sources[0].layerBegin, 1);
}

TEST_F(SliceMerge, LinearSlicesEqualTheFormulaOnTheChosenLayersWithPerSliceGradients) {
  TempDir out;
  // Slice 1 (2 layers): A's weight is a gradient over the slice's own layers, t = 0 then 1; B
  // takes the slice's weight. Slice 2 (1 layer): mergekit evaluates a one-layer slice at t = 1.
  const std::string gradient = "        parameters:\n          weight: [1.0, 3.0]\n";
  const std::string yaml = "merge_method: linear\ndtype: float32\nslices:\n  - sources:\n" + src("a", 1, 3, gradient) +
                           src("b", 2, 4) + "    parameters:\n      weight: 2.0\n  - sources:\n" + src("a", 0, 1, gradient) +
                           src("b", 0, 1, "        parameters:\n          weight: 2.0\n");
  const std::string o = merge(yaml, out.file("lin"));
  struct Want {
    int layer, aLayer, bLayer;
    double wa;
  };
  for (const Want& w : {Want{0, 1, 2, 1.0}, Want{1, 2, 3, 3.0}, Want{2, 0, 0, 3.0}})
    for (const char* t : {"self_attn.k_proj.weight", "mlp.up_proj.weight", "post_attention_layernorm.weight"}) {
      const auto name = [&](int L) { return "model.layers." + std::to_string(L) + "." + t; };
      at::Tensor want = (w.wa * f32(m("a"), name(w.aLayer)) + 2.0 * f32(m("b"), name(w.bLayer))) / (w.wa + 2.0);
      EXPECT_LT((f32(o, name(w.layer)) - want).abs().max().item<double>(), 1e-6) << name(w.layer);
    }
  // Embeddings: slice 1 at t = 0 (A weighs 1); final norm and head: slice 2 at t = 1 (A weighs 3).
  for (const auto& [name, wa] : {std::pair<std::string, double>{"model.embed_tokens.weight", 1.0}, {"model.norm.weight", 3.0},
                                 {"lm_head.weight", 3.0}}) {
    at::Tensor a = f32(m("a"), name);
    at::Tensor want = (wa * a + 2.0 * fit(f32(m("b"), name), a)) / (wa + 2.0);
    EXPECT_LT((f32(o, name) - want).abs().max().item<double>(), 1e-6) << name;
  }
  auto folder = kh::ModelFolder::open(o);
  EXPECT_EQ(folder.config.numLayers, 3);
  EXPECT_EQ(kh::Model::load(folder)->logits({1, 5, 9}).size(0), 3);
}

TEST_F(SliceMerge, GptTwoLayersAreRenamedUnderTransformerH) {
  TempDir out;
  const std::string o =
      merge("merge_method: passthrough\nslices:\n  - sources:\n" + src("p", 0, 2) + "  - sources:\n" + src("q", 0, 1), out.file("gpt"));
  for (const char* t : {"attn.c_attn.weight", "mlp.c_fc.bias", "ln_1.weight"})
    EXPECT_TRUE(at::equal(raw(o, std::string("transformer.h.2.") + t), raw(m("q"), std::string("transformer.h.0.") + t))) << t;
  EXPECT_TRUE(at::equal(raw(o, "transformer.h.1.attn.c_proj.weight"), raw(m("p"), "transformer.h.1.attn.c_proj.weight")));
  auto folder = kh::ModelFolder::open(o);
  EXPECT_EQ(folder.config.raw["n_layer"], 3);
  EXPECT_TRUE(folder.layout.ok());
  EXPECT_EQ(kh::Model::load(folder)->logits({1, 2}).size(0), 2);
}

TEST_F(SliceMerge, GemmaTwoLayersKeepTheirSlidingOrFullKindWhenTheyMove) {
  // Gemma2 slides on even layers. G[0,1) + G[0,2): output layer 1 is a sliding layer 0.
  TempDir out;
  kh::merge::MergeOptions mo;
  mo.outDir = out.file("gem");
  const auto r = recipe("merge_method: passthrough\nslices:\n  - sources:\n" + src("g", 0, 1) + "  - sources:\n" + src("g", 0, 2));
  auto report = kh::merge::runMerge(r, mo);
  bool noted = false;
  for (const auto& n : report.plan.notes) noted |= n.find("layer_types") != std::string::npos;
  EXPECT_TRUE(noted);
  auto folder = kh::ModelFolder::open(mo.outDir);
  ASSERT_EQ(folder.config.layerWindow.size(), 3u);
  const int64_t window = kh::ModelFolder::open(m("g")).config.layerWindow[0];
  ASSERT_GT(window, 0);
  EXPECT_EQ(folder.config.layerWindow, (std::vector<int64_t>{window, window, 0}));
  EXPECT_EQ(folder.config.raw["layer_types"], (nlohmann::json{"sliding_attention", "sliding_attention", "full_attention"}));
  EXPECT_EQ(kh::Model::load(folder)->logits({2, 5, 9}).size(0), 3);
  // Merging a sliding layer with a full one has no single kind: refused.
  expectContains(failure("merge_method: linear\nslices:\n  - sources:\n" + src("g", 0, 1) + src("g2", 1, 2)),
                 {"slice 1", "attention window", "g2"});
}

TEST_F(SliceMerge, PlanAndCliMergePlanFollowTheSlices) {
  const std::string yaml = "merge_method: passthrough\nslices:\n  - sources:\n" + src("a", 0, 2) + "  - sources:\n" + src("b", 1, 4);
  kh::merge::MergeOptions o;
  const auto plan = kh::merge::planMerge(recipe(yaml), o);
  // 5 layers x 9 tensors, embeddings, final norm, head.
  EXPECT_EQ(plan.tensors, 5u * 9u + 3u);
  EXPECT_GT(plan.ramPeak, 0u);
  EXPECT_GT(plan.outputBytes, 0u);
  const std::string text = plan.describe();
  expectContains(text, {"slice 1: output layers 0-1", "slice 2: output layers 2-4", "5 output layers"});

  TempDir d;
  kh::test::writeFile(d.file("r.yaml"), yaml);
  auto cli = runCli({"merge", d.file("r.yaml"), "--plan"});
  EXPECT_EQ(cli.exitCode, 0) << cli.err;
  expectContains(cli.err, {"memory plan: 48 tensors", "slice 2: output layers 2-4"});
  auto run = runCli({"merge", d.file("r.yaml"), "-o", d.file("out")});
  ASSERT_EQ(run.exitCode, 0) << run.err;
  EXPECT_EQ(kh::ModelFolder::open(d.file("out")).config.numLayers, 5);
  // Plan and merge agree on the tensors written.
  EXPECT_EQ(kh::CheckpointWeights::open(d.file("out"))->names().size(), plan.tensors);
}

TEST_F(SliceMerge, MalformedSlicesAreRefusedInOneLineNamingSliceAndModel) {
  const std::string head = "merge_method: linear\nslices:\n  - sources:\n";
  expectContains(failure(head + src("a", 0, 2) + "  - sources:\n" + src("a", 1, 5)),
                 {"r.yaml: slice 2", "layer_range [1, 5)", "outside its 3 layers", "/a"});
  expectContains(failure(head + src("a", 0, 2) + src("b", 0, 3)),
                 {"slice 1", "different numbers of layers", "/a [0, 2) has 2", "/b [0, 3) has 3", "same number of layers"});
  expectContains(failure(head + src("a", 0, 2) + "  - sources: []\n"), {"slice 2", "has no sources"});
  expectContains(failure("merge_method: passthrough\nslices:\n  - sources:\n" + src("a", 0, 2) + src("b", 0, 2)),
                 {"slice 1", "passthrough takes one source per slice, got 2"});
  expectContains(failure(head + src("a", 0, 2) + src("nowhere", 0, 2)), {"slice 1 source 2", "nowhere", "does not exist"});
  expectContains(failure("merge_method: ties\nbase_model: " + m("b") + "\nslices:\n  - sources:\n" + src("a", 0, 2) + src("a2", 0, 2)),
                 {"slice 1", "base model", "/b is not one of its sources"});
}

TEST_F(SliceMerge, InPlaceMergingStillRefusesSlicesClearly) {
  try {
    kh::merge::InPlaceMerger merger(recipe("merge_method: passthrough\nslices:\n  - sources:\n" + src("a", 0, 2)), {});
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    expectContains(e.what(), {"r.yaml", "in-place merging does not take slices", "kumihimo-cli merge"});
  }
}

TEST_F(SliceMerge, TaskVectorMethodsTakeTheirBaseFromTheSliceSources) {
  // ties over slices, the base listed as a source: equals the same ties merge with 'models:'
  // when the slices cover every layer in order.
  TempDir out;
  const std::string params = "        parameters:\n          weight: 0.7\n          density: 0.5\n";
  const std::string sliced = "merge_method: ties\nbase_model: " + m("a") + "\ndtype: float32\nslices:\n  - sources:\n" +
                             src("a", 0, 2) + src("a2", 0, 2, params) + "  - sources:\n" + src("a", 2, 3) + src("a2", 2, 3, params);
  const std::string models = "merge_method: ties\nbase_model: " + m("a") + "\ndtype: float32\nmodels:\n  - model: " + m("a2") +
                             "\n    parameters:\n      weight: 0.7\n      density: 0.5\n";
  const std::string x = merge(sliced, out.file("s")), y = merge(models, out.file("m"));
  auto wx = kh::CheckpointWeights::open(x), wy = kh::CheckpointWeights::open(y);
  ASSERT_EQ(wx->names().size(), wy->names().size());
  for (const auto& n : wy->names()) EXPECT_TRUE(at::equal(wx->tensor(n), wy->tensor(n))) << n;
}

TEST_F(SliceMerge, TokenizerUnionIsTheBaseWhenEveryVocabularyAgreesAndRefusedOtherwise) {
  TempDir out;
  kh::merge::MergeOptions o;
  o.outDir = out.file("u");
  const std::string same = "merge_method: linear\ntokenizer_source: union\nmodels:\n  - model: " + m("a") + "\n  - model: " + m("a2") + "\n";
  auto report = kh::merge::runMerge(recipe(same), o);
  bool noted = false;
  for (const auto& n : report.plan.notes) noted |= n.find("union") != std::string::npos;
  EXPECT_TRUE(noted);
  EXPECT_EQ(kh::test::readFile(o.outDir + "/tokenizer.model"), kh::test::readFile(m("a") + "/tokenizer.model"));
  // A and B were trained on different text: their vocabularies differ.
  const std::string differ = "merge_method: linear\ntokenizer_source: union\nmodels:\n  - model: " + m("a") + "\n  - model: " + m("b") + "\n";
  expectContains(failure(differ), {"tokenizer_source: union", "/a and ", "/b differ", "tokenizer_source: base"});
  try {
    kh::merge::planMerge(recipe(differ), o);
    ADD_FAILURE() << "the plan should refuse it too";
  } catch (const kh::Error&) {
  }
  // A model path with the base's vocabulary: its tokenizer files are copied.
  kh::merge::MergeOptions p;
  p.outDir = out.file("p");
  kh::merge::runMerge(recipe("merge_method: linear\ntokenizer_source: " + m("a2") + "\nmodels:\n  - model: " + m("a") +
                             "\n  - model: " + m("a2") + "\n"),
                      p);
  EXPECT_EQ(kh::test::readFile(p.outDir + "/tokenizer.model"), kh::test::readFile(m("a2") + "/tokenizer.model"));
  // One whose vocabulary differs would not match the embedding rows (the base's): refused, nothing written.
  const std::string other = "merge_method: linear\ntokenizer_source: " + m("b") + "\nmodels:\n  - model: " + m("a") +
                            "\n  - model: " + m("b") + "\n";
  expectContains(failure(other), {"tokenizer_source '", "/b': its vocabulary differs from ", "remapping rows by token is not supported"});
}

TEST(SliceRecipe, SliceParametersAreReadCheckedAndWrittenBack) {
  const std::string yaml =
      "merge_method: ties\nbase_model: /m/a\nslices:\n  - sources:\n      - model: /m/a\n        layer_range: [0, 4]\n"
      "      - model: /m/b\n        layer_range: [2, 6]\n    parameters:\n      density: [0.2, 0.8]\n      normalize: false\n";
  auto r = kh::merge::parseRecipe(yaml, "r.yaml", "");
  ASSERT_EQ(r.slices.size(), 1u);
  ASSERT_EQ(r.slices[0].parameters.count("density"), 1u);
  EXPECT_DOUBLE_EQ(r.slices[0].parameters.at("density").resolveAt("x", 0.5, "w"), 0.5);
  auto back = kh::merge::parseRecipe(kh::merge::recipeToYaml(r), "back.yaml", "");
  ASSERT_EQ(back.slices[0].parameters.size(), 2u);
  EXPECT_EQ(back.slices[0].parameters.at("density").gradient, (std::vector<double>{0.2, 0.8}));
  try {
    kh::merge::parseRecipe(yaml + "      t: 0.3\n", "r.yaml", "");
    FAIL() << "ties takes no t";
  } catch (const kh::Error& e) {
    expectContains(e.what(), {"r.yaml:", "does not take the slice parameter 't'"});
  }
}

// Recipe semantics as mergekit's ConfigReader (mergekit/config.py): a filter list that matches
// nothing gives no value, so the model's parameter falls through to the top level, then to the
// method's default. References are the formulas on the input tensors.
TEST_F(SliceMerge, ParametersFallThroughToTheTopLevelAndThenTheDefault) {
  TempDir out;
  const std::string lin = merge("merge_method: linear\ndtype: float32\nmodels:\n  - model: " + m("a") +
                                    "\n    parameters:\n      weight:\n        - filter: mlp\n          value: 3.0\n  - model: " +
                                    m("a2") + "\n    parameters:\n      weight: 1.0\nparameters:\n  weight: 2.0\n",
                                out.file("lin"));
  for (const char* name : {"model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.embed_tokens.weight"}) {
    const double wa = std::string(name).find("mlp") != std::string::npos ? 3.0 : 2.0;
    at::Tensor want = (wa * f32(m("a"), name) + f32(m("a2"), name)) / (wa + 1.0);
    EXPECT_LT((f32(lin, name) - want).abs().max().item<double>(), 1e-6) << name;
  }
  // ties with density only for the MLP: attention tensors take density 1 (everything kept), so
  // one model merged onto the base gives that model.
  const std::string ties = merge("merge_method: ties\ndtype: float32\nbase_model: " + m("a") + "\nmodels:\n  - model: " + m("a2") +
                                     "\n    parameters:\n      weight: 1.0\n      density:\n        - filter: mlp\n          value: 0.5\n",
                                 out.file("ties"));
  const std::string attn = "model.layers.2.self_attn.k_proj.weight", mlp = "model.layers.2.mlp.down_proj.weight";
  EXPECT_LT((f32(ties, attn) - f32(m("a2"), attn)).abs().max().item<double>(), 1e-6);
  // The MLP's task vector kept half its entries: the rest are the base's.
  const at::Tensor same = (f32(ties, mlp) == f32(m("a"), mlp)).to(at::kFloat);
  EXPECT_NEAR(same.mean().item<double>(), 0.5, 0.02);
}

// mergekit/plan.py: a 'models:' recipe is one slice over all layers, and a one-layer slice is at t = 1.
TEST_F(SliceMerge, AOneLayerModelTakesTheGradientsLastValue) {
  TempDir out;
  const std::string o = merge("merge_method: linear\ndtype: float32\nmodels:\n  - model: " + m("one") +
                                  "\n    parameters:\n      weight: [1.0, 3.0]\n  - model: " + m("one2") +
                                  "\n    parameters:\n      weight: 1.0\n",
                              out.file("one"));
  for (const auto& [name, w] : {std::pair<std::string, double>{"model.layers.0.mlp.gate_proj.weight", 3.0},
                                {"model.layers.0.input_layernorm.weight", 3.0}, {"model.embed_tokens.weight", 1.0}}) {
    at::Tensor want = (w * f32(m("one"), name) + f32(m("one2"), name)) / (w + 1.0);
    EXPECT_LT((f32(o, name) - want).abs().max().item<double>(), 1e-6) << name;
  }
}

// mergekit (plan.py normalize_config, linear.py): linear merges its base_model like any input,
// with the weight its models entry gives it; without one it has no weight, which is refused.
TEST_F(SliceMerge, LinearWeighsItsBaseModelLikeAnyOtherModel) {
  TempDir out;
  const std::string o = merge("merge_method: linear\ndtype: float32\nbase_model: " + m("a") + "\nmodels:\n  - model: " + m("a") +
                                  "\n    parameters:\n      weight: 2.0\n  - model: " + m("a2") +
                                  "\n    parameters:\n      weight: 1.0\n",
                              out.file("lin"));
  for (const char* name : {"model.layers.0.self_attn.v_proj.weight", "model.norm.weight"}) {
    at::Tensor want = (2.0 * f32(m("a"), name) + f32(m("a2"), name)) / 3.0;
    EXPECT_LT((f32(o, name) - want).abs().max().item<double>(), 1e-6) << name;
  }
  expectContains(failure("merge_method: linear\nbase_model: " + m("a") + "\nmodels:\n  - model: " + m("a2") +
                         "\n    parameters:\n      weight: 1.0\n"),
                 {"r.yaml: tensor 'model.", "/a has no 'weight'", "linear merges the base_model like any other model"});
}

// mergekit passthrough.py: a per-model (per-source) scale multiplies the tensor.
TEST_F(SliceMerge, PassthroughScaleMultipliesTheFilteredTensors) {
  TempDir out;
  const std::string o = merge("merge_method: passthrough\nslices:\n  - sources:\n" +
                                  src("a", 0, 2, "        parameters:\n          scale:\n            - filter: o_proj\n"
                                                 "              value: 0.0\n            - value: 1.0\n"),
                              out.file("pt"));
  EXPECT_EQ(raw(o, "model.layers.1.self_attn.o_proj.weight").abs().max().item<double>(), 0.0);
  EXPECT_TRUE(at::equal(raw(o, "model.layers.1.self_attn.q_proj.weight"), raw(m("a"), "model.layers.1.self_attn.q_proj.weight")));
  EXPECT_TRUE(at::equal(raw(o, "model.embed_tokens.weight"), raw(m("a"), "model.embed_tokens.weight")));
}

// Bad parameters are refused by the plan already, in one line naming the recipe, the parameter
// and the tensor (not only when the merge reaches that tensor).
TEST_F(SliceMerge, ThePlanRefusesBadParametersNamingRecipeParameterAndTensor) {
  auto planFailure = [&](const std::string& yaml) -> std::string {
    try {
      kh::merge::planMerge(recipe(yaml), {});
    } catch (const kh::Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "the plan accepted\n" << yaml;
    return "";
  };
  const std::string onto = "base_model: " + m("a") + "\nmodels:\n  - model: " + m("a2") + "\n";
  expectContains(planFailure("merge_method: ties\n" + onto + "    parameters:\n      weight: 1.0\n      density: 1.5\n"),
                 {"r.yaml: tensor 'model.", "density 1.500000 is outside (0, 1]", "/a2"});
  expectContains(planFailure("merge_method: slerp\n" + onto), {"r.yaml: tensor 'model.", "slerp needs the parameter 't'"});
  expectContains(planFailure("merge_method: slerp\n" + onto + "parameters:\n  t:\n    - filter: self_attn\n      value: 0.3\n"),
                 {"r.yaml: tensor 'model.embed_tokens.weight'", "'t'"});
  expectContains(planFailure("merge_method: slerp\n" + onto + "  - model: " + m("b") + "\nparameters:\n  t: 0.5\n"),
                 {"r.yaml: tensor 'model.", "exactly two models"});
  expectContains(planFailure("merge_method: model_stock\n" + onto), {"r.yaml: tensor 'model.", "at least three models"});
  expectContains(planFailure("merge_method: linear\nmodels:\n  - model: " + m("a") + "\n    parameters:\n      weight: 1.0\n"
                             "  - model: " + m("a2") + "\n    parameters:\n      weight: -1.0\n"),
                 {"r.yaml: tensor 'model.", "sum to zero"});
  expectContains(planFailure("merge_method: task_arithmetic\n" + onto + "    parameters:\n      weight: 1.0\n      density: 0.5\n"),
                 {"r.yaml: tensor 'model.", "density 0.500000 has no effect in task_arithmetic"});
  // A weight filtered to the MLP alone leaves the other tensors without one (mergekit: required).
  expectContains(planFailure("merge_method: ties\n" + onto + "    parameters:\n      weight:\n        - filter: mlp\n"
                             "          value: 0.5\n"),
                 {"r.yaml: tensor 'model.", "/a2 has no 'weight' for this tensor"});
  // kumihimo-cli merge R.yaml --plan says the same.
  TempDir d;
  kh::test::writeFile(d.file("r.yaml"), "merge_method: ties\n" + onto + "    parameters:\n      weight: 1.0\n      density: 1.5\n");
  auto cli = runCli({"merge", d.file("r.yaml"), "--plan"});
  EXPECT_NE(cli.exitCode, 0);
  expectContains(cli.err, {"r.yaml: tensor 'model.", "density 1.500000 is outside (0, 1]"});
}
