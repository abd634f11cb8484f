// Evolution against a known optimum (a target merged from two tiny models with known per-group
// weights must be found again), the exactness of kill-and-resume, and its one-line errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/evolve/evolution.h"
#include "core/merge/executor.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::runCli;
using kh::test::TempDir;

namespace {

// Two tiny models a, b (4 layers) and target = linear merge with weights
// a: 0.8 (layers 0-1), 0.3 (layers 2-3); b: 0.2, 0.7; and an EVOLVE.yaml searching for them.
class Synthetic : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      kh::TinyOptions o;
      o.family = "llama";
      o.seed = static_cast<uint64_t>(i + 1);
      o.dtype = kh::st::DType::F32;
      o.withTokenizer = false;
      kh::makeTinyCheckpoint(dir.file(i ? "b" : "a"), o);
    }
    kh::test::writeFile(dir.file("target.yaml"),
                        "merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: [0.8, 0.8, 0.3, 0.3]\n"
                        "  - model: b\n    parameters:\n      weight: [0.2, 0.2, 0.7, 0.7]\ndtype: float32\n");
    kh::merge::MergeOptions mo;
    mo.outDir = dir.file("target");
    kh::merge::runMerge(kh::merge::loadRecipe(dir.file("target.yaml")), mo);
  }
  std::string config(int generations, const std::string& extra = "") {
    const std::string path = dir.file("evolve.yaml");
    kh::test::writeFile(path, "merge_method: linear\nmodels: [a, b]\nlayer_granularity: 2\ndtype: float32\n"
                              "fitness: {target: target, sequences: 8, length: 32}\n"
                              "search: {seed: 3, generations: " + std::to_string(generations) + "}\n" + extra);
    return path;
  }
  TempDir dir;
};

// The lines a run is judged by, without the wall-clock fields.
std::vector<nlohmann::json> judged(const std::string& metrics) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"seconds", "merge_seconds"}) j.erase(k);
    out.push_back(j);
  }
  return out;
}

size_t lineCount(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  size_t n = 0;
  for (char c; in.get(c);) n += c == '\n';
  return n;
}

}  // namespace

TEST_F(Synthetic, EvolutionRecoversTheKnownPerGroupWeights) {
  auto summary = kh::evolve::startEvolution(kh::evolve::loadEvolveConfig(config(30)), dir.file("run"), {});
  ASSERT_EQ(summary.bestGenome.size(), 4u);  // [group][model]: a0 b0 a1 b1
  const auto& x = summary.bestGenome;
  // Linear with normalize: only each group's share of a is identifiable. Tolerance: 0.05.
  EXPECT_NEAR(x[0] / (x[0] + x[1]), 0.8, 0.05);
  EXPECT_NEAR(x[2] / (x[2] + x[3]), 0.3, 0.05);
  EXPECT_GT(summary.bestFitness, -1e-3);  // -KL
  // The run folder: a line per candidate and per generation, the best recipe, the state.
  auto lines = judged(dir.file("run/metrics.jsonl"));
  ASSERT_EQ(lines.size(), 30u * 9u);  // population 4 + floor(3 ln 4) = 8, plus the generation line
  EXPECT_EQ(lines[0]["type"], "candidate");
  EXPECT_TRUE(lines[8].contains("heldout_best"));
  EXPECT_TRUE(fs::exists(dir.file("run/best.yaml")));
  EXPECT_EQ(kh::merge::loadRecipe(dir.file("run/best.yaml")).models.size(), 2u);
  // A run that ended by its budget says so (the workbench shows it as finished, not stopped).
  std::ifstream st(dir.file("run/state.json"));
  EXPECT_EQ(nlohmann::json::parse(st).value("stop_reason", ""), "budget");
}

TEST_F(Synthetic, KilledAndResumedRunEqualsAnUninterruptedOne) {
  const std::string cfg = config(8);
  auto full = runCli({"evolve", cfg, "-o", dir.file("full")});
  ASSERT_EQ(full.exitCode, 0) << full.err;
  const auto expected = judged(dir.file("full/metrics.jsonl"));
  std::mt19937 rng(std::random_device{}());
  bool interrupted = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const std::string run = dir.file("killed" + std::to_string(attempt));
    const pid_t pid = kh::test::startCli({"evolve", cfg, "-o", run}, "/dev/null", "/dev/null");
    // A random moment inside the run, whatever the machine's speed: after a random number of
    // metrics lines (mid-generation or at a generation's end), plus a random few milliseconds.
    const size_t afterLines = std::uniform_int_distribution<size_t>(0, expected.size() - 10)(rng);
    int status = 0;
    bool exited = false;
    for (int waited = 0; waited < 60000; waited += 5) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (lineCount(run + "/metrics.jsonl") >= afterLines) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 30)(rng)));
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    if (!fs::exists(run + "/state.json")) continue;  // killed before the folder existed: nothing to resume
    interrupted = interrupted || judged(run + "/metrics.jsonl").size() < expected.size();
    auto resumed = runCli({"resume", run});
    ASSERT_EQ(resumed.exitCode, 0) << resumed.err;
    EXPECT_EQ(judged(run + "/metrics.jsonl"), expected) << "attempt " << attempt;
  }
  EXPECT_TRUE(interrupted) << "no kill landed inside a run: make the run longer";
}

TEST_F(Synthetic, BadConfigsAndForeignResumesAreOneLineErrors) {
  auto expectError = [&](const std::string& yaml, const std::string& needle) {
    kh::test::writeFile(dir.file("bad.yaml"), yaml);
    try {
      kh::evolve::loadEvolveConfig(dir.file("bad.yaml"));
      ADD_FAILURE() << "accepted: " << yaml;
    } catch (const kh::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  };
  const std::string models = "merge_method: linear\nmodels: [a, b]\n";
  expectError(models + "fitness: {target: target}\nsearch: {generations: 0}\n", "budget of zero");
  expectError(models + "fitness: {target: target}\nsurch: {generations: 3}\n", "bad.yaml:4");
  expectError(models + "search: {generations: 3}\n", "missing 'fitness'");
  expectError("merge_method: model_stock\nbase_model: a\nmodels: [a, b]\nfitness: {target: target}\n", "cannot be evolved");
  // Models that cannot be merged: the tensor is named when the run starts.
  kh::TinyOptions g;
  g.family = "llama";
  g.hidden = 32;
  g.withTokenizer = false;
  kh::makeTinyCheckpoint(dir.file("narrow"), g);
  kh::test::writeFile(dir.file("mismatch.yaml"), "merge_method: linear\nmodels: [a, narrow]\nfitness: {target: target}\n");
  try {
    kh::evolve::startEvolution(kh::evolve::loadEvolveConfig(dir.file("mismatch.yaml")), dir.file("run-mismatch"), {});
    ADD_FAILURE() << "merged models of different shapes";
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model."), std::string::npos) << e.what();
  }
  // resume with a config other than the run's own.
  ASSERT_EQ(runCli({"evolve", config(1), "-o", dir.file("short")}).exitCode, 0);
  auto other = runCli({"resume", dir.file("short"), "--config", config(2)});
  EXPECT_EQ(other.exitCode, 1);
  EXPECT_NE(other.err.find("not the config this run was started with"), std::string::npos) << other.err;
  EXPECT_NE(runCli({"resume", dir.file("nothing-here")}).err.find("not an evolution run folder"), std::string::npos);
}

TEST_F(Synthetic, TaskSuiteFitnessIsScoredPerCandidateAndOnHeldOut) {
  // The tiny models have SentencePiece tokenizers of the same pieces (make-tiny's default).
  for (const char* m : {"a", "b"}) {
    kh::TinyOptions o;
    o.family = "llama";
    o.seed = m[0] == 'a' ? 1 : 2;
    o.dtype = kh::st::DType::F32;
    o.force = true;
    kh::makeTinyCheckpoint(dir.file(std::string("t") + m), o);
  }
  kh::test::writeFile(dir.file("items.jsonl"),
                      "{\"prompt\": \"1たす1は\", \"references\": [\"2\"]}\n"
                      "{\"prompt\": \"2たす3は\", \"references\": [\"5\"]}\n"
                      "{\"prompt\": \"3たす3は\", \"references\": [\"6\"], \"split\": \"heldout\"}\n");
  kh::test::writeFile(dir.file("suite.yaml"), "name: tiny\ntasks:\n  - name: add\n    data: items.jsonl\n"
                                              "    metrics: [numeric, char_f1]\n    max_new_tokens: 4\n");
  kh::test::writeFile(dir.file("suite-evolve.yaml"),
                      "merge_method: linear\nmodels: [ta, tb]\nlayer_granularity: 4\nfitness: {suite: suite.yaml}\n"
                      "search: {seed: 1, generations: 1}\n");
  auto s = kh::evolve::startEvolution(kh::evolve::loadEvolveConfig(dir.file("suite-evolve.yaml")), dir.file("srun"), {});
  EXPECT_EQ(s.evaluations, 6);  // 2 genes: population 4 + floor(3 ln 2) = 6
  auto lines = judged(dir.file("srun/metrics.jsonl"));
  ASSERT_EQ(lines.size(), 7u);
  for (size_t i = 0; i < 6; ++i) {
    ASSERT_TRUE(lines[i]["scores"].contains("add/numeric")) << lines[i].dump();
    ASSERT_TRUE(lines[i]["scores"].contains("add/char_f1"));
    // fitness = weight 1 x the first metric's mean
    EXPECT_DOUBLE_EQ(lines[i]["fitness"].get<double>(), lines[i]["scores"]["add/numeric"].get<double>());
  }
  EXPECT_TRUE(lines[6]["heldout_scores"].contains("add/numeric"));
}
