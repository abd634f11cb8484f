// Task suites: a YAML file naming JSONL item files and how to score them. loadSuite validates
// everything up front (keys, metrics, every item, regex patterns, numeric references) so that an
// evaluation never fails half-way on bad input. Must never touch a model or a tokenizer.
//
//   name: persona-qa                  # required
//   tasks:                            # required, non-empty
//     - name: persona                 # required, unique
//       data: persona.jsonl           # required; relative to the suite file
//       metrics: [char_f1, contains]  # required; a name, "numeric+japanese", or
//                                     #   {name: regex, pattern: "...", japanese: true}
//       weight: 1.0                   # in SuiteResult::fitness (default 1)
//       fitness_metric: char_f1       # the metric fitness uses (default: the first)
//       chat: true                    # render through the model's chat template (default false)
//       system: "..."                 # system prompt (chat only)
//       few_shot: 2                   # the first k items of split "fewshot" become examples (default 0)
//       few_shot_data: shots.jsonl    # ... taken from this file instead of `data`
//       few_shot_separator: "\n\n"    # between raw-prompt examples (default "\n\n")
//       max_new_tokens: 64            # default 128
//       stop: ["\n\n"]                # stop strings (default none; chat also stops at end of turn)
//
// Items, one JSON object a line:
//   {"id": "q1", "prompt": "..." | "messages": [{"role": "user", "content": "..."}, ...],
//    "references": ["..."] (or "reference": "..."), "choices": ["...", ...], "target": "...",
//    "split": "fitness" | "heldout" | "fewshot"}
// "split" defaults to "fitness". "target" is the answer text shown when the item is a few-shot
// example (default: the first reference). "choices" are required by the mc_* metrics, and then
// every reference must be one of them. "messages" need chat: true.
#pragma once

#include <string>
#include <vector>

#include "core/eval/metrics.h"
#include "core/text/chat_template.h"

namespace kh::eval {

struct TaskItem {
  std::string id;                     // "id" from the file, else "<file name>:<line>"
  std::string where;                  // "<path>:<line>", for messages
  std::string prompt;                 // raw text (when messages is empty)
  std::vector<ChatMessage> messages;  // chat messages (instead of prompt)
  std::vector<std::string> references;
  std::vector<std::string> choices;
  std::string target;                 // few-shot answer text
  std::string split = "fitness";
};

struct TaskSpec {
  std::string name;
  std::string dataPath;  // resolved path
  std::vector<MetricSpec> metrics;
  size_t fitnessMetric = 0;  // index into metrics
  double weight = 1.0;
  bool chat = false;
  std::string system;
  int64_t fewShot = 0;
  std::string fewShotSeparator = "\n\n";
  int64_t maxNewTokens = 128;
  std::vector<std::string> stopStrings;
  std::vector<TaskItem> items;     // splits fitness and heldout, in file order
  std::vector<TaskItem> examples;  // the few-shot examples (exactly fewShot of them)
  bool needsGeneration() const;    // any metric that scores generated text
  bool needsChoices() const;       // any mc_* metric
};

struct Suite {
  std::string name;
  std::string path;  // the YAML file
  std::vector<TaskSpec> tasks;
  bool needsChat() const;
};

// kh::Error("<file>:<line>", cause) for bad YAML, a missing or unknown key, an unknown metric, a
// missing data file, and any bad item (bad JSON, no prompt, no reference, unknown split, a reference
// that is not a choice, a numeric reference with no number, a regex that does not compile).
Suite loadSuite(const std::string& path);

// Splits an evaluation can select: "fitness", "heldout", "all" (both). kh::Error otherwise.
void validateSplit(const std::string& split);
bool splitSelected(const std::string& itemSplit, const std::string& selected);

}  // namespace kh::eval
