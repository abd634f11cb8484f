// kumihimo-cli train TRAIN.yaml [-o RUN]: fine-tuning (LoRA or full) with the label audit printed
// first, a progress line (step, loss, tokens/s, ETA), eval lines, and a PEFT adapter plus a merged
// model in the run folder. Ctrl-C stops between steps. Never starts when the audit fails.
#include <atomic>
#include <csignal>
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
}  // namespace

void addTrain(CLI::App& app, Action& run) {
  struct Args {
    std::string config, runDir;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("train", "Fine-tune a model on chat data (LoRA or full) from TRAIN.yaml");
  sub->add_option("config", a->config, "TRAIN.yaml")->required();
  sub->add_option("-o,--out", a->runDir, "run folder (default runs/train-DATE)");
  sub->callback([a, &run] {
    run = [a] {
      std::ifstream in(a->config, std::ios::binary);
      if (!in) throw Error(a->config, "cannot open the training config");
      std::stringstream text;
      text << in.rdbuf();
      train::TrainConfig c = train::parseTrainConfig(text.str(), a->config);
      gTrainStop = false;
      std::signal(SIGINT, khTrainOnSigint);
      const std::string dir = a->runDir.empty() ? defaultRunDir() : a->runDir;
      train::TrainResult r = train::runTraining(
          c, dir, [](const std::string& s) { std::cerr << s << (s.empty() || s.back() != '\n' ? "\n" : "") << std::flush; },
          &gTrainStop);
      std::cout << "run " << r.runDir << ": loss " << r.firstLoss << " -> " << r.finalLoss << ", stop-rate " << r.eval.stopRate()
                << " (" << r.eval.stopped << "/" << r.eval.prompts << ")\n";
      if (!r.adapterDir.empty()) std::cout << "adapter (PEFT): " << r.adapterDir << "\n";
      if (!r.mergedDir.empty()) std::cout << "merged model: " << r.mergedDir << "\n";
    };
  });
}

}  // namespace kh::cli
