// LoRA training speed and peak memory of a generated ~1B Llama-shaped model (hidden 2048, 16 layers,
// MLP 5632, vocab 32000, bf16 weights) on the CPU, with and without gradient checkpointing, next to
// the trainer's memory plan. Each configuration runs in a fresh child process, so that its peak RSS
// is its own. Prints figures; asserts nothing.
//   train_bench [--threads N] [--layers L] [--seq T] [--batch B] [--steps S] [--rank R] [--quick] [--keep DIR]
//   --quick: 4 layers, sequence 128, 2 steps (about a minute on 2 cores).
// CUDA (built with -DKH_CUDA=ON against a CUDA libtorch; never run here): train_bench --cuda [--keep DIR]
// trains a 7B-shaped model (hidden 4096, 32 layers, MLP 11008) at sequence 1024 with checkpointing,
// the caching allocator capped to 24 GB, and reports tokens/s and the allocator's peak.
// Measured here (train_bench --threads 2 --seq 512 --batch 1 --steps 3; 2 cores shared with other
// builds, load average ~10, so tokens/s are rough): LoRA r16 on all seven projections, without
// checkpointing 10.1 tokens/s, peak 4.46 GiB (plan 4.32 GiB); with it 4.5 tokens/s, 2.46 GiB (plan 2.98).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#if defined(KH_CUDA) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#define KH_TRAIN_BENCH_CUDA 1
#endif

#include "core/model/memory.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/train/train_memory.h"
#include "core/train/trainer.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Options {
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t layers = 16, seq = 512, batch = 1, steps = 3, rank = 16;
  int64_t hidden = 2048, intermediate = 5632, heads = 16;
  std::string keep;
  bool cuda = false;
};

const char* kTargets = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj";

void makeModel(const std::string& dir, const Options& o) {
  if (fs::exists(dir + "/config.json")) return;
  kh::TinyOptions t;
  t.family = "llama";
  t.layers = o.layers;
  t.hidden = o.hidden;
  t.heads = o.heads;
  t.kvHeads = o.heads;
  t.intermediate = o.intermediate;
  t.vocab = 32000;
  t.withTokenizer = false;
  t.initStd = 0.02;
  t.force = true;  // bf16, as the real models are stored
  std::cerr << "generating the model in " << dir << " ...\n";
  kh::makeTinyCheckpoint(dir, t);
}

// A batch of random tokens, every position after the first trained.
kh::train::Batch randomBatch(const Options& o, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  kh::train::Batch b;
  auto opts = at::TensorOptions().dtype(at::kLong);
  b.ids = at::randint(10, vocab, {o.batch, o.seq}, opts);                        // [B, T]
  b.positions = at::arange(o.seq, opts).view({1, o.seq}).expand({o.batch, o.seq}).contiguous();
  b.trained = at::ones({o.batch, o.seq}, at::kBool);
  b.trained.narrow(1, 0, 1).fill_(false);
  b.trainedTokens = o.batch * (o.seq - 1);
  return b;
}

// One configuration, in this (child) process: load, attach LoRA, a warm-up step, then timed steps of
// forward + backward + an SGD update of the adapters (AdamW's arithmetic on the adapters is <1% of a
// step). Prints "RESULT tokens/s peak-bytes base-bytes loss".
int runChild(const std::string& dir, const Options& o, bool checkpointing) {
  at::set_num_threads(o.threads);
  kh::resetPeakRss();
  const uint64_t base = kh::currentRss();
  auto folder = kh::ModelFolder::open(dir);
  kh::RunOptions ro;
  ro.device = o.cuda ? "cuda" : "cpu";
  ro.dtype = "bf16";
  auto model = kh::Model::load(folder, ro);
#ifdef KH_TRAIN_BENCH_CUDA
  if (o.cuda) {
    const int dev = model->device().has_index() ? model->device().index() : 0;
    const size_t totalB = static_cast<size_t>(at::cuda::getDeviceProperties(dev)->totalGlobalMem);
    c10::cuda::CUDACachingAllocator::setMemoryFraction(std::min(1.0, 24e9 / static_cast<double>(totalB)), dev);
    c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
  }
#endif
  kh::train::LoraSpec spec;
  spec.rank = o.rank;
  spec.alpha = 2.0 * static_cast<double>(o.rank);
  spec.targetModules = kTargets;
  std::vector<at::Tensor> params;
  for (const auto& m : kh::train::attachLora(*model, spec, 1)) {
    params.push_back(model->adapter(m)->A);
    params.push_back(model->adapter(m)->B);
  }
  model->training = true;
  model->gradientCheckpointing = checkpointing;
  double lastLoss = 0;
  auto step = [&](uint64_t seed) {
    kh::train::Batch b = randomBatch(o, folder.config.vocabSize, seed);
    at::Tensor loss = kh::train::batchLoss(*model, b);
    loss.backward();
    at::NoGradGuard g;
    for (auto& p : params) {
      p.add_(p.grad(), -1e-4);
      p.mutable_grad().zero_();
    }
    lastLoss = loss.item<double>();
  };
  step(0);  // warm-up: page faults of the mapped weights, allocator growth
  const auto t0 = Clock::now();
  for (int64_t s = 0; s < o.steps; ++s) step(static_cast<uint64_t>(s + 1));
  double secs = seconds(t0, Clock::now());
  uint64_t peak = kh::peakRss();
#ifdef KH_TRAIN_BENCH_CUDA
  if (o.cuda) {
    const int dev = model->device().has_index() ? model->device().index() : 0;
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
    peak = static_cast<uint64_t>(stats.allocated_bytes[0].peak);  // [0]: StatType::AGGREGATE (its namespace moved in 2.x)
  }
#endif
  std::printf("RESULT %.3f %llu %llu %.4f\n", static_cast<double>(o.steps * o.batch * o.seq) / secs,
              static_cast<unsigned long long>(peak), static_cast<unsigned long long>(base), lastLoss);
  return 0;
}

struct Result {
  bool ok = false;
  double tps = 0, loss = 0;
  uint64_t peak = 0, base = 0;
};

Result runInChild(const std::string& dir, const Options& o, bool checkpointing) {
  std::string cmd = "/proc/" + std::to_string(::getpid()) + "/exe --child " + dir + " --ckpt " + (checkpointing ? "1" : "0") +
                    " --threads " + std::to_string(o.threads) + " --layers " + std::to_string(o.layers) + " --seq " +
                    std::to_string(o.seq) + " --batch " + std::to_string(o.batch) + " --steps " + std::to_string(o.steps) +
                    " --rank " + std::to_string(o.rank) + (o.cuda ? " --cuda-child 1" : "");
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char line[512];
  while (std::fgets(line, sizeof line, p)) {
    unsigned long long peak = 0, base = 0;
    if (std::sscanf(line, "RESULT %lf %llu %llu %lf", &r.tps, &peak, &base, &r.loss) == 4) {
      r.ok = true;
      r.peak = peak;
      r.base = base;
    } else {
      std::fputs(line, stderr);
    }
  }
  if (::pclose(p) != 0) r.ok = false;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string child;
  bool ckpt = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "train_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--layers") o.layers = std::stoll(next());
    else if (a == "--seq") o.seq = std::stoll(next());
    else if (a == "--batch") o.batch = std::stoll(next());
    else if (a == "--steps") o.steps = std::stoll(next());
    else if (a == "--rank") o.rank = std::stoll(next());
    else if (a == "--keep") o.keep = next();
    else if (a == "--quick") o.layers = 4, o.seq = 128, o.steps = 2;
    else if (a == "--cuda") o.cuda = true;
    else if (a == "--cuda-child") o.cuda = next() == "1";
    else if (a == "--child") child = next();
    else if (a == "--ckpt") ckpt = next() == "1";
    else {
      std::fprintf(stderr, "train_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (o.cuda) {
#ifndef KH_TRAIN_BENCH_CUDA
    std::fprintf(stderr, "train_bench: built without CUDA (configure with -DKH_CUDA=ON against a CUDA libtorch)\n");
    return 2;
#else
    // 7B-shaped (Llama 2 7B / Swallow 7B): hidden 4096, 32 heads, 32 layers, MLP 11008.
    if (child.empty()) o.hidden = 4096, o.heads = 32, o.layers = 32, o.intermediate = 11008, o.seq = 1024, o.batch = 1;
#endif
  }
  if (!child.empty()) return runChild(child, o, ckpt);

  const std::string dir = !o.keep.empty() ? o.keep
                                          : (fs::temp_directory_path() / ("kh-bench-train-model-" + std::to_string(o.layers) + "-" +
                                                                          std::to_string(o.hidden)))
                                                .string();
  makeModel(dir, o);
  auto folder = kh::ModelFolder::open(dir);
  std::printf("model: Llama-shaped, hidden %lld, %lld layers, MLP %lld, vocab %lld, %.3f B parameters, bf16 weights\n",
              static_cast<long long>(folder.config.hiddenSize), static_cast<long long>(folder.config.numLayers),
              static_cast<long long>(folder.config.intermediateSize), static_cast<long long>(folder.config.vocabSize),
              static_cast<double>(folder.weights->parameterCount()) / 1e9);
  std::printf("LoRA rank %lld on %s; batch %lld x sequence %lld tokens; %lld timed steps after 1 warm-up; %s, %d threads\n\n",
              static_cast<long long>(o.rank), kTargets, static_cast<long long>(o.batch), static_cast<long long>(o.seq),
              static_cast<long long>(o.steps), o.cuda ? "CUDA (allocator capped to 24 GB)" : "CPU", o.threads);
  std::printf("%-22s %12s %14s %14s %14s\n", "gradient checkpointing", "tokens/s", "peak", "plan", "plan/peak");
  std::vector<bool> modes = o.cuda ? std::vector<bool>{true} : std::vector<bool>{false, true};
  for (bool c : modes) {
    Result r = runInChild(dir, o, c);
    kh::train::TrainMemoryInput in;
    in.method = "lora";
    in.loraRank = o.rank;
    in.loraTargets = kTargets;
    in.batch = o.batch;
    in.sequence = o.seq;
    in.weightBytesPerParameter = 2;
    in.gradientCheckpointing = c;
    const kh::train::TrainMemory plan = kh::train::estimateTrainMemory(folder.config, folder.weights->parameterCount(), in);
    if (!r.ok) {
      std::printf("%-22s failed (see the child's messages above)\n", c ? "on" : "off");
      continue;
    }
    const uint64_t peak = o.cuda ? r.peak : r.peak - std::min(r.peak, r.base);
    std::printf("%-22s %12.1f %14s %14s %13.2f\n", c ? "on" : "off", r.tps, kh::formatBytes(peak).c_str(),
                kh::formatBytes(plan.total()).c_str(), static_cast<double>(plan.total()) / static_cast<double>(peak));
    std::printf("  plan: %s\n", plan.describe().c_str());
  }
  std::printf("\npeak = %s\n", o.cuda ? "the caching allocator's peak allocated bytes (getDeviceStats)"
                                       : "the child's peak RSS (VmHWM) over load + steps, minus its RSS before loading; the bf16 "
                                         "weights are mmap'd views of the file and count once touched");
  if (o.keep.empty()) fs::remove_all(dir);
  return 0;
}
