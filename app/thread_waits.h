// OpenMP threads (libtorch's CPU parallelism, libgomp) spin for about 300,000 iterations after
// every parallel region before they sleep. A merge or a training step runs thousands of short
// regions; with anything else running on the machine, the spinning workers take the cores the next
// region needs. Measured with `kumihimo-cli merge` (ties, three llm-jp-3-3.7b-shaped models, 2
// layers, 2 cores with other work running): 45.2 s wall / 28.1 s CPU with the default spin,
// 11.7 s / 7.7 s with GOMP_SPINCOUNT=10000, 10.5 s / 5.4 s with OMP_WAIT_POLICY=passive.
// libgomp reads GOMP_SPINCOUNT once, when it loads, so a process that wants a short spin must start
// with it set: the mains re-execute themselves once with it, unless the user set either variable.
// A merge spins shorter still (1000): its read-ahead and writer threads need the cores between the
// regions. Three llm-jp-3-3.7b-shaped models, ties, 2 cores (2026-12-07): 28 layers 15.4-16.3 s wall,
// 13.3-13.4 s user with 10000; 14.6-14.8 s, 10.2-10.7 s user with 1000; 4 layers 3.9-4.4 s / 3.6-3.9 s
// user against 3.7-3.9 s / 2.9-3.0 s. Decoding (bench_decode) showed no difference beyond noise.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace kh::app {

constexpr const char* kSpinCount = "10000";
constexpr const char* kMergeSpinCount = "1000";

// Call first thing in main(). Returns only when no restart was needed or it failed.
inline void restartWithShortThreadSpins(char** argv, const char* spinCount = kSpinCount) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", spinCount, 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
  unsetenv("GOMP_SPINCOUNT");
}

// kumihimo-cli: only for the subcommands that run long parallel jobs (a restart costs a second
// load of libtorch, about 0.1 s, which `inspect` or `tokenize` should not pay).
inline void restartCliWithShortThreadSpins(int argc, char** argv) {
  static const char* heavy[] = {"merge", "evolve", "resume", "train", "eval", "index", "retrieval-eval"};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads")) {
      ++i;
      continue;
    }
    if (argv[i][0] == '-') continue;
    for (const char* h : heavy)
      if (!std::strcmp(argv[i], h)) restartWithShortThreadSpins(argv, std::strcmp(h, "merge") ? kSpinCount : kMergeSpinCount);
    return;
  }
}

}  // namespace kh::app
