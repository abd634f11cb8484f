// The torch-free facade (see jobs.h): adapts the engine's typed APIs to plain structs.
// May use anything in core; must never let an exception type other than std ones escape.
#include "core/jobs/jobs.h"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <torch/cuda.h>
#if defined(KH_CUDA) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#define KH_HAS_CUDA_STATS 1
#endif

#include "core/error.h"
#include "core/evolve/evolution.h"
#include "core/merge/executor.h"
#include "core/merge/recipe.h"
#include "core/model/inspect.h"
#include "core/model/memory.h"
#include "core/model/model_folder.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"

namespace fs = std::filesystem;

namespace kh::jobs {

std::string jobMessage(const std::exception_ptr& e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const Cancelled&) {
    return "cancelled";
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown error";
  }
  return "";
}

// ---- models ---------------------------------------------------------------------------------------

ModelInfo inspectModelFolder(const std::string& dir, const std::string& device) {
  if (!fs::is_directory(dir)) throw Error(dir, "not a folder");
  ModelFolder m = ModelFolder::open(dir);
  ModelInfo info;
  info.dir = dir;
  info.report = inspectModel(m);
  std::string tmpl;
  if (m.tokenizer) {
    if (auto f = detectChatFormat(m.tokenizer->chatTemplate())) tmpl = chatFormatName(*f);
    else if (!m.tokenizer->chatTemplate().empty()) tmpl = "unknown";
  }
  info.report["template_family"] = tmpl.empty() ? "none" : tmpl;
  const std::string dev = device.rfind("cuda", 0) == 0 ? "cuda" : "cpu";
  for (const auto& row : info.report["memory"]) {
    if (row.value("device", "") == dev && row.value("as", "") == "stored") {
      info.memoryBytes = row.value("total", uint64_t{0});
      std::ostringstream s;
      s << formatBytes(info.memoryBytes) << " on " << device << " (" << row.value("dtype", "") << ": weights "
        << formatBytes(row.value("weights", uint64_t{0})) << ", KV cache " << formatBytes(row.value("kv_cache", uint64_t{0}))
        << " for " << row.value("context_tokens", 0) << " tokens, activations "
        << formatBytes(row.value("activations", uint64_t{0})) << ")";
      info.memoryText = s.str();
    }
  }
  std::ostringstream key;
  key << m.config.architecture << "|";
  for (const auto& n : m.weights->names()) {
    key << n << ":";
    for (auto d : m.weights->entry(n).shape) key << d << ",";
    key << ";";
  }
  info.mergeKey = key.str();
  return info;
}

std::string describeModel(const ModelInfo& info) {
  return formatInspectReport(info.report) + "\nTemplate family: " + info.report.value("template_family", "none") +
         "\nMemory needed:   " + info.memoryText + "\n";
}

std::string mergeIncompatibility(const ModelInfo& a, const ModelInfo& b) {
  if (a.mergeKey == b.mergeKey) return "";
  const std::string aa = a.report.value("architecture", ""), ba = b.report.value("architecture", "");
  if (aa != ba) return "architectures differ: " + aa + " vs " + ba;
  return "tensor names or shapes differ";
}

uint64_t processMemory() { return currentRss(); }
std::string formatBytes(uint64_t bytes) { return kh::formatBytes(bytes); }

std::vector<std::string> availableDevices() {
  std::vector<std::string> d{"cpu"};
  const auto n = torch::cuda::device_count();
  for (size_t i = 0; i < n; ++i) d.push_back("cuda:" + std::to_string(i));
  return d;
}

std::string deviceMemoryText() {
#ifdef KH_HAS_CUDA_STATS
  std::string out;
  const auto n = torch::cuda::device_count();
  for (size_t i = 0; i < n; ++i) {
    const int dev = static_cast<int>(i);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
    const auto& held = stats.reserved_bytes[static_cast<size_t>(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE)];
    const auto total = static_cast<uint64_t>(at::cuda::getDeviceProperties(dev)->totalGlobalMem);
    if (!out.empty()) out += "  ";
    out += "cuda:" + std::to_string(i) + " " + kh::formatBytes(static_cast<uint64_t>(held.current)) + " (peak " +
           kh::formatBytes(static_cast<uint64_t>(held.peak)) + ") of " + kh::formatBytes(total);
  }
  return out;
#else
  return "";
#endif
}

// ---- merge ----------------------------------------------------------------------------------------

std::string planMergeText(const std::string& yaml, const std::string& baseDir, const std::string& device) {
  auto recipe = merge::parseRecipe(yaml, "recipe", baseDir);
  merge::MergeOptions o;
  o.device = device;
  o.outDir = baseDir + "/merged";
  return merge::planMerge(recipe, o).describe();
}

RecipeError recipeErrorOf(const std::string& message) {
  RecipeError e{message, 0};
  std::smatch m;
  static const std::regex re(R"(^recipe:(\d+))");
  if (std::regex_search(message, m, re)) e.line = std::stoi(m[1]);
  return e;
}

void runMergeText(const std::string& yaml, const std::string& baseDir, const std::string& outDir,
                  const std::string& device, const std::function<void(double, const std::string&)>& onProgress,
                  const std::atomic<bool>* cancel) {
  auto recipe = merge::parseRecipe(yaml, "recipe", baseDir);
  merge::MergeOptions o;
  o.device = device;
  o.outDir = outDir;
  o.cancel = cancel;
  if (onProgress) o.onProgress = [&](const merge::MergeProgress& p) { onProgress(p.fraction, p.tensor); };
  merge::runMerge(recipe, o);
}

// ---- evolve ---------------------------------------------------------------------------------------

bool EvolveForm::operator==(const EvolveForm& o) const {
  return method == o.method && baseModel == o.baseModel && models == o.models && layerGranularity == o.layerGranularity &&
         filters == o.filters && dtype == o.dtype && suite == o.suite && target == o.target && sequences == o.sequences &&
         length == o.length && seed == o.seed && population == o.population && generations == o.generations &&
         maxEvaluations == o.maxEvaluations && device == o.device;
}

namespace {
template <class T>
T as(const YAML::Node& n, const char* key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw Error("EVOLVE.yaml:" + std::to_string(n.Mark().line + 1), std::string("bad value for ") + key);
  }
}
}  // namespace

EvolveForm parseEvolveForm(const std::string& yamlText) {
  YAML::Node root;
  try {
    root = YAML::Load(yamlText);
  } catch (const YAML::Exception& e) {
    throw Error("EVOLVE.yaml:" + std::to_string(e.mark.line + 1), e.msg);
  }
  EvolveForm f;
  if (!root.IsMap()) throw Error("EVOLVE.yaml", "expected a mapping of settings");
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (k == "merge_method") f.method = as<std::string>(v, "merge_method");
    else if (k == "base_model") f.baseModel = as<std::string>(v, "base_model");
    else if (k == "models") f.models = as<std::vector<std::string>>(v, "models");
    else if (k == "layer_granularity") f.layerGranularity = as<int64_t>(v, "layer_granularity");
    else if (k == "filters") f.filters = as<std::vector<std::string>>(v, "filters");
    else if (k == "dtype") f.dtype = as<std::string>(v, "dtype");
    else if (k == "device") f.device = as<std::string>(v, "device");
    else if (k == "fitness") {
      for (const auto& g : v) {
        const std::string gk = g.first.as<std::string>();
        if (gk == "suite") f.suite = as<std::string>(g.second, "suite");
        else if (gk == "target") f.target = as<std::string>(g.second, "target");
        else if (gk == "sequences") f.sequences = as<int64_t>(g.second, "sequences");
        else if (gk == "length") f.length = as<int64_t>(g.second, "length");
        else throw Error("EVOLVE.yaml:" + std::to_string(g.first.Mark().line + 1), "unknown fitness key '" + gk + "'");
      }
    } else if (k == "search") {
      for (const auto& g : v) {
        const std::string gk = g.first.as<std::string>();
        if (gk == "seed") f.seed = as<uint64_t>(g.second, "seed");
        else if (gk == "population") f.population = as<int>(g.second, "population");
        else if (gk == "generations") f.generations = as<int>(g.second, "generations");
        else if (gk == "max_evaluations") f.maxEvaluations = as<long long>(g.second, "max_evaluations");
        else throw Error("EVOLVE.yaml:" + std::to_string(g.first.Mark().line + 1), "unknown search key '" + gk + "'");
      }
    } else {
      throw Error("EVOLVE.yaml:" + std::to_string(kv.first.Mark().line + 1), "the form does not know key '" + k + "'");
    }
  }
  return f;
}

std::string evolveFormToYaml(const EvolveForm& f) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "merge_method" << YAML::Value << f.method;
  if (!f.baseModel.empty()) e << YAML::Key << "base_model" << YAML::Value << f.baseModel;
  e << YAML::Key << "models" << YAML::Value << YAML::BeginSeq;
  for (const auto& m : f.models) e << m;
  e << YAML::EndSeq;
  e << YAML::Key << "layer_granularity" << YAML::Value << f.layerGranularity;
  if (!f.filters.empty()) {
    e << YAML::Key << "filters" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& m : f.filters) e << m;
    e << YAML::EndSeq;
  }
  e << YAML::Key << "dtype" << YAML::Value << f.dtype;
  e << YAML::Key << "device" << YAML::Value << f.device;
  e << YAML::Key << "fitness" << YAML::Value << YAML::BeginMap;
  if (!f.suite.empty()) e << YAML::Key << "suite" << YAML::Value << f.suite;
  if (!f.target.empty()) e << YAML::Key << "target" << YAML::Value << f.target;
  e << YAML::Key << "sequences" << YAML::Value << f.sequences;
  e << YAML::Key << "length" << YAML::Value << f.length;
  e << YAML::EndMap;
  e << YAML::Key << "search" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "seed" << YAML::Value << f.seed;
  if (f.population > 0) e << YAML::Key << "population" << YAML::Value << f.population;
  e << YAML::Key << "generations" << YAML::Value << f.generations;
  if (f.maxEvaluations > 0) e << YAML::Key << "max_evaluations" << YAML::Value << f.maxEvaluations;
  e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::string validateEvolveConfig(const std::string& path) {
  try {
    auto c = evolve::loadEvolveConfig(path);
    c.genome.validate(path);
    for (const auto& m : c.genome.models)
      if (!fs::is_directory(m)) return m + ": model folder not found";
    return "";
  } catch (...) {
    return jobMessage(std::current_exception());
  }
}

namespace {
evolve::EvolveOptions toOptions(const EvolveCallbacks& cb) {
  evolve::EvolveOptions o;
  o.cancel = cb.cancel;
  o.onLog = cb.onLog;
  if (cb.onProgress)
    o.onProgress = [f = cb.onProgress](const evolve::EvolveProgress& p) {
      EvolveStatus s;
      s.generation = p.generation;
      s.generations = p.generations;
      s.index = p.index;
      s.population = p.population;
      s.hasBest = p.hasBest;
      s.bestFitness = p.bestFitness;
      s.elapsedSeconds = p.elapsedSeconds;
      f(s);
    };
  return o;
}
EvolveResult toResult(const evolve::EvolveSummary& s) {
  EvolveResult r;
  r.runDir = s.runDir;
  r.stopReason = s.stopReason;
  r.bestRecipePath = s.bestRecipePath;
  r.generations = s.generations;
  r.evaluations = s.evaluations;
  r.bestFitness = s.bestFitness;
  return r;
}
}  // namespace

EvolveResult startEvolve(const std::string& configPath, const std::string& runDir, const EvolveCallbacks& cb) {
  return toResult(evolve::startEvolution(evolve::loadEvolveConfig(configPath), runDir, toOptions(cb)));
}
EvolveResult resumeEvolve(const std::string& runDir, const EvolveCallbacks& cb) {
  return toResult(evolve::resumeEvolution(runDir, toOptions(cb)));
}

std::string newRunDir(const std::string& root, const std::string& kind, const std::string& name) {
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  fs::create_directories(root);
  std::string base = (fs::path(root) / (kind + "-" + name + "-" + stamp)).string(), dir = base;
  for (int i = 2; fs::exists(dir); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

// ---- run folders ------------------------------------------------------------------------------------

MetricsChunk readMetrics(const std::string& path, uint64_t offset) {
  MetricsChunk c;
  c.nextOffset = offset;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return c;
  if (size < offset) {
    c.reset = true;
    offset = 0;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return c;
  in.seekg(static_cast<std::streamoff>(offset));
  std::string buf(static_cast<size_t>(size - offset), '\0');
  in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  buf.resize(static_cast<size_t>(in.gcount()));
  size_t pos = 0;
  for (;;) {
    const size_t nl = buf.find('\n', pos);
    if (nl == std::string::npos) break;  // a half-written last line waits
    const std::string line = buf.substr(pos, nl - pos);
    const uint64_t lineStart = offset + pos;
    pos = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      c.lines.push_back(nlohmann::json::parse(line));
    } catch (const std::exception& e) {
      c.errors.push_back(path + " at byte " + std::to_string(lineStart) + ": not a JSON line (" + e.what() + ")");
    }
  }
  c.nextOffset = offset + pos;
  return c;
}

bool isRunFolder(const std::string& dir) {
  const fs::path d(dir);
  return fs::exists(d / "metrics.jsonl") || fs::exists(d / "state.json") || fs::exists(d / "config.yaml") ||
         fs::exists(d / "error.txt");
}

std::vector<std::string> listRunFolders(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && isRunFolder(e.path().string())) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

void writeRunError(const std::string& runDir, const std::string& message) {
  std::error_code ec;
  if (runDir.empty()) return;
  fs::create_directories(runDir, ec);
  std::ofstream(fs::path(runDir) / "error.txt") << message << "\n";
}

namespace {
int64_t mtimeUnix(const fs::path& p) {
  std::error_code ec;
  auto t = fs::last_write_time(p, ec);
  if (ec) return 0;
  auto sys = std::chrono::time_point_cast<std::chrono::system_clock::duration>(t - fs::file_time_type::clock::now() +
                                                                                std::chrono::system_clock::now());
  return std::chrono::duration_cast<std::chrono::seconds>(sys.time_since_epoch()).count();
}
}  // namespace

RunInfo readRunInfo(const std::string& dir) {
  RunInfo r;
  r.dir = dir;
  const fs::path d(dir);
  const std::string base = d.filename().string();
  r.name = base;
  for (const char* k : {"evolve", "eval", "merge"})
    if (base.find(k) != std::string::npos) {
      r.kind = k;
      break;
    }
  if (r.kind.empty()) r.kind = fs::exists(d / "state.json") ? "evolve" : "unknown";
  nlohmann::json trainState;  // a training run's state.json says so (kind: train, status: running | done)
  if (fs::exists(d / "state.json")) {
    std::ifstream in(d / "state.json");
    try {
      const auto st = nlohmann::json::parse(in);
      if (st.is_object() && st.value("kind", "") == "train") r.kind = "train", trainState = st;
    } catch (const std::exception&) {
    }
  }
  try {
    r.started = mtimeUnix(d / "config.yaml");
    if (!r.started) r.started = mtimeUnix(d);
    const int64_t last = std::max(mtimeUnix(d / "metrics.jsonl"), mtimeUnix(d / "state.json"));
    if (last && r.started) r.durationSeconds = static_cast<double>(std::max<int64_t>(0, last - r.started));
    auto chunk = readMetrics((d / "metrics.jsonl").string(), 0);
    for (const auto& l : chunk.lines) {
      if (l.value("type", "") != "generation" || !l.contains("best") || !l["best"].is_number()) continue;
      const double b = l["best"].get<double>();
      if (!r.hasBest || b > r.best) r.best = b;
      r.hasBest = true;
    }
    if (fs::exists(d / "error.txt")) {
      std::ifstream in(d / "error.txt");
      std::getline(in, r.error);
      r.status = r.error == "cancelled" ? "stopped" : "failed";
      return r;
    }
    int generation = -1, generations = 0;
    if (r.kind == "train") {
      if (trainState.value("status", "") == "done") r.status = "finished";
    } else if (fs::exists(d / "state.json")) {
      std::ifstream in(d / "state.json");
      auto st = nlohmann::json::parse(in);
      generation = st.value("generation", 0);
      if (st.contains("stop_reason")) r.status = "finished";  // ended by its budget or a CMA-ES stop rule
      YAML::Node cfg = YAML::Load(st.value("config", std::string()));
      if (cfg["search"] && cfg["search"]["generations"]) generations = cfg["search"]["generations"].as<int>();
      else generations = 10;
    }
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const bool ended = r.status == "finished" || (generation >= 0 && generations > 0 && generation >= generations) ||
                       fs::exists(d / "finished");
    r.status = ended ? "finished" : (last && now - last < 30) ? "running" : "stopped";
  } catch (const std::exception& e) {
    r.status = "failed";
    r.error = e.what();
  }
  return r;
}

}  // namespace kh::jobs
