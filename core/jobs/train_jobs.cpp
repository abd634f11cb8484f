// The fine-tuning facade (see train_jobs.h): adapts core/train to plain structs for the Train view.
// May use anything in core; must never let an exception type other than std ones escape.
#include "core/jobs/train_jobs.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "core/jobs/jobs.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/text/tokenizer.h"
#include "core/train/preflight.h"
#include "core/train/trainer.h"

namespace fs = std::filesystem;

namespace kh::jobs {

bool TrainForm::operator==(const TrainForm& o) const {
  return model == o.model && data == o.data && evalData == o.evalData && evalSplit == o.evalSplit &&
         chatTemplate == o.chatTemplate && method == o.method && rank == o.rank && alpha == o.alpha && dropout == o.dropout &&
         targetModules == o.targetModules && rsLora == o.rsLora && learningRate == o.learningRate &&
         weightDecay == o.weightDecay && schedule == o.schedule && warmupSteps == o.warmupSteps && steps == o.steps &&
         epochs == o.epochs && batchSize == o.batchSize && gradAccum == o.gradAccum && clipNorm == o.clipNorm &&
         seed == o.seed && maxLength == o.maxLength && labels == o.labels && maskEndOfTurn == o.maskEndOfTurn &&
         allowUnterminated == o.allowUnterminated && evalEvery == o.evalEvery && evalPrompts == o.evalPrompts &&
         evalMaxNewTokens == o.evalMaxNewTokens && saveEvery == o.saveEvery &&
         gradientCheckpointing == o.gradientCheckpointing && dtype == o.dtype && device == o.device &&
         exportMerged == o.exportMerged && mergedDtype == o.mergedDtype && extra == o.extra;
}

namespace {

std::string at(const YAML::Node& n) { return "TRAIN.yaml:" + std::to_string(n.Mark().line + 1); }

template <class T>
void get(const YAML::Node& v, const std::string& key, T& out) {
  try {
    out = v.as<T>();
  } catch (const YAML::Exception&) {
    throw Error(at(v), "'" + key + "' has a value of the wrong type");
  }
}

void require(bool ok, const YAML::Node& v, const std::string& cause) {
  if (!ok) throw Error(at(v), cause);
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot read");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The 1-based line of `key:` at the start of a line in YAML text (0 when absent): engine errors that
// name a key but no line get the line of that key.
int lineOfKey(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const size_t s = line.find_first_not_of(' ');
    if (s != std::string::npos && line.compare(s, key.size() + 1, key + ":") == 0) return n;
  }
  return 0;
}

}  // namespace

TrainForm parseTrainForm(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error("TRAIN.yaml:" + std::to_string(e.mark.line + 1), "not valid YAML (" + e.msg + ")");
  }
  if (!root.IsMap()) throw Error("TRAIN.yaml", "must be a YAML mapping of settings");
  TrainForm f;
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (k == "model") get(v, k, f.model);
    else if (k == "data") get(v, k, f.data);
    else if (k == "eval_data") get(v, k, f.evalData);
    else if (k == "eval_split") {
      get(v, k, f.evalSplit);
      require(f.evalSplit >= 0 && f.evalSplit < 1, v, "eval_split must be in [0, 1)");
    } else if (k == "chat_template") get(v, k, f.chatTemplate);
    else if (k == "method") {
      get(v, k, f.method);
      require(f.method == "lora" || f.method == "full", v, "method '" + f.method + "' is not lora or full");
    } else if (k == "lora") {
      require(v.IsMap(), v, "'lora' must be a mapping (rank, alpha, dropout, target_modules, rslora)");
      for (const auto& l : v) {
        const std::string lk = l.first.as<std::string>();
        const YAML::Node& lv = l.second;
        if (lk == "rank" || lk == "r") {
          get(lv, lk, f.rank);
          require(f.rank > 0, lv, "lora.rank must be positive");
        } else if (lk == "alpha") get(lv, lk, f.alpha);
        else if (lk == "dropout") {
          get(lv, lk, f.dropout);
          require(f.dropout >= 0 && f.dropout < 1, lv, "lora.dropout must be in [0, 1)");
        } else if (lk == "target_modules") {
          if (lv.IsSequence()) {
            std::string joined;
            for (const auto& s : lv) joined += (joined.empty() ? "" : "|") + s.as<std::string>();
            f.targetModules = joined;
          } else get(lv, lk, f.targetModules);
          try {
            std::regex re(f.targetModules);
          } catch (const std::regex_error&) {
            throw Error(at(lv), "lora.target_modules '" + f.targetModules + "' is not a valid pattern");
          }
        } else if (lk == "rslora") get(lv, lk, f.rsLora);
        else throw Error(at(l.first), "unknown key 'lora." + lk + "'", "lora takes rank, alpha, dropout, target_modules, rslora");
      }
    } else if (k == "learning_rate" || k == "lr") {
      get(v, k, f.learningRate);
      require(f.learningRate > 0, v, "learning_rate must be positive");
    } else if (k == "weight_decay") get(v, k, f.weightDecay);
    else if (k == "schedule") {
      get(v, k, f.schedule);
      require(f.schedule == "cosine" || f.schedule == "linear" || f.schedule == "constant", v,
              "schedule '" + f.schedule + "' is not cosine, linear or constant");
    } else if (k == "warmup_steps") get(v, k, f.warmupSteps);
    else if (k == "steps") get(v, k, f.steps);
    else if (k == "epochs") get(v, k, f.epochs);
    else if (k == "batch_size") {
      get(v, k, f.batchSize);
      require(f.batchSize > 0, v, "batch_size must be positive");
    } else if (k == "grad_accum") {
      get(v, k, f.gradAccum);
      require(f.gradAccum > 0, v, "grad_accum must be positive");
    } else if (k == "clip_norm") get(v, k, f.clipNorm);
    else if (k == "seed") get(v, k, f.seed);
    else if (k == "max_length") {
      get(v, k, f.maxLength);
      require(f.maxLength >= 2, v, "max_length must be at least 2");
    } else if (k == "labels") {
      get(v, k, f.labels);
      require(f.labels == "assistant" || f.labels == "all" || f.labels == "last_turn", v,
              "labels '" + f.labels + "' is not assistant, all or last_turn");
    } else if (k == "mask_end_of_turn") get(v, k, f.maskEndOfTurn);
    else if (k == "allow_unterminated") get(v, k, f.allowUnterminated);
    else if (k == "eval_every") get(v, k, f.evalEvery);
    else if (k == "eval_prompts") get(v, k, f.evalPrompts);
    else if (k == "eval_max_new_tokens") get(v, k, f.evalMaxNewTokens);
    else if (k == "save_every") get(v, k, f.saveEvery);
    else if (k == "gradient_checkpointing") get(v, k, f.gradientCheckpointing);
    else if (k == "dtype") {
      get(v, k, f.dtype);
      const auto d = train::trainingDtypes();
      require(f.dtype == "float32" || f.dtype == "bfloat16" || std::find(d.begin(), d.end(), f.dtype) != d.end(), v,
              "dtype '" + f.dtype + "' is not fp32 or bf16");
      if (f.dtype == "float32") f.dtype = "fp32";
      if (f.dtype == "bfloat16") f.dtype = "bf16";
    }
    else if (k == "device") get(v, k, f.device);
    else if (k == "export_merged") get(v, k, f.exportMerged);
    else if (k == "merged_dtype") get(v, k, f.mergedDtype);
    else {
      YAML::Emitter e;
      e << YAML::Flow << v;
      f.extra.emplace_back(k, e.c_str());
    }
  }
  return f;
}

std::string trainFormToYaml(const TrainForm& f) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "model" << YAML::Value << f.model;
  e << YAML::Key << "data" << YAML::Value << f.data;
  if (!f.evalData.empty()) e << YAML::Key << "eval_data" << YAML::Value << f.evalData;
  e << YAML::Key << "eval_split" << YAML::Value << f.evalSplit;
  if (!f.chatTemplate.empty()) e << YAML::Key << "chat_template" << YAML::Value << f.chatTemplate;
  e << YAML::Key << "method" << YAML::Value << f.method;
  e << YAML::Key << "lora" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "rank" << YAML::Value << f.rank;
  e << YAML::Key << "alpha" << YAML::Value << f.alpha;
  e << YAML::Key << "dropout" << YAML::Value << f.dropout;
  e << YAML::Key << "target_modules" << YAML::Value << f.targetModules;
  e << YAML::Key << "rslora" << YAML::Value << f.rsLora;
  e << YAML::EndMap;
  e << YAML::Key << "learning_rate" << YAML::Value << f.learningRate;
  e << YAML::Key << "weight_decay" << YAML::Value << f.weightDecay;
  e << YAML::Key << "schedule" << YAML::Value << f.schedule;
  e << YAML::Key << "warmup_steps" << YAML::Value << f.warmupSteps;
  e << YAML::Key << "steps" << YAML::Value << f.steps;
  e << YAML::Key << "epochs" << YAML::Value << f.epochs;
  e << YAML::Key << "batch_size" << YAML::Value << f.batchSize;
  e << YAML::Key << "grad_accum" << YAML::Value << f.gradAccum;
  e << YAML::Key << "clip_norm" << YAML::Value << f.clipNorm;
  e << YAML::Key << "seed" << YAML::Value << f.seed;
  e << YAML::Key << "max_length" << YAML::Value << f.maxLength;
  e << YAML::Key << "labels" << YAML::Value << f.labels;
  if (f.maskEndOfTurn) e << YAML::Key << "mask_end_of_turn" << YAML::Value << true;
  if (f.allowUnterminated) e << YAML::Key << "allow_unterminated" << YAML::Value << true;
  e << YAML::Key << "eval_every" << YAML::Value << f.evalEvery;
  e << YAML::Key << "eval_prompts" << YAML::Value << f.evalPrompts;
  e << YAML::Key << "eval_max_new_tokens" << YAML::Value << f.evalMaxNewTokens;
  e << YAML::Key << "save_every" << YAML::Value << f.saveEvery;
  if (f.gradientCheckpointing) e << YAML::Key << "gradient_checkpointing" << YAML::Value << true;
  e << YAML::Key << "dtype" << YAML::Value << f.dtype;
  e << YAML::Key << "device" << YAML::Value << f.device;
  e << YAML::Key << "export_merged" << YAML::Value << f.exportMerged;
  if (!f.mergedDtype.empty()) e << YAML::Key << "merged_dtype" << YAML::Value << f.mergedDtype;
  for (const auto& [k, text] : f.extra) e << YAML::Key << k << YAML::Value << YAML::Load(text);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::vector<std::string> trainingDtypes() { return train::trainingDtypes(); }

namespace {

// The engine's config from the file (relative paths against its folder), with the form's checks
// first so that every error carries a line.
train::TrainConfig loadConfig(const std::string& path) {
  const std::string text = readFile(path);
  try {
    parseTrainForm(text);
  } catch (const Error& e) {
    const std::string where = e.where();
    throw Error(path + where.substr(std::string("TRAIN.yaml").size()), e.cause(), e.hint());
  }
  const std::string base = fs::absolute(path).parent_path().string();
  try {
    return train::parseTrainConfig(text, path, base);
  } catch (const Error& e) {
    std::smatch m;
    static const std::regex quoted("'([a-z_.]+)'");
    const std::string cause = e.cause();
    if (e.where() == path && std::regex_search(cause, m, quoted)) {
      std::string key = m[1];
      if (key.rfind("lora.", 0) == 0) key = key.substr(5);
      if (const int line = lineOfKey(text, key)) throw Error(path + ":" + std::to_string(line), cause, e.hint());
    }
    throw;
  }
}

}  // namespace

std::string validateTrainConfig(const std::string& path) {
  try {
    const auto c = loadConfig(path);
    const std::string text = readFile(path);
    const auto where = [&](const char* key) {
      const int line = lineOfKey(text, key);
      return line ? path + ":" + std::to_string(line) : path;
    };
    if (!fs::is_directory(c.model)) return where("model") + ": model folder " + c.model + " not found";
    if (!fs::exists(fs::path(c.model) / "config.json"))
      return where("model") + ": " + c.model + " is not a model folder (no config.json)";
    if (!fs::is_regular_file(c.data)) return where("data") + ": data file " + c.data + " not found";
    if (!c.evalData.empty() && !fs::is_regular_file(c.evalData))
      return where("eval_data") + ": data file " + c.evalData + " not found";
    const auto devices = availableDevices();
    if (c.device != "cuda" && std::find(devices.begin(), devices.end(), c.device) == devices.end())
      return where("device") + ": device '" + c.device + "' is not available here";
    return "";
  } catch (...) {
    return jobMessage(std::current_exception());
  }
}

TrainAudit auditTrainConfig(const std::string& path, int shown) {
  const std::string problem = validateTrainConfig(path);
  if (!problem.empty()) throw Error("", problem);
  const auto c = loadConfig(path);
  const auto p = train::preflightTraining(c);
  const auto& a = p.audit;
  TrainAudit r;
  r.ok = a.ok();
  r.stopShare = a.stopShare();
  r.examples = a.examples;
  r.tokens = a.tokens;
  r.trainedTokens = a.trainedTokens;
  r.assistantTurns = a.assistantTurns;
  r.terminatedTurns = a.terminatedTurns;
  r.cutTurns = a.cutTurns;
  r.cutExamples = a.cutExamples;
  r.minLength = a.minLength;
  r.medianLength = a.medianLength;
  r.p90Length = a.p90Length;
  r.maxLength = a.maxLength;
  r.maxLengthSetting = c.labels.maxLength;
  r.steps = p.steps;
  r.heldOutExamples = static_cast<int64_t>(p.heldOutExamples.size());
  r.report = a.report;
  r.format = chatFormatName(p.context.format);
  const Tokenizer& tok = *p.tokenizer;
  auto piece = [&](int id) {
    std::string s = tok.idToPiece(id), out;
    for (char ch : s) out += ch == '\n' ? std::string("\\n") : std::string(1, ch);
    return out;
  };
  const auto& stops = p.context.stopIds;
  for (int id : stops) r.stopTokens.push_back(std::to_string(id) + " " + piece(id));
  for (const auto& x : p.examples) r.lengths.push_back(x.fullLength);
  for (int i = 0; i < shown && i < static_cast<int>(p.examples.size()); ++i) {
    const auto& x = p.examples[static_cast<size_t>(i)];
    AuditExample ex;
    ex.source = x.source;
    ex.fullLength = x.fullLength;
    ex.cut = x.cut;
    for (size_t k = 0; k < x.ids.size(); ++k)
      ex.tokens.push_back({piece(x.ids[k]), x.trained[k] != 0, std::find(stops.begin(), stops.end(), x.ids[k]) != stops.end()});
    for (int64_t start : x.answerStart)  // each answer ends on the first stop token from its start
      for (size_t k = static_cast<size_t>(std::max<int64_t>(0, start)); k < ex.tokens.size(); ++k)
        if (ex.tokens[k].stop) {
          ex.tokens[k].endsAnswer = true;
          break;
        }
    r.shown.push_back(std::move(ex));
  }
  r.memory.weights = p.memory.weights;
  r.memory.trainable = p.memory.trainable;
  r.memory.activations = p.memory.activations;
  r.memory.logits = p.memory.logits;
  r.memory.total = p.memory.total();
  r.memory.batch = p.memoryInput.batch;
  r.memory.sequence = p.memoryInput.sequence;
  r.memory.gradientCheckpointing = p.memoryInput.gradientCheckpointing;
  r.memory.line = p.memoryPlan;
  std::istringstream lines(a.report);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t at = line.find("(tokens before the last answer): ");
    if (at != std::string::npos) r.chatDiff = line.substr(at + 33);
  }
  return r;
}

namespace {
std::function<void(const std::string&)> lineSink(const TrainCallbacks& cb) {
  return [cb](const std::string& line) {
    if (cb.onLog) cb.onLog(!line.empty() && line.back() == '\n' ? line.substr(0, line.size() - 1) : line);
  };
}
train::TrainProgressFn progressSink(const TrainCallbacks& cb) {
  if (!cb.onProgress) return {};
  return [cb](const train::TrainProgress& p) {
    cb.onProgress(TrainStatus{p.step, p.steps, p.loss, p.lr, p.tokensPerSecond, p.etaSeconds});
  };
}
TrainOutcome outcome(const train::TrainResult& r) {
  TrainOutcome o;
  o.runDir = r.runDir;
  o.adapterDir = r.adapterDir;
  o.mergedDir = r.mergedDir;
  o.firstLoss = r.firstLoss;
  o.finalLoss = r.finalLoss;
  o.stopRate = r.eval.stopRate();
  return o;
}
}  // namespace

TrainOutcome startTraining(const std::string& configPath, const std::string& runDir, const TrainCallbacks& cb) {
  return outcome(train::runTraining(loadConfig(configPath), runDir, lineSink(cb), cb.cancel, progressSink(cb)));
}

TrainOutcome resumeTraining(const std::string& runDir, const TrainCallbacks& cb) {
  return outcome(train::resumeTraining(runDir, lineSink(cb), cb.cancel, progressSink(cb)));
}

TrainRunModels trainRunModels(const std::string& runDir) {
  TrainRunModels r;
  try {
    const fs::path d(runDir);
    if (!train::isTrainingRun(runDir)) return r;
    r.isTrainingRun = true;
    const auto st = nlohmann::json::parse(readFile((d / "state.json").string()));
    r.finished = st.value("status", "") == "done";
    r.step = st.value("step", int64_t{0});
    r.steps = st.value("steps", int64_t{0});
    r.resumable = !r.finished && fs::exists(d / "checkpoint" / "trainer_state.safetensors");
    if (fs::exists(d / "merged" / "config.json")) r.mergedDir = (d / "merged").string();
    if (fs::exists(d / "adapter" / "adapter_config.json")) r.adapterDir = (d / "adapter").string();
    const std::string cfg = (d / "config.yaml").string();
    r.baseModel = train::parseTrainConfig(readFile(cfg), cfg, st.value("config_dir", std::string())).model;
  } catch (const std::exception&) {
  }
  return r;
}

std::string mergeTrainedAdapter(const std::string& runDir, const std::string& device) {
  const auto r = trainRunModels(runDir);
  if (!r.isTrainingRun) throw Error(runDir, "is not a training run folder");
  if (r.adapterDir.empty()) throw Error(runDir, "has no adapter/ to merge", "the run has not finished");
  ModelFolder base = ModelFolder::open(r.baseModel);
  RunOptions ro;
  ro.device = device;
  ro.dtype = "fp32";
  auto model = Model::load(base, ro);
  train::loadPeftAdapter(*model, r.adapterDir);
  const std::string out = (fs::path(runDir) / "merged").string();
  train::exportMerged(*model, base, out);
  return out;
}

}  // namespace kh::jobs
