// OpenMP threads (libtorch's CPU parallelism) spin for about 300,000 iterations after every
// parallel region before they sleep. A merge runs thousands of short regions; on a machine with
// anything else running, the spinning workers take the cores the next region needs (measured with
// merge_bench on 2 busy cores: ties 42 s spinning, 8.7 s with short spins). libgomp reads
// GOMP_SPINCOUNT once, when it loads, so a process that wants a short spin must start with it set:
// the launchers re-execute themselves once with it, unless the user set either variable.
#pragma once

#include <unistd.h>

#include <cstdlib>

namespace kh::app {

constexpr const char* kSpinCount = "10000";

inline void restartWithShortThreadSpins(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", kSpinCount, 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
  unsetenv("GOMP_SPINCOUNT");
}

}  // namespace kh::app
