// The evolution loop, its config and its run folder (see evolution.h).
#include "core/evolve/evolution.h"

#include <ATen/ATen.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/eval/evaluator.h"
#include "core/eval/suite.h"
#include "core/evolve/cmaes.h"
#include "core/merge/executor.h"
#include "core/merge/in_place.h"
#include "core/model/memory.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"

namespace kh::evolve {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Synthetic target

namespace {

class TargetAgreement final : public Fitness {
 public:
  TargetAgreement(const std::string& dir, const std::string& device, int64_t sequences, int64_t length, uint64_t seed)
      : dir_(dir) {
    ModelFolder folder = ModelFolder::open(dir);
    auto target = Model::load(folder, RunOptions{device, ""});
    const int64_t vocab = folder.config.vocabSize;
    // Two splits of kept target log-probabilities, and per scoring: logits, log-softmax and the
    // KL terms ([S, T, V] fp32 each), plus the batch's KV cache and prefill activations.
    const uint64_t logits = static_cast<uint64_t>(sequences * length * vocab) * 4;
    const RunMemory rm = estimateRunMemory(folder.config, folder.weights->parameterCount(), st::DType::F32,
                                           DeviceKind::CPU, length, length);
    planned_ = 2 * logits + 4 * logits + static_cast<uint64_t>(sequences) * (rm.kvCache + rm.activations);
    for (int split = 0; split < 2; ++split) {
      at::Generator gen = at::detail::createCPUGenerator(seed * 2 + static_cast<uint64_t>(split) + 1);
      ids_[split] = at::randint(vocab, {sequences, length}, gen, at::kLong);  // [S, T]
      targetLogp_[split] = logProbs(*target, ids_[split]);
    }
  }

  FitnessResult score(const Model& model, const std::string& split) override {
    const int s = split == "heldout" ? 1 : 0;
    at::Tensor lp = logProbs(model, ids_[s]);                      // [S, T, V] fp32
    at::Tensor p = targetLogp_[s].exp();
    const double kl = (p * (targetLogp_[s] - lp)).sum(-1).mean().item<double>();
    FitnessResult r;
    r.fitness = -kl;
    r.scores["kl"] = kl;
    return r;
  }
  bool hasSplit(const std::string&) const override { return true; }
  std::string describe() const override { return "agreement with " + dir_ + " (fitness = -KL)"; }
  uint64_t plannedBytes() const override { return planned_; }

 private:
  static at::Tensor logProbs(const Model& m, const at::Tensor& ids) {
    const int64_t S = ids.size(0), T = ids.size(1);
    KVCache cache = m.newCache(S, T);
    ForwardBatch b;
    b.ids = ids.to(m.device());
    b.positions = at::arange(T, at::kLong).unsqueeze(0).expand({S, T}).contiguous().to(m.device());
    return at::log_softmax(m.forward(b, cache).to(at::kFloat), -1).to(at::kCPU);
  }
  std::string dir_;
  at::Tensor ids_[2], targetLogp_[2];
  uint64_t planned_ = 0;
};

// A task suite: fitness = the suite's weighted sum of task metrics on the split, greedy.
class SuiteFitness final : public Fitness {
 public:
  explicit SuiteFitness(const EvolveConfig& c) : suite_(eval::loadSuite(c.suite)) {
    const std::string ref = !c.genome.baseModel.empty() ? c.genome.baseModel : c.genome.models.front();
    ModelFolder folder = ModelFolder::open(ref);
    std::shared_ptr<const Tokenizer> tok = folder.requireTokenizer();
    const auto format = eval::PromptFormat::forModel(folder, *tok, "", suite_.needsChat());
    config_ = folder.config;
    parameters_ = folder.weights->parameterCount();
    for (const char* split : {"fitness", "heldout"}) {
      eval::EvalOptions o;
      o.split = split;
      try {
        evaluators_.emplace(split, std::make_unique<eval::Evaluator>(suite_, tok, format, o));
      } catch (const Error&) {
        if (std::string(split) == "fitness") throw;  // held-out items are optional
      }
    }
  }
  FitnessResult score(const Model& model, const std::string& split) override {
    const eval::SuiteResult r = evaluators_.at(split)->run(model);
    FitnessResult out;
    out.fitness = r.fitness();
    for (const auto& t : r.tasks)
      for (const auto& m : t.metrics) out.scores[t.task + "/" + m.metric] = m.mean;
    return out;
  }
  bool hasSplit(const std::string& split) const override { return evaluators_.count(split) != 0; }
  std::string describe() const override { return "task suite " + suite_.path; }
  uint64_t plannedBytes() const override {
    // One batch of the longest rows: KV cache and prefill activations per row (fp32 upper bound).
    uint64_t most = 0;
    for (const auto& [split, ev] : evaluators_) {
      const int64_t len = std::max<int64_t>(1, ev->longestSequence());
      const RunMemory rm = estimateRunMemory(config_, parameters_, st::DType::F32, DeviceKind::CPU, len, len);
      most = std::max<uint64_t>(most, static_cast<uint64_t>(ev->batchSize()) * (rm.kvCache + rm.activations));
    }
    return most;
  }

 private:
  ModelConfig config_;
  uint64_t parameters_ = 0;
  eval::Suite suite_;
  std::map<std::string, std::unique_ptr<eval::Evaluator>> evaluators_;
};

// ---------------------------------------------------------------------------------------------
// Config

[[noreturn]] void failAt(const std::string& path, const YAML::Node& n, const std::string& cause,
                         const std::string& hint = {}) {
  throw Error(path + ":" + std::to_string(n.Mark().line + 1), cause, hint);
}

std::string resolvePath(const std::string& base, const std::string& p) {
  if (p.empty()) return p;
  // Absolute, so that the recipes a run writes (best.yaml) name the same folders from anywhere.
  return fs::absolute(fs::path(p).is_absolute() ? fs::path(p) : fs::path(base) / p).lexically_normal().string();
}

template <class T>
T scalar(const std::string& path, const YAML::Node& n, const char* key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    failAt(path, n, std::string("'") + key + "' has the wrong type");
  }
}

}  // namespace

std::unique_ptr<Fitness> makeTargetAgreement(const std::string& targetDir, const std::string& device, int64_t sequences,
                                             int64_t length, uint64_t seed) {
  return std::make_unique<TargetAgreement>(targetDir, device, sequences, length, seed);
}

EvolveConfig loadEvolveConfig(const std::string& path) {
  EvolveConfig c;
  c.path = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  c.text = ss.str();
  YAML::Node root;
  try {
    root = YAML::Load(c.text);
  } catch (const YAML::Exception& e) {
    throw Error(path + ":" + std::to_string(e.mark.line + 1), "not valid YAML (" + e.msg + ")");
  }
  if (!root.IsMap()) throw Error(path, "must be a mapping of keys (merge_method, models, fitness, search, ...)");
  const std::string base = fs::path(path).parent_path().string();
  bool haveMethod = false, haveModels = false, haveFitness = false;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "merge_method") {
      auto m = merge::parseMethod(scalar<std::string>(path, v, "merge_method"));
      if (!m) failAt(path, v, "unknown merge_method '" + v.as<std::string>() + "'");
      c.genome.method = *m;
      haveMethod = true;
    } else if (key == "base_model") {
      c.genome.baseModel = resolvePath(base, scalar<std::string>(path, v, "base_model"));
    } else if (key == "models") {
      if (!v.IsSequence() || v.size() == 0) failAt(path, v, "'models' must be a non-empty list of model folders");
      for (const auto& m : v) c.genome.models.push_back(resolvePath(base, scalar<std::string>(path, m, "models")));
      haveModels = true;
    } else if (key == "layer_granularity") {
      c.genome.layerGranularity = scalar<int64_t>(path, v, "layer_granularity");
      if (c.genome.layerGranularity < 1) failAt(path, v, "layer_granularity must be at least 1");
    } else if (key == "filters") {
      if (!v.IsSequence()) failAt(path, v, "'filters' must be a list of tensor-name parts (e.g. self_attn, mlp)");
      for (const auto& f : v) c.genome.filters.push_back(scalar<std::string>(path, f, "filters"));
    } else if (key == "normalize") {
      c.genome.normalize = scalar<bool>(path, v, "normalize");
    } else if (key == "dtype") {
      c.genome.dtype = scalar<std::string>(path, v, "dtype");
    } else if (key == "random_seed") {
      c.genome.mergeSeed = scalar<uint64_t>(path, v, "random_seed");
    } else if (key == "device") {
      c.device = scalar<std::string>(path, v, "device");
    } else if (key == "cache_bytes") {
      c.cacheBytes = scalar<uint64_t>(path, v, "cache_bytes");
    } else if (key == "fitness") {
      if (!v.IsMap()) failAt(path, v, "'fitness' must be a mapping (suite: FILE, or target: MODEL)");
      for (const auto& f : v) {
        const std::string k = f.first.as<std::string>();
        if (k == "suite") c.suite = resolvePath(base, scalar<std::string>(path, f.second, "suite"));
        else if (k == "target") c.target = resolvePath(base, scalar<std::string>(path, f.second, "target"));
        else if (k == "sequences") c.sequences = scalar<int64_t>(path, f.second, "sequences");
        else if (k == "length") c.length = scalar<int64_t>(path, f.second, "length");
        else failAt(path, f.first, "unknown key 'fitness." + k + "'", "fitness takes suite, or target with sequences and length");
      }
      if (c.suite.empty() == c.target.empty()) failAt(path, v, "fitness needs exactly one of 'suite' and 'target'");
      if (c.sequences < 1 || c.length < 2) failAt(path, v, "fitness.sequences must be >= 1 and fitness.length >= 2");
      haveFitness = true;
    } else if (key == "search") {
      if (!v.IsMap()) failAt(path, v, "'search' must be a mapping");
      for (const auto& f : v) {
        const std::string k = f.first.as<std::string>();
        if (k == "seed") c.seed = scalar<uint64_t>(path, f.second, "seed");
        else if (k == "sigma0") c.sigma0 = scalar<double>(path, f.second, "sigma0");
        else if (k == "population") c.population = scalar<int>(path, f.second, "population");
        else if (k == "generations") c.generations = scalar<int>(path, f.second, "generations");
        else if (k == "max_evaluations") c.maxEvaluations = scalar<long long>(path, f.second, "max_evaluations");
        else failAt(path, f.first, "unknown key 'search." + k + "'", "search takes seed, sigma0, population, generations, max_evaluations");
      }
      if (!(c.sigma0 > 0)) failAt(path, v, "search.sigma0 must be above 0");
      if (c.generations < 1 && c.maxEvaluations < 1)
        failAt(path, v, "a budget of zero: search.generations and search.max_evaluations are both 0",
               "set generations: N (or max_evaluations: N)");
      if (c.population != 0 && c.population < 2) failAt(path, v, "search.population must be 0 (default) or at least 2");
    } else {
      failAt(path, kv.first, "unknown key '" + key + "'",
             "EVOLVE.yaml takes merge_method, base_model, models, layer_granularity, filters, normalize, dtype, "
             "random_seed, device, cache_bytes, fitness, search");
    }
  }
  if (!haveMethod) throw Error(path, "missing 'merge_method'");
  if (!haveModels) throw Error(path, "missing 'models'");
  if (!haveFitness) throw Error(path, "missing 'fitness'", "add fitness: {suite: SUITE.yaml} or fitness: {target: MODEL}");
  const std::string layersFrom = !c.genome.baseModel.empty() ? c.genome.baseModel : c.genome.models.front();
  c.genome.layers = ModelFolder::open(layersFrom).config.numLayers;
  c.genome.validate(path);
  return c;
}

// ---------------------------------------------------------------------------------------------
// The loop

namespace {

using Clock = std::chrono::steady_clock;

void writeAtomically(const fs::path& file, const std::string& text) {
  const fs::path partial = file.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw Error(partial.string(), "cannot write");
  }
  if (FILE* f = std::fopen(partial.c_str(), "rb")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  std::error_code ec;
  fs::rename(partial, file, ec);
  if (ec) throw Error(file.string(), "cannot move into place: " + ec.message());
}

struct Run {
  EvolveConfig config;
  fs::path dir;
  nlohmann::json state;
};

void appendLine(const fs::path& file, const nlohmann::json& j) {
  std::ofstream out(file, std::ios::binary | std::ios::app);
  out << j.dump() << "\n";
  out.flush();
  if (!out) throw Error(file.string(), "cannot append");
}

EvolveSummary loop(Run& run, const EvolveOptions& o) {
  const EvolveConfig& c = run.config;
  const auto t0 = Clock::now();
  auto log = [&](const std::string& s) {
    if (o.onLog) o.onLog(s);
  };
  Cmaes es = Cmaes::fromJson(run.state.at("cmaes"));
  resetPeakRss();
  const uint64_t rssAtStart = currentRss();
  // Fitness first: a bad suite or target fails before any merging.
  std::unique_ptr<Fitness> fitness;
  if (!c.target.empty()) {
    fitness = makeTargetAgreement(c.target, c.device, c.sequences, c.length, c.seed);
  } else if (o.makeSuiteFitness) {
    fitness = o.makeSuiteFitness(c);
  } else {
    fitness = std::make_unique<SuiteFitness>(c);
  }
  merge::InPlaceOptions ipo;
  ipo.device = c.device;
  ipo.cacheBytes = c.cacheBytes;
  merge::InPlaceMerger merger(decodeGenome(c.genome, es.repaired(es.mean())), ipo);
  // The memory plan: sources stay mapped on disk; one resident model, its input cache, the merge
  // scratch of one tensor chunk, and what scoring needs.
  const std::string ref = !c.genome.baseModel.empty() ? c.genome.baseModel : c.genome.models.front();
  const uint64_t resident = ModelFolder::open(ref).weights->parameterCount() * c10::elementSize(merger.model()->dtype());
  merge::MergeOptions mo;
  mo.device = c.device;
  const merge::MemoryPlan mergePlan = merge::planMerge(decodeGenome(c.genome, es.repaired(es.mean())), mo);
  const uint64_t scratch = std::max(mergePlan.ramPeak, mergePlan.devicePeak);
  const uint64_t planned = resident + merger.cachedBytes() + scratch + fitness->plannedBytes();
  {
    std::ostringstream plan;
    plan << "memory plan (" << c.device << "): resident model " << formatBytes(resident) << " + input cache "
         << formatBytes(merger.cachedBytes()) << " + merge scratch " << formatBytes(scratch) << " + scoring "
         << formatBytes(fitness->plannedBytes()) << " = " << formatBytes(planned)
         << "; sources stay mapped from disk\n"
         << "genome: " << c.genome.size() << " genes (" << c.genome.groups() << " layer groups x "
         << c.genome.models.size() << " models), population " << es.lambda() << ", fitness: " << fitness->describe();
    log(plan.str());
  }
  const fs::path metrics = run.dir / "metrics.jsonl";
  int generation = run.state.at("generation").get<int>();
  EvolveSummary sum;
  sum.runDir = run.dir.string();
  auto budgetLeft = [&] {
    if (c.generations > 0 && generation >= c.generations) return false;
    if (c.maxEvaluations > 0 && es.evaluations() >= c.maxEvaluations) return false;
    return !es.shouldStop();
  };
  while (budgetLeft()) {
    const auto xs = es.ask();
    std::vector<double> f(xs.size());
    std::vector<double> fit(xs.size(), std::nan(""));
    double sumFit = 0;
    int counted = 0;
    for (size_t k = 0; k < xs.size(); ++k) {
      if (o.cancel && o.cancel->load()) throw Cancelled();
      const auto x = es.repaired(xs[k]);
      const merge::Recipe recipe = decodeGenome(c.genome, x);
      nlohmann::json line{{"type", "candidate"}, {"generation", generation}, {"index", k}, {"genome", x},
                          {"decoded", describeGenome(c.genome, x)}};
      const auto tc = Clock::now();
      try {
        const size_t changed = merger.apply(recipe);
        const double mergeSeconds = std::chrono::duration<double>(Clock::now() - tc).count();
        FitnessResult r = fitness->score(*merger.model(), "fitness");
        fit[k] = r.fitness;
        line["scores"] = r.scores;
        line["fitness"] = r.fitness;
        line["tensors_merged"] = changed;
        line["merge_seconds"] = mergeSeconds;
        sumFit += r.fitness;
        ++counted;
      } catch (const Error& e) {
        line["fitness"] = nullptr;
        line["error"] = e.what();
      }
      line["seconds"] = std::chrono::duration<double>(Clock::now() - tc).count();
      f[k] = std::isnan(fit[k]) ? std::nan("") : -fit[k];
      appendLine(metrics, line);
      if (o.onProgress) {
        EvolveProgress p;
        p.generation = generation;
        p.generations = c.generations;
        p.index = static_cast<int>(k) + 1;
        p.population = static_cast<int>(xs.size());
        p.hasBest = es.hasBest() || counted > 0;
        double best = es.hasBest() ? -es.bestF() : -1e300;
        for (size_t j = 0; j <= k; ++j)
          if (!std::isnan(fit[j])) best = std::max(best, fit[j]);
        p.bestFitness = best;
        p.elapsedSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
        o.onProgress(p);
      }
    }
    es.tell(xs, f);
    // This generation's best, scored on the held-out split too.
    size_t bestK = 0;
    for (size_t k = 0; k < xs.size(); ++k)
      if (!std::isnan(fit[k]) && (std::isnan(fit[bestK]) || fit[k] > fit[bestK])) bestK = k;
    nlohmann::json gl{{"type", "generation"}, {"generation", generation}, {"sigma", es.sigma()},
                      {"best", std::isnan(fit[bestK]) ? nlohmann::json(nullptr) : nlohmann::json(fit[bestK])},
                      {"best_index", bestK}, {"mean", counted ? sumFit / counted : 0.0}};
    if (!std::isnan(fit[bestK]) && fitness->hasSplit("heldout")) {
      merger.apply(decodeGenome(c.genome, es.repaired(xs[bestK])));
      FitnessResult h = fitness->score(*merger.model(), "heldout");
      gl["heldout_best"] = h.fitness;
      gl["heldout_scores"] = h.scores;
    }
    appendLine(metrics, gl);
    ++generation;
    // Best so far (the CMA-ES keeps it; its f is the negated fitness).
    if (es.hasBest()) {
      merge::Recipe best = decodeGenome(c.genome, es.bestX());
      writeAtomically(run.dir / "best.yaml", merge::recipeToYaml(best));
      run.state["best"] = {{"fitness", -es.bestF()}, {"genome", es.bestX()}};
    }
    run.state["cmaes"] = es.toJson();
    run.state["generation"] = generation;
    run.state["metrics_bytes"] = fs::file_size(metrics);
    writeAtomically(run.dir / "state.json", run.state.dump() + "\n");
    std::ostringstream s;
    s << "generation " << generation << ": best " << gl["best"].dump() << ", mean " << gl["mean"].get<double>()
      << ", sigma " << es.sigma();
    if (gl.contains("heldout_best")) s << ", held-out of the best " << gl["heldout_best"].get<double>();
    log(s.str());
  }
  sum.generations = generation;
  sum.evaluations = es.evaluations();
  const uint64_t peak = peakRss();
  sum.plannedBytes = planned;
  sum.measuredPeakBytes = peak > rssAtStart ? peak - rssAtStart : 0;
  {
    std::ostringstream s;
    s << "peak RAM " << formatBytes(sum.measuredPeakBytes) << " measured (since before loading), " << formatBytes(planned)
      << " planned";
    log(s.str());
  }
  sum.stopReason = es.shouldStop() ? es.stopReason() : "budget";
  // The run ended by its own rule (not a kill or a cancel): say so, so that a viewer can tell a
  // finished run from a stopped one.
  run.state["stop_reason"] = sum.stopReason;
  writeAtomically(run.dir / "state.json", run.state.dump() + "\n");
  if (es.hasBest()) {
    sum.bestFitness = -es.bestF();
    sum.bestGenome = es.bestX();
    sum.bestRecipePath = (run.dir / "best.yaml").string();
  }
  return sum;
}

}  // namespace

EvolveSummary startEvolution(const EvolveConfig& config, const std::string& runDir, const EvolveOptions& options) {
  const fs::path dir(runDir);
  std::error_code ec;
  if (fs::exists(dir, ec)) throw Error(runDir, "already exists", "resume it with `kumihimo-cli resume " + runDir + "`, or pick another -o");
  CmaesOptions co;
  co.x0 = initialGenome(config.genome);
  co.sigma0 = config.sigma0;
  co.lambda = config.population;
  co.seed = config.seed;
  co.lower.assign(co.x0.size(), 0.0);
  co.upper.assign(co.x0.size(), 1.0);
  Cmaes es(co);
  Run run{config, dir, {}};
  run.state = {{"format", "kumihimo-evolve/1"}, {"config", config.text}, {"config_path", config.path},
               {"cmaes", es.toJson()}, {"generation", 0}, {"metrics_bytes", 0}};
  // Created under a temporary name, renamed once config and state are in place.
  const fs::path partial = dir.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) throw Error(partial.string(), "cannot create: " + ec.message());
  writeAtomically(partial / "config.yaml", config.text);
  writeAtomically(partial / "state.json", run.state.dump() + "\n");
  std::ofstream(partial / "metrics.jsonl").flush();
  fs::rename(partial, dir, ec);
  if (ec) throw Error(runDir, "cannot create the run folder: " + ec.message());
  return loop(run, options);
}

EvolveSummary resumeEvolution(const std::string& runDir, const EvolveOptions& options, const std::string& configPath) {
  const fs::path dir(runDir);
  const fs::path stateFile = dir / "state.json";
  std::ifstream in(stateFile);
  if (!in) throw Error(runDir, "is not an evolution run folder (no state.json)");
  Run run;
  run.dir = dir;
  try {
    run.state = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(stateFile.string(), std::string("unreadable: ") + e.what());
  }
  if (run.state.value("format", "") != "kumihimo-evolve/1") throw Error(stateFile.string(), "not a kumihimo evolution state");
  const std::string text = run.state.at("config").get<std::string>();
  if (!configPath.empty()) {
    EvolveConfig given = loadEvolveConfig(configPath);
    if (given.text != text)
      throw Error(configPath, "is not the config this run was started with", "resume with the run's own config.yaml, or start a new run");
  }
  // The run's own copy, read from its original place so relative model paths resolve as before.
  const std::string original = run.state.at("config_path").get<std::string>();
  std::error_code ec;
  const fs::path copy = dir / "config.yaml";
  run.config = loadEvolveConfig(fs::exists(original, ec) ? original : copy.string());
  if (run.config.text != text)
    throw Error(original, "changed since the run started", "restore it, or start a new run");
  // Drop lines written after the last saved state (a generation that did not finish).
  const fs::path metrics = dir / "metrics.jsonl";
  const auto keep = run.state.at("metrics_bytes").get<uintmax_t>();
  if (fs::exists(metrics, ec) && fs::file_size(metrics) > keep) fs::resize_file(metrics, keep);
  return loop(run, options);
}

}  // namespace kh::evolve
