// Benchmark: materialising a generated sharded checkpoint (kh::loadAll) against `cat` copying the
// same files to /dev/null, both from a warm page cache. Prints ratios; asserts nothing, never runs
// in CTest, and deletes the checkpoints it generates.
//
//   bench_load_checkpoint [--gb 1.0] [--shard-mb 300] [--repeats 3] [--threads 2] [--dir /tmp]
//                         [--ablation] [--keep]
//
// Per row: cat once to warm the cache and one untimed load, then `repeats` times {time cat; time a load; time a
// first touch of fresh memory the size of the output}; medians are printed. Each load runs in a
// fresh child process (this program, re-executed with --child) so that its peak RSS is its own and
// no earlier load leaves memory behind. --ablation measures what each loader choice is worth.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_load.h"

extern char** environ;
namespace fs = std::filesystem;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Peak RSS since the last resetPeakRss(): VmHWM, the high-water mark getrusage's ru_maxrss reports
// for a process (ru_maxrss also folds in the pre-exec image's peak and cannot be reset).
void resetPeakRss() {
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

long currentPeakRssKb() {
  long kb = -1;
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    std::fclose(f);
  }
  if (kb < 0) {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    kb = ru.ru_maxrss;
  }
  return kb;
}

// Runs argv (no shell) with stdout to `outFd` (-1: /dev/null); returns the exit status.
int spawnWait(const std::vector<std::string>& args, int outFd = -1) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (outFd >= 0) posix_spawn_file_actions_adddup2(&fa, outFd, 1);
  else posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    std::fprintf(stderr, "cannot run %s: %s\n", argv[0], std::strerror(rc));
    std::exit(2);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<std::string> weightFiles(const std::string& dir) {
  std::vector<std::string> r;
  for (const auto& de : fs::directory_iterator(dir))
    if (de.path().extension() == ".safetensors") r.push_back(de.path().string());
  std::sort(r.begin(), r.end());
  return r;
}

double timeCat(const std::vector<std::string>& files) {
  std::vector<std::string> args{"cat"};
  args.insert(args.end(), files.begin(), files.end());
  const double t0 = now();
  if (spawnWait(args) != 0) {
    std::fprintf(stderr, "cat failed\n");
    std::exit(2);
  }
  return now() - t0;
}

// A Llama-shaped checkpoint of about `targetBytes` in `dtype`, sharded like Hugging Face's, random
// values from a fixed seed. The vocabulary (32003 rows) makes the embedding and head odd-sized.
void generate(const std::string& dir, c10::ScalarType dtype, uint64_t targetBytes, uint64_t shardBytes) {
  const int64_t hidden = 2048, inter = 5632, vocab = 32003;
  const int64_t perLayer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden;
  const int64_t esize = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t fixed = 2 * vocab * hidden + hidden;
  const int64_t layers = std::max<int64_t>(1, (static_cast<int64_t>(targetBytes) / esize - fixed + perLayer / 2) / perLayer);
  std::vector<kh::TensorSpec> plan;
  const auto st = kh::fromScalarType(dtype);
  plan.push_back({"model.embed_tokens.weight", st, {vocab, hidden}});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    plan.push_back({p + "input_layernorm.weight", st, {hidden}});
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      plan.push_back({p + "self_attn." + n + ".weight", st, {hidden, hidden}});
    plan.push_back({p + "post_attention_layernorm.weight", st, {hidden}});
    plan.push_back({p + "mlp.gate_proj.weight", st, {inter, hidden}});
    plan.push_back({p + "mlp.up_proj.weight", st, {inter, hidden}});
    plan.push_back({p + "mlp.down_proj.weight", st, {hidden, inter}});
  }
  plan.push_back({"model.norm.weight", st, {hidden}});
  plan.push_back({"lm_head.weight", st, {vocab, hidden}});
  kh::WriterOptions o;
  o.shardBytes = shardBytes;
  kh::SafetensorsWriter w(dir, plan, o);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  for (const auto& s : plan) {
    at::Tensor t = at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);  // t: shape, dtype
    w.write(s.name, t);
  }
  w.finish();
}

// ---- child: one timed load ------------------------------------------------------------------

struct ChildConfig {
  std::string dir, mode = "load";  // load | aten (plain w.tensor(n).to(dtype) per tensor)
  c10::ScalarType dtype = at::kFloat;
  int threads = 2;
  bool willNeed = false;
  bool prewarm = true;
  kh::TensorLoadOptions options;
};

// This machine is a VM whose free memory goes back to the host after a few idle seconds (virtio
// balloon free-page reporting); touching it again costs a host fault per page, 3-15x slower than
// the guest kernel's own first touch. That depends on what ran seconds before, not on the loader,
// so by default the child touches and frees as much memory as the load will allocate before the
// timer starts: the load then gets memory as fresh as on bare metal (still zeroed on first touch).
void prewarmMemory(uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  madvise(p, bytes, MADV_HUGEPAGE);
  std::memset(p, 1, bytes);
  munmap(p, bytes);
}

int childMain(const ChildConfig& c) {
  at::set_num_threads(c.threads);
  double prewarmSecs = 0;
  uint64_t outBytes = 0;
  {
    auto w = kh::CheckpointWeights::open(c.dir);
    for (const auto& n : w->names()) outBytes += w->entry(n).numel() * c10::elementSize(c.dtype);
  }
  if (c.prewarm) {
    const double p0 = now();
    prewarmMemory(outBytes + (256ull << 20));
    prewarmSecs = now() - p0;
  }
  resetPeakRss();
  const long rssBefore = currentPeakRssKb();
  if (c.mode == "touch") {
    // The floor of any load into fresh memory: the kernel zeroing the output's pages on first touch
    // (one THP mapping, written by `threads` threads), with nothing read.
    const double t0 = now();
    const uint64_t len = (outBytes + (2ull << 20) - 1) & ~((2ull << 20) - 1);
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    madvise(p, len, MADV_HUGEPAGE);
    std::vector<std::thread> pool;
    const uint64_t part = (len / static_cast<uint64_t>(c.threads) + 4095) & ~uint64_t{4095};
    for (int t = 0; t < c.threads; ++t) {
      const uint64_t b = std::min(len, part * static_cast<uint64_t>(t)), e = std::min(len, b + part);
      pool.emplace_back([=] { std::memset(static_cast<char*>(p) + b, 1, e - b); });
    }
    for (auto& t : pool) t.join();
    const double secs = now() - t0;
    std::printf("%.6f %ld %ld %.6g %.3f\n", secs, currentPeakRssKb(), rssBefore, 0.0, prewarmSecs);
    munmap(p, len);
    return 0;
  }
  const double t0 = now();
  auto w = kh::CheckpointWeights::open(c.dir);
  if (c.willNeed)
    for (const auto& f : w->files()) f->mapping()->willNeed(0, f->mapping()->size());
  std::map<std::string, at::Tensor> all;
  if (c.mode == "aten") {
    for (const auto& n : w->names()) {
      at::Tensor v = w->tensor(n);  // v: shape, stored dtype, a view of the mapping
      all.emplace(n, v.scalar_type() == c.dtype ? v.clone() : v.to(c.dtype));
    }
  } else {
    all = kh::loadAll(*w, c.dtype, at::kCPU, c.options);
  }
  const double secs = now() - t0;
  // A cheap checksum over a few elements of every tensor, so that nothing is optimised away.
  double sum = 0;
  for (const auto& [n, t] : all)
    if (t.numel() > 0) sum += t.view({-1})[t.numel() / 2].item<double>();
  std::printf("%.6f %ld %ld %.6g %.3f\n", secs, currentPeakRssKb(), rssBefore, sum, prewarmSecs);
  return 0;
}

// ---- parent ---------------------------------------------------------------------------------

struct Variant {
  std::string label;
  std::vector<std::string> childArgs;  // after --child <dir> <dtype>
};

struct Result {
  double seconds = 0;
  long peakKb = 0, baseKb = 0;
};

Result runChild(const std::string& self, const std::string& dir, const std::string& dtype, const Variant& v) {
  int fds[2];
  if (pipe(fds) != 0) std::exit(2);
  std::vector<std::string> args{self, "--child", dir, dtype};
  args.insert(args.end(), v.childArgs.begin(), v.childArgs.end());
  const int rc = spawnWait(args, fds[1]);
  close(fds[1]);
  char buf[256] = {0};
  ssize_t n = read(fds[0], buf, sizeof buf - 1);
  close(fds[0]);
  Result r;
  double sum = 0;
  if (rc != 0 || n <= 0 || std::sscanf(buf, "%lf %ld %ld %lf", &r.seconds, &r.peakKb, &r.baseKb, &sum) != 4) {
    std::fprintf(stderr, "child load failed (exit %d): %s\n", rc, buf);
    std::exit(2);
  }
  return r;
}

// CPU seconds the whole machine spent busy (/proc/stat) and this process and its children did
// (getrusage): the difference is other people's work, which skews every timing here.
double machineBusySeconds() {
  unsigned long long v[8] = {0};
  if (FILE* f = std::fopen("/proc/stat", "r")) {
    if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
      v[0] = 0;
    std::fclose(f);
  }
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  return static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;  // all but idle and iowait
}

double ownBusySeconds() {
  double t = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage ru{};
    getrusage(who, &ru);
    t += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  }
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> a(argv + 1, argv + argc);
    if (!a.empty() && a[0] == "--child") {
      ChildConfig c;
      c.dir = a.at(1);
      c.dtype = a.at(2) == "bf16" ? at::kBFloat16 : a.at(2) == "f16" ? at::kHalf : at::kFloat;
      for (size_t i = 3; i < a.size(); ++i) {
        if (a[i] == "--aten") c.mode = "aten";
        else if (a[i] == "--touch") c.mode = "touch";
        else if (a[i] == "--threads") c.threads = std::stoi(a.at(++i));
        else if (a[i] == "--no-huge") c.options.hugePages = false;
        else if (a[i] == "--aten-kernels") c.options.ownKernels = false;
        else if (a[i] == "--willneed") c.willNeed = true;
        else if (a[i] == "--no-prewarm") c.prewarm = false;
      }
      return childMain(c);
    }

    double gb = 1.0;
    uint64_t shardMb = 300;
    int repeats = 3, threads = 2;
    bool ablation = false, keep = false;
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp && *tmp ? tmp : "/tmp";
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] == "--gb") gb = std::stod(a.at(++i));
      else if (a[i] == "--shard-mb") shardMb = std::stoull(a.at(++i));
      else if (a[i] == "--repeats") repeats = std::max(1, std::stoi(a.at(++i)));
      else if (a[i] == "--threads") threads = std::stoi(a.at(++i));
      else if (a[i] == "--dir") base = a.at(++i);
      else if (a[i] == "--ablation") ablation = true;
      else if (a[i] == "--keep") keep = true;
      else {
        std::fprintf(stderr, "usage: %s [--gb G] [--shard-mb M] [--repeats N] [--threads T] [--dir D] [--ablation] [--keep]\n", argv[0]);
        return 2;
      }
    }
    const std::string self = fs::read_symlink("/proc/self/exe").string();
    std::string tmpl = base + "/kh-bench-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed under " + base);
    const std::string root = tmpl;
    struct Cleanup {
      std::string dir;
      bool keep;
      ~Cleanup() {
        std::error_code ec;
        if (!keep) fs::remove_all(dir, ec);
      }
    } cleanup{root, keep};

    const uint64_t target = static_cast<uint64_t>(gb * 1e9), shardBytes = shardMb * 1'000'000;
    struct Stored {
      std::string tag;
      c10::ScalarType type;
    };
    std::vector<Stored> stored{{"bf16", at::kBFloat16}, {"f16", at::kHalf}, {"f32", at::kFloat}};
    if (ablation) stored = {{"bf16", at::kBFloat16}, {"f32", at::kFloat}};
    for (const auto& s : stored) {
      const double t0 = now();
      generate(root + "/" + s.tag, s.type, target, shardBytes);
      std::fprintf(stderr, "generated %s checkpoint (%zu shards) in %.1f s\n", s.tag.c_str(),
                   weightFiles(root + "/" + s.tag).size(), now() - t0);
    }

    const double busy0 = machineBusySeconds(), own0 = ownBusySeconds(), wall0 = now();
    const std::string th = std::to_string(threads);
    // What each row loads: a stored checkpoint, a target dtype, and how.
    struct Row {
      std::string stored, target;
      Variant v;
    };
    std::vector<Row> rows;
    if (!ablation) {
      rows = {{"bf16", "f32", {"loadAll", {"--threads", th}}},
              {"f16", "f32", {"loadAll", {"--threads", th}}},
              {"f32", "f32", {"loadAll", {"--threads", th}}},
              {"bf16", "bf16", {"loadAll", {"--threads", th}}}};
    } else {
      rows = {{"bf16", "f32", {"ATen .to(), 1 thread", {"--aten", "--threads", "1"}}},
              {"bf16", "f32", {"ATen .to(), " + th + " threads", {"--aten", "--threads", th}}},
              {"bf16", "f32", {"loadAll ATen kernels, no THP", {"--threads", th, "--aten-kernels", "--no-huge"}}},
              {"bf16", "f32", {"loadAll own kernels, no THP", {"--threads", th, "--no-huge"}}},
              {"bf16", "f32", {"loadAll ATen kernels + THP", {"--threads", th, "--aten-kernels"}}},
              {"bf16", "f32", {"loadAll (default: own + THP)", {"--threads", th}}},
              {"bf16", "f32", {"loadAll default, 1 thread", {"--threads", "1"}}},
              {"bf16", "f32", {"default + MADV_WILLNEED", {"--threads", th, "--willneed"}}},
              {"bf16", "f32", {"default, memory not prewarmed", {"--threads", th, "--no-prewarm"}}},
              {"f32", "f32", {"ATen .clone(), " + th + " threads", {"--aten", "--threads", th}}},
              {"f32", "f32", {"loadAll default (memcpy + THP)", {"--threads", th}}},
              {"f32", "f32", {"loadAll memcpy, no THP", {"--threads", th, "--no-huge"}}}};
    }

    std::printf("bench_load_checkpoint: %.2f GB target, %llu MB shards, median of %d, %d threads, warm page cache\n", gb,
                static_cast<unsigned long long>(shardMb), repeats, threads);
    std::printf("%-6s %-5s %-32s %11s %7s %7s %13s %6s %9s %7s %6s %8s\n", "stored", "to", "variant", "bytes", "cat s",
                "load s", "load min-max", "ratio", "load GB/s", "touch s", "/floor", "RSS MB");
    for (const auto& r : rows) {
      const std::string dir = root + "/" + r.stored;
      const auto files = weightFiles(dir);
      uint64_t bytes = 0;
      for (const auto& f : files) bytes += fs::file_size(f);
      timeCat(files);                            // warm the page cache
      runChild(self, dir, r.target, r.v);        // and the loader's path, untimed
      std::vector<double> cat, load, touch, peak;
      Variant touchVariant{"touch", {"--touch"}};
      for (size_t k = 0; k + 1 < r.v.childArgs.size(); ++k)
        if (r.v.childArgs[k] == "--threads") touchVariant.childArgs = {"--touch", "--threads", r.v.childArgs[k + 1]};
      for (int i = 0; i < repeats; ++i) {
        cat.push_back(timeCat(files));
        Result res = runChild(self, dir, r.target, r.v);
        load.push_back(res.seconds);
        peak.push_back(static_cast<double>(res.peakKb) / 1024.0);
        touch.push_back(runChild(self, dir, r.target, touchVariant).seconds);
      }
      const double c = median(cat), l = median(load);
      char spread[64];
      std::snprintf(spread, sizeof spread, "%.3f-%.3f", *std::min_element(load.begin(), load.end()),
                    *std::max_element(load.begin(), load.end()));
      std::printf("%-6s %-5s %-32s %11llu %7.3f %7.3f %13s %6.2f %9.2f %7.3f %6.2f %8.0f\n", r.stored.c_str(),
                  r.target.c_str(), r.v.label.c_str(), static_cast<unsigned long long>(bytes), c, l, spread, l / c,
                  bytes / l / 1e9, median(touch), l / (c + median(touch)), median(peak));
      std::fflush(stdout);
    }
    std::printf("ratio = median load s / median cat s (same files, same run); GB/s = file bytes / load s;\n"
                "touch s = first touch of fresh THP memory the size of the output (kernel zeroing, nothing read);\n"
                "/floor = load s / (cat s + touch s), a load that reads like cat into memory as fresh as that;\n"
                "RSS MB = peak RSS: the loading child's VmHWM (= getrusage ru_maxrss) over open + load, reset after the\n"
                "prewarm; it counts libtorch and the file pages mapped in by the load.\n");
    const double others = (machineBusySeconds() - busy0) - (ownBusySeconds() - own0);
    std::printf("other processes used %.1f CPU s during the %.1f s of measurements (%.0f%% of one core)%s\n", others,
                now() - wall0, 100 * others / (now() - wall0),
                others > 0.05 * (now() - wall0) ? ": the machine was not quiet, timings are skewed" : "");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_load_checkpoint: %s\n", e.what());
    return 1;
  }
}
