// The streaming merge executor ('models:' and 'slices:' recipes): reads the inputs lazily (mmap
// views), merges one tensor at a time on the chosen device, writes shards as it goes, and renames
// the finished folder into place. Plans its memory before it starts and refuses a plan above the
// budget. A cancelled or failed merge leaves nothing behind (a killed one leaves
// OUT.partial-<host>-<pid>, which the next merge into OUT on that host removes); an existing output
// is kept unless overwrite is asked for.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/merge/recipe.h"

namespace kh::merge {

struct MergeProgress {
  size_t done = 0, total = 0;
  std::string tensor;
  double fraction = 0;  // of all the reading and merging to do
  double elapsedSeconds = 0, etaSeconds = 0;
};

struct MergeOptions {
  std::string outDir;
  std::string device = "cpu";
  uint64_t memoryBudget = 0;              // bytes; 0 = no limit
  uint64_t shardBytes = 5'000'000'000ull;
  std::optional<uint64_t> seed;           // overrides the recipe's random_seed
  bool overwrite = false;
  std::function<void(const MergeProgress&)> onProgress;
  const std::atomic<bool>* cancel = nullptr;
};

// Peak memory of the merge, planned from the tensor shapes alone (no data read).
struct MemoryPlan {
  uint64_t ramPeak = 0;      // host: working tensors (CPU device) + the output buffer of one tensor
  uint64_t devicePeak = 0;   // accelerator: working tensors when the device is not the CPU
  std::string largestTensor; // the tensor that sets the peak
  uint64_t outputBytes = 0;  // size of the merged checkpoint
  size_t tensors = 0;
  std::vector<std::string> notes;  // e.g. vocab sizes cropped or padded
  std::string describe() const;    // the lines `merge --plan` prints
};

MemoryPlan planMerge(const Recipe& recipe, const MergeOptions& options);

struct MergeReport {
  MemoryPlan plan;
  std::vector<std::string> files;  // written weight files
  double seconds = 0;
  uint64_t measuredRamPeak = 0;    // growth of this process's peak RSS during the merge (0: unknown)
  // Stale `OUT.partial-<host>-<pid>` folders of merges that died: removed when they are this
  // host's and that process is gone; reported and left when it still runs or another host's.
  std::vector<std::string> notes;
};

MergeReport runMerge(const Recipe& recipe, const MergeOptions& options);

// "<outName>.partial-<host>-<pid>": where a merge into outName writes until it renames. The host
// is in the name because a folder may be shared (NFS) between lab machines, whose pids mean
// nothing here: only this host's stale folders are ever removed.
std::string partialFolderName(const std::string& outName, long pid);

}  // namespace kh::merge
