// evolve_bench: candidate turnaround of the evolution loop. Three generated Llama-shaped models
// (bf16, 8 layers, hidden 1024) merged with ties in place; prints the time to merge a candidate
// that changes one layer group (and one that changes everything) as a fraction of that
// candidate's evaluation (the bundled ja-arith suite, fitness split, greedy), and the peak RSS
// growth against the plan (one resident model + input cache). Asserts nothing.
// Usage: evolve_bench [--layers N (8)] [--hidden N (1024)] [--items N per task (8)] [--cache-mib N (0)] [--keep DIR]
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/eval/evaluator.h"
#include "core/eval/suite.h"
#include "core/evolve/genome.h"
#include "core/merge/executor.h"
#include "core/merge/in_place.h"
#include "core/model/memory.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  int64_t layers = 8, hidden = 1024, cacheMiB = 0, items = 8;
  std::string keep;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--layers")) layers = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--hidden")) hidden = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--cache-mib")) cacheMiB = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--items")) items = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--keep")) keep = argv[i + 1];
  }
  at::set_num_threads(2);
  const std::string dir = keep.empty() ? (fs::temp_directory_path() / "kh-evolve-bench").string() : keep;
  for (int m = 0; m < 3; ++m) {
    const std::string md = dir + "/m" + std::to_string(m);
    if (fs::exists(md + "/config.json")) continue;
    kh::TinyOptions o;
    o.family = "llama";
    o.layers = layers;
    o.hidden = hidden;
    o.heads = hidden / 128;
    o.kvHeads = hidden / 128;
    o.intermediate = hidden * 11 / 4;
    o.seed = static_cast<uint64_t>(m + 1);
    o.initStd = 0.02;
    o.force = true;
    std::printf("generating %s ...\n", md.c_str());
    kh::makeTinyCheckpoint(md, o);
  }
  kh::evolve::GenomeSpec spec;
  spec.method = kh::merge::Method::Ties;
  spec.baseModel = dir + "/m0";
  spec.models = {dir + "/m1", dir + "/m2"};
  spec.layers = layers;
  spec.layerGranularity = 2;
  std::vector<double> x = kh::evolve::initialGenome(spec);
  const uint64_t rss0 = kh::currentRss();
  kh::resetPeakRss();
  kh::merge::InPlaceOptions ipo;
  ipo.cacheBytes = static_cast<uint64_t>(cacheMiB) << 20;
  auto t0 = Clock::now();
  kh::merge::InPlaceMerger merger(kh::evolve::decodeGenome(spec, x), ipo);
  const double first = since(t0);
  const uint64_t afterMerge = kh::peakRss() - rss0;
  kh::resetPeakRss();
  const kh::ModelFolder folder = kh::ModelFolder::open(spec.baseModel);
  const uint64_t resident = folder.weights->parameterCount() * c10::elementSize(merger.model()->dtype());
  // Evaluation: the ja-arith suite's fitness split on the resident model.
  const std::string suitePath = std::string(KH_SOURCE_DIR) + "/resources/suites/ja-arith/suite.yaml";
  kh::eval::Suite suite = kh::eval::loadSuite(suitePath);
  std::shared_ptr<const kh::Tokenizer> tok = folder.requireTokenizer();
  kh::eval::EvalOptions eo;
  eo.limit = items;
  kh::eval::Evaluator ev(suite, tok, kh::eval::PromptFormat::forModel(folder, *tok, "", suite.needsChat()), eo);
  t0 = Clock::now();
  ev.run(*merger.model());
  const double evalSeconds = since(t0);
  const uint64_t afterEval = kh::peakRss() > rss0 ? kh::peakRss() - rss0 : 0;
  kh::resetPeakRss();
  // One layer group changed, each group in turn; then every gene changed.
  double oneGroup = 0;
  size_t tensorsOne = 0;
  for (int64_t g = 0; g < spec.groups(); ++g) {
    for (size_t m = 0; m < spec.models.size(); ++m)
      for (size_t p = 0; p < 2; ++p) x[spec.index(g, m, 0, p)] += 0.01;
    t0 = Clock::now();
    tensorsOne += merger.apply(kh::evolve::decodeGenome(spec, x));
    oneGroup += since(t0);
  }
  oneGroup /= static_cast<double>(spec.groups());
  for (auto& v : x) v -= 0.005;
  t0 = Clock::now();
  const size_t tensorsAll = merger.apply(kh::evolve::decodeGenome(spec, x));
  const double all = since(t0);
  const uint64_t peak = kh::peakRss() > rss0 ? kh::peakRss() - rss0 : 0;
  std::printf("\n3 models x %lld layers, hidden %lld (%s resident, %s input cache)\n", static_cast<long long>(layers),
              static_cast<long long>(hidden), kh::formatBytes(resident).c_str(), kh::formatBytes(ipo.cacheBytes).c_str());
  std::printf("first full merge            %8.3f s\n", first);
  std::printf("evaluation (ja-arith, %zu items) %8.3f s\n", ev.itemCount(), evalSeconds);
  std::printf("merge, one group changed    %8.3f s  (%zu tensors)  %.1f%% of the evaluation\n", oneGroup,
              tensorsOne / static_cast<size_t>(spec.groups()), 100.0 * oneGroup / evalSeconds);
  std::printf("merge, every gene changed   %8.3f s  (%zu tensors)  %.1f%% of the evaluation\n", all, tensorsAll,
              100.0 * all / evalSeconds);
  // The evolution loop's plan (core/evolve/evolution.cpp): resident + cache + merge scratch + scoring.
  kh::merge::MergeOptions mo;
  const kh::merge::MemoryPlan mp = kh::merge::planMerge(kh::evolve::decodeGenome(spec, x), mo);
  const int64_t len = std::max<int64_t>(1, ev.longestSequence());
  const kh::RunMemory rm = kh::estimateRunMemory(folder.config, folder.weights->parameterCount(), kh::st::DType::F32,
                                                 kh::DeviceKind::CPU, len, len);
  const uint64_t scoring = static_cast<uint64_t>(ev.batchSize()) * (rm.kvCache + rm.activations);
  std::printf("peak RSS growth: %s building the resident model, %s while evaluating, %s while re-merging\n",
              kh::formatBytes(afterMerge).c_str(), kh::formatBytes(afterEval).c_str(), kh::formatBytes(peak).c_str());
  std::printf("plan: resident model %s + cache %s + merge scratch %s + scoring %s = %s\n", kh::formatBytes(resident).c_str(),
              kh::formatBytes(merger.cachedBytes()).c_str(), kh::formatBytes(mp.ramPeak).c_str(), kh::formatBytes(scoring).c_str(),
              kh::formatBytes(resident + merger.cachedBytes() + mp.ramPeak + scoring).c_str());
  if (keep.empty()) fs::remove_all(dir);
  return 0;
}
