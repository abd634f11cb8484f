// merge_bench: three generated models of the llm-jp-3-3.7b shape (bf16) merged with ties and
// dare_ties to disk. Prints wall time as a ratio to the I/O floor measured in the same run
// (reading every input and writing one output of the same size with plain file copies) and the
// merge's peak RSS (its own child process). Asserts nothing.
// Usage: merge_bench [--layers N (28 = full 3.78 B; default 4 for a one-minute run)] [--keep DIR]
//                    [--cold 1: inputs evicted from the page cache before the floor and each merge]
//                    [--repeat N: N rounds of floor, ties, dare_ties, interleaved; medians at the end]
// The floor is noisy on a VM (seen here: 2.4 to 5.6 s for the same 4-layer floor, as the disk and
// the host's page backing vary): one round's ratio can be off by 2x, so report the medians.
// Warm (the default) reads the inputs once before the floor, so the floor is memory speed where
// they fit the page cache; at 28 layers (22.7 GB) they may not, and whether the floor finds them
// cached is luck. --cold makes every measurement start from the disk: the same footing for both.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>

#include "app/thread_waits.h"
#include "core/merge/executor.h"
#include "core/model/tiny.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Plain copy of a file to `to` (or /dev/null), in 8 MiB blocks: the I/O floor's unit.
void copyFile(const std::string& from, const std::string& to) {
  FILE* in = std::fopen(from.c_str(), "rb");
  FILE* out = std::fopen(to.c_str(), "wb");
  std::vector<char> buf(8 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), in)) > 0) std::fwrite(buf.data(), 1, n, out);
  std::fflush(out);
  if (to != "/dev/null") fsync(fileno(out));
  std::fclose(in);
  std::fclose(out);
}

std::vector<std::string> weightFiles(const std::string& dir) {
  std::vector<std::string> r;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") r.push_back(e.path().string());
  return r;
}

// Drops the files' clean pages from the page cache (no root needed, unlike drop_caches).
void evict(const std::vector<std::string>& files) {
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) continue;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}
}  // namespace

int main(int argc, char** argv) {
  kh::app::restartWithShortThreadSpins(argv, kh::app::kMergeSpinCount);  // as kumihimo-cli merge runs
  // All cores, as kumihimo-cli uses by default (Debian's libtorch would start with one).
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  int64_t layers = 4;
  std::string keep;
  bool cold = false;
  int repeat = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeat")) repeat = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--layers")) layers = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--keep")) keep = argv[i + 1];
    else if (!std::strcmp(argv[i], "--cold")) cold = std::atoi(argv[i + 1]) != 0;
  }
  const std::string dir = keep.empty() ? (fs::temp_directory_path() / "kh-merge-bench").string() : keep;
  fs::create_directories(dir);
  bool generated = false;
  for (int m = 0; m < 3; ++m) {
    const std::string md = dir + "/m" + std::to_string(m);
    if (fs::exists(md + "/config.json")) continue;
    kh::TinyOptions o;  // llm-jp-3-3.7b: hidden 3072, 24 heads, MLP 8192, vocab 99584, untied, bf16
    o.family = "llama";
    o.layers = layers;
    o.hidden = 3072;
    o.heads = 24;
    o.kvHeads = 24;
    o.intermediate = 8192;
    o.vocab = 99584;
    o.withTokenizer = false;
    o.seed = static_cast<uint64_t>(m + 1);
    o.initStd = 0.02;
    o.force = true;
    std::cout << "generating " << md << " ..." << std::endl;
    generated = true;
    kh::makeTinyCheckpoint(md, o);
  }
  // The merges run in forked children; a child forked after OpenMP threads ran (generating the
  // models uses them) can hang in its first parallel region (GNU OpenMP is not fork-safe). A fresh
  // process image finds the models and goes on.
  if (generated) {
    execv("/proc/self/exe", argv);
    std::perror("merge_bench: re-exec after generating");
    return 1;
  }
  uint64_t inputBytes = 0;
  std::vector<std::string> inputs;
  for (int m = 0; m < 3; ++m)
    for (const auto& f : weightFiles(dir + "/m" + std::to_string(m))) {
      inputBytes += fs::file_size(f);
      inputs.push_back(f);
    }
  // I/O floor: read every input, write one output-sized file (warm page cache, as for the merge,
  // or all from the disk with --cold).
  if (!cold)
    for (const auto& f : inputs) copyFile(f, "/dev/null");
  std::printf("\nlayers %lld, inputs %.2f GB, %s page cache, %d round%s\n\n", static_cast<long long>(layers), inputBytes / 1e9,
              cold ? "cold" : "warm", repeat, repeat > 1 ? "s" : "");
  std::printf("%-10s %10s %10s %10s %14s %10s %10s\n", "method", "floor s", "wall s", "vs floor", "peak RSS MiB", "user s", "sys s");
  const char* methods[] = {"ties", "dare_ties"};
  std::vector<double> ratios[2];
  for (int round = 0; round < repeat; ++round) {
    if (cold) evict(inputs);
    auto t0 = Clock::now();
    for (int m = 0; m < 3; ++m)
      for (const auto& f : weightFiles(dir + "/m" + std::to_string(m))) copyFile(f, "/dev/null");
    for (const auto& f : weightFiles(dir + "/m0")) copyFile(f, dir + "/floor-copy.bin");
    const double floor = since(t0);
    fs::remove(dir + "/floor-copy.bin");
    for (int mi = 0; mi < 2; ++mi) {
      const char* method = methods[mi];
      const std::string recipe = dir + "/" + method + ".yaml";
      std::ofstream(recipe) << "merge_method: " << method << "\nbase_model: " << dir << "/m0\nmodels:\n"
                            << "  - model: " << dir << "/m1\n    parameters: {weight: 0.5, density: 0.5}\n"
                            << "  - model: " << dir << "/m2\n    parameters: {weight: 0.5, density: 0.5}\n"
                            << "dtype: bfloat16\n";
      const std::string out = dir + "/out-" + method;
      fs::remove_all(out);
      if (cold) evict(inputs);
      auto t1 = Clock::now();
      pid_t pid = fork();
      if (pid == 0) {
        try {
          kh::merge::MergeOptions o;
          o.outDir = out;
          kh::merge::runMerge(kh::merge::loadRecipe(recipe), o);
          _exit(0);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "merge failed: %s\n", e.what());
          _exit(1);
        }
      }
      int status = 0;
      struct rusage ru {};
      wait4(pid, &status, 0, &ru);
      const double wall = since(t1);
      // CPU time of all threads, user (the kernels) and system (page faults, reclaim, page-cache
      // copies): on a busy machine the wall time means little.
      auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
      std::printf("%-10s %10.2f %10.2f %9.2fx %14.0f %10.2f %10.2f%s\n", method, floor, wall, wall / floor, ru.ru_maxrss / 1024.0,
                  secs(ru.ru_utime), secs(ru.ru_stime), WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "" : "  (FAILED)");
      std::fflush(stdout);
      ratios[mi].push_back(wall / floor);
      fs::remove_all(out);
    }
  }
  if (repeat > 1) {
    std::printf("\nmedian of %d rounds:", repeat);
    for (int mi = 0; mi < 2; ++mi) {
      auto r = ratios[mi];
      std::sort(r.begin(), r.end());
      const double med = r.size() % 2 ? r[r.size() / 2] : 0.5 * (r[r.size() / 2 - 1] + r[r.size() / 2]);
      std::printf("  %s %.2fx (%.2f-%.2fx)", methods[mi], med, r.front(), r.back());
    }
    std::printf("\n");
  }
  if (keep.empty()) fs::remove_all(dir);
  return 0;
}
