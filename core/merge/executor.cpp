// Streaming merge executor and its memory plan (see executor.h).
#include "core/merge/executor.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_load.h"
#include "core/model/memory.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/merge/resolved.h"

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

MemoryPlan planFor(const Resolved& x, const MergeOptions& o) {
  MemoryPlan p;
  const bool onCpu = parseDevice(o.device).is_cpu();
  const uint64_t inputs = (x.base >= 0 ? 1u : 0u) + x.others.size();
  for (const auto& [name, shape] : x.outputs) {
    const uint64_t n = numelOf(shape);
    // fp32 copies of every input, one task vector (and mask) per other model, the fp32 result and
    // a few same-sized temporaries of the method, then the result in the output dtype.
    const uint64_t working = n * 4 * (inputs + 2 * x.others.size() + 3);
    const uint64_t out = n * st::dtypeSize(x.outDtype);
    p.outputBytes += out;
    const uint64_t ram = onCpu ? working + out : 2 * out;
    const uint64_t dev = onCpu ? 0 : working + out;
    if (std::max(ram, dev) > std::max(p.ramPeak, p.devicePeak)) p.largestTensor = name;
    p.ramPeak = std::max(p.ramPeak, ram);
    p.devicePeak = std::max(p.devicePeak, dev);
  }
  p.tensors = x.outputs.size();
  p.notes = x.notes;
  return p;
}

void copyIfPresent(const fs::path& from, const fs::path& to) {
  std::error_code probe, ec;
  if (!fs::is_regular_file(from, probe)) return;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error(to.string(), "cannot copy " + from.string() + ": " + ec.message());
}

}  // namespace

std::string MemoryPlan::describe() const {
  std::ostringstream o;
  o << "memory plan: " << tensors << " tensors, output " << formatBytes(outputBytes) << "\n"
    << "  peak RAM     " << formatBytes(ramPeak) << "\n"
    << "  peak device  " << (devicePeak ? formatBytes(devicePeak) : std::string("(none: CPU merge)")) << "\n"
    << "  set by       " << largestTensor << "\n";
  for (const auto& n : notes) o << "  note: " << n << "\n";
  return o.str();
}

MemoryPlan planMerge(const Recipe& recipe, const MergeOptions& options) { return planFor(detail::resolve(recipe), options); }

MergeReport runMerge(const Recipe& r, const MergeOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (o.outDir.empty()) throw Error("merge", "no output folder given", "pass -o OUT");
  const fs::path out(o.outDir);
  std::error_code ec;
  if (fs::exists(out, ec) && !o.overwrite) throw Error(o.outDir, "already exists", "pass --overwrite to replace it");
  Resolved x = detail::resolve(r);
  MergeReport report;
  report.plan = planFor(x, o);
  const uint64_t peak = std::max(report.plan.ramPeak, report.plan.devicePeak);
  if (o.memoryBudget > 0 && peak > o.memoryBudget)
    throw Error("--memory-budget", "the merge needs " + formatBytes(peak) + " (tensor " + report.plan.largestTensor +
                                       "), above the budget of " + formatBytes(o.memoryBudget),
                "raise the budget, or merge on a device with more memory");
  const c10::Device device = parseDevice(o.device);
  const uint64_t seed = o.seed ? *o.seed : r.seed.value_or(0);

  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  const fs::path work = parent / (out.filename().string() + ".partial-" + std::to_string(::getpid()));
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
    const auto outType = toScalarType(x.outDtype, o.outDir);
    size_t done = 0;
    for (const auto& [name, shape] : x.outputs) {
      if (o.cancel && o.cancel->load()) throw Cancelled();
      detail::TensorInputs in = detail::loadInputs(x, name, shape, device);
      detail::TensorParams tp = detail::tensorParams(r, x, name, seed);
      at::Tensor merged = mergeTensor(r.method, in.base, in.others, tp.models, tp.method);
      writer.write(name, merged.to(outType).to(at::kCPU).contiguous());
      ++done;
      if (o.onProgress) {
        MergeProgress p;
        p.done = done;
        p.total = x.outputs.size();
        p.tensor = name;
        p.elapsedSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
        p.etaSeconds = p.elapsedSeconds / static_cast<double>(done) * static_cast<double>(p.total - done);
        o.onProgress(p);
      }
    }
    auto files = writer.finish();
    // Config (dtype updated), generation config, tokenizer files, and the recipe that made it.
    nlohmann::json cfg = x.refFolder().config.raw;
    cfg["torch_dtype"] = dtypeField(x.outDtype);
    std::ofstream(work / "config.json") << cfg.dump(2) << "\n";
    const ModelFolder* tokSource = &x.refFolder();
    if (!r.tokenizerSource.empty() && r.tokenizerSource != "base") {
      if (r.tokenizerSource == "union") throw Error(r.path, "tokenizer_source: union is not supported yet", "use base or a model path");
      bool found = false;
      for (const auto& f : x.folders)
        if (f.dir == r.tokenizerSource || fs::path(f.dir).lexically_normal() == fs::path(r.tokenizerSource).lexically_normal()) {
          tokSource = &f;
          found = true;
        }
      if (!found) throw Error(r.path, "tokenizer_source '" + r.tokenizerSource + "' is not one of the recipe's models");
    }
    for (const char* f : {"generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt"})
      copyIfPresent(fs::path(f == std::string("generation_config.json") ? x.refFolder().dir : tokSource->dir) / f, work / f);
    std::ofstream(work / "mergekit_config.yml") << recipeToYaml(r);
    if (fs::exists(out, ec)) fs::remove_all(out, ec);
    fs::rename(work, out, ec);
    if (ec) throw Error(o.outDir, "cannot move the finished merge into place: " + ec.message());
    for (const auto& f : files) report.files.push_back((out / fs::path(f).filename()).string());
  } catch (...) {
    fs::remove_all(work, ec);
    throw;
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

}  // namespace kh::merge
