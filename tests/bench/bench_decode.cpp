// Decode and prefill speed of a generated ~1B-parameter Llama-shaped model on the CPU, in bf16
// and fp32, as a fraction of the memory-bandwidth roofline measured in the same run: batch-1
// decode must read every weight once per token, so tokens/s <= bandwidth / weight bytes.
// Prints figures; asserts nothing. Usage: bench_decode [--threads N] [--layers L] [--keep DIR]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "core/model/runtime.h"
#include "core/model/tiny.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Bandwidth probes on a buffer far larger than the caches: copy (read N + write N, reported as N/t,
// i.e. bytes of weights a copy moves per second) and read-only (a sum over N bytes).
struct Bandwidth {
  double copyGBs = 0, readGBs = 0;
};

Bandwidth probeBandwidth() {
  const int64_t n = int64_t(1) << 28;  // 1 GiB of floats
  at::Tensor src = at::rand({n}), dst = at::empty({n});
  Bandwidth b;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    at::parallel_for(0, n, n / 64, [&](int64_t s, int64_t e) {
      std::memcpy(dst.data_ptr<float>() + s, src.data_ptr<float>() + s, static_cast<size_t>(e - s) * sizeof(float));
    });
    auto t1 = Clock::now();
    volatile float sink = src.sum().item<float>();
    (void)sink;
    auto t2 = Clock::now();
    b.copyGBs = std::max(b.copyGBs, n * 4.0 / seconds(t0, t1) / 1e9);
    b.readGBs = std::max(b.readGBs, n * 4.0 / seconds(t1, t2) / 1e9);
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t layers = 16;
  std::string keep;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--layers")) layers = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--keep")) keep = argv[i + 1];
  }
  at::set_num_threads(threads);
  namespace fs = std::filesystem;
  const std::string dir = keep.empty() ? (fs::temp_directory_path() / "kh-bench-decode-model").string() : keep;
  if (!fs::exists(dir + "/config.json")) {
    // Llama-shaped: hidden 2048, 16 heads, MLP 5632, vocab 32000, untied: 0.95 B parameters at 16 layers.
    kh::TinyOptions o;
    o.family = "llama";
    o.layers = layers;
    o.hidden = 2048;
    o.heads = 16;
    o.kvHeads = 16;
    o.intermediate = 5632;
    o.vocab = 32000;
    o.withTokenizer = false;
    o.initStd = 0.02;
    o.force = true;
    std::cout << "generating the model in " << dir << " ...\n";
    kh::makeTinyCheckpoint(dir, o);
  }
  auto folder = kh::ModelFolder::open(dir);
  const Bandwidth bw = probeBandwidth();
  std::cout << "threads " << threads << ", parameters " << folder.weights->parameterCount() / 1e9 << " B\n"
            << "memory probe: copy " << bw.copyGBs << " GB/s (bytes copied per second), read " << bw.readGBs << " GB/s\n\n";
  std::printf("%-6s %12s %14s %12s %12s %16s %14s\n", "dtype", "weights GB", "decode tok/s", "roofline", "of roofline",
              "of read-roofline", "prefill tok/s");
  for (const char* dtype : {"bf16", "fp32"}) {
    kh::RunOptions ro;
    ro.dtype = dtype;
    auto model = kh::Model::load(folder, ro);
    // Bytes a decode step must read: every weight but the embedding table (one row of it).
    double bytes = 0;
    for (const auto& e : folder.family->layout(folder.config))
      if (e.name != "model.embed_tokens.weight" && model->hasWeight(e.name))
        bytes += model->weight(e.name).nbytes();
    auto opts = at::TensorOptions().dtype(at::kLong);
    // Decode: 8-token prompt, then 24 single-token steps.
    auto cache = model->newCache(1, 64);
    kh::ForwardBatch b;
    b.ids = at::randint(5, 30000, {1, 8}, opts);
    b.positions = at::arange(8, opts).view({1, 8});
    model->forward(b, cache);
    // Warm-up steps first: bf16 weights are views of the file mapping, and the first pass over
    // them pays the page faults (and the disk, when the file is not cached), not the math.
    const int warm = 4, steps = 24;
    for (int s = 0; s < warm; ++s) {
      b.ids = at::full({1, 1}, 90 + s, opts);
      b.positions = at::full({1, 1}, 8 + s, opts);
      model->forward(b, cache);
    }
    auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) {
      b.ids = at::full({1, 1}, 100 + s, opts);
      b.positions = at::full({1, 1}, 8 + warm + s, opts);
      model->forward(b, cache);
    }
    const double decode = steps / seconds(t0, Clock::now());
    // Prefill: one 512-token prompt.
    auto pc = model->newCache(1, 512);
    b.ids = at::randint(5, 30000, {1, 512}, opts);
    b.positions = at::arange(512, opts).view({1, 512});
    auto t1 = Clock::now();
    model->forward(b, pc);
    const double prefill = 512 / seconds(t1, Clock::now());
    const double roof = bw.copyGBs * 1e9 / bytes, readRoof = bw.readGBs * 1e9 / bytes;
    std::printf("%-6s %12.2f %14.2f %12.2f %11.0f%% %15.0f%% %14.1f\n", dtype, bytes / 1e9, decode, roof,
                100 * decode / roof, 100 * decode / readRoof, prefill);
  }
  if (keep.empty()) fs::remove_all(dir);
  return 0;
}
