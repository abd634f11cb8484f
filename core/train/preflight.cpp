// Training preflight (see preflight.h): the first part of every run (trainInto in trainer.cpp calls
// it), and what the Train view shows before Start. Reads headers, JSON, the tokenizer and the data;
// never tensor data.
#include "core/train/preflight.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/model/model_folder.h"
#include "core/text/tokenizer.h"

namespace kh::train {

TrainPreflight preflightTraining(const TrainConfig& c) { return preflightTraining(c, ModelFolder::open(c.model)); }

TrainPreflight preflightTraining(const TrainConfig& c, const ModelFolder& folder) {
  TrainPreflight p;
  p.tokenizer = folder.requireTokenizer();
  const Tokenizer& tok = *p.tokenizer;
  TemplateContext& tc = p.context;
  tc.format = resolveChatFormat(tok, c.chatTemplate, folder.dir);
  tc.render.bosToken = tok.bosToken();
  tc.render.eosToken = tok.eosToken();
  for (const auto& s : folder.stopTokens) tc.stopIds.push_back(s.id);
  const int eot = tok.pieceToId(endOfTurnText(tc.format, tc.render));
  if (eot >= 0 && std::find(tc.stopIds.begin(), tc.stopIds.end(), eot) == tc.stopIds.end()) tc.stopIds.push_back(eot);
  p.padId = tok.padId().value_or(tok.eosId().value_or(0));

  p.conversations = loadConversations(c.data);
  std::mt19937_64 rng(c.seed);
  if (!c.evalData.empty()) {
    p.heldOut = loadConversations(c.evalData);
  } else if (c.evalSplit > 0 && p.conversations.size() >= 2) {
    std::vector<Conversation> shuffled = p.conversations;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    const size_t nHeld = std::max<size_t>(1, static_cast<size_t>(std::lround(c.evalSplit * static_cast<double>(shuffled.size()))));
    p.heldOut.assign(shuffled.end() - static_cast<long>(nHeld), shuffled.end());
    p.conversations.assign(shuffled.begin(), shuffled.end() - static_cast<long>(nHeld));
  }
  for (const auto& cv : p.conversations) p.examples.push_back(tokenizeConversation(cv, tc, tok, c.labels));
  for (const auto& cv : p.heldOut) p.heldOutExamples.push_back(tokenizeConversation(cv, tc, tok, c.labels));
  p.audit = auditLabels(p.examples, p.conversations, tc, tok);
  const int64_t perStep = c.batchSize * c.gradAccum;
  p.steps = c.steps > 0 ? c.steps
                        : std::max<int64_t>(1, c.epochs * ((static_cast<int64_t>(p.examples.size()) + perStep - 1) / perStep));

  TrainMemoryInput& mi = p.memoryInput;
  mi.method = c.method;
  mi.loraRank = c.rank;
  mi.loraTargets = c.targetModules;
  mi.batch = c.batchSize;
  mi.sequence = std::min<int64_t>(c.labels.maxLength, std::max<int64_t>(1, p.audit.maxLength));
  mi.weightBytesPerParameter = c.dtype == "bf16" || c.dtype == "bfloat16" ? 2 : 4;
  mi.gradientCheckpointing = c.gradientCheckpointing;
  p.memory = estimateTrainMemory(folder.config, folder.weights->parameterCount(), mi);
  p.memoryPlan = "memory plan (batch " + std::to_string(mi.batch) + " x " + std::to_string(mi.sequence) + " tokens" +
                 (c.gradientCheckpointing ? ", gradient checkpointing" : "") + "): " + p.memory.describe();
  return p;
}

}  // namespace kh::train
