// Log-likelihood of given continuations after given contexts, batched: what multiple-choice and
// log-likelihood evaluation tasks use. Contexts and continuations are token ids; each pair is
// scored as sum over the continuation of log p(token | everything before it).
// Never lets one row's padding or length change another row's score.
#pragma once

#include <vector>

#include "core/model/runtime.h"

namespace kh {

struct ContinuationScore {
  double logLikelihood = 0;  // sum of log-probabilities of the continuation tokens
  int64_t tokens = 0;        // continuation length
  bool greedy = false;       // every continuation token was the argmax (lm-eval's "is_greedy")
};

// Scores pairs (contexts[i], continuations[i]) in batches of `batchSize`, left-padded so that all
// rows end together. Empty contexts or continuations, and pairs longer than the model's context,
// are kh::Error naming the pair.
std::vector<ContinuationScore> scoreContinuations(const Model& model, const std::vector<std::vector<int>>& contexts,
                                                  const std::vector<std::vector<int>>& continuations,
                                                  int64_t batchSize = 8);

}  // namespace kh
