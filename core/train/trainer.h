// Fine-tuning a resident model on chat data: LoRA (rank, alpha, dropout, target modules by name
// pattern, rsLoRA) or full fine-tuning, AdamW with weight decay, cosine/linear schedule with warm-up,
// gradient accumulation and clipping, a fixed seed, held-out eval (loss and stop-rate), a run folder
// with metrics.jsonl and atomic checkpoints, and export as a PEFT adapter and a merged HF folder.
// Must never start a run whose label audit fails (unless allow_unterminated), nor mask labels by id.
#pragma once

#include <ATen/Tensor.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/train/data.h"

namespace kh {

class Model;
struct ModelFolder;

namespace train {

struct TrainConfig {
  std::string model;         // base model folder
  std::string data;          // JSONL
  std::string evalData;      // optional JSONL; else eval_split of data
  double evalSplit = 0.1;
  std::string chatTemplate;  // "" = the model's own
  std::string method = "lora";  // lora | full
  // LoRA
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::string targetModules = "q_proj|v_proj";  // regex searched in module names
  bool rsLora = false;
  // optimisation
  double learningRate = 2e-4;
  double weightDecay = 0.0;
  std::string schedule = "cosine";  // cosine | linear | constant
  int64_t warmupSteps = 0;
  int64_t steps = 0;   // optimizer steps; 0 = epochs * ceil(n / (batch * accum))
  int64_t epochs = 1;
  int64_t batchSize = 4;
  int64_t gradAccum = 1;
  double clipNorm = 1.0;  // 0 = off
  uint64_t seed = 0;
  // data
  LabelOptions labels;
  bool allowUnterminated = false;
  // eval and saving
  int64_t evalEvery = 0;      // steps; 0 = only at the end
  int64_t evalPrompts = 16;   // held-out prompts answered greedily for the stop-rate
  int64_t evalMaxNewTokens = 64;
  int64_t saveEvery = 0;      // steps; 0 = only at the end
  // Memory: recompute each decoder layer's forward in backward instead of keeping its activations.
  bool gradientCheckpointing = false;
  // Weights' compute dtype: fp32 or bf16 (bfloat16). With bf16 the base weights are bf16 while LoRA
  // A/B, full fine-tuning's master weights, AdamW moments, logits and the loss stay fp32.
  std::string dtype = "fp32";
  std::string device = "cpu";
  bool exportMerged = true;
  std::string mergedDtype;  // "" = the base's stored dtypes; fp32 | bf16 | fp16
  std::string yamlText;  // the config as given (copied to the run folder)
  std::string baseDir;   // where its relative paths start (recorded in state.json for resume)
};

// The `dtype` values training runs in (fp32 | bf16; float32 and bfloat16 are read as these).
const std::vector<std::string>& trainingDtypes();

// Parses TRAIN.yaml text; kh::Error(where, ...) naming the key for unknown keys or bad values.
// Relative model/data/eval_data paths are taken from `baseDir` (the config file's folder, as
// evolution does) when it is given, and made absolute.
TrainConfig parseTrainConfig(const std::string& yamlText, const std::string& where, const std::string& baseDir = "");

// ---- LoRA ----
struct LoraSpec {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::string targetModules = "q_proj|v_proj";
  bool rsLora = false;
  double scale() const;
};
// Module names ("model.layers.0.self_attn.q_proj") of the model's linear layers matching the pattern;
// kh::Error naming the pattern when none matches.
std::vector<std::string> loraTargets(const Model& m, const std::string& pattern);
// Attaches fresh adapters (A: kaiming-uniform as PEFT, B: zero) requiring grad; returns the modules.
// Adapters are fp32 whatever the model's dtype (fp64 for an fp64 model: gradient checks).
std::vector<std::string> attachLora(Model& m, const LoraSpec& spec, uint64_t seed);
// PEFT adapter folder: adapter_config.json + adapter_model.safetensors (fp32).
void exportPeftAdapter(const Model& m, const LoraSpec& spec, const std::string& baseModel, const std::string& outDir);
// Reads a PEFT adapter folder onto a model (adapters in the model's dtype); returns the spec read.
LoraSpec loadPeftAdapter(Model& m, const std::string& adapterDir);
// Writes `base` with the model's current weights (adapters merged: W + scale B A in fp32, cast to the
// stored dtype) as a complete HF folder beside `outDir`, renamed into place when complete.
// `dtype`: "" keeps each tensor's stored dtype, else "fp32", "bf16" or "fp16" for every tensor.
void exportMerged(const Model& m, const ModelFolder& base, const std::string& outDir, const std::string& dtype = "");

// ---- batches and loss ----
struct Batch {
  at::Tensor ids;        // [B, T] int64, padding = padId
  at::Tensor positions;  // [B, T] int64, -1 = padding
  at::Tensor trained;    // [B, T] bool: loss on predicting ids[b, t] (never true at padding)
  int64_t trainedTokens = 0;
};
// Right-pads to the longest example. The label mask comes from positions, never from token ids.
Batch collate(const std::vector<const TokenizedExample*>& xs, int padId);
// Mean cross-entropy over trained tokens (fp32 scalar, differentiable). Returns an undefined tensor
// when the batch has nothing to train.
at::Tensor batchLoss(const Model& m, const Batch& b);

// ---- evaluation ----
struct EvalResult {
  double loss = 0;
  int64_t prompts = 0, stopped = 0;
  double stopRate() const { return prompts ? double(stopped) / double(prompts) : 0.0; }
  double meanGenerated = 0, meanReference = 0;  // tokens
};
EvalResult evaluate(const Model& m, const Tokenizer& tok, const std::vector<TokenizedExample>& heldOut,
                    const std::vector<int>& stopIds, int64_t prompts, int64_t maxNewTokens, int padId);

// ---- a run ----
// One optimizer step done, as the progress line prints it (step is 1-based; ETA from the mean step
// time so far). Reported after every step, whatever the line's log interval.
struct TrainProgress {
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, tokensPerSecond = 0, etaSeconds = 0;
};
using TrainProgressFn = std::function<void(const TrainProgress&)>;
struct TrainResult {
  std::string runDir, adapterDir, mergedDir;
  double firstLoss = 0, finalLoss = 0;
  EvalResult eval;
  LabelAudit audit;
};
// Runs the whole job into `runDir` (created; kh::Error when it exists). `onLine` gets the audit, the
// memory plan and the progress lines; `onProgress` (optional) the same progress as numbers, every
// step. kh::Error before any training when the audit fails (see allowUnterminated).
TrainResult runTraining(const TrainConfig& c, const std::string& runDir, const std::function<void(const std::string&)>& onLine = {},
                        const std::atomic<bool>* cancel = nullptr, const TrainProgressFn& onProgress = {});
// Whether `dir` is a training run folder (its state.json says kind: train).
bool isTrainingRun(const std::string& dir);
// Goes on from the run folder's last checkpoint (save_every, or the one written when cancelled) with
// the run's own config.yaml: parameters, AdamW moments and the data order are restored, so the
// remaining steps are those the uninterrupted run would have taken. kh::Error for a folder that is
// not a training run, is finished, or has no checkpoint.
TrainResult resumeTraining(const std::string& runDir, const std::function<void(const std::string&)>& onLine = {},
                           const std::atomic<bool>* cancel = nullptr, const TrainProgressFn& onProgress = {});

}  // namespace train
}  // namespace kh
