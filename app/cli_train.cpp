// kumihimo-cli train TRAIN.yaml [-o RUN]: fine-tuning (LoRA or full) with the label audit printed
// first, a progress line (step, loss, tokens/s, ETA), eval lines, and a PEFT adapter plus a merged
// model in the run folder. Ctrl-C stops between steps. Never starts when the audit fails.
#include <atomic>
#include <csignal>
#include <filesystem>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "app/cli_commands.h"
#include "core/error.h"
#include "core/train/trainer.h"

namespace kh::cli {

namespace {
std::atomic<bool> gTrainStop{false};
extern "C" void khTrainOnSigint(int) { gTrainStop = true; }

std::string defaultRunDir() {
  char buf[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&now));
  return std::string("runs/train-") + buf;
}

train::TrainResult start(const std::string& config, const std::string& runDir, const std::function<void(const std::string&)>& print) {
  std::ifstream in(config, std::ios::binary);
  if (!in) throw Error(config, "cannot open the training config");
  std::stringstream text;
  text << in.rdbuf();
  // Paths in TRAIN.yaml are relative to the file, as in EVOLVE.yaml.
  const std::string base = std::filesystem::absolute(config).parent_path().string();
  train::TrainConfig c = train::parseTrainConfig(text.str(), config, base);
  return train::runTraining(c, runDir.empty() ? defaultRunDir() : runDir, print, &gTrainStop);
}

void report(const train::TrainResult& r) {
  std::cout << "run " << r.runDir << ": loss " << r.firstLoss << " -> " << r.finalLoss << ", stop-rate " << r.eval.stopRate() << " ("
            << r.eval.stopped << "/" << r.eval.prompts << ")\n";
  if (!r.adapterDir.empty()) std::cout << "adapter (PEFT): " << r.adapterDir << "\n";
  if (!r.mergedDir.empty()) std::cout << "merged model: " << r.mergedDir << "\n";
}

}  // namespace

void resumeTrainingRun(const std::string& runDir) {
  gTrainStop = false;
  std::signal(SIGINT, khTrainOnSigint);
  report(train::resumeTraining(
      runDir, [](const std::string& s) { std::cerr << s << (s.empty() || s.back() != '\n' ? "\n" : "") << std::flush; }, &gTrainStop));
}

void addTrain(CLI::App& app, Action& run) {
  struct Args {
    std::string config, runDir, resume;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("train", "Fine-tune a model on chat data (LoRA or full) from TRAIN.yaml");
  sub->add_option("config", a->config, "TRAIN.yaml");
  sub->add_option("--resume", a->resume, "go on with this run folder from its last checkpoint (its own config.yaml)");
  sub->add_option("-o,--out", a->runDir, "run folder (default runs/train-DATE)");
  sub->callback([a, &run] {
    run = [a] {
      auto print = [](const std::string& s) { std::cerr << s << (s.empty() || s.back() != '\n' ? "\n" : "") << std::flush; };
      gTrainStop = false;
      std::signal(SIGINT, khTrainOnSigint);
      train::TrainResult r;
      if (!a->resume.empty()) {
        if (!a->config.empty()) throw Error("train", "give either TRAIN.yaml or --resume RUN, not both");
        r = train::resumeTraining(a->resume, print, &gTrainStop);
      } else {
        if (a->config.empty()) throw Error("train", "no TRAIN.yaml given", "kumihimo-cli train TRAIN.yaml [-o RUN]");
        r = start(a->config, a->runDir, print);
      }
      report(r);
    };
  });
}

}  // namespace kh::cli
