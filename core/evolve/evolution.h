// Evolutionary merge search: CMA-ES over a mergekit-evolve-style genome, each candidate merged in
// place into one resident model (no disk, no reload, only the tensors whose parameters changed),
// scored on the `fitness` split; each generation's best also on `heldout` (reported, never used
// for selection). The run folder holds everything needed to continue after a crash or a kill:
//   config.yaml     the EVOLVE.yaml the run was started with (resume compares it)
//   metrics.jsonl   one line per candidate and one per generation
//   state.json      CMA-ES state + counters + best so far, written atomically after each generation
//   best.yaml       the best recipe so far, as mergekit YAML
// A resumed run truncates metrics.jsonl to what the last saved state covered and goes on: it yields
// exactly the candidates and fitnesses of an uninterrupted run (fitness is a pure function of the
// candidate: fixed merge seed, greedy scoring, the same device).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/evolve/genome.h"

namespace kh {
class Model;
}

namespace kh::evolve {

struct FitnessResult {
  double fitness = 0;                                // higher is better
  nlohmann::json scores = nlohmann::json::object();  // per task / metric, for the metrics file
};

// Scores a resident model on a split ("fitness" or "heldout").
class Fitness {
 public:
  virtual ~Fitness() = default;
  virtual FitnessResult score(const Model& model, const std::string& split) = 0;
  virtual bool hasSplit(const std::string& split) const = 0;
  virtual std::string describe() const = 0;
  // Memory the scoring itself needs beyond the resident weights (KV cache, activations, kept
  // reference outputs), planned from the shapes before the run starts.
  virtual uint64_t plannedBytes() const = 0;
};

// The synthetic target: fitness = -mean KL(target || candidate) of the next-token distributions
// over fixed random token sequences (`fitness` and `heldout` use different sequences). 0 is a
// perfect match. The target's log-probabilities are computed once.
std::unique_ptr<Fitness> makeTargetAgreement(const std::string& targetDir, const std::string& device, int64_t sequences,
                                             int64_t length, uint64_t seed);

struct EvolveConfig {
  std::string path;  // the YAML file
  std::string text;  // its content
  GenomeSpec genome;
  std::string suite;   // fitness from a task suite, or
  std::string target;  // from agreement with a target model
  int64_t sequences = 8, length = 32;
  uint64_t seed = 0;            // CMA-ES
  double sigma0 = 1.0 / 6.0;    // mergekit-evolve's
  int population = 0;           // 0 = 4 + floor(3 ln n)
  int generations = 10;
  long long maxEvaluations = 0; // 0 = no limit
  std::string device = "cpu";
  uint64_t cacheBytes = 0;      // device memory for cached fp32 inputs (faster re-merges)
};

// Reads EVOLVE.yaml; model paths are relative to its folder. kh::Error("<file>:<line>", ...) for an
// unknown key, a missing field, a bad value; models that cannot be merged are named when the run
// starts (their tensors are checked then).
EvolveConfig loadEvolveConfig(const std::string& path);

struct EvolveProgress {
  int generation = 0, generations = 0;
  int index = 0, population = 0;  // candidates done in this generation
  double bestFitness = 0;
  bool hasBest = false;
  double elapsedSeconds = 0;
};

struct EvolveOptions {
  std::function<void(const EvolveProgress&)> onProgress;
  std::function<void(const std::string&)> onLog;  // plan, per-generation summaries
  const std::atomic<bool>* cancel = nullptr;      // checked between candidates
  // Overrides how a suite's fitness is built (tests); by default core/eval scores the suite.
  std::function<std::unique_ptr<Fitness>(const EvolveConfig&)> makeSuiteFitness;
};

struct EvolveSummary {
  std::string runDir;
  int generations = 0;
  long long evaluations = 0;
  double bestFitness = 0;
  std::vector<double> bestGenome;
  std::string bestRecipePath;
  std::string stopReason;
  uint64_t plannedBytes = 0;       // the memory plan printed before the run
  uint64_t measuredPeakBytes = 0;  // growth of the process's peak RSS during the run (0: unknown)
};

// Starts a run in `runDir` (refused when it exists).
EvolveSummary startEvolution(const EvolveConfig& config, const std::string& runDir, const EvolveOptions& options);
// Continues the run in `runDir`. `configPath`, when given, must be the config the run started with.
EvolveSummary resumeEvolution(const std::string& runDir, const EvolveOptions& options, const std::string& configPath = "");

}  // namespace kh::evolve
