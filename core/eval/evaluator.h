// Scores a resident model on a task suite: prompts rendered and tokenised once (the same items
// are scored for hundreds of candidate models in evolution), greedy batched generation for the
// text metrics, batched log-likelihood for multiple choice, per-item records and per-metric means.
// Must never read or write the disk while running (evolution scores models merged in memory);
// writeEvalRun is the separate step that writes a run folder.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/eval/suite.h"
#include "core/text/chat_template.h"

namespace kh {
class Model;
class Tokenizer;
struct ModelFolder;
}  // namespace kh

namespace kh::eval {

// How prompts reach one model: its chat format (for chat tasks) and the ids that end an answer.
struct PromptFormat {
  std::optional<ChatFormat> chat;  // required by chat tasks
  ChatRenderOptions render;        // bos/eos text for the chat template
  std::vector<int> stopIds;        // ModelFolder::stopTokens plus the format's end of turn
  // As ChatSession does: stop ids from the folder; the chat format resolved (override or detected)
  // only when `needChat`, so a raw-prompt suite runs on a model without a chat template.
  static PromptFormat forModel(const ModelFolder& folder, const Tokenizer& tok, const std::string& templateOverride, bool needChat);
};

struct EvalOptions {
  int64_t batchSize = 8;          // rows per generation / scoring batch
  std::string split = "fitness";  // fitness | heldout | all
  int64_t limit = 0;              // at most this many items per task (0 = all), in file order
};

struct EvalProgress {
  size_t done = 0, total = 0;  // items
  std::string task;
};

struct MetricResult {
  std::string metric;  // MetricSpec::name()
  double mean = 0;     // over the task's scored items
  double sum = 0;
  int64_t count = 0;
};

struct TaskResult {
  std::string task;
  double weight = 1;
  size_t fitnessMetric = 0;  // index into metrics
  std::vector<MetricResult> metrics;
};

struct ItemRecord {
  std::string task, id, split;
  std::string prompt;  // the text the model saw (rendered chat, few-shot examples included)
  std::string output;  // generated text; for multiple-choice-only tasks, the chosen choice
  std::vector<std::pair<std::string, double>> scores;  // metric name -> score, in the task's order
  std::string stopReason;  // eos, stop string, length, cancelled; "loglik" for multiple choice only
  int64_t promptTokens = 0, newTokens = 0;
  std::vector<double> choiceLoglik;  // per choice (mc_* tasks), summed log-likelihood
};

struct SuiteResult {
  std::string suite, split;
  std::vector<TaskResult> tasks;
  std::vector<ItemRecord> items;  // task by task, in file order
  double seconds = 0;
  // sum over tasks of weight * mean of the task's fitness metric (not normalised by the weights).
  double fitness() const;
  // {"suite", "split", "fitness", "seconds", "tasks": [{"task", "weight", "fitness_metric",
  //   "metrics": [{"metric", "mean", "count"}]}]}
  nlohmann::ordered_json summaryJson() const;
  nlohmann::ordered_json itemJson(const ItemRecord& r) const;
};

class Evaluator {
 public:
  // Renders and tokenises the selected items of every task. kh::Error when a chat task meets a
  // format without a chat template, or a rendered prompt is refused by it.
  Evaluator(const Suite& suite, std::shared_ptr<const Tokenizer> tokenizer, PromptFormat format, EvalOptions options = {});

  size_t itemCount() const;
  // The longest row a batch will hold (prompt + max_new_tokens, or prompt + choice), for memory plans.
  int64_t longestSequence() const;
  int64_t batchSize() const { return options_.batchSize; }
  // Scores `model` (greedy, temperature 0). `onProgress` after each batch; `cancel` checked between
  // batches and tokens: a cancelled run throws kh::Cancelled. kh::Error naming the item when a
  // prompt does not fit the model's context.
  SuiteResult run(const Model& model, const std::function<void(const EvalProgress&)>& onProgress = {},
                  const std::atomic<bool>* cancel = nullptr) const;

 private:
  struct PreparedItem {
    const TaskItem* item;
    std::string promptText;
    std::vector<int> promptIds;
    std::vector<std::vector<int>> choiceIds;
  };
  struct PreparedTask {
    const TaskSpec* task;
    std::vector<PreparedItem> items;
  };
  std::shared_ptr<const Suite> suite_;  // a copy: items point into it
  std::shared_ptr<const Tokenizer> tok_;
  PromptFormat format_;
  EvalOptions options_;
  std::vector<PreparedTask> tasks_;
};

// Writes RUN_DIR/results.json (summaryJson plus `config`) and RUN_DIR/items.jsonl (one itemJson a
// line), each written to "<name>.partial" first and renamed, so a reader never sees half a file.
void writeEvalRun(const std::string& runDir, const SuiteResult& result, const nlohmann::ordered_json& config);

}  // namespace kh::eval
