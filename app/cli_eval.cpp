// kumihimo-cli eval: scores a model folder on a task suite, prints a per-metric table and writes a
// run folder (results.json, items.jsonl). Thin: the work is core/eval's Evaluator.
#include <ATen/ATen.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "app/cli_commands.h"
#include "app/progress_line.h"
#include "core/error.h"
#include "core/eval/evaluator.h"
#include "core/model/runtime.h"
#include "core/text/tokenizer.h"

namespace kh::cli {

namespace {

// runs/<yyyymmdd-hhmmss>-eval-<suite>, as DESIGN.md's run folders; "-2", "-3" ... when taken.
std::string defaultRunDir(const std::string& suite) {
  std::string safe;
  for (char c : suite) safe += (isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::ostringstream o;
  o << "runs/" << std::put_time(&tm, "%Y%m%d-%H%M%S") << "-eval-" << safe;
  std::string dir = o.str();
  for (int k = 2; std::filesystem::exists(dir); ++k) dir = o.str() + "-" + std::to_string(k);
  return dir;
}

std::string formatTable(const eval::SuiteResult& r) {
  size_t wTask = 4, wMetric = 6;
  for (const auto& t : r.tasks) {
    wTask = std::max(wTask, t.task.size());
    for (const auto& m : t.metrics) wMetric = std::max(wMetric, m.metric.size());
  }
  std::ostringstream o;
  o << std::left << std::setw(static_cast<int>(wTask)) << "task" << "  " << std::setw(static_cast<int>(wMetric)) << "metric"
    << "  " << std::right << std::setw(7) << "mean" << "  " << std::setw(5) << "n" << "\n";
  for (const auto& t : r.tasks)
    for (const auto& m : t.metrics)
      o << std::left << std::setw(static_cast<int>(wTask)) << t.task << "  " << std::setw(static_cast<int>(wMetric)) << m.metric
        << "  " << std::right << std::setw(7) << std::fixed << std::setprecision(4) << m.mean << "  " << std::setw(5) << m.count
        << "\n";
  o << "fitness (weighted sum of each task's fitness metric): " << std::fixed << std::setprecision(4) << r.fitness() << "\n";
  return o.str();
}

}  // namespace

void addEval(CLI::App& app, Action& run) {
  struct Args {
    ModelArgs m;
    std::string suite, out, split = "fitness", templ;
    int64_t limit = 0, batchSize = 8;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("eval", "Score a model on a task suite (YAML + JSONL); print a table, write a run folder");
  addModelArgs(sub, a->m);
  sub->add_option("SUITE", a->suite, "Suite file (YAML)")->required();
  sub->add_option("-o,--out", a->out, "Run folder (default: runs/<yyyymmdd-hhmmss>-eval-<suite name>)");
  sub->add_option("--split", a->split, "fitness | heldout | all")->default_val("fitness");
  sub->add_option("--limit", a->limit, "At most N items per task (0 = all)")->default_val(0);
  sub->add_option("--batch-size", a->batchSize, "Prompts per batch")->default_val(8);
  sub->add_option("--template", a->templ, "Chat format override: " + chatFormatNames());
  sub->callback([a, &run]() { run = [a]() {
    // Everything about the input is checked before the model is loaded.
    eval::validateSplit(a->split);
    if (a->batchSize < 1) throw Error("--batch-size", "must be at least 1");
    if (a->limit < 0) throw Error("--limit", "must be 0 (all) or positive");
    const eval::Suite suite = eval::loadSuite(a->suite);
    auto [folder, tok, model] = loadModel(a->m);
    eval::EvalOptions eo;
    eo.batchSize = a->batchSize;
    eo.split = a->split;
    eo.limit = a->limit;
    eval::Evaluator evaluator(suite, tok, eval::PromptFormat::forModel(folder, *tok, a->templ, suite.needsChat()), eo);
    const std::string runDir = a->out.empty() ? defaultRunDir(suite.name) : a->out;
    std::cerr << "evaluating " << folder.dir << " on " << suite.name << " (" << evaluator.itemCount() << " items, split "
              << a->split << ", " << c10::toString(model->dtype()) << " on " << model->device() << ")\n";
    ProgressLine line;
    auto result = evaluator.run(*model, [&line](const eval::EvalProgress& p) {
      line.show(p.total ? static_cast<double>(p.done) / static_cast<double>(p.total) : -1.0,
                std::to_string(p.done) + "/" + std::to_string(p.total) + " items  (" + p.task + ")");
    });
    line.end();
    nlohmann::ordered_json config;
    config["command"] = "eval";
    config["version"] = KH_VERSION;
    config["model"] = folder.dir;
    config["suite"] = a->suite;
    config["split"] = a->split;
    config["limit"] = a->limit;
    config["batch_size"] = a->batchSize;
    config["device"] = a->m.device;
    config["dtype"] = c10::toString(model->dtype());
    config["template"] = a->templ;
    eval::writeEvalRun(runDir, result, config);
    std::cout << formatTable(result) << "wrote " << runDir << " (results.json, items.jsonl; " << result.items.size()
              << " items, " << std::fixed << std::setprecision(1) << result.seconds << " s)\n";
  }; });
}

}  // namespace kh::cli
