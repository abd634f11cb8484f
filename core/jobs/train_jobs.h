// The torch-free facade for fine-tuning (see jobs.h for the rules): TRAIN.yaml as a form edits it,
// its validation, the label audit as data a view can draw (without training anything), starting and
// resuming a run with progress callbacks and a cancel flag, and where a run's models are.
// Must include only std and nlohmann headers: widgets include it and must never see ATen or torch.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace kh::jobs {

// TRAIN.yaml (core/train/trainer.h's TrainConfig) as the Train view edits it; paths as written,
// relative to the file's folder. Keys the form does not know are kept as written (`extra`, YAML
// text per key) so a config for a newer engine survives a round trip; the engine judges them.
struct TrainForm {
  std::string model, data, evalData;
  double evalSplit = 0.1;
  std::string chatTemplate;      // "" = the model's own
  std::string method = "lora";   // lora | full
  int64_t rank = 8;
  double alpha = 16, dropout = 0.0;
  std::string targetModules = "q_proj|v_proj";
  bool rsLora = false;
  double learningRate = 2e-4, weightDecay = 0.0;
  std::string schedule = "cosine";  // cosine | linear | constant
  int64_t warmupSteps = 0, steps = 0, epochs = 1, batchSize = 4, gradAccum = 1;
  double clipNorm = 1.0;
  uint64_t seed = 0;
  int64_t maxLength = 512;
  std::string labels = "assistant";  // assistant | all | last_turn
  bool maskEndOfTurn = false, allowUnterminated = false;
  int64_t evalEvery = 0, evalPrompts = 16, evalMaxNewTokens = 64, saveEvery = 0;
  bool gradientCheckpointing = false;  // recompute each layer in backward: less memory, ~1/3 more time
  std::string dtype = "fp32", device = "cpu";  // dtype: one of trainingDtypes()
  bool exportMerged = true;
  std::string mergedDtype;
  std::vector<std::pair<std::string, std::string>> extra;
  bool operator==(const TrainForm& o) const;
};
// kh::Error("TRAIN.yaml:<line>", cause) for bad YAML, a value of the wrong type or out of range.
TrainForm parseTrainForm(const std::string& yamlText);
std::string trainFormToYaml(const TrainForm& form);
// The training dtypes the engine accepts, in the order a form offers them.
std::vector<std::string> trainingDtypes();
// Everything the engine checks before it trains, with the config saved at `configPath`: the form,
// the engine's own parse, the model folder, the data. "" when valid, else one line naming the file
// (and line) and the cause.
std::string validateTrainConfig(const std::string& configPath);

// The training memory plan (core/train/train_memory.h): an estimate of what one step holds on the
// device, made from the config, the model's weight headers and the longest example; nothing loaded.
struct TrainMemoryPlan {
  uint64_t weights = 0, trainable = 0, activations = 0, logits = 0, total = 0;  // bytes
  int64_t batch = 0, sequence = 0;
  bool gradientCheckpointing = false;
  std::string line;  // exactly the "memory plan (...)" line a run prints before it loads the model
};

// The label audit, as the view shows it.
struct AuditToken {
  std::string piece;  // the token as the tokenizer spells it ("\n" written as \n)
  bool trained = false;
  bool stop = false;  // one of the ids that end an answer
  bool endsAnswer = false;  // the stop token that ends an assistant answer (must be trained)
};
struct AuditExample {
  std::string source;  // "data.jsonl:12"
  std::vector<AuditToken> tokens;
  int64_t fullLength = 0;
  bool cut = false;
};
struct TrainAudit {
  bool ok = false;  // every complete answer ends on a trained stop token
  double stopShare = 0;
  int64_t examples = 0, tokens = 0, trainedTokens = 0, assistantTurns = 0, terminatedTurns = 0;
  int64_t cutTurns = 0, cutExamples = 0;
  int64_t minLength = 0, medianLength = 0, p90Length = 0, maxLength = 0, maxLengthSetting = 0;
  std::vector<int64_t> lengths;       // every training example's length before cutting
  std::vector<AuditExample> shown;    // the first few examples, token by token
  std::string format;                 // chat format name
  std::vector<std::string> stopTokens;  // "107 <end_of_turn>"
  std::string chatDiff;  // the training-vs-chat rendering line ("identical, 12 tokens" / "DIFFER at ...")
  int64_t steps = 0, heldOutExamples = 0;
  std::string report;  // the audit exactly as the CLI prints it and audit.txt holds it
  TrainMemoryPlan memory;
};
// Loads the config at `configPath`, audits its labels and plans the memory, by the code a run starts
// with (core/train/preflight.h); nothing is trained or written.
// kh::Error (one line) for a bad config, model or data.
TrainAudit auditTrainConfig(const std::string& configPath, int shown = 4);

// Progress of a run, after every optimizer step (the engine's structured progress, not its text).
struct TrainStatus {
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, tokensPerSecond = 0, etaSeconds = 0;
};
struct TrainCallbacks {
  std::function<void(const TrainStatus&)> onProgress;
  std::function<void(const std::string&)> onLog;  // audit, progress and eval lines
  const std::atomic<bool>* cancel = nullptr;      // cancelled: kh::Cancelled, folder resumable
};
struct TrainOutcome {
  std::string runDir, adapterDir, mergedDir;
  double firstLoss = 0, finalLoss = 0, stopRate = 0;
};
// Trains with the config at `configPath` into `runDir` (which must not exist). kh::Error before
// anything is written when the audit fails (unless allow_unterminated).
TrainOutcome startTraining(const std::string& configPath, const std::string& runDir, const TrainCallbacks& cb);
// Goes on from a stopped run's last checkpoint.
TrainOutcome resumeTraining(const std::string& runDir, const TrainCallbacks& cb);

// What a training run folder holds.
struct TrainRunModels {
  bool isTrainingRun = false, finished = false, resumable = false;
  std::string baseModel;  // absolute
  std::string mergedDir;  // "" when the run has no merged/ (yet)
  std::string adapterDir; // "" when it has no adapter/
  int64_t step = 0, steps = 0;
};
TrainRunModels trainRunModels(const std::string& runDir);  // never throws
// Writes <runDir>/merged from the base and <runDir>/adapter (runs without export_merged), so the
// fine-tuned model can be opened like any model folder; returns its path. kh::Error when the run has
// no adapter.
std::string mergeTrainedAdapter(const std::string& runDir, const std::string& device = "cpu");

}  // namespace kh::jobs
