// What a training run does before it trains anything: the chat format and stop ids, the data read,
// split into train / held-out and tokenized, and the label audit. For front ends that show the audit
// (and the planned step count) without starting a run. Must never load the model's weights.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/train/data.h"
#include "core/train/trainer.h"

namespace kh::train {

struct TrainPreflight {
  TemplateContext context{ChatFormat::Gemma, {}, {}};
  std::shared_ptr<Tokenizer> tokenizer;
  std::vector<Conversation> conversations, heldOut;  // the training split and the held-out one
  std::vector<TokenizedExample> examples, heldOutExamples;
  LabelAudit audit;  // exactly what runTraining prints and writes to audit.txt (shown = 2)
  int64_t steps = 0;  // optimizer steps the run will take
};

// Reads and tokenizes as runTraining does (same split for the same seed) and audits the labels.
// kh::Error for a model folder without a tokenizer, or data that does not load or tokenize.
TrainPreflight preflightTraining(const TrainConfig& c);

}  // namespace kh::train
