// Text generation on a resident Model: greedy or sampled (temperature, top-k, top-p, min-p,
// repetition penalty, fixed seed), stopping on stop ids (eos list + end of turn), stop strings or
// the length limit, streaming complete UTF-8 text through a callback. Never emits a partial
// character or any part of a stop string.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/model/runtime.h"
#include "core/text/tokenizer.h"

namespace kh {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy
  int64_t topK = 0;          // 0 = off
  double topP = 1.0;         // (0, 1]
  double minP = 0.0;         // [0, 1)
  double repetitionPenalty = 1.0;  // > 0; 1 = off (transformers' rule: divide positive, multiply negative logits)
  uint64_t seed = 0;
  int64_t maxNewTokens = 256;
  std::vector<std::string> stopStrings;
};

// kh::Error naming the flag for a value no sampler can use (negative temperature, top_p outside (0, 1], ...).
void validateSampling(const SamplingOptions& o);

enum class StopReason { Eos, StopString, Length, Cancelled };
const char* stopReasonName(StopReason r);

struct GenerationResult {
  std::vector<int> ids;  // generated ids (the stop token included when it caused the stop)
  std::string text;      // what was streamed: no stop token text, cut before a stop string
  StopReason reason = StopReason::Length;
  int64_t promptTokens = 0;
  double timeToFirstTokenMs = 0;  // prompt in -> first new token out
  double tokensPerSecond = 0;     // decode speed after the first token
};

// `stopIds`: every id that ends the answer (ModelFolder::stopTokens). `onText` receives text as it
// becomes final. `cancel` (optional) is checked between tokens. The prompt must fit the model's
// context together with maxNewTokens; kh::Error otherwise (or for an empty prompt).
GenerationResult generate(const Model& model, const Tokenizer& tokenizer, const std::vector<int>& promptIds,
                          const std::vector<int>& stopIds, const SamplingOptions& options,
                          const std::function<void(const std::string&)>& onText = {},
                          const std::atomic<bool>* cancel = nullptr);

// Several prompts at once: left-padded into one batch with one KV cache, each row stopping on its own
// (stop ids, stop strings, its length limit). Every row gets exactly what generate() gives for that
// prompt alone with the same options (each row has its own generator seeded with options.seed), as
// far as the batched forward matches the single one (it does to the last bit on CPU fp32 for the
// tiny models the tests use; elsewhere near-ties can differ). Finished rows are fed padding.
// kh::Error naming the prompt for an empty one or one that does not fit the context.
std::vector<GenerationResult> generateBatch(const Model& model, const Tokenizer& tokenizer,
                                            const std::vector<std::vector<int>>& prompts, const std::vector<int>& stopIds,
                                            const SamplingOptions& options, const std::atomic<bool>* cancel = nullptr);

// The next-token choice alone (for tests and scoring tools): logits [V] fp32 CPU, the ids so far.
int64_t sampleNext(const at::Tensor& logits, const std::vector<int>& history, const SamplingOptions& o, at::Generator& gen);

}  // namespace kh
