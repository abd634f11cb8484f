// Fine-tuning (see trainer.h). Autograd runs through the ordinary forward (core/model/runtime.cpp):
// LoRA adapters are applied inside ops::linear; full fine-tuning swaps in fp32 weights that
// require grad. AdamW is written out here (decoupled weight decay, bias correction, as PyTorch's).
#include "core/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/model/generate.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/text/tokenizer.h"
#include "core/train/preflight.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace kh::train {

// ---------------------------------------------------------------------------------------------
// config

const std::vector<std::string>& trainingDtypes() {
  static const std::vector<std::string> d{"fp32", "bf16"};
  return d;
}

TrainConfig parseTrainConfig(const std::string& text, const std::string& where, const std::string& baseDir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(where + ":" + std::to_string(e.mark.line + 1), "not valid YAML (" + e.msg + ")");
  }
  if (!root.IsMap()) throw Error(where, "must be a YAML mapping of settings");
  TrainConfig c;
  c.yamlText = text;
  auto get = [&](const YAML::Node& v, const std::string& key, auto& out) {
    using T = std::decay_t<decltype(out)>;
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      throw Error(where + ":" + std::to_string(v.Mark().line + 1), "'" + key + "' has a value of the wrong type");
    }
  };
  std::string labels = "assistant";
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (k == "model") get(v, k, c.model);
    else if (k == "data") get(v, k, c.data);
    else if (k == "eval_data") get(v, k, c.evalData);
    else if (k == "eval_split") get(v, k, c.evalSplit);
    else if (k == "chat_template") get(v, k, c.chatTemplate);
    else if (k == "method") get(v, k, c.method);
    else if (k == "lora") {
      if (!v.IsMap()) throw Error(where, "'lora' must be a mapping (rank, alpha, dropout, target_modules, rslora)");
      for (const auto& l : v) {
        const std::string lk = l.first.as<std::string>();
        if (lk == "rank" || lk == "r") get(l.second, lk, c.rank);
        else if (lk == "alpha") get(l.second, lk, c.alpha);
        else if (lk == "dropout") get(l.second, lk, c.dropout);
        else if (lk == "target_modules") {
          if (l.second.IsSequence()) {
            std::string joined;
            for (const auto& s : l.second) joined += (joined.empty() ? "" : "|") + s.as<std::string>();
            c.targetModules = joined;
          } else get(l.second, lk, c.targetModules);
        } else if (lk == "rslora") get(l.second, lk, c.rsLora);
        else throw Error(where, "unknown key 'lora." + lk + "'", "lora takes rank, alpha, dropout, target_modules, rslora");
      }
    } else if (k == "learning_rate" || k == "lr") get(v, k, c.learningRate);
    else if (k == "weight_decay") get(v, k, c.weightDecay);
    else if (k == "schedule") get(v, k, c.schedule);
    else if (k == "warmup_steps") get(v, k, c.warmupSteps);
    else if (k == "steps") get(v, k, c.steps);
    else if (k == "epochs") get(v, k, c.epochs);
    else if (k == "batch_size") get(v, k, c.batchSize);
    else if (k == "grad_accum") get(v, k, c.gradAccum);
    else if (k == "clip_norm") get(v, k, c.clipNorm);
    else if (k == "seed") get(v, k, c.seed);
    else if (k == "max_length") get(v, k, c.labels.maxLength);
    else if (k == "labels") get(v, k, labels);
    else if (k == "mask_end_of_turn") get(v, k, c.labels.maskEndOfTurn);
    else if (k == "allow_unterminated") get(v, k, c.allowUnterminated);
    else if (k == "eval_every") get(v, k, c.evalEvery);
    else if (k == "eval_prompts") get(v, k, c.evalPrompts);
    else if (k == "eval_max_new_tokens") get(v, k, c.evalMaxNewTokens);
    else if (k == "save_every") get(v, k, c.saveEvery);
    else if (k == "dtype") get(v, k, c.dtype);
    else if (k == "gradient_checkpointing") get(v, k, c.gradientCheckpointing);
    else if (k == "device") get(v, k, c.device);
    else if (k == "export_merged") get(v, k, c.exportMerged);
    else if (k == "merged_dtype") get(v, k, c.mergedDtype);
    else
      throw Error(where, "unknown key '" + k + "'",
                  "TRAIN.yaml takes model, data, eval_data, eval_split, chat_template, method, lora, learning_rate, weight_decay, "
                  "schedule, warmup_steps, steps, epochs, batch_size, grad_accum, clip_norm, seed, max_length, labels, "
                  "allow_unterminated, eval_every, eval_prompts, eval_max_new_tokens, save_every, dtype, device, export_merged, "
                  "merged_dtype, gradient_checkpointing");
  }
  c.labels.mode = parseLabelMode(labels);
  c.baseDir = baseDir;
  if (!baseDir.empty())
    for (std::string* p : {&c.model, &c.data, &c.evalData})
      if (!p->empty() && fs::path(*p).is_relative()) *p = fs::absolute(fs::path(baseDir) / *p).lexically_normal().string();
  if (c.model.empty()) throw Error(where, "missing 'model'", "the base model folder");
  if (c.data.empty()) throw Error(where, "missing 'data'", "a JSONL file of conversations");
  if (c.method != "lora" && c.method != "full") throw Error(where, "method '" + c.method + "' is not lora or full");
  if (c.schedule != "cosine" && c.schedule != "linear" && c.schedule != "constant")
    throw Error(where, "schedule '" + c.schedule + "' is not cosine, linear or constant");
  if (c.rank <= 0) throw Error(where, "lora.rank must be positive");
  if (c.dropout < 0 || c.dropout >= 1) throw Error(where, "lora.dropout must be in [0, 1)");
  if (c.batchSize <= 0 || c.gradAccum <= 0) throw Error(where, "batch_size and grad_accum must be positive");
  if (c.labels.maxLength < 2) throw Error(where, "max_length must be at least 2");
  if (c.learningRate <= 0) throw Error(where, "learning_rate must be positive");
  const auto& dtypes = trainingDtypes();
  if (!c.dtype.empty() && c.dtype != "float32" && c.dtype != "bfloat16" && std::find(dtypes.begin(), dtypes.end(), c.dtype) == dtypes.end())
    throw Error(where, "dtype '" + c.dtype + "' is not fp32 or bf16", "training runs in fp32 or bf16 (fp16 would need loss scaling)");
  return c;
}

// ---------------------------------------------------------------------------------------------
// LoRA

double LoraSpec::scale() const { return rsLora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank); }

std::vector<std::string> loraTargets(const Model& m, const std::string& pattern) {
  std::regex re;
  try {
    re = std::regex(pattern);
  } catch (const std::regex_error& e) {
    throw Error("lora.target_modules", "'" + pattern + "' is not a valid pattern: " + e.what());
  }
  std::vector<std::string> out;
  static const std::string kW = ".weight";
  for (const auto& n : m.weightNames()) {
    if (n.size() <= kW.size() || n.compare(n.size() - kW.size(), kW.size(), kW) != 0) continue;
    // Decoder layers only: "model.layers.N." (Llama-style), "transformer.h.N." (GPT-2's Conv1D).
    if ((n.find(".layers.") == std::string::npos && n.rfind("transformer.h.", 0) != 0) || m.weight(n).dim() != 2) continue;
    const std::string module = n.substr(0, n.size() - kW.size());
    if (std::regex_search(module, re)) out.push_back(module);
  }
  if (out.empty())
    throw Error("lora.target_modules", "'" + pattern + "' matches no linear layer of the model",
                "module names look like model.layers.0.self_attn.q_proj; e.g. q_proj|v_proj");
  return out;
}

std::vector<std::string> attachLora(Model& m, const LoraSpec& spec, uint64_t seed) {
  auto targets = loraTargets(m, spec.targetModules);
  auto gen = at::detail::createCPUGenerator(seed);
  // fp32 adapters on a bf16 model (PEFT's choice too): updates of lr * 1e-3 would vanish in bf16.
  auto opts = at::TensorOptions().dtype(m.dtype() == at::kDouble ? at::kDouble : at::kFloat).device(m.device());
  for (const auto& t : targets) {
    const at::Tensor& w = m.weight(t + ".weight");  // [out, in]; GPT-2's Conv1D: [in, out]
    const int64_t in = w.size(m.weightsAreInOut() ? 0 : 1), out = w.size(m.weightsAreInOut() ? 1 : 0);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // kaiming_uniform(a = sqrt(5)), as PEFT
    LinearAdapter a;
    a.A = at::empty({spec.rank, in}, at::kFloat).uniform_(-bound, bound, gen).to(opts).requires_grad_(true);  // [r, in]
    a.B = at::zeros({out, spec.rank}, opts).requires_grad_(true);                                           // [out, r]
    a.scale = spec.scale();
    a.dropout = spec.dropout;
    m.setAdapter(t, a);
  }
  return targets;
}

static std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot read");
  std::stringstream b;
  b << in.rdbuf();
  return b.str();
}

static void writeAtomically(const fs::path& file, const std::string& text) {
  const fs::path partial = file.string() + ".partial";
  {
    std::ofstream o(partial, std::ios::binary);
    o << text;
    if (!o) throw Error(partial.string(), "cannot write");
  }
  std::error_code ec;
  fs::rename(partial, file, ec);
  if (ec) throw Error(file.string(), "cannot rename into place: " + ec.message());
}

// Builds a folder under "<out>.partial" with `fill`, then replaces `out` with it.
static void buildFolderAtomically(const fs::path& out, const std::function<void(const fs::path&)>& fill) {
  const fs::path partial = out.string() + ".partial";
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial);
  fill(partial);
  const fs::path old = out.string() + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(out)) fs::rename(out, old);
  fs::rename(partial, out, ec);
  if (ec) throw Error(out.string(), "cannot rename into place: " + ec.message());
  fs::remove_all(old, ec);
}

void exportPeftAdapter(const Model& m, const LoraSpec& spec, const std::string& baseModel, const std::string& outDir) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::set<std::string> shortNames;
  for (const auto& n : m.weightNames()) {
    const std::string module = n.size() > 7 ? n.substr(0, n.size() - 7) : n;
    const LinearAdapter* a = m.adapter(module);
    if (!a) continue;
    tensors.push_back({"base_model.model." + module + ".lora_A.weight", a->A.detach().to(at::kFloat).contiguous()});
    tensors.push_back({"base_model.model." + module + ".lora_B.weight", a->B.detach().to(at::kFloat).contiguous()});
    shortNames.insert(module.substr(module.rfind('.') + 1));
  }
  if (tensors.empty()) throw Error(outDir, "the model has no LoRA adapters to export");
  // fan_in_fan_out: GPT-2's Conv1D stores [in, out], as PEFT writes it for c_attn / c_proj / c_fc.
  json cfg = {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", spec.rank}, {"lora_alpha", spec.alpha},
              {"lora_dropout", spec.dropout}, {"target_modules", std::vector<std::string>(shortNames.begin(), shortNames.end())},
              {"bias", "none"}, {"base_model_name_or_path", baseModel}, {"use_rslora", spec.rsLora},
              {"fan_in_fan_out", m.weightsAreInOut()}, {"inference_mode", true}, {"modules_to_save", nullptr},
              {"init_lora_weights", true}, {"layers_to_transform", nullptr}, {"revision", nullptr}};
  buildFolderAtomically(outDir, [&](const fs::path& dir) {
    saveSafetensors((dir / "adapter_model.safetensors").string(), tensors);
    std::ofstream((dir / "adapter_config.json").string()) << cfg.dump(2) << "\n";
  });
}

LoraSpec loadPeftAdapter(Model& m, const std::string& dir) {
  const fs::path cfgPath = fs::path(dir) / "adapter_config.json";
  std::ifstream in(cfgPath);
  if (!in) throw Error(cfgPath.string(), "cannot open", "a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors");
  json cfg;
  try {
    cfg = json::parse(in);
  } catch (const std::exception& e) {
    throw Error(cfgPath.string(), std::string("not valid JSON: ") + e.what());
  }
  if (cfg.value("peft_type", "") != "LORA") throw Error(cfgPath.string(), "peft_type is not LORA");
  LoraSpec spec;
  spec.rank = cfg.value("r", 8);
  spec.alpha = cfg.value("lora_alpha", 8.0);
  spec.rsLora = cfg.value("use_rslora", false);
  auto weights = SafetensorsFile::open((fs::path(dir) / "adapter_model.safetensors").string());
  const std::string pre = "base_model.model.", sufA = ".lora_A.weight";
  int64_t n = 0;
  for (const auto& e : weights->tensors()) {
    const std::string& name = e.name;
    if (name.size() <= pre.size() + sufA.size() || name.compare(name.size() - sufA.size(), sufA.size(), sufA) != 0) continue;
    const std::string module = name.substr(pre.size(), name.size() - pre.size() - sufA.size());
    const std::string bName = pre + module + ".lora_B.weight";
    if (!weights->find(bName)) throw Error(dir, bName + " is missing");
    LinearAdapter a;
    a.A = weights->tensor(name).to(m.device(), m.dtype()).clone();
    a.B = weights->tensor(bName).to(m.device(), m.dtype()).clone();
    a.scale = spec.scale();
    m.setAdapter(module, a);
    ++n;
  }
  if (n == 0) throw Error(dir, "adapter_model.safetensors holds no lora_A weights");
  return spec;
}

void exportMerged(const Model& m, const ModelFolder& base, const std::string& outDir, const std::string& dtype) {
  at::NoGradGuard noGrad;
  c10::ScalarType forced = at::kFloat;
  if (dtype == "fp32" || dtype == "float32") forced = at::kFloat;
  else if (dtype == "bf16" || dtype == "bfloat16") forced = at::kBFloat16;
  else if (dtype == "fp16" || dtype == "float16") forced = at::kHalf;
  else if (!dtype.empty()) throw Error("merged_dtype", "'" + dtype + "' is not one of fp32, bf16, fp16");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& n : m.weightNames()) {
    at::Tensor w = m.weight(n).detach().to(at::kFloat);
    const std::string module = n.size() > 7 ? n.substr(0, n.size() - 7) : n;
    if (const LinearAdapter* a = m.adapter(module)) {
      at::Tensor delta = at::matmul(a->B.detach().to(at::kFloat), a->A.detach().to(at::kFloat)) * a->scale;  // [out, in]
      w = w + (m.weightsAreInOut() ? delta.t() : delta);  // Conv1D weights are [in, out]
    }
    const c10::ScalarType stored =
        !dtype.empty() ? forced : base.weights->has(n) ? toScalarType(base.weights->entry(n).dtype, n) : at::kFloat;
    tensors.push_back({n, w.to(stored).contiguous()});
  }
  buildFolderAtomically(outDir, [&](const fs::path& dir) {
    for (const auto& e : fs::directory_iterator(base.dir)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file()) continue;
      if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0) continue;
      if (name == "model.safetensors.index.json") continue;
      fs::copy_file(e.path(), dir / name, fs::copy_options::overwrite_existing);
    }
    saveSafetensors((dir / "model.safetensors").string(), tensors);
  });
}

// ---------------------------------------------------------------------------------------------
// batches and loss

Batch collate(const std::vector<const TokenizedExample*>& xs, int padId) {
  KH_ASSERT(!xs.empty());
  int64_t T = 0;
  for (const auto* x : xs) T = std::max<int64_t>(T, static_cast<int64_t>(x->ids.size()));
  const int64_t B = static_cast<int64_t>(xs.size());
  Batch b;
  b.ids = at::full({B, T}, padId, at::kLong);       // [B, T]
  b.positions = at::full({B, T}, -1, at::kLong);    // [B, T]
  b.trained = at::zeros({B, T}, at::kBool);         // [B, T]
  auto ids = b.ids.accessor<int64_t, 2>();
  auto pos = b.positions.accessor<int64_t, 2>();
  auto tr = b.trained.accessor<bool, 2>();
  for (int64_t r = 0; r < B; ++r) {
    const auto& x = *xs[static_cast<size_t>(r)];
    for (size_t t = 0; t < x.ids.size(); ++t) {
      ids[r][static_cast<int64_t>(t)] = x.ids[t];
      pos[r][static_cast<int64_t>(t)] = static_cast<int64_t>(t);
    }
  }
  // Labels: trained where the example says so AND the position is real (never by token id).
  for (int64_t r = 0; r < B; ++r) {
    const auto& x = *xs[static_cast<size_t>(r)];
    for (int64_t t = 1; t < T; ++t)
      if (pos[r][t] >= 0 && x.trained[static_cast<size_t>(t)]) {
        tr[r][t] = true;
        ++b.trainedTokens;
      }
  }
  return b;
}

at::Tensor batchLoss(const Model& m, const Batch& b) {
  if (b.trainedTokens == 0) return {};
  const int64_t B = b.ids.size(0), T = b.ids.size(1);
  KVCache cache = m.newCache(B, T);
  ForwardBatch fb{b.ids.to(m.device()), b.positions.to(m.device())};
  at::Tensor logits = m.forward(fb, cache);                                        // [B, T, V] fp32
  at::Tensor lp = at::log_softmax(logits.narrow(1, 0, T - 1), -1);                // [B, T-1, V]
  at::Tensor target = fb.ids.narrow(1, 1, T - 1).unsqueeze(-1);                   // [B, T-1, 1]
  at::Tensor nll = -lp.gather(-1, target).squeeze(-1);                             // [B, T-1]
  at::Tensor mask = b.trained.narrow(1, 1, T - 1).to(m.device()).to(at::kFloat);  // [B, T-1]
  return (nll * mask).sum() / static_cast<double>(b.trainedTokens);
}

// ---------------------------------------------------------------------------------------------
// evaluation

EvalResult evaluate(const Model& m, const Tokenizer& tok, const std::vector<TokenizedExample>& heldOut,
                    const std::vector<int>& stopIds, int64_t prompts, int64_t maxNewTokens, int padId) {
  at::NoGradGuard noGrad;
  EvalResult r;
  if (heldOut.empty()) return r;
  double lossSum = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < heldOut.size(); i += 8) {
    std::vector<const TokenizedExample*> xs;
    for (size_t k = i; k < std::min(heldOut.size(), i + 8); ++k) xs.push_back(&heldOut[k]);
    Batch b = collate(xs, padId);
    at::Tensor l = batchLoss(m, b);
    if (l.defined()) {
      lossSum += l.item<double>() * static_cast<double>(b.trainedTokens);
      tokens += b.trainedTokens;
    }
  }
  r.loss = tokens ? lossSum / static_cast<double>(tokens) : 0;
  std::vector<std::vector<int>> ps;
  std::vector<size_t> refLen;
  for (const auto& x : heldOut) {
    if (static_cast<int64_t>(ps.size()) >= prompts) break;
    ps.push_back(x.lastPrompt);
    refLen.push_back(x.lastAnswer.size());
  }
  SamplingOptions so;
  so.maxNewTokens = maxNewTokens;
  auto outs = generateBatch(m, tok, ps, stopIds, so);
  for (size_t i = 0; i < outs.size(); ++i) {
    ++r.prompts;
    if (outs[i].reason == StopReason::Eos) ++r.stopped;
    r.meanGenerated += static_cast<double>(outs[i].ids.size());
    r.meanReference += static_cast<double>(refLen[i]);
  }
  if (r.prompts) {
    r.meanGenerated /= static_cast<double>(r.prompts);
    r.meanReference /= static_cast<double>(r.prompts);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// a run

namespace {

// Parameters kept in bf16 (full fine-tuning of a bf16 model) get an fp32 master copy: the update is
// made there and rounded into the model's weight, so small steps accumulate instead of vanishing.
struct AdamW {
  std::vector<at::Tensor> params, m, v, master;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0;
  int64_t t = 0;
  void step(double lr) {
    at::NoGradGuard noGrad;
    ++t;
    const double c1 = 1 - std::pow(beta1, static_cast<double>(t)), c2 = 1 - std::pow(beta2, static_cast<double>(t));
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor& param = params[i];
      if (!param.grad().defined()) continue;
      const bool reduced = param.scalar_type() == at::kBFloat16 || param.scalar_type() == at::kHalf;
      if (reduced && !master[i].defined()) master[i] = param.detach().to(at::kFloat);
      at::Tensor& p = reduced ? master[i] : param;
      const at::Tensor g = reduced ? param.grad().to(at::kFloat) : param.grad();
      if (!m[i].defined()) m[i] = at::zeros_like(p), v[i] = at::zeros_like(p);
      if (weightDecay > 0) p.mul_(1 - lr * weightDecay);
      m[i].mul_(beta1).add_(g, 1 - beta1);
      v[i].mul_(beta2).addcmul_(g, g, 1 - beta2);
      p.addcdiv_(m[i] / c1, (v[i] / c2).sqrt_().add_(eps), -lr);
      if (reduced) param.copy_(p);
    }
  }
  // The value to save for parameter i (the fp32 master where there is one).
  at::Tensor saved(size_t i) const { return (master[i].defined() ? master[i] : params[i]).detach(); }
  void zeroGrad() {
    for (auto& p : params)
      if (p.grad().defined()) p.mutable_grad().zero_();
  }
  double clip(double maxNorm) {
    at::NoGradGuard noGrad;
    double sq = 0;
    for (auto& p : params)
      if (p.grad().defined()) sq += p.grad().to(at::kFloat).pow(2).sum().item<double>();
    const double norm = std::sqrt(sq);
    if (maxNorm > 0 && norm > maxNorm)
      for (auto& p : params)
        if (p.grad().defined()) p.mutable_grad().mul_(maxNorm / (norm + 1e-6));
    return norm;
  }
};

double learningRate(const TrainConfig& c, int64_t step, int64_t total) {
  if (c.warmupSteps > 0 && step < c.warmupSteps) return c.learningRate * static_cast<double>(step + 1) / static_cast<double>(c.warmupSteps);
  if (c.schedule == "constant") return c.learningRate;
  const double progress = static_cast<double>(step - c.warmupSteps) / static_cast<double>(std::max<int64_t>(1, total - c.warmupSteps));
  if (c.schedule == "linear") return c.learningRate * (1 - progress);
  return c.learningRate * 0.5 * (1 + std::cos(M_PI * progress));
}

std::string fmt(double v, int prec = 4) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(prec);
  o << v;
  return o.str();
}

std::string sci(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

}  // namespace

// The examples of step `step`'s micro-batches come from a position in an endless stream of epochs,
// each shuffled by (seed, epoch): any step's batches are known without replaying the run (resume).
static std::vector<size_t> epochOrder(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

static TrainResult trainInto(const TrainConfig& c, const std::string& runDirIn, bool resume,
                             const std::function<void(const std::string&)>& onLineIn, const std::atomic<bool>* cancel,
                             const TrainProgressFn& onProgress) {
  auto onLine = [&](const std::string& s) {
    if (onLineIn) onLineIn(s);
  };
  TrainResult res;
  const fs::path runDir(runDirIn);
  if (!resume && fs::exists(runDir)) throw Error(runDir.string(), "the run folder exists", "choose another -o RUN, or resume it with train --resume RUN");
  ModelFolder folder = ModelFolder::open(c.model);
  // Format, stop ids, data, split, tokens, audit, memory plan: all before anything is trained, and
  // the very code the Train view's audit runs (preflight.h).
  const TrainPreflight pre = preflightTraining(c, folder);
  const std::shared_ptr<Tokenizer> tok = pre.tokenizer;
  const TemplateContext& tc = pre.context;
  const int padId = pre.padId;
  const std::vector<TokenizedExample>& xs = pre.examples;
  const std::vector<TokenizedExample>& heldXs = pre.heldOutExamples;
  res.audit = pre.audit;
  onLine(res.audit.report);
  if (!res.audit.ok() && !c.allowUnterminated)
    throw Error(c.data, "only " + std::to_string(res.audit.terminatedTurns) + " of " + std::to_string(res.audit.assistantTurns) +
                            " answers end on a trained stop token: the model would not learn to stop",
                "see the label audit; set allow_unterminated: true to train anyway");
  onLine(pre.memoryPlan);  // an estimate, before anything is loaded (see train_memory.h)
  std::error_code ec;
  if (!resume) {
    fs::create_directories(runDir.parent_path().empty() ? fs::path(".") : runDir.parent_path(), ec);
    fs::create_directories(runDir);
    writeAtomically(runDir / "config.yaml", c.yamlText.empty() ? std::string("model: " + c.model + "\ndata: " + c.data + "\n") : c.yamlText);
    writeAtomically(runDir / "audit.txt", res.audit.report);
    writeAtomically(runDir / "state.json", json({{"kind", "train"}, {"step", 0}, {"status", "running"}, {"config_dir", c.baseDir}}).dump() + "\n");
  }
  res.runDir = runDir.string();

  RunOptions ro;
  ro.device = c.device;
  ro.dtype = c.dtype;
  auto model = Model::load(folder, ro);
  AdamW opt;
  opt.weightDecay = c.weightDecay;
  LoraSpec spec{c.rank, c.alpha, c.dropout, c.targetModules, c.rsLora};
  if (c.method == "lora") {
    for (const auto& t : attachLora(*model, spec, c.seed)) {
      opt.params.push_back(model->adapter(t)->A);
      opt.params.push_back(model->adapter(t)->B);
    }
  } else {
    for (const auto& n : model->weightNames()) {
      at::Tensor w = model->weight(n).detach().clone().requires_grad_(true);  // own copy: never the mmap
      model->setWeight(n, w);
      opt.params.push_back(w);
    }
  }
  opt.m.resize(opt.params.size());
  opt.v.resize(opt.params.size());
  opt.master.resize(opt.params.size());
  model->gradientCheckpointing = c.gradientCheckpointing;

  const int64_t total = pre.steps;
  // Resume: parameters and AdamW moments from the last checkpoint (written atomically).
  int64_t startStep = 0;
  if (resume) {
    const fs::path ck = runDir / "checkpoint" / "trainer_state.safetensors";
    if (!fs::exists(ck)) throw Error(runDir.string(), "has no checkpoint to resume from", "set save_every to write checkpoints");
    const json st = json::parse(readAll((runDir / "checkpoint" / "state.json").string()));
    startStep = st.at("step").get<int64_t>();
    opt.t = st.at("adam_t").get<int64_t>();
    auto f = SafetensorsFile::open(ck.string());
    at::NoGradGuard noGrad;
    for (size_t i = 0; i < opt.params.size(); ++i) {
      const std::string k = std::to_string(i);
      if (!f->find("param." + k)) throw Error(ck.string(), "does not hold parameter " + k, "the run's config changed since it was saved");
      const at::Tensor saved = f->tensor("param." + k);
      opt.params[i].copy_(saved);
      if (opt.params[i].scalar_type() == at::kBFloat16 || opt.params[i].scalar_type() == at::kHalf)
        opt.master[i] = saved.to(opt.params[i].device(), at::kFloat).clone();  // the fp32 master, not its rounding
      if (f->find("m." + k)) {
        const auto mo = opt.params[i].options().dtype(f->tensor("m." + k).scalar_type());  // moments keep their saved fp32
        opt.m[i] = f->tensor("m." + k).to(mo).clone(), opt.v[i] = f->tensor("v." + k).to(mo).clone();
      }
    }
    onLine("resuming " + runDir.string() + " at step " + std::to_string(startStep));
  }
  int64_t streamEpoch = -1;
  std::vector<size_t> order;
  std::ofstream metrics(runDir / "metrics.jsonl", std::ios::app);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokensSeen = 0;
  const int64_t logEvery = std::max<int64_t>(1, total / 20);
  auto runEval = [&](int64_t step) {
    model->training = false;
    EvalResult e = evaluate(*model, *tok, heldXs, tc.stopIds, c.evalPrompts, c.evalMaxNewTokens, padId);
    model->training = true;
    metrics << json({{"step", step}, {"eval_loss", e.loss}, {"stop_rate", e.stopRate()}, {"eval_prompts", e.prompts},
                     {"generated_tokens", e.meanGenerated}, {"reference_tokens", e.meanReference}})
                   .dump()
            << "\n" << std::flush;
    onLine("eval step " + std::to_string(step) + ": loss " + fmt(e.loss) + ", stop-rate " + fmt(e.stopRate(), 2) + " (" +
           std::to_string(e.stopped) + "/" + std::to_string(e.prompts) + "), generated " + fmt(e.meanGenerated, 1) +
           " tokens vs reference " + fmt(e.meanReference, 1));
    return e;
  };
  auto saveCheckpoint = [&](int64_t step) {
    buildFolderAtomically(runDir / "checkpoint", [&](const fs::path& dir) {
      std::vector<std::pair<std::string, at::Tensor>> ts;
      for (size_t i = 0; i < opt.params.size(); ++i) {
        const std::string k = std::to_string(i);
        ts.push_back({"param." + k, opt.saved(i).contiguous()});
        if (opt.m[i].defined()) ts.push_back({"m." + k, opt.m[i].contiguous()}), ts.push_back({"v." + k, opt.v[i].contiguous()});
      }
      saveSafetensors((dir / "trainer_state.safetensors").string(), ts);
      std::ofstream((dir / "state.json").string()) << json({{"step", step}, {"adam_t", opt.t}}).dump() << "\n";
    });
    writeAtomically(runDir / "state.json", json({{"kind", "train"}, {"step", step}, {"steps", total}, {"status", "running"}, {"config_dir", c.baseDir}}).dump() + "\n");
  };

  model->training = true;
  for (int64_t step = startStep; step < total; ++step) {
    at::manual_seed(c.seed + static_cast<uint64_t>(step));  // adapter dropout: reproducible per step
    if (cancel && cancel->load()) {
      saveCheckpoint(step);  // `train --resume RUN` goes on from here
      throw Cancelled();
    }
    double lossSum = 0;
    int64_t stepTokens = 0;
    for (int64_t a = 0; a < c.gradAccum; ++a) {
      std::vector<const TokenizedExample*> mb;
      for (int64_t k = 0; k < c.batchSize; ++k) {
        const int64_t pos = (step * c.gradAccum + a) * c.batchSize + k;  // place in the example stream
        const int64_t epoch = pos / static_cast<int64_t>(xs.size());
        if (epoch != streamEpoch) order = epochOrder(xs.size(), c.seed, streamEpoch = epoch);
        mb.push_back(&xs[order[static_cast<size_t>(pos % static_cast<int64_t>(xs.size()))]]);
      }
      Batch b = collate(mb, padId);
      at::Tensor loss = batchLoss(*model, b);
      if (!loss.defined()) continue;
      (loss / static_cast<double>(c.gradAccum)).backward();
      lossSum += loss.item<double>() / static_cast<double>(c.gradAccum);
      stepTokens += b.ids.numel();
    }
    opt.clip(c.clipNorm);
    const double lr = learningRate(c, step, total);
    opt.step(lr);
    opt.zeroGrad();
    tokensSeen += stepTokens;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = secs > 0 ? static_cast<double>(tokensSeen) / secs : 0;
    if (step == 0) res.firstLoss = lossSum;
    res.finalLoss = lossSum;
    metrics << json({{"step", step + 1}, {"loss", lossSum}, {"lr", lr}, {"tokens_per_s", tps}}).dump() << "\n" << std::flush;
    const double eta = secs / static_cast<double>(step + 1 - startStep) * static_cast<double>(total - step - 1);
    if (onProgress) onProgress({step + 1, total, lossSum, lr, tps, eta});
    if ((step + 1) % logEvery == 0 || step + 1 == total) {
      onLine("step " + std::to_string(step + 1) + "/" + std::to_string(total) + "  loss " + fmt(lossSum) + "  lr " + sci(lr) + "  " + fmt(tps, 0) + " tokens/s  ETA " + fmt(eta, 0) + " s");
    }
    if (c.evalEvery > 0 && (step + 1) % c.evalEvery == 0 && step + 1 < total) runEval(step + 1);
    if (c.saveEvery > 0 && (step + 1) % c.saveEvery == 0 && step + 1 < total) saveCheckpoint(step + 1);
  }
  model->training = false;
  res.eval = runEval(total);
  if (c.method == "lora") {
    res.adapterDir = (runDir / "adapter").string();
    exportPeftAdapter(*model, spec, c.model, res.adapterDir);
  }
  if (c.exportMerged || c.method == "full") {
    res.mergedDir = (runDir / "merged").string();
    exportMerged(*model, folder, res.mergedDir, c.mergedDtype);
  }
  fs::remove_all(runDir / "checkpoint", ec);
  writeAtomically(runDir / "state.json", json({{"kind", "train"}, {"step", total}, {"steps", total}, {"status", "done"}, {"config_dir", c.baseDir}}).dump() + "\n");
  return res;
}

}  // namespace kh::train

namespace kh::train {

TrainResult runTraining(const TrainConfig& c, const std::string& runDir, const std::function<void(const std::string&)>& onLine,
                        const std::atomic<bool>* cancel, const TrainProgressFn& onProgress) {
  return trainInto(c, runDir, false, onLine, cancel, onProgress);
}

bool isTrainingRun(const std::string& dir) {
  const fs::path st = fs::path(dir) / "state.json";
  std::error_code ec;
  if (!fs::is_regular_file(st, ec)) return false;
  try {
    return json::parse(readAll(st.string())).value("kind", "") == "train";
  } catch (const std::exception&) {
    return false;
  }
}

TrainResult resumeTraining(const std::string& runDir, const std::function<void(const std::string&)>& onLine,
                           const std::atomic<bool>* cancel, const TrainProgressFn& onProgress) {
  const fs::path cfgPath = fs::path(runDir) / "config.yaml";
  if (!fs::exists(cfgPath)) throw Error(runDir, "is not a training run folder (no config.yaml)");
  const json st = json::parse(readAll((fs::path(runDir) / "state.json").string()));
  if (st.value("kind", "") != "train") throw Error(runDir, "is not a training run folder");
  if (st.value("status", "") == "done") throw Error(runDir, "the run is finished");
  return trainInto(parseTrainConfig(readAll(cfgPath.string()), cfgPath.string(), st.value("config_dir", "")), runDir, true, onLine,
                   cancel, onProgress);
}

}  // namespace kh::train
