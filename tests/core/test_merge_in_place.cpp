// The in-place merger on tiny checkpoints: its resident weights equal, bit for bit, the streaming
// executor's output for the same recipe, for every method (the random ones seeded); a change to a
// parameter for the self_attn tensors rewrites exactly those tensors; logits equal those of the
// executor's output loaded from disk; caching the inputs changes nothing but the work done; a
// recipe that fails part-way leaves the model as it was.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/merge/executor.h"
#include "core/merge/in_place.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

using kh::test::TempDir;

namespace {

class InPlaceMerge : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    for (int i = 1; i <= 3; ++i) {
      kh::TinyOptions o;
      o.family = "llama";
      o.seed = static_cast<uint64_t>(i);
      kh::makeTinyCheckpoint(dir_->file("m" + std::to_string(i)), o);
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string m(int i) { return dir_->file("m" + std::to_string(i)); }
  // ties onto m1; m2's weight is a per-layer gradient; m3's weight for self_attn is `attnWeight`.
  static kh::merge::Recipe recipe(double attnWeight) {
    const std::string yaml = "merge_method: ties\nbase_model: " + m(1) + "\nmodels:\n  - model: " + m(2) +
                             "\n    parameters:\n      weight: [0.2, 0.9, 0.5]\n      density: 0.7\n  - model: " + m(3) +
                             "\n    parameters:\n      weight:\n        - filter: self_attn\n          value: " +
                             std::to_string(attnWeight) + "\n        - value: 0.6\n      density: 0.5\n"
                             "parameters:\n  normalize: true\ndtype: bfloat16\n";
    return kh::merge::parseRecipe(yaml, "test.yaml", "");
  }
  static std::string runExecutor(const kh::merge::Recipe& r, const TempDir& out) {
    kh::merge::MergeOptions o;
    o.outDir = out.file("merged");
    kh::merge::runMerge(r, o);
    return o.outDir;
  }
  // Every weight of the resident model equals the executor's output (cast as Model::load casts).
  static void expectSameAsExecutor(const kh::Model& model, const std::string& dir) {
    auto w = kh::CheckpointWeights::open(dir);
    ASSERT_GT(w->count(), 0u);
    for (const auto& name : w->names()) {
      ASSERT_TRUE(model.hasWeight(name)) << name;
      at::Tensor want = w->tensor(name).to(model.dtype());
      EXPECT_TRUE(at::equal(model.weight(name), want)) << name;
    }
  }
  static size_t selfAttnTensors(const std::string& dir) {
    size_t n = 0;
    for (const auto& name : kh::CheckpointWeights::open(dir)->names()) n += name.find("self_attn") != std::string::npos;
    return n;
  }
  static void run(uint64_t cacheBytes) {
    TempDir outA, outB;
    const std::string a = runExecutor(recipe(0.6), outA);
    kh::merge::InPlaceOptions o;
    o.cacheBytes = cacheBytes;
    kh::merge::InPlaceMerger merger(recipe(0.6), o);
    expectSameAsExecutor(*merger.model(), a);
    EXPECT_EQ(merger.apply(recipe(0.6)), 0u);  // nothing changed, nothing rewritten

    const std::string b = runExecutor(recipe(1.3), outB);
    const size_t attn = selfAttnTensors(b);
    EXPECT_EQ(attn, 16u);  // 4 layers x q, k, v, o
    EXPECT_EQ(merger.apply(recipe(1.3)), attn);
    expectSameAsExecutor(*merger.model(), b);
    const std::vector<int64_t> ids = {1, 5, 9, 42, 7};
    at::Tensor want = kh::Model::load(kh::ModelFolder::open(b))->logits(ids);
    EXPECT_TRUE(at::equal(merger.model()->logits(ids), want));
    // The weights really changed, and going back restores A bit for bit.
    EXPECT_FALSE(at::equal(kh::Model::load(kh::ModelFolder::open(a))->logits(ids), want));
    EXPECT_EQ(merger.apply(recipe(0.6)), attn);
    expectSameAsExecutor(*merger.model(), a);
  }
  static TempDir* dir_;
};
TempDir* InPlaceMerge::dir_ = nullptr;

}  // namespace

TEST_F(InPlaceMerge, RewritesOnlyChangedTensorsBitForBitWithTheExecutor) {
  run(0);
}

TEST_F(InPlaceMerge, CachedInputsGiveTheSameResults) {
  run(uint64_t{1} << 32);
  kh::merge::InPlaceOptions o;
  o.cacheBytes = uint64_t{1} << 32;
  kh::merge::InPlaceMerger merger(recipe(0.6), o);
  EXPECT_GT(merger.cachedBytes(), 0u);
  EXPECT_EQ(merger.cachedTensors(), kh::CheckpointWeights::open(m(1))->count());
}

namespace {

// One method's recipe, with `X` the value of one parameter for the self_attn tensors only.
struct MethodCase {
  const char* method;
  bool base;        // base_model m1
  int models;       // 1: m2; 2: m2, m3; 3: m1, m2, m3 (no base)
  const char* perModel;  // extra per-model parameters ("" none)
  const char* global;    // top-level parameters, may use X ("" none)
  bool weighted;    // the method takes a per-model weight (m_last's self_attn weight is X)
  double a, b;      // two values of X; a == b: the method has no parameter to change
};

std::string caseYaml(const MethodCase& c, double x, const std::string& m1, const std::string& m2, const std::string& m3) {
  auto num = [](double v) { return std::to_string(v); };
  const std::string xs = num(x);
  std::string y = std::string("merge_method: ") + c.method + "\n";
  if (c.base) y += "base_model: " + m1 + "\n";
  std::vector<std::string> models;
  if (c.models == 3) models = {m1, m2, m3};
  else if (c.models == 2) models = {m2, m3};
  else models = {m2};
  y += "models:\n";
  for (size_t k = 0; k < models.size(); ++k) {
    y += "  - model: " + models[k] + "\n";
    std::string params;
    if (c.weighted) {
      if (k + 1 < models.size()) params += "      weight: [0.2, 0.9, 0.5]\n";
      else
        params += "      weight:\n        - filter: self_attn\n          value: " + xs + "\n        - value: 0.6\n";
    }
    if (*c.perModel) params += std::string("      ") + c.perModel + "\n";
    if (!params.empty()) y += "    parameters:\n" + params;
  }
  if (*c.global) {
    std::string g = c.global;
    for (size_t at; (at = g.find("X")) != std::string::npos;) g.replace(at, 1, xs);
    y += "parameters:\n" + g;
  }
  y += "random_seed: 7\ndtype: bfloat16\n";
  return y;
}

void PrintTo(const MethodCase& c, std::ostream* os) { *os << c.method << (c.base ? " onto a base" : ""); }

const MethodCase kMethods[] = {
    {"linear", false, 3, "", "", true, 0.6, 1.3},
    {"task_arithmetic", true, 2, "", "  lambda: 0.8\n", true, 0.6, 1.3},
    {"ties", true, 2, "density: 0.6", "", true, 0.6, 1.3},
    {"dare_ties", true, 2, "density: 0.5", "", true, 0.6, 1.3},
    {"dare_linear", true, 2, "density: 0.5", "", true, 0.6, 1.3},
    {"breadcrumbs", true, 2, "density: 0.8\n      gamma: 0.05", "", true, 0.6, 1.3},
    {"breadcrumbs_ties", true, 2, "density: 0.8\n      gamma: 0.05", "", true, 0.6, 1.3},
    {"della", true, 2, "density: 0.6\n      epsilon: 0.1", "", true, 0.6, 1.3},
    {"della_linear", true, 2, "density: 0.6\n      epsilon: 0.1", "", true, 0.6, 1.3},
    {"slerp", true, 1, "", "  t:\n    - filter: self_attn\n      value: X\n    - value: 0.5\n", false, 0.3, 0.7},
    {"nuslerp", true, 2, "", "", true, 0.6, 1.3},
    {"nuslerp", false, 2, "", "  nuslerp_row_wise: true\n", true, 0.6, 1.3},
    {"model_stock", true, 2, "", "", false, 0, 0},
    {"passthrough", false, 1, "", "", false, 0, 0},
};

}  // namespace

class InPlaceEveryMethod : public InPlaceMerge, public ::testing::WithParamInterface<MethodCase> {};

// For each method, with and without cached inputs: the merger's start equals the executor's
// output; changing X rewrites exactly the self_attn tensors (new storage), leaves every other
// tensor where it was, and equals a fresh executor merge with the new X; going back restores A.
TEST_P(InPlaceEveryMethod, EqualsTheExecutorBitForBitAndRewritesOnlyWhatChanged) {
  const MethodCase& c = GetParam();
  auto recipeFor = [&](double x) { return kh::merge::parseRecipe(caseYaml(c, x, m(1), m(2), m(3)), "test.yaml", ""); };
  TempDir outA, outB;
  const std::string a = runExecutor(recipeFor(c.a), outA);
  const std::string b = c.a != c.b ? runExecutor(recipeFor(c.b), outB) : "";
  for (uint64_t cacheBytes : {uint64_t{0}, uint64_t{1} << 32}) {
    SCOPED_TRACE(cacheBytes ? "cached inputs" : "inputs from the files");
    kh::merge::InPlaceOptions o;
    o.cacheBytes = cacheBytes;
    kh::merge::InPlaceMerger merger(recipeFor(c.a), o);
    expectSameAsExecutor(*merger.model(), a);
    EXPECT_EQ(merger.apply(recipeFor(c.a)), 0u);
    if (c.a == c.b) continue;
    auto names = kh::CheckpointWeights::open(b)->names();
    std::map<std::string, const void*> before;
    for (const auto& n : names) before[n] = merger.model()->weight(n).data_ptr();
    const size_t attn = selfAttnTensors(b);
    ASSERT_EQ(attn, 16u);
    EXPECT_EQ(merger.apply(recipeFor(c.b)), attn);
    std::set<std::string> moved;
    for (const auto& n : names)
      if (merger.model()->weight(n).data_ptr() != before[n]) moved.insert(n);
    EXPECT_EQ(moved.size(), attn);
    for (const auto& n : moved) EXPECT_NE(n.find("self_attn"), std::string::npos) << n << " was rewritten";
    expectSameAsExecutor(*merger.model(), b);
    EXPECT_EQ(merger.apply(recipeFor(c.a)), attn);
    expectSameAsExecutor(*merger.model(), a);
  }
  // The executor's two outputs really differ (else the test above could not fail).
  if (c.a != c.b) {
    const std::string n = "model.layers.0.self_attn.q_proj.weight";
    EXPECT_FALSE(at::equal(kh::CheckpointWeights::open(a)->tensor(n), kh::CheckpointWeights::open(b)->tensor(n)));
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, InPlaceEveryMethod, ::testing::ValuesIn(kMethods),
                         [](const ::testing::TestParamInfo<MethodCase>& i) {
                           return std::string(i.param.method) + (i.param.base ? "" : "_nobase") + "_" +
                                  std::to_string(i.index);
                         });

TEST_F(InPlaceMerge, ARecipeThatFailsPartWayLeavesTheModelAsItWas) {
  // A new self_attn weight for every layer, and an MLP density that only the last layer takes
  // outside (0, 1]: apply() rewrites the earlier layers' self_attn tensors, then fails.
  TempDir outA;
  const std::string a = runExecutor(recipe(0.6), outA);
  kh::merge::InPlaceMerger merger(recipe(0.6));
  auto bad = recipe(1.3);
  bad.models[1].parameters["density"] = kh::merge::parseRecipe(
      "merge_method: ties\nbase_model: " + m(1) + "\nmodels:\n  - model: " + m(2) +
      "\n    parameters:\n      density:\n        - filter: mlp\n          value: [0.5, 0.5, 0.5, 1.5]\n"
      "        - value: 0.5\n",
      "bad.yaml", "").models[0].parameters.at("density");
  const auto names = kh::CheckpointWeights::open(a)->names();
  std::map<std::string, const void*> before;
  for (const auto& n : names) before[n] = merger.model()->weight(n).data_ptr();
  try {
    merger.apply(bad);
    FAIL() << "a density of 1.5 was accepted";
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("density"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.layers.3.mlp"), std::string::npos) << e.what();
  }
  size_t moved = 0;
  for (const auto& n : names) moved += merger.model()->weight(n).data_ptr() != before[n];
  EXPECT_GT(moved, 0u) << "the failure came part-way: some tensors had been rewritten (and were put back)";
  {
    SCOPED_TRACE("after the failed apply");
    expectSameAsExecutor(*merger.model(), a);
  }
  EXPECT_EQ(merger.apply(recipe(0.6)), 0u) << "the merger still knows what every tensor holds";
  TempDir outB;
  const std::string b = runExecutor(recipe(1.3), outB);
  EXPECT_EQ(merger.apply(recipe(1.3)), selfAttnTensors(b));
  expectSameAsExecutor(*merger.model(), b);
}

TEST_F(InPlaceMerge, RefusesAChangedModelList) {
  kh::merge::InPlaceMerger merger(recipe(0.6));
  auto r = recipe(0.6);
  r.models.pop_back();
  EXPECT_THROW(merger.apply(r), kh::Error);
  auto s = recipe(0.6);
  s.method = kh::merge::Method::DareTies;
  EXPECT_THROW(merger.apply(s), kh::Error);
}

TEST_F(InPlaceMerge, SetWeightChecksShapeDtypeAndDevice) {
  kh::merge::InPlaceMerger merger(recipe(0.6));
  auto& model = *merger.model();
  const std::string name = "model.norm.weight";
  at::Tensor w = model.weight(name);
  EXPECT_THROW(model.setWeight(name, w.to(at::kFloat)), kh::Error);
  EXPECT_THROW(model.setWeight(name, at::zeros({3}, w.options())), kh::Error);
  EXPECT_THROW(model.setWeight("no.such.weight", w), kh::Error);
  model.setWeight(name, at::ones_like(w));
  EXPECT_TRUE(at::equal(model.weight(name), at::ones_like(w)));
}
