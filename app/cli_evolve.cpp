// kumihimo-cli evolve / resume: the evolutionary merge search, headless, with a progress line.
// Ctrl-C stops between candidates; the run folder keeps the last finished generation, and
// `resume RUN` goes on from there.
#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "app/cli_commands.h"
#include "app/progress_line.h"
#include "core/error.h"
#include "core/evolve/evolution.h"
#include "core/merge/executor.h"
#include "core/merge/recipe.h"
#include "core/train/trainer.h"

namespace kh::cli {

namespace {

std::atomic<bool> gStop{false};
extern "C" void khEvolveOnSigint(int) { gStop = true; }

struct EvolveArgs {
  std::string config, runDir, writeModel;
};

// The generation line, shared by the options' callbacks and finish().
ProgressLine& evolveLine() {
  static ProgressLine line;
  return line;
}

evolve::EvolveOptions consoleOptions() {
  evolve::EvolveOptions o;
  gStop = false;
  std::signal(SIGINT, khEvolveOnSigint);
  o.cancel = &gStop;
  o.onLog = [](const std::string& s) { evolveLine().log(s); };
  o.onProgress = [](const evolve::EvolveProgress& p) {
    const int width = 20, filled = p.population ? width * p.index / p.population : 0;
    std::ostringstream s;
    s << "generation " << p.generation + 1;
    if (p.generations > 0) s << "/" << p.generations;
    s << " [" << std::string(static_cast<size_t>(filled), '#') << std::string(static_cast<size_t>(width - filled), ' ') << "] "
      << p.index << "/" << p.population;
    if (p.hasBest) s << "  best " << std::setprecision(5) << p.bestFitness;
    s << "  " << std::fixed << std::setprecision(0) << p.elapsedSeconds << " s";
    // Known fraction when the generation count is: (candidates done) / (all of them).
    const double fraction = p.generations > 0 && p.population > 0
                                ? (static_cast<double>(p.generation) * p.population + p.index) /
                                      (static_cast<double>(p.generations) * p.population)
                                : -1.0;
    evolveLine().show(fraction, s.str());
  };
  return o;
}

void finish(const evolve::EvolveSummary& s, const std::string& writeModel) {
  evolveLine().end();
  std::cout << "run " << s.runDir << ": " << s.generations << " generations, " << s.evaluations << " candidates, stopped by "
            << s.stopReason << "\n";
  if (s.bestRecipePath.empty()) return;
  std::cout << "best fitness " << std::setprecision(6) << s.bestFitness << ", recipe " << s.bestRecipePath << "\n";
  if (writeModel.empty()) return;
  merge::MergeOptions mo;
  mo.outDir = writeModel;
  // Ctrl-C still reaches this merge (the handler above stays): it stops at the next chunk and
  // leaves no partial folder. A Ctrl-C that stopped the search itself does not cancel it.
  gStop = false;
  mo.cancel = &gStop;
  merge::runMerge(merge::loadRecipe(s.bestRecipePath), mo);
  std::cout << "wrote the best merge to " << writeModel << "\n";
}

}  // namespace

void addEvolve(CLI::App& app, Action& run) {
  auto a = std::make_shared<EvolveArgs>();
  auto* sub = app.add_subcommand("evolve", "Evolve a merge recipe with CMA-ES (in-place candidates, resumable run folder)");
  sub->add_option("config", a->config, "EVOLVE.yaml")->required();
  sub->add_option("-o,--out", a->runDir, "Run folder (default: runs/evolve-<config>-<time>)");
  sub->add_option("--write-model", a->writeModel, "Also merge the best recipe into this folder at the end");
  sub->callback([a, &run]() { run = [a]() {
    auto config = evolve::loadEvolveConfig(a->config);
    std::string dir = a->runDir;
    if (dir.empty()) {
      std::time_t now = std::time(nullptr);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
      dir = "runs/evolve-" + std::filesystem::path(a->config).stem().string() + "-" + stamp;
      std::filesystem::create_directories("runs");
    }
    std::cerr << "run folder " << dir << " (continue it with: kumihimo-cli resume " << dir << ")\n";
    finish(evolve::startEvolution(config, dir, consoleOptions()), a->writeModel);
  }; });
}

void addResume(CLI::App& app, Action& run) {
  auto a = std::make_shared<EvolveArgs>();
  auto* sub = app.add_subcommand("resume", "Continue an evolution run from its last finished generation (or a training run from its last checkpoint)");
  sub->add_option("run", a->runDir, "Run folder")->required();
  sub->add_option("--config", a->config, "Check that the run was started with this EVOLVE.yaml");
  sub->add_option("--write-model", a->writeModel, "Also merge the best recipe into this folder at the end");
  sub->callback([a, &run]() { run = [a]() {
    if (train::isTrainingRun(a->runDir)) return resumeTrainingRun(a->runDir);  // same as train --resume RUN
    finish(evolve::resumeEvolution(a->runDir, consoleOptions(), a->config), a->writeModel);
  }; });
}

}  // namespace kh::cli
