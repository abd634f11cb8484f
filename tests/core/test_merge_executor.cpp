// The streaming merge executor on tiny checkpoints: a linear merge equals the formula computed
// by hand from the inputs, per-tensor filters reach the right tensors, the output loads and runs,
// and failures (existing output, cancel, a full disk, mismatched models, a budget too small)
// leave nothing behind.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>

#include "core/error.h"
#include "core/merge/executor.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::TempDir;

namespace {

class MergeExecutor : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    for (int i = 1; i <= 3; ++i) {
      kh::TinyOptions o;
      o.family = "llama";
      o.seed = static_cast<uint64_t>(i);
      kh::makeTinyCheckpoint(dir_->file("m" + std::to_string(i)), o);
    }
    kh::TinyOptions g;
    g.family = "gemma2";
    kh::makeTinyCheckpoint(dir_->file("gemma"), g);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string m(int i) { return dir_->file("m" + std::to_string(i)); }
  static kh::merge::Recipe recipe(const std::string& yaml) { return kh::merge::parseRecipe(yaml, "test.yaml", ""); }
  static std::string linearYaml() {
    return "merge_method: linear\nmodels:\n  - model: " + m(1) +
           "\n    parameters:\n      weight:\n        - filter: self_attn\n          value: 3.0\n        - value: 1.0\n"
           "  - model: " + m(2) + "\n    parameters:\n      weight: 1.0\n  - model: " + m(3) +
           "\n    parameters:\n      weight: 2.0\ndtype: float32\n";
  }
  static TempDir* dir_;
};
TempDir* MergeExecutor::dir_ = nullptr;

at::Tensor weight(const std::string& dir, const std::string& name) {
  return kh::CheckpointWeights::open(dir)->tensor(name).to(at::kFloat);
}

}  // namespace

TEST_F(MergeExecutor, LinearMergeEqualsTheFormulaAndFiltersReachTheirTensors) {
  TempDir out;
  kh::merge::MergeOptions o;
  o.outDir = out.file("merged");
  auto report = kh::merge::runMerge(recipe(linearYaml()), o);
  EXPECT_GT(report.plan.ramPeak, 0u);
  for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight", "model.embed_tokens.weight"}) {
    const double w1 = std::string(name).find("self_attn") != std::string::npos ? 3.0 : 1.0;
    at::Tensor want = (w1 * weight(m(1), name) + 1.0 * weight(m(2), name) + 2.0 * weight(m(3), name)) / (w1 + 3.0);
    at::Tensor got = weight(o.outDir, name);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-6) << name;
  }
  // The output is a model like any other: it opens, matches its layout, and runs.
  auto folder = kh::ModelFolder::open(o.outDir);
  EXPECT_TRUE(folder.layout.ok());
  EXPECT_TRUE(fs::exists(o.outDir + "/tokenizer.model"));
  EXPECT_TRUE(fs::exists(o.outDir + "/mergekit_config.yml"));
  EXPECT_EQ(folder.config.torchDtype, "float32");
  auto model = kh::Model::load(folder);
  EXPECT_EQ(model->logits({1, 5, 9}).size(0), 3);
}

TEST_F(MergeExecutor, ExistingOutputIsKeptUnlessOverwrite) {
  TempDir out;
  kh::merge::MergeOptions o;
  o.outDir = out.file("merged");
  fs::create_directory(o.outDir);
  kh::test::writeFile(o.outDir + "/keep.txt", "mine");
  EXPECT_THROW(kh::merge::runMerge(recipe(linearYaml()), o), kh::Error);
  EXPECT_TRUE(fs::exists(o.outDir + "/keep.txt"));
  o.overwrite = true;
  kh::merge::runMerge(recipe(linearYaml()), o);
  EXPECT_FALSE(fs::exists(o.outDir + "/keep.txt"));
  EXPECT_TRUE(fs::exists(o.outDir + "/model.safetensors"));
}

TEST_F(MergeExecutor, CancelAndFullDiskLeaveNothingBehind) {
  TempDir out;
  std::atomic<bool> cancel{false};
  kh::merge::MergeOptions o;
  o.outDir = out.file("merged");
  o.cancel = &cancel;
  o.onProgress = [&](const kh::merge::MergeProgress& p) {
    if (p.fraction > 0) cancel = true;  // mid-merge: progress is throttled, the first report comes at once
  };
  EXPECT_THROW(kh::merge::runMerge(recipe(linearYaml()), o), kh::Cancelled);
  EXPECT_TRUE(fs::is_empty(out.path())) << "a cancelled merge leaves no folder, partial or final";
  // A disk that fills up mid-write: the file size limit makes writes fail with EFBIG.
  kh::merge::MergeOptions f;
  f.outDir = out.file("merged");
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old {};
  getrlimit(RLIMIT_FSIZE, &old);
  struct rlimit small = old;
  small.rlim_cur = 64 * 1024;
  setrlimit(RLIMIT_FSIZE, &small);
  bool threw = false;
  try {
    kh::merge::runMerge(recipe(linearYaml()), f);
  } catch (const kh::Error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find("write failed"), std::string::npos) << e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_TRUE(threw);
  EXPECT_TRUE(fs::is_empty(out.path())) << "the output folder must not appear";
}

TEST_F(MergeExecutor, MismatchedModelsAndBudgetsAreRefusedByName) {
  TempDir out;
  kh::merge::MergeOptions o;
  o.outDir = out.file("x");
  try {
    kh::merge::runMerge(recipe("merge_method: linear\nmodels:\n  - model: " + m(1) + "\n  - model: " + dir_->file("gemma") + "\n"), o);
    FAIL();
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture Gemma2ForCausalLM differs"), std::string::npos) << e.what();
  }
  o.memoryBudget = 1024;
  try {
    kh::merge::runMerge(recipe(linearYaml()), o);
    FAIL();
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("above the budget"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(out.path()));
}
