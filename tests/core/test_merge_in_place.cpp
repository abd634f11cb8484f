// The in-place merger on tiny checkpoints: its resident weights equal, bit for bit, the streaming
// executor's output for the same recipe; a change to one model's weight for the self_attn tensors
// rewrites exactly those tensors; logits equal those of the executor's output loaded from disk;
// caching the inputs changes nothing but the work done.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

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
