// The streaming merge executor on tiny checkpoints: a linear merge equals the formula computed
// by hand from the inputs, per-tensor filters reach the right tensors, the output loads and runs,
// and failures (existing output, cancel, a full disk, mismatched models, a budget too small)
// leave nothing behind; stale partial folders of dead merges are removed; sharded outputs have a
// complete index and load; out_dtype sets the tensors' and the config's dtype.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
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

// The linear recipe's formula, by hand from the inputs (fp32).
at::Tensor linearFormula(const std::string& name, const std::string& m1, const std::string& m2, const std::string& m3) {
  const double w1 = name.find("self_attn") != std::string::npos ? 3.0 : 1.0;
  return (w1 * weight(m1, name) + 1.0 * weight(m2, name) + 2.0 * weight(m3, name)) / (w1 + 3.0);
}

// Runs `body` with writes past `bytes` in any one file failing (EFBIG), as on a full disk.
template <class F>
void withFileSizeLimit(rlim_t bytes, F&& body) {
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old {};
  getrlimit(RLIMIT_FSIZE, &old);
  struct rlimit small = old;
  small.rlim_cur = bytes;
  setrlimit(RLIMIT_FSIZE, &small);
  try {
    body();
  } catch (...) {
    setrlimit(RLIMIT_FSIZE, &old);
    throw;
  }
  setrlimit(RLIMIT_FSIZE, &old);
}

// A pid that no process has: a child that has exited and been reaped.
pid_t deadPid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
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

TEST_F(MergeExecutor, StalePartialFolderOfADeadMergeIsRemovedALiveOnesIsKept) {
  TempDir out;
  const std::string dead = out.file(kh::merge::partialFolderName("merged", deadPid()));
  const std::string live = out.file(kh::merge::partialFolderName("merged", 1));  // pid 1 always runs
  const std::string other = out.file(kh::merge::partialFolderName("other", deadPid()));  // another output's
  // A folder shared with another lab machine: its merge's pid means nothing here, and an older
  // version's name says no host. Both are reported, never removed.
  const std::string remote = out.file("merged.partial-gpu-node-7-" + std::to_string(deadPid()));
  const std::string old = out.file("merged.partial-" + std::to_string(deadPid()));
  EXPECT_NE(kh::merge::partialFolderName("merged", 42).find("merged.partial-"), std::string::npos);
  for (const auto& d : {dead, live, other, remote, old}) {
    fs::create_directory(d);
    kh::test::writeFile(d + "/model.safetensors", "half a shard");
  }
  kh::merge::MergeOptions o;
  o.outDir = out.file("merged");
  auto report = kh::merge::runMerge(recipe(linearYaml()), o);
  EXPECT_FALSE(fs::exists(dead)) << "the dead merge's partial folder is removed";
  EXPECT_TRUE(fs::exists(live + "/model.safetensors")) << "a running merge's folder is not touched";
  EXPECT_TRUE(fs::exists(other)) << "only partial folders of this output are considered";
  EXPECT_TRUE(fs::exists(remote + "/model.safetensors")) << "another host's folder is not touched";
  EXPECT_TRUE(fs::exists(old + "/model.safetensors")) << "a folder without a host is not touched";
  ASSERT_EQ(report.notes.size(), 4u);
  std::string all;
  for (const auto& n : report.notes) all += n + "\n";
  EXPECT_NE(all.find("removed " + dead), std::string::npos) << all;
  EXPECT_NE(all.find("left " + live), std::string::npos) << all;
  EXPECT_NE(all.find("left " + remote + ": an unfinished merge on host gpu-node-7"), std::string::npos) << all;
  EXPECT_NE(all.find("left " + old + ": an unfinished merge of an older version"), std::string::npos) << all;
  EXPECT_TRUE(fs::exists(o.outDir + "/model.safetensors"));
}

TEST_F(MergeExecutor, FullDiskAtTheConfigOrRecipeFailsNamingTheFileAndLeavesNothing) {
  // Shards of one tensor each stay under the limit; then config.json (padded past it by an extra
  // key that the merge copies) or mergekit_config.yml (a recipe with many filters) is cut short.
  TempDir out;
  const std::string big = out.file("bigcfg");
  fs::copy(m(1), big, fs::copy_options::recursive);
  auto cfg = nlohmann::json::parse(kh::test::readFile(big + "/config.json"));
  cfg["kh_padding"] = std::string(600 * 1024, 'x');
  kh::test::writeFile(big + "/config.json", cfg.dump(2));
  std::string filters;
  for (int i = 0; i < 12000; ++i) filters += "        - filter: no_such_tensor_" + std::to_string(i) + "\n          value: 1.0\n";
  struct Case {
    std::string yaml, file;
  };
  const Case cases[] = {
      {"merge_method: linear\nmodels:\n  - model: " + big + "\n  - model: " + m(2) + "\ndtype: float32\n", "config.json"},
      {"merge_method: linear\nmodels:\n  - model: " + m(1) + "\n    parameters:\n      weight:\n" + filters +
           "        - value: 1.0\n  - model: " + m(2) + "\n    parameters:\n      weight: 1.0\ndtype: float32\n",
       "mergekit_config.yml"}};
  const rlim_t limit = 512 * 1024;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const auto r = recipe(c.yaml);
    if (c.file == "mergekit_config.yml") ASSERT_GT(kh::merge::recipeToYaml(r).size(), limit);
    TempDir work;
    kh::merge::MergeOptions o;
    o.outDir = work.file("merged");
    o.shardBytes = 1;  // one tensor per shard: every shard under the limit
    bool threw = false;
    withFileSizeLimit(limit, [&] {
      try {
        kh::merge::runMerge(r, o);
      } catch (const kh::Error& e) {
        threw = true;
        const std::string what = e.what();
        EXPECT_NE(what.find(c.file), std::string::npos) << what;
        EXPECT_NE(what.find("write failed"), std::string::npos) << what;
      }
    });
    EXPECT_TRUE(threw) << "a cut-short " << c.file << " must fail the merge";
    EXPECT_TRUE(fs::is_empty(work.path())) << "neither the output nor its partial folder remains";
    // Without the limit the same merge succeeds: the failure was the full disk.
    kh::merge::runMerge(r, o);
    EXPECT_TRUE(fs::exists(o.outDir + "/" + c.file));
  }
}

TEST_F(MergeExecutor, ShardedOutputHasACompleteIndexAndLoadsLikeTheSingleFile) {
  TempDir out;
  kh::merge::MergeOptions one;
  one.outDir = out.file("single");
  kh::merge::runMerge(recipe(linearYaml()), one);
  kh::merge::MergeOptions sh;
  sh.outDir = out.file("sharded");
  sh.shardBytes = 100 * 1024;
  auto report = kh::merge::runMerge(recipe(linearYaml()), sh);

  auto ref = kh::SafetensorsFile::open(one.outDir + "/model.safetensors");
  std::map<std::string, uint64_t> refBytes;
  uint64_t total = 0;
  for (const auto& e : ref->tensors()) {
    const uint64_t n = e.end - e.begin;
    refBytes[e.name] = n;
    total += n;
  }
  ASSERT_FALSE(fs::exists(sh.outDir + "/model.safetensors"));
  const auto index = nlohmann::json::parse(kh::test::readFile(sh.outDir + "/model.safetensors.index.json"));
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), total);
  const auto& wm = index.at("weight_map");
  EXPECT_EQ(wm.size(), refBytes.size()) << "every tensor, and no other, is in the weight map";
  std::set<std::string> indexFiles;
  for (const auto& [name, file] : wm.items()) {
    EXPECT_TRUE(refBytes.count(name)) << name;
    indexFiles.insert(file.get<std::string>());
  }
  EXPECT_GE(indexFiles.size(), 3u) << "a 100 KiB shard size splits this model";
  EXPECT_EQ(report.files.size(), indexFiles.size());
  // Every shard on disk is in the index, and holds exactly the tensors the index puts there.
  std::map<std::string, int> seen;
  size_t shardsOnDisk = 0;
  for (const auto& f : fs::directory_iterator(sh.outDir)) {
    if (f.path().extension() != ".safetensors") continue;
    ++shardsOnDisk;
    const std::string file = f.path().filename().string();
    EXPECT_TRUE(indexFiles.count(file)) << file << " is not in the index";
    auto shard = kh::SafetensorsFile::open(f.path().string());
    uint64_t data = 0;
    for (const auto& e : shard->tensors()) data += e.end - e.begin;
    if (shard->tensors().size() > 1) EXPECT_LE(data, sh.shardBytes) << file << " holds more than the shard size";
    for (const auto& e : shard->tensors()) {
      ++seen[e.name];
      EXPECT_EQ(wm.value(e.name, ""), file) << e.name;
      EXPECT_EQ(e.end - e.begin, refBytes[e.name]) << e.name;
      const uint8_t* a = shard->bytes(e);
      const uint8_t* b = ref->bytes(ref->entry(e.name));
      EXPECT_EQ(std::memcmp(a, b, e.end - e.begin), 0) << e.name << " differs from the single-file merge";
    }
  }
  EXPECT_EQ(shardsOnDisk, indexFiles.size());
  for (const auto& [name, bytes] : refBytes) EXPECT_EQ(seen[name], 1) << name << " must be in exactly one shard";
  // The project's loader reads the sharded folder, and the model computes what the single file does.
  auto weights = kh::CheckpointWeights::open(sh.outDir);
  EXPECT_EQ(weights->count(), refBytes.size());
  const std::vector<int64_t> ids = {1, 5, 9, 42};
  EXPECT_TRUE(at::equal(kh::Model::load(kh::ModelFolder::open(sh.outDir))->logits(ids),
                        kh::Model::load(kh::ModelFolder::open(one.outDir))->logits(ids)));
}

TEST_F(MergeExecutor, OutDtypeSetsTheTensorsAndTheConfigDtype) {
  // The inputs are bf16; compute is fp32 whatever `dtype` says; out_dtype is what is written.
  TempDir out;
  const std::string yaml = linearYaml();
  const std::string base = yaml.substr(0, yaml.find("dtype: float32"));
  struct Case {
    const char* dtype;
    const char* outDtype;
    kh::st::DType want;
    at::ScalarType scalar;
    double tol;  // vs the fp32 formula: the output dtype's rounding
  };
  const Case cases[] = {{"bfloat16", "float32", kh::st::DType::F32, at::kFloat, 1e-6},
                        {"float32", "float16", kh::st::DType::F16, at::kHalf, 1e-3},
                        {"float32", "bfloat16", kh::st::DType::BF16, at::kBFloat16, 8e-3}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.outDtype);
    kh::merge::MergeOptions o;
    o.outDir = out.file(std::string("merged-") + c.outDtype);
    o.shardBytes = 100 * 1024;  // the config must match every shard
    kh::merge::runMerge(recipe(base + "dtype: " + c.dtype + "\nout_dtype: " + c.outDtype + "\n"), o);
    auto folder = kh::ModelFolder::open(o.outDir);
    EXPECT_EQ(folder.config.torchDtype, c.outDtype);
    const auto cfg = nlohmann::json::parse(kh::test::readFile(o.outDir + "/config.json"));
    EXPECT_EQ(cfg.value("torch_dtype", ""), c.outDtype);
    auto w = kh::CheckpointWeights::open(o.outDir);
    for (const auto& name : w->names()) {
      ASSERT_EQ(w->entry(name).dtype, c.want) << name;
      ASSERT_EQ(w->tensor(name).scalar_type(), c.scalar) << name;
    }
    for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.embed_tokens.weight"}) {
      at::Tensor want = linearFormula(name, m(1), m(2), m(3));
      at::Tensor got = w->tensor(name).to(at::kFloat);
      EXPECT_LT(((got - want).abs() / (want.abs() + 1e-3)).max().item<double>(), c.tol) << name;
    }
    auto model = kh::Model::load(folder);
    EXPECT_EQ(model->logits({1, 5, 9}).size(0), 3);
  }
}
