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

namespace kh::merge {

namespace fs = std::filesystem;

namespace {

// Layer index of a tensor name ("model.layers.12.", "transformer.h.3."), -1 outside the layers.
int64_t layerOf(const std::string& name) {
  for (const char* key : {"layers.", ".h."}) {
    size_t p = name.find(key);
    if (p == std::string::npos) continue;
    p += std::strlen(key);
    size_t e = p;
    while (e < name.size() && std::isdigit(static_cast<unsigned char>(name[e]))) ++e;
    if (e > p && e < name.size() && name[e] == '.') return std::stoll(name.substr(p, e - p));
  }
  return -1;
}

// Tensors outside the layers that sit after them (final norm, head) take a gradient's last value.
bool isLate(const std::string& name) { return name.find("norm") != std::string::npos || name.find("lm_head") != std::string::npos || name.find("ln_f") != std::string::npos; }

bool isVocabTensor(const std::string& name) {
  return name == "model.embed_tokens.weight" || name == "lm_head.weight" || name == "transformer.wte.weight";
}

st::DType dtypeFromName(const std::string& n, const std::string& where) {
  if (n == "bfloat16") return st::DType::BF16;
  if (n == "float16") return st::DType::F16;
  if (n == "float32") return st::DType::F32;
  throw Error(where, "dtype '" + n + "' is not one of bfloat16, float16, float32");
}

const char* dtypeField(st::DType d) {
  return d == st::DType::F32 ? "float32" : d == st::DType::F16 ? "float16" : "bfloat16";
}

// The recipe resolved against the model folders on disk.
struct Resolved {
  std::vector<ModelFolder> folders;  // [base?] then every listed model (unique paths)
  int base = -1;                     // index in folders, -1 = none
  std::vector<int> others;           // folders merged onto the base, recipe order
  std::vector<const RecipeModel*> otherEntries;
  const ModelFolder* ref = nullptr;  // defines the output: the base, else the first model
  std::vector<std::pair<std::string, std::vector<int64_t>>> outputs;  // name, shape (the ref's)
  st::DType outDtype = st::DType::BF16;
  std::vector<std::string> notes;
};

Resolved resolve(const Recipe& r) {
  if (!r.slices.empty())
    throw Error(r.path, "slices are not supported by this executor yet", "merge with 'models:' for now");
  Resolved x;
  std::map<std::string, int> index;
  auto open = [&](const std::string& path) {
    auto it = index.find(path);
    if (it != index.end()) return it->second;
    x.folders.push_back(ModelFolder::open(path));
    index[path] = static_cast<int>(x.folders.size()) - 1;
    return index[path];
  };
  if (!r.baseModel.empty()) x.base = open(r.baseModel);
  for (const auto& m : r.models) {
    const int i = open(m.model);
    if (i == x.base) continue;  // mergekit lets the base appear in the list; its entry adds nothing
    x.others.push_back(i);
    x.otherEntries.push_back(&m);
  }
  if (!needsBase(r.method) && x.base >= 0 && r.method != Method::Slerp && r.method != Method::NuSlerp &&
      r.method != Method::ModelStock && r.method != Method::Passthrough) {
    // linear / passthrough with a base_model: the base takes part like any model.
    x.others.insert(x.others.begin(), x.base);
    x.otherEntries.insert(x.otherEntries.begin(), nullptr);
  }
  x.ref = &x.folders[static_cast<size_t>(x.base >= 0 ? x.base : x.others.front())];
  for (const auto& f : x.folders) {
    if (f.config.architecture != x.ref->config.architecture)
      throw Error(f.dir, "architecture " + f.config.architecture + " differs from " + x.ref->dir + "'s " +
                             x.ref->config.architecture, "merge models of one architecture");
    f.requireExactLayout();
  }
  for (const auto& e : x.ref->family->layout(x.ref->config)) {
    if (!x.ref->weights->has(e.name)) continue;
    x.outputs.push_back({e.name, x.ref->weights->entry(e.name).shape});
    for (const auto& f : x.folders) {
      if (!f.weights->has(e.name))
        throw Error(f.dir, "has no tensor '" + e.name + "', which " + x.ref->dir + " has");
      const auto& shape = f.weights->entry(e.name).shape;
      if (shape == x.outputs.back().second) continue;
      const bool vocabOnly = isVocabTensor(e.name) && shape.size() == 2 && shape[1] == x.outputs.back().second[1];
      if (!vocabOnly) {
        std::ostringstream o;
        o << "tensor '" << e.name << "' has shape " << c10::IntArrayRef(shape) << " but " << x.ref->dir << " has "
          << c10::IntArrayRef(x.outputs.back().second);
        throw Error(f.dir, o.str());
      }
      x.notes.push_back(f.dir + ": " + e.name + " has " + std::to_string(shape[0]) + " rows, cropped/padded to the base's " +
                        std::to_string(x.outputs.back().second[0]) + " (padding rows take the base's values)");
    }
  }
  const std::string od = !r.outDtype.empty() ? r.outDtype : r.dtype;
  if (!od.empty()) {
    x.outDtype = dtypeFromName(od, r.path);
  } else {
    const auto& first = x.ref->weights->entry(x.outputs.front().first);
    x.outDtype = first.dtype;
  }
  if (r.method == Method::Passthrough && x.others.size() != 1)
    throw Error(r.path, "passthrough takes exactly one model, got " + std::to_string(x.others.size()));
  return x;
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

ModelParams paramsFor(const Recipe& r, const RecipeModel* entry, const std::string& tensor, int64_t layer, int64_t layers) {
  ModelParams mp;
  const bool late = isLate(tensor);
  auto get = [&](const char* key, double& out) {
    const std::string where = r.path + ": parameter '" + key + "'";
    if (entry) {
      auto it = entry->parameters.find(key);
      if (it != entry->parameters.end()) {
        out = it->second.resolve(tensor, layer, layers, late, where);
        return;
      }
    }
    auto g = r.parameters.find(key);
    if (g != r.parameters.end()) out = g->second.resolve(tensor, layer, layers, late, where);
  };
  get("weight", mp.weight);
  get("density", mp.density);
  get("gamma", mp.gamma);
  get("epsilon", mp.epsilon);
  return mp;
}

MethodParams methodParamsFor(const Recipe& r, const std::string& tensor, int64_t layer, int64_t layers, uint64_t seed) {
  MethodParams m;
  const bool late = isLate(tensor);
  auto val = [&](const char* key) -> std::optional<double> {
    auto g = r.parameters.find(key);
    if (g == r.parameters.end()) return std::nullopt;
    return g->second.resolve(tensor, layer, layers, late, r.path + ": parameter '" + key + "'");
  };
  if (auto v = val("normalize")) m.normalize = *v != 0.0;
  if (auto v = val("rescale")) m.rescale = *v != 0.0;
  if (auto v = val("lambda")) m.lambda = *v;
  if (auto v = val("t")) m.t = *v;
  if (auto v = val("nuslerp_flatten")) m.nuslerpFlatten = *v != 0.0;
  if (auto v = val("nuslerp_row_wise")) m.nuslerpRowWise = *v != 0.0;
  m.seed = seed;
  m.tensorName = tensor;
  return m;
}

// Rows of a vocab tensor cropped or padded to `rows` (padding from `fill`, the base's rows).
at::Tensor fitRows(const at::Tensor& t, int64_t rows, const at::Tensor& fill) {
  if (t.size(0) == rows) return t;
  if (t.size(0) > rows) return t.narrow(0, 0, rows);
  return at::cat({t, fill.narrow(0, t.size(0), rows - t.size(0))}, 0);
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

MemoryPlan planMerge(const Recipe& recipe, const MergeOptions& options) { return planFor(resolve(recipe), options); }

MergeReport runMerge(const Recipe& r, const MergeOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (o.outDir.empty()) throw Error("merge", "no output folder given", "pass -o OUT");
  const fs::path out(o.outDir);
  std::error_code ec;
  if (fs::exists(out, ec) && !o.overwrite) throw Error(o.outDir, "already exists", "pass --overwrite to replace it");
  Resolved x = resolve(r);
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
    const int64_t layers = x.ref->config.numLayers;
    size_t done = 0;
    for (const auto& [name, shape] : x.outputs) {
      if (o.cancel && o.cancel->load()) throw Cancelled();
      const int64_t layer = layerOf(name);
      at::Tensor base;
      if (x.base >= 0) base = loadTensor(*x.folders[static_cast<size_t>(x.base)].weights, name, at::kFloat, device);
      at::Tensor refRows = base.defined() ? base : loadTensor(*x.ref->weights, name, at::kFloat, device);
      std::vector<at::Tensor> others;
      std::vector<ModelParams> params;
      for (size_t k = 0; k < x.others.size(); ++k) {
        at::Tensor t = loadTensor(*x.folders[static_cast<size_t>(x.others[k])].weights, name, at::kFloat, device);
        if (isVocabTensor(name)) t = fitRows(t, shape[0], refRows);
        others.push_back(t);
        params.push_back(paramsFor(r, x.otherEntries[k], name, layer, layers));
      }
      at::Tensor merged = mergeTensor(r.method, base, others, params, methodParamsFor(r, name, layer, layers, seed));
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
    nlohmann::json cfg = x.ref->config.raw;
    cfg["torch_dtype"] = dtypeField(x.outDtype);
    std::ofstream(work / "config.json") << cfg.dump(2) << "\n";
    const ModelFolder* tokSource = x.ref;
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
      copyIfPresent(fs::path(f == std::string("generation_config.json") ? x.ref->dir : tokSource->dir) / f, work / f);
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
