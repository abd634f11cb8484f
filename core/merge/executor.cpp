// Streaming merge executor and its memory plan (see executor.h).
#include "core/merge/executor.h"

#include <ATen/ATen.h>
#include <signal.h>
#include <unistd.h>

#include <cctype>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_load.h"
#include "core/model/memory.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/merge/resolved.h"
#include "core/merge/scratch.h"

namespace kh::merge {

namespace fs = std::filesystem;

namespace {

using detail::Resolved;

const char* dtypeField(st::DType d) {
  return d == st::DType::F32 ? "float32" : d == st::DType::F16 ? "float16" : "bfloat16";
}

uint64_t numelOf(const std::vector<int64_t>& s) {
  uint64_t n = 1;
  for (auto d : s) n *= static_cast<uint64_t>(d);
  return n;
}

// The plan follows mergeRows: one chunk of rows at a time (kChunkElements, or the whole tensor
// when smaller). Inside ScratchScope the memory a chunk holds is a fixed number of chunk-sized
// fp32 buffers, a + b * (models besides the base), per method. The constants were measured
// (`merge --plan` against the "peak RAM measured" line of `merge`, for 1 to 4 models, 4 MiB
// chunks) and MergePlan.MeasuredPeakIsWithin20PercentOfThePlan checks them on other shapes.
// Plus the output part in flight on the writer thread and 12 MiB of fixed overhead. On an
// accelerator the fp32 buffers live there, and the host holds the chunk's mapped input rows and
// its converted output.
struct Buffers {
  double a, b;
};
Buffers buffersPerChunk(Method m, bool onCpu) {
  // On the CPU the task-arithmetic family without per-row sorts runs fused (methods.cpp): the
  // chunk's input rows and the output, nothing more.
  // These constants are for bf16 inputs, which the loops read in place; fusedInputExtra() adds
  // what other input dtypes cost. Refit when the loops began reading bf16 in place, on
  // MergePlan's tiny shapes, and checked on merge_bench's llm-jp-3-3.7b shapes (ties, 2 models:
  // 28.80 MiB measured, 28.40 MiB planned).
  if (onCpu) switch (m) {
      case Method::Ties: return {2.4, 1.35};
      case Method::TaskArithmetic:
      case Method::DareTies:
      case Method::DareLinear: return {1.25, 1.0};
      default: break;
    }
  switch (m) {
    case Method::Linear: return {2.2, 0};
    case Method::Passthrough: return {1.4, 0};
    case Method::TaskArithmetic: return {3.6, 1.05};
    case Method::Ties: return {8.4, 1.25};
    case Method::DareTies: return {9.8, 1.0};
    case Method::DareLinear: return {6.8, 1.0};
    case Method::Breadcrumbs: return {5.6, 1.35};
    case Method::BreadcrumbsTies: return {8.8, 1.35};
    case Method::Della: return {11.2, 1.2};
    case Method::DellaLinear: return {10.0, 1.0};
    case Method::Slerp: return {7.0, 0};
    case Method::NuSlerp: return {9.8, 0};  // MergePlan: 53.6 MiB measured where 8.0 planned 46.0
    case Method::ModelStock: return {5.5, 0.8};
  }
  return {20.0, 2.0};
}
bool runsFused(Method m, bool onCpu) {
  return onCpu && (m == Method::Ties || m == Method::TaskArithmetic || m == Method::DareTies || m == Method::DareLinear);
}
// Per input, in fp32 chunk buffers, beyond the bf16 constants: fp32 inputs are read in place but
// their mapped rows are twice as large (0.5); with any input neither bf16 nor fp32 every input is
// converted to an fp32 copy (1.0). Measured like the constants (F16, F32 tiny models, 1-3 models).
double fusedInputExtra(bool allBf16, uint64_t inBytes) {
  if (allBf16) return 0.0;
  return inBytes == 4 ? 0.5 : 1.0;
}
// Process overhead (8 MiB) plus the part writer's thread (4 MiB, measured: its stack and arena).
constexpr uint64_t kFixedOverhead = 12ull << 20;

MemoryPlan planFor(const Resolved& x, const Recipe& r, const MergeOptions& o) {
  MemoryPlan p;
  const bool onCpu = parseDevice(o.device).is_cpu();
  for (size_t i = 0; i < x.outputs.size(); ++i) {
    const auto& [name, shape] = x.outputs[i];
    const detail::Sources& s = x.sources[i];
    const detail::TensorParams tp = detail::tensorParams(r, x, i, 0);
    const MethodParams& mp = tp.method;
    const RowGrid g = rowGrid(r.method, mp, shape);
    const uint64_t n = static_cast<uint64_t>(std::min(g.rows, g.rowsPerChunk) * g.cols);
    uint64_t inBytes = 0;
    bool allBf16 = true;
    auto widen = [&](const detail::Input& in) {
      const st::DType d = x.folder(in).weights->entry(in.tensor).dtype;
      inBytes = std::max<uint64_t>(inBytes, st::dtypeSize(d));
      allBf16 = allBf16 && d == st::DType::BF16;
    };
    if (s.hasBase()) widen(s.base);
    for (const auto& o : s.others) widen(o);
    const Buffers bf = buffersPerChunk(r.method, onCpu);
    const double inputs = static_cast<double>(s.others.size() + (s.hasBase() ? 1 : 0));
    const double extra = runsFused(r.method, onCpu) ? fusedInputExtra(allBf16, inBytes) * inputs : 0.0;
    const uint64_t working = static_cast<uint64_t>(
        static_cast<double>(n * 4) * (bf.a + bf.b * static_cast<double>(s.others.size()) + extra));
    const uint64_t host = n * inBytes + n * st::dtypeSize(x.outDtype);  // mapped rows, converted output
    p.outputBytes += numelOf(shape) * st::dtypeSize(x.outDtype);
    const uint64_t inFlight = n * st::dtypeSize(x.outDtype);  // the part PartWriter is still writing
    // A magnitude cut's sampled window lives through its statistics pass only, which holds no chunk
    // buffers (the fused loops read the mapped rows): the larger of the two, not their sum.
    const uint64_t windows = runsFused(r.method, onCpu) ? rankWindowBytes(r.method, tp.models, g, onCpu) : 0;
    const uint64_t ram = (onCpu ? std::max(working, windows) : host) + inFlight + kFixedOverhead;
    const uint64_t dev = onCpu ? 0 : working;
    if (std::max(ram, dev) > std::max(p.ramPeak, p.devicePeak)) p.largestTensor = name;
    p.ramPeak = std::max(p.ramPeak, ram);
    p.devicePeak = std::max(p.devicePeak, dev);
  }
  p.tensors = x.outputs.size();
  p.notes = x.notes;
  return p;
}

// Writes each merged part on a thread of its own while the next chunk is merged: the kernel's copy
// into the page cache (about a seventh of a merge's CPU time) overlaps the arithmetic instead of
// holding up the main thread. One thread for the whole merge, one part in flight; a write's error
// (a full disk) is thrown at the next write or at finish(). Destroying it waits for the write in
// flight, so an error or a cancel never removes the folder under a writing thread.
class PartWriter {
 public:
  explicit PartWriter(SafetensorsWriter& w) : w_(w), thread_([this] { loop(); }) {}
  PartWriter(const PartWriter&) = delete;
  PartWriter& operator=(const PartWriter&) = delete;
  ~PartWriter() {
    {
      std::unique_lock<std::mutex> lock(m_);
      idle_.wait(lock, [&] { return !busy_; });
      quit_ = true;
    }
    work_.notify_one();
    thread_.join();
  }
  void write(const std::string& name, uint64_t offset, at::Tensor part) {
    finish();
    std::lock_guard<std::mutex> lock(m_);
    name_ = name;
    offset_ = offset;
    part_ = std::move(part);
    busy_ = true;
    work_.notify_one();
  }
  // Waits for the part in flight; rethrows its error.
  void finish() {
    std::unique_lock<std::mutex> lock(m_);
    idle_.wait(lock, [&] { return !busy_; });
    part_ = at::Tensor();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      work_.wait(lock, [&] { return busy_ || quit_; });
      if (!busy_) return;
      lock.unlock();
      std::exception_ptr e;
      try {
        w_.writePart(name_, offset_, part_.data_ptr(), part_.nbytes());
      } catch (...) {
        e = std::current_exception();
      }
      lock.lock();
      error_ = e;
      busy_ = false;
      idle_.notify_all();
    }
  }
  SafetensorsWriter& w_;
  std::mutex m_;
  std::condition_variable work_, idle_;
  std::string name_;
  uint64_t offset_ = 0;
  at::Tensor part_;
  bool busy_ = false, quit_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the members it uses exist
};

// Asks the kernel to read the next tensors' input bytes while this one merges. Without it every
// input page arrives through a fault on the merging thread, a read-around of a few hundred KiB at a
// time, so the disk idles while the cores compute and the cores idle while the disk reads. Read-ahead
// fills the page cache only (nothing is mapped: the process's RSS does not grow), a bounded amount
// ahead of the tensor being merged, so it cannot push out pages the merge is about to use.
class Prefetcher {
 public:
  Prefetcher() : thread_([this] { loop(); }) {}
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;
  ~Prefetcher() {
    quit_ = true;
    {
      std::lock_guard<std::mutex> lock(m_);
    }
    work_.notify_one();
    thread_.join();
  }
  void add(const std::vector<detail::RowReader::ByteRange>& ranges) {
    {
      std::lock_guard<std::mutex> lock(m_);
      queue_.insert(queue_.end(), ranges.begin(), ranges.end());
    }
    work_.notify_one();
  }

 private:
  void loop() {
    constexpr uint64_t kStep = 8ull << 20;  // small steps: a cancel stops it within one
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      work_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (quit_) return;
      const auto r = queue_.front();
      queue_.erase(queue_.begin());
      lock.unlock();
      for (uint64_t off = 0; off < r.length && !quit_; off += kStep) r.map->willNeed(r.offset + off, std::min(kStep, r.length - off));
      lock.lock();
    }
  }
  std::mutex m_;
  std::condition_variable work_;
  std::vector<detail::RowReader::ByteRange> queue_;
  std::atomic<bool> quit_{false};
  std::thread thread_;  // last: starts after the members it uses exist
};

// Writes a small text file of the output (config.json, mergekit_config.yml) and checks that every
// byte reached the file: a full disk shows only when the stream flushes, and a truncated config
// must not be renamed into place as part of a finished merge.
void writeTextFile(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(path.string(), std::string("cannot create: ") + std::strerror(errno));
  errno = 0;
  f << text;
  f.close();  // flushes: the error of a full disk shows here at the latest
  if (f.fail())
    throw Error(path.string(), std::string("write failed: ") + (errno ? std::strerror(errno) : "the stream failed"),
                "is the disk full?");
}

// This machine's name as it goes into partial folder names (characters other than letters,
// digits, '.', '_' become '_').
std::string hostTag() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  std::string h(buf);
  for (char& c : h)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_') c = '_';
  return h;
}

// Folders `<out>.partial-<host>-<pid>` beside the output that an earlier merge left when it was
// killed (SIGKILL, a crash, a power cut). This host's, whose process is gone, are removed; one
// whose process still runs is another merge into the same folder, and is left alone. Another
// host's (a folder shared between lab machines: its pids mean nothing here) and folders in the
// older `<out>.partial-<pid>` form, whose host is unknown, are only reported.
std::vector<std::string> clearStalePartials(const fs::path& parent, const std::string& outName) {
  std::vector<std::string> notes;
  const std::string prefix = outName + ".partial-";
  const std::string host = hostTag();
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const size_t dash = rest.rfind('-');
    const std::string digits = dash == std::string::npos ? rest : rest.substr(dash + 1);
    const std::string owner = dash == std::string::npos ? std::string() : rest.substr(0, dash);
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (owner != host) {
      notes.push_back("left " + it->path().string() + ": " +
                      (owner.empty() ? std::string("an unfinished merge of an older version (remove it if no merge runs)")
                                     : "an unfinished merge on host " + owner + " (remove it if none runs there)"));
      continue;
    }
    if (pid <= 0 || pid == ::getpid()) continue;  // ours: replaced below
    if (::kill(pid, 0) == 0 || errno != ESRCH) {
      notes.push_back("left " + it->path().string() + ": process " + digits + " is still running (another merge into " +
                      outName + "?)");
      continue;
    }
    std::error_code rm;
    fs::remove_all(it->path(), rm);
    notes.push_back(rm ? "cannot remove the stale " + it->path().string() + ": " + rm.message()
                       : "removed " + it->path().string() + ", left by a merge (process " + digits + ") that did not finish");
  }
  return notes;
}

void copyIfPresent(const fs::path& from, const fs::path& to) {
  std::error_code probe, ec;
  if (!fs::is_regular_file(from, probe)) return;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error(to.string(), "cannot copy " + from.string() + ": " + ec.message());
}

}  // namespace

std::string partialFolderName(const std::string& outName, long pid) {
  return outName + ".partial-" + hostTag() + "-" + std::to_string(pid);
}

std::string MemoryPlan::describe() const {
  std::ostringstream o;
  o << "memory plan: " << tensors << " tensors, output " << formatBytes(outputBytes) << "\n"
    << "  peak RAM     " << formatBytes(ramPeak) << "\n"
    << "  peak device  " << (devicePeak ? formatBytes(devicePeak) : std::string("(none: CPU merge)")) << "\n"
    << "  set by       " << largestTensor << "\n";
  for (const auto& n : notes) o << "  note: " << n << "\n";
  return o.str();
}

MemoryPlan planMerge(const Recipe& recipe, const MergeOptions& options) { return planFor(detail::resolve(recipe), recipe, options); }

MergeReport runMerge(const Recipe& r, const MergeOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (o.outDir.empty()) throw Error("merge", "no output folder given", "pass -o OUT");
  const fs::path out(o.outDir);
  std::error_code ec;
  if (fs::exists(out, ec) && !o.overwrite) throw Error(o.outDir, "already exists", "pass --overwrite to replace it");
  Resolved x = detail::resolve(r);
  MergeReport report;
  report.plan = planFor(x, r, o);
  const uint64_t peak = std::max(report.plan.ramPeak, report.plan.devicePeak);
  if (o.memoryBudget > 0 && peak > o.memoryBudget)
    throw Error("--memory-budget", "the merge needs " + formatBytes(peak) + " (tensor " + report.plan.largestTensor +
                                       "), above the budget of " + formatBytes(o.memoryBudget),
                "raise the budget, or merge on a device with more memory");
  const c10::Device device = parseDevice(o.device);
  ScratchScope scratch;  // chunk buffers come from fixed free lists: a predictable peak
  resetPeakRss();
  const uint64_t rssAtStart = currentRss();
  const uint64_t seed = o.seed ? *o.seed : r.seed.value_or(0);

  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  const fs::path work = parent / partialFolderName(out.filename().string(), ::getpid());
  report.notes = clearStalePartials(parent, out.filename().string());
  fs::remove_all(work, ec);
  fs::create_directories(work, ec);
  if (ec) throw Error(work.string(), "cannot create: " + ec.message());
  try {
    std::vector<TensorSpec> plan;
    for (const auto& [name, shape] : x.outputs) plan.push_back({name, x.outDtype, shape});
    WriterOptions wo;
    wo.shardBytes = o.shardBytes;
    wo.metadata = {{"format", "pt"}, {"merged_by", "kumihimo"}};
    SafetensorsWriter writer(work.string(), plan, wo);
    PartWriter parts(writer);
    const auto outType = toScalarType(x.outDtype, o.outDir);
    // Progress in elements read (every pass over every input), reported at most ~20 times a second.
    std::vector<detail::TensorParams> params;
    double totalReads = 0, reads = 0;
    for (size_t i = 0; i < x.outputs.size(); ++i) {
      params.push_back(detail::tensorParams(r, x, i, seed));
      totalReads += static_cast<double>(numelOf(x.outputs[i].second)) * static_cast<double>(x.inputs(i)) *
                    mergePasses(r.method, params.back().models, params.back().method,
                                rowGrid(r.method, params.back().method, x.outputs[i].second), device.is_cpu());
    }
    auto lastReport = Clock::now() - std::chrono::seconds(1);
    auto progress = [&](size_t done, const std::string& name, bool force) {
      if (!o.onProgress) return;
      const auto now = Clock::now();
      if (!force && now - lastReport < std::chrono::milliseconds(50)) return;
      lastReport = now;
      MergeProgress p;
      p.done = done;
      p.total = x.outputs.size();
      p.tensor = name;
      p.fraction = totalReads > 0 ? std::min(1.0, reads / totalReads) : 1.0;
      p.elapsedSeconds = std::chrono::duration<double>(now - t0).count();
      p.etaSeconds = p.fraction > 0 ? p.elapsedSeconds / p.fraction * (1.0 - p.fraction) : 0.0;
      o.onProgress(p);
    };
    // Read-ahead: the inputs of the tensors up to kAhead bytes past the start of the current one.
    constexpr uint64_t kAhead = 512ull << 20;
    Prefetcher prefetch;
    size_t nextAhead = 0;
    uint64_t aheadBytes = 0, startedBytes = 0;
    auto readAhead = [&] {
      while (nextAhead < x.outputs.size() && aheadBytes < startedBytes + kAhead) {
        const auto ranges = detail::RowReader(x, nextAhead++, device).byteRanges();
        for (const auto& r : ranges) aheadBytes += r.length;
        prefetch.add(ranges);
      }
    };
    size_t done = 0;
    for (const auto& [name, shape] : x.outputs) {
      if (o.cancel && o.cancel->load()) throw Cancelled();
      const detail::TensorParams& tp = params[done];
      detail::RowReader reader(x, done, device);
      for (const auto& r : reader.byteRanges()) startedBytes += r.length;
      readAhead();
      const detail::Sources& src = x.sources[done];
      uint64_t filled = 0;
      if (numelOf(shape) == 0) {
        parts.finish();
        writer.write(name, nullptr, 0);
      }
      mergeRows(
          r.method, src.hasBase(), src.others.size(), shape,
          [&](int input, int64_t r0, int64_t r1) {
            if (o.cancel && o.cancel->load()) throw Cancelled();
            at::Tensor t = reader.rows(input, r0, r1);
            reads += static_cast<double>(t.numel());
            progress(done, name, false);
            return t;
          },
          [&](int64_t, int64_t, const at::Tensor& merged) {
            at::Tensor c = merged.to(outType).to(at::kCPU).contiguous();
            // Written while the next chunk is merged: never a buffer the merge may reuse.
            if (c.data_ptr() == merged.data_ptr()) c = c.clone();
            const uint64_t bytes = c.nbytes();
            parts.write(name, filled, std::move(c));
            filled += bytes;
          },
          tp.models, tp.method,
          [&](int input, int64_t r0, int64_t r1) {
            if (o.cancel && o.cancel->load()) throw Cancelled();
            at::Tensor t = reader.rawRows(input, r0, r1);
            if (t.defined()) {
              reads += static_cast<double>(t.numel());
              progress(done, name, false);
            }
            return t;
          });
      ++done;
      progress(done, name, done == x.outputs.size());
    }
    parts.finish();
    auto files = writer.finish();
    // Config (dtype updated), generation config, tokenizer files, and the recipe that made it.
    nlohmann::json cfg = x.config;
    cfg["torch_dtype"] = dtypeField(x.outDtype);
    writeTextFile(work / "config.json", cfg.dump(2) + "\n");
    const ModelFolder* tokSource = &x.folders[static_cast<size_t>(x.tokenizer)];
    for (const char* f : {"generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt"})
      copyIfPresent(fs::path(f == std::string("generation_config.json") ? x.refFolder().dir : tokSource->dir) / f, work / f);
    writeTextFile(work / "mergekit_config.yml", recipeToYaml(r));
    // A cancel that came after the last tensor still stops the merge: nothing has appeared yet.
    if (o.cancel && o.cancel->load()) throw Cancelled();
    if (fs::exists(out, ec)) {
      // Another process may have created the output while this merge ran.
      if (!o.overwrite) throw Error(o.outDir, "appeared while the merge ran", "pass --overwrite to replace it");
      fs::remove_all(out, ec);
      if (ec) throw Error(o.outDir, "cannot remove the old output: " + ec.message());
    }
    fs::rename(work, out, ec);
    if (ec) throw Error(o.outDir, "cannot move the finished merge into place: " + ec.message());
    for (const auto& f : files) report.files.push_back((out / fs::path(f).filename()).string());
  } catch (...) {
    fs::remove_all(work, ec);
    throw;
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const uint64_t peakNow = peakRss();
  report.measuredRamPeak = peakNow > rssAtStart ? peakNow - rssAtStart : 0;
  return report;
}

}  // namespace kh::merge
