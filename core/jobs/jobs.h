// The torch-free facade the workbench (and any light front end) drives the engine through: plain
// structs and functions, callbacks for progress and logs, an atomic flag for cancellation.
// Must include only std and nlohmann headers: widgets include it and must never see ATen or torch.
// Functions throw kh::Error (core/error.h) for bad input; jobMessage() turns any exception into
// the one line a user sees.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kh::jobs {

// The one-line message of a failed job ("cancelled" for kh::Cancelled).
std::string jobMessage(const std::exception_ptr& e);

// ---- models -------------------------------------------------------------------------------------

struct ModelInfo {
  std::string dir;
  nlohmann::ordered_json report;  // core/model/inspect.h's JSON report
  uint64_t memoryBytes = 0;       // to run it on `device` (weights as stored, 4096-token context)
  std::string memoryText;         // "1.23 GiB on cpu (weights 1 GiB, KV cache ...)"
  std::string mergeKey;           // equal keys = same architecture and tensor shapes (mergeable)
};
// Inspects a model folder (headers and JSON only). kh::Error for a folder that is not a model.
ModelInfo inspectModelFolder(const std::string& dir, const std::string& device = "cpu");
// A short human summary (architecture, parameters, dtype, size, vocab, stop ids, template family).
std::string describeModel(const ModelInfo& info);
// Empty when a and b can merge; else why not (first differing tensor).
std::string mergeIncompatibility(const ModelInfo& a, const ModelInfo& b);

// This process's resident memory in bytes (0 where unknown), and bytes as "1.23 GiB".
uint64_t processMemory();
std::string formatBytes(uint64_t bytes);
// Devices this build can run on ("cpu", plus "cuda:N" when a GPU is present).
std::vector<std::string> availableDevices();
// What the engine holds on each GPU, from the CUDA caching allocator ("cuda:0 1.2 GiB (peak
// 3.4 GiB) of 80 GiB"); "" in a build without CUDA (KH_CUDA) or on a machine without a GPU.
std::string deviceMemoryText();

// ---- merge ----------------------------------------------------------------------------------------

struct RecipeError {
  std::string message;
  int line = 0;  // 1-based line in the recipe text, 0 when unknown
};
// The memory plan of a mergekit YAML recipe (relative model paths against baseDir). Throws
// kh::Error ("<file>:<line>: cause") for a bad recipe; recipeErrorOf() extracts the line.
std::string planMergeText(const std::string& yaml, const std::string& baseDir, const std::string& device);
RecipeError recipeErrorOf(const std::string& message);
// Runs the merge into outDir; progress in [0, 1] with the current tensor name.
void runMergeText(const std::string& yaml, const std::string& baseDir, const std::string& outDir,
                  const std::string& device, const std::function<void(double, const std::string&)>& onProgress,
                  const std::atomic<bool>* cancel);

// ---- evolve ---------------------------------------------------------------------------------------

// EVOLVE.yaml as a form edits it (paths as written, relative to the file's folder).
struct EvolveForm {
  std::string method = "linear";
  std::string baseModel;
  std::vector<std::string> models;
  int64_t layerGranularity = 1;
  std::vector<std::string> filters;
  std::string dtype = "bfloat16";
  std::string suite, target;  // one of them
  int64_t sequences = 8, length = 32;
  uint64_t seed = 0;
  int population = 0;  // 0 = CMA-ES default
  int generations = 10;
  long long maxEvaluations = 0;
  std::string device = "cpu";
  bool operator==(const EvolveForm& o) const;
};
EvolveForm parseEvolveForm(const std::string& yamlText);  // kh::Error("EVOLVE.yaml:<line>", ...)
std::string evolveFormToYaml(const EvolveForm& form);
// Loads EVOLVE.yaml fully as the engine would (paths, models, fitness): "" when valid, else why.
std::string validateEvolveConfig(const std::string& path);

struct EvolveStatus {
  int generation = 0, generations = 0, index = 0, population = 0;
  bool hasBest = false;
  double bestFitness = 0, elapsedSeconds = 0;
};
struct EvolveCallbacks {
  std::function<void(const EvolveStatus&)> onProgress;
  std::function<void(const std::string&)> onLog;
  const std::atomic<bool>* cancel = nullptr;  // a cancelled run throws kh::Cancelled, folder resumable
};
struct EvolveResult {
  std::string runDir, stopReason, bestRecipePath;
  int generations = 0;
  long long evaluations = 0;
  double bestFitness = 0;
};
EvolveResult startEvolve(const std::string& configPath, const std::string& runDir, const EvolveCallbacks& cb);
EvolveResult resumeEvolve(const std::string& runDir, const EvolveCallbacks& cb);
// runs/evolve-<config stem>-<yyyymmdd-hhmmss> under root.
std::string newRunDir(const std::string& root, const std::string& kind, const std::string& name);

// ---- run folders ------------------------------------------------------------------------------------

// Reads metrics.jsonl from a byte offset, only whole lines (a half-written last line waits for the
// next call). A file shorter than the offset (a resumed run truncated it) starts over: reset = true.
// A line that is not JSON is skipped and named in `errors`; a missing file is no lines.
struct MetricsChunk {
  std::vector<nlohmann::json> lines;
  uint64_t nextOffset = 0;
  bool reset = false;
  std::vector<std::string> errors;
};
MetricsChunk readMetrics(const std::string& path, uint64_t offset);

struct RunInfo {
  std::string dir, kind, name;  // kind: evolve, eval, merge, train
  std::string status;           // running, finished, stopped, failed
  bool hasBest = false;
  double best = 0;
  int64_t started = 0;          // unix seconds (0 unknown)
  double durationSeconds = 0;
  std::string error;            // error.txt's first line
};
RunInfo readRunInfo(const std::string& dir);  // never throws: an unreadable folder has status "failed"
bool isRunFolder(const std::string& dir);
std::vector<std::string> listRunFolders(const std::string& root);  // run folders directly under root
// Writes <runDir>/error.txt (best effort).
void writeRunError(const std::string& runDir, const std::string& message);

}  // namespace kh::jobs
