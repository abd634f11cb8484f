// What a training run does before it trains anything: the chat format and stop ids, the data read,
// split into train / held-out and tokenized, the label audit, the step count and the memory plan.
// trainInto runs exactly this, and front ends show it without starting a run, so the audit a view
// shows and a run's audit.txt come from one code path. Must never load the model's weights.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/train/data.h"
#include "core/train/train_memory.h"
#include "core/train/trainer.h"

namespace kh {
struct ModelFolder;
}

namespace kh::train {

struct TrainPreflight {
  TemplateContext context{ChatFormat::Gemma, {}, {}};
  std::shared_ptr<Tokenizer> tokenizer;
  std::vector<Conversation> conversations, heldOut;  // the training split and the held-out one
  std::vector<TokenizedExample> examples, heldOutExamples;
  LabelAudit audit;  // exactly what runTraining prints and writes to audit.txt (shown = 2)
  int64_t steps = 0;  // optimizer steps the run will take
  int padId = 0;      // what batches are padded with
  // The training memory plan (an estimate, see train_memory.h) for the longest example as cut.
  TrainMemoryInput memoryInput;
  TrainMemory memory;
  std::string memoryPlan;  // the line runTraining prints before it loads the model
};

// Reads and tokenizes as runTraining does (same split for the same seed) and audits the labels.
// kh::Error for a model folder without a tokenizer, or data that does not load or tokenize.
TrainPreflight preflightTraining(const TrainConfig& c);
// The same with the model folder already open (config, tokenizer and weight headers are read from it).
TrainPreflight preflightTraining(const TrainConfig& c, const ModelFolder& folder);

}  // namespace kh::train
