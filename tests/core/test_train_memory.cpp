// Training's memory options: gradient checkpointing must give the gradients of the ordinary backward
// (LoRA with dropout, full fine-tuning; Llama, Gemma 2 and GPT-2 layers) while keeping far fewer
// tensors, and bf16 training must follow the fp32 run's loss curve and still learn to stop.
// (Peak memory is measured in tests/bench/train_bench, not here.)
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/function.h>

#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/text/tokenizer.h"
#include "core/train/data.h"
#include "core/train/train_memory.h"
#include "core/train/trainer.h"
#include "tests/core/stop_task.h"
#include "tests/core/train_checks.h"
#include "tests/test_util.h"

using namespace kh;
using namespace kh::train;

namespace {

struct TinyModel {
  std::unique_ptr<test::TempDir> dir = std::make_unique<test::TempDir>();
  std::string path;
  ModelFolder folder;
  std::shared_ptr<Tokenizer> tok;
  TemplateContext tc{ChatFormat::Gemma, {}, {}};
  TinyModel(const std::string& family, int64_t hidden, int64_t layers) {
    TinyOptions o;
    o.family = family;
    o.hidden = hidden;
    o.intermediate = 2 * hidden;
    o.layers = layers;
    o.seed = 7;
    path = dir->file("m");
    makeTinyCheckpoint(path, o);
    folder = ModelFolder::open(path);
    tok = folder.requireTokenizer();
    // GPT-2 (llm-jp-1.3b) ships no chat template: its data is rendered with llm-jp-3's here.
    tc.format = resolveChatFormat(*tok, family == "gpt2" ? "llm-jp-3" : "", path);
    tc.render.bosToken = tok->bosToken();
    tc.render.eosToken = tok->eosToken();
    for (const auto& s : folder.stopTokens) tc.stopIds.push_back(s.id);
  }
  Batch batch() const {
    static std::vector<TokenizedExample> xs;
    xs.clear();
    for (const char* l : {R"({"prompt": "一二三", "completion": "四五です"})", R"({"prompt": "空は何色ですか", "completion": "青"})"})
      xs.push_back(tokenizeConversation(parseConversation(l, "g:1"), tc, *tok, {}));
    return collate({&xs[0], &xs[1]}, tok->padId().value_or(0));
  }
};

// Autograd nodes reachable from a loss, by name.
std::multiset<std::string> graphNodes(const at::Tensor& loss) {
  std::multiset<std::string> names;
  std::set<const torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo{loss.grad_fn().get()};
  while (!todo.empty()) {
    torch::autograd::Node* n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n).second) continue;
    names.insert(n->name());
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return names;
}

size_t countContaining(const std::multiset<std::string>& names, const std::string& part) {
  size_t n = 0;
  for (const auto& s : names) n += s.find(part) != std::string::npos;
  return n;
}

// Loss and gradients of `params` for one batch at a fixed dropout seed, with or without checkpointing.
struct Grads {
  double loss = 0;
  std::vector<at::Tensor> g;
  std::multiset<std::string> nodes;
};
Grads lossAndGrads(Model& m, const Batch& b, const std::vector<at::Tensor>& params, bool checkpointing) {
  for (const auto& p : params)
    if (p.grad().defined()) const_cast<at::Tensor&>(p).mutable_grad().zero_();
  m.gradientCheckpointing = checkpointing;
  at::manual_seed(1234);  // the adapter dropout's masks
  at::Tensor loss = batchLoss(m, b);
  Grads r;
  r.nodes = graphNodes(loss);
  loss.backward();
  r.loss = loss.item<double>();
  for (const auto& p : params) r.g.push_back(p.grad().clone());
  m.gradientCheckpointing = false;
  return r;
}

void expectSameGradients(const Grads& plain, const Grads& ckpt, const std::string& what) {
  EXPECT_NEAR(plain.loss, ckpt.loss, 1e-6 * std::abs(plain.loss)) << what;
  ASSERT_EQ(plain.g.size(), ckpt.g.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < plain.g.size(); ++i) {
    worst = std::max(worst, (plain.g[i] - ckpt.g[i]).abs().max().item<double>());
    scale = std::max(scale, plain.g[i].abs().max().item<double>());
  }
  EXPECT_GT(scale, 0) << what << ": gradients must not be trivially zero";
  EXPECT_LE(worst, 1e-5 * scale) << what << ": largest gradient difference " << worst << " of " << scale;
  // Checkpointing engaged: one checkpoint node per layer, and far fewer recorded operations.
  EXPECT_EQ(countContaining(plain.nodes, "CheckpointedLayer"), 0u) << what;
  EXPECT_GE(countContaining(ckpt.nodes, "CheckpointedLayer"), 2u) << what;
  EXPECT_LT(ckpt.nodes.size() * 2, plain.nodes.size()) << what << ": " << ckpt.nodes.size() << " vs " << plain.nodes.size() << " nodes";
}

}  // namespace

TEST(TrainCheckpointing, LoraGradientsWithDropoutEqualTheOrdinaryBackward) {
  for (const std::string family : {"llama", "gemma2"}) {
    TinyModel t(family, 64, 3);
    auto model = Model::load(t.folder, {"cpu", "fp32"});
    LoraSpec spec;
    spec.rank = 4;
    spec.alpha = 8;
    spec.dropout = 0.2;  // the recompute must draw the same masks
    spec.targetModules = "q_proj|v_proj|o_proj|up_proj|down_proj";
    std::vector<at::Tensor> params;
    for (const auto& m : attachLora(*model, spec, 3)) {
      at::NoGradGuard g;
      const_cast<at::Tensor&>(model->adapter(m)->B).normal_(0, 0.2);  // B = 0 would leave A's gradient zero
      params.push_back(model->adapter(m)->A);
      params.push_back(model->adapter(m)->B);
    }
    model->training = true;
    const Batch b = t.batch();
    const Grads plain = lossAndGrads(*model, b, params, false);
    const Grads ckpt = lossAndGrads(*model, b, params, true);
    expectSameGradients(plain, ckpt, family + " lora");
    // Without restoring the RNG state the recompute would draw other masks: a different seed gives
    // different gradients here, so equality above is not an accident of dropout being inactive.
    at::manual_seed(99);
    at::Tensor other = batchLoss(*model, b);
    EXPECT_GT(std::abs(other.item<double>() - plain.loss), 1e-6) << "dropout must matter in this test";
  }
}

TEST(TrainCheckpointing, FullFineTuningGradientsEqualTheOrdinaryBackward) {
  for (const std::string family : {"llama", "gpt2"}) {
    TinyModel t(family, 32, 3);
    auto model = Model::load(t.folder, {"cpu", "fp32"});
    std::vector<at::Tensor> params;
    for (const auto& n : model->weightNames()) {
      at::Tensor w = model->weight(n).detach().clone().requires_grad_(true);
      model->setWeight(n, w);
      params.push_back(w);
    }
    const Batch b = t.batch();
    const Grads plain = lossAndGrads(*model, b, params, false);
    const Grads ckpt = lossAndGrads(*model, b, params, true);
    expectSameGradients(plain, ckpt, family + " full");
  }
}

TEST(TrainCheckpointing, ARunWithCheckpointingTrainsTheSameAdapter) {
  TinyModel t("llama", 32, 2);
  test::TempDir d;
  test::writeFile(d.file("data.jsonl"), test::promptCompletionData(12));
  const std::string yaml = "model: " + t.path + "\ndata: " + d.file("data.jsonl") +
                           "\nlora: {rank: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj, down_proj]}\nsteps: 4\n"
                           "batch_size: 3\ngrad_accum: 2\neval_prompts: 1\neval_max_new_tokens: 2\nexport_merged: false\n"
                           "learning_rate: 0.01\n";
  TrainResult plain = runTraining(parseTrainConfig(yaml, "t.yaml"), d.file("plain"));
  TrainResult ckpt = runTraining(parseTrainConfig(yaml + "gradient_checkpointing: true\n", "t.yaml"), d.file("ckpt"));
  EXPECT_NEAR(plain.finalLoss, ckpt.finalLoss, 1e-5 * std::abs(plain.finalLoss));
  auto a = SafetensorsFile::open(plain.adapterDir + "/adapter_model.safetensors");
  auto b = SafetensorsFile::open(ckpt.adapterDir + "/adapter_model.safetensors");
  for (const auto& e : a->tensors())
    EXPECT_LT((a->tensor(e.name) - b->tensor(e.name)).abs().max().item<double>(), 1e-5) << e.name;
  EXPECT_NE(test::readFile(d.file("ckpt/config.yaml")).find("gradient_checkpointing: true"), std::string::npos);
}

TEST(TrainBf16, AdaptersStayFp32OnABf16Model) {
  TinyModel t("llama", 32, 2);
  auto model = Model::load(t.folder, {"cpu", "bf16"});
  ASSERT_EQ(model->dtype(), at::kBFloat16);
  LoraSpec spec;
  for (const auto& m : attachLora(*model, spec, 1)) {
    EXPECT_EQ(model->adapter(m)->A.scalar_type(), at::kFloat) << m;
    EXPECT_EQ(model->adapter(m)->B.scalar_type(), at::kFloat) << m;
  }
  const Batch b = t.batch();
  at::Tensor loss = batchLoss(*model, b);
  EXPECT_EQ(loss.scalar_type(), at::kFloat) << "the loss is computed in fp32";
  loss.backward();
  const LinearAdapter* a = model->adapter("model.layers.0.self_attn.q_proj");
  ASSERT_TRUE(a && a->B.grad().defined());
  EXPECT_EQ(a->B.grad().scalar_type(), at::kFloat);
  EXPECT_GT(a->B.grad().abs().max().item<double>(), 0);
  EXPECT_THROW(parseTrainConfig("model: m\ndata: d\ndtype: fp16\n", "t.yaml"), Error) << "fp16 training is refused (no loss scaling)";
}

namespace {
std::vector<double> lossCurve(const std::string& metricsPath) {
  std::vector<double> out;
  std::istringstream in(test::readFile(metricsPath));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}
}  // namespace

// The stop test's set-up (test_train.cpp) in fp32 and bf16: the bf16 curve must stay within 0.15 nats
// (or 10 %) of the fp32 one at every step, and the bf16 model must still stop (stop-rate >= 0.85).
TEST(TrainBf16, LoraInBf16FollowsTheFp32LossCurveAndLearnsToStop) {
  TinyModel t("gemma2", 64, 2);
  test::TempDir d;
  test::writeFile(d.file("data.jsonl"), test::stopTaskData());
  const std::string yaml = test::stopTaskYaml(t.path, d.file("data.jsonl"));
  TrainResult fp32 = runTraining(parseTrainConfig(yaml + "dtype: fp32\n", "t.yaml"), d.file("fp32"));
  TrainResult bf16 = runTraining(parseTrainConfig(yaml + "dtype: bfloat16\ngradient_checkpointing: true\n", "t.yaml"), d.file("bf16"));
  const auto a = lossCurve(d.file("fp32/metrics.jsonl")), b = lossCurve(d.file("bf16/metrics.jsonl"));
  ASSERT_EQ(a.size(), 60u);
  ASSERT_EQ(b.size(), a.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]));
    EXPECT_LE(std::abs(a[i] - b[i]), std::max(0.15, 0.10 * a[i])) << "step " << i + 1 << ": fp32 " << a[i] << ", bf16 " << b[i];
  }
  std::cout << "loss fp32 " << a.front() << " -> " << a.back() << ", bf16 " << b.front() << " -> " << b.back()
            << "; largest step difference " << worst << "; stop-rate fp32 " << fp32.eval.stopRate() << ", bf16 "
            << bf16.eval.stopRate() << "\n";
  EXPECT_LT(bf16.finalLoss, bf16.firstLoss);
  EXPECT_GE(bf16.eval.stopRate(), 0.85) << "bf16 training must still learn to stop";
  // The exported adapter is fp32 (PEFT's format), not rounded to bf16.
  auto st = SafetensorsFile::open(bf16.adapterDir + "/adapter_model.safetensors");
  EXPECT_EQ(st->entry("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").dtype, st::DType::F32);
}

// The plan's optimiser share is exact arithmetic: 16 bytes (fp32 value, gradient, two moments) per
// adapter parameter that attachLora really creates, for Llama's and GPT-2's module names alike.
TEST(TrainMemoryPlan, AdapterStateMatchesTheAdaptersAttached) {
  for (const auto& [family, targets] : std::vector<std::pair<std::string, std::string>>{{"llama", "q_proj|v_proj|down_proj"},
                                                                                      {"gpt2", "c_attn|c_fc"}}) {
    TinyModel t(family, 32, 6);  // checkpointing's recompute costs two layers' worth: it saves from three layers on
    auto model = Model::load(t.folder, {"cpu", "fp32"});
    LoraSpec spec;
    spec.rank = 4;
    spec.targetModules = targets;
    int64_t n = 0;
    for (const auto& m : attachLora(*model, spec, 1)) n += model->adapter(m)->A.numel() + model->adapter(m)->B.numel();
    TrainMemoryInput in;
    in.loraRank = 4;
    in.loraTargets = targets;
    in.batch = 2;
    in.sequence = 64;
    const TrainMemory plain = estimateTrainMemory(t.folder.config, t.folder.weights->parameterCount(), in);
    EXPECT_EQ(plain.trainable, static_cast<uint64_t>(16 * n)) << family;
    EXPECT_EQ(plain.weights, 4 * t.folder.weights->parameterCount()) << family;
    in.gradientCheckpointing = true;
    EXPECT_LT(estimateTrainMemory(t.folder.config, t.folder.weights->parameterCount(), in).activations, plain.activations) << family;
  }
}
