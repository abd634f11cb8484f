// LoRA on GPT-2 (llm-jp-1.3b's family), whose Conv1D layers store weights [in, out]: gradients
// against finite differences in fp64, and the PEFT export as PEFT writes it for GPT-2 (c_attn,
// c_proj, c_fc with fan_in_fan_out = true; lora_A [r, in], lora_B [out, r]); the merged weights
// (W + scale (B A)^T) compute what base + adapter computes.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/train/trainer.h"
#include "tests/core/train_checks.h"
#include "tests/test_util.h"

using namespace kh;
using namespace kh::train;

namespace {

struct TinyGpt2 {
  test::TempDir dir;
  std::string path;
  ModelFolder folder;
  TinyGpt2() {
    TinyOptions o;
    o.family = "gpt2";
    o.hidden = 32;
    o.intermediate = 64;
    o.layers = 2;
    o.seed = 5;
    path = dir.file("m");
    makeTinyCheckpoint(path, o);
    folder = ModelFolder::open(path);
  }
};

// One example: every token after the first trained.
Batch fixedBatch() {
  static TokenizedExample x;
  x.ids = {7, 40, 41, 42, 43, 44, 45, 7};
  x.trained.assign(x.ids.size(), 1);
  x.trained[0] = 0;
  return collate({&x}, 3);
}

}  // namespace

TEST(TrainGpt2Lora, GradientsMatchFiniteDifferences) {
  TinyGpt2 t;
  std::unordered_map<std::string, at::Tensor> w;
  for (const auto& n : t.folder.weights->names()) w[n] = t.folder.weights->tensor(n).to(at::kDouble);
  auto model = Model::fromWeights(t.folder, w, c10::kCPU, at::kDouble);
  LoraSpec spec;
  spec.rank = 2;
  spec.alpha = 4;
  spec.targetModules = "c_attn|c_proj|c_fc";
  auto targets = attachLora(*model, spec, 3);
  ASSERT_EQ(targets.size(), 8u);  // per layer: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
  EXPECT_EQ(targets[0], "transformer.h.0.attn.c_attn");
  // Shapes as PEFT's for Conv1D: c_attn weight [D, 3D] -> lora_A [r, D], lora_B [3D, r].
  EXPECT_EQ(model->adapter("transformer.h.0.attn.c_attn")->A.sizes(), (c10::IntArrayRef{2, 32}));
  EXPECT_EQ(model->adapter("transformer.h.0.attn.c_attn")->B.sizes(), (c10::IntArrayRef{96, 2}));
  EXPECT_EQ(model->adapter("transformer.h.0.mlp.c_fc")->B.sizes(), (c10::IntArrayRef{64, 2}));
  auto bGen = at::detail::createCPUGenerator(5);
  for (const auto& m : targets) {
    at::NoGradGuard g;
    const_cast<at::Tensor&>(model->adapter(m)->B).normal_(0, 0.2, bGen);
  }
  Batch b = fixedBatch();
  at::Tensor loss = batchLoss(*model, b);
  ASSERT_EQ(loss.scalar_type(), at::kDouble);
  loss.backward();
  auto gen = at::detail::createCPUGenerator(11);
  for (const std::string m : {targets[0], targets[3], targets[6]}) {
    for (const at::Tensor* p : {&model->adapter(m)->A, &model->adapter(m)->B})
      test::expectGradientMatchesFiniteDifferences(*p, [&] { return batchLoss(*model, b).item<double>(); }, gen, m);
  }
}

TEST(TrainGpt2Lora, PeftExportUsesGpt2NamesAndFanInFanOutAndMergesTransposed) {
  TinyGpt2 t;
  test::TempDir d;
  auto model = Model::load(t.folder, {"cpu", "fp32"});
  LoraSpec spec;
  spec.rank = 4;
  spec.alpha = 8;
  spec.targetModules = "c_attn|c_proj|c_fc";
  auto targets = attachLora(*model, spec, 2);
  for (const auto& m : targets) {
    at::NoGradGuard g;
    const_cast<at::Tensor&>(model->adapter(m)->B).normal_(0, 0.3);
  }
  const std::vector<int64_t> ids = {7, 40, 41, 42, 43, 44};
  at::Tensor want, base;
  {
    at::NoGradGuard g;
    want = model->logits(ids);
    base = Model::load(t.folder, {"cpu", "fp32"})->logits(ids);
  }
  ASSERT_GT((want - base).abs().max().item<double>(), 1e-3) << "the adapters must change the output";
  exportPeftAdapter(*model, spec, t.path, d.file("adapter"));
  auto cfg = nlohmann::json::parse(test::readFile(d.file("adapter/adapter_config.json")));
  EXPECT_EQ(cfg["fan_in_fan_out"], true);
  EXPECT_EQ(cfg["target_modules"], nlohmann::json({"c_attn", "c_fc", "c_proj"}));
  auto st = SafetensorsFile::open(d.file("adapter/adapter_model.safetensors"));
  EXPECT_EQ(st->entry("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(st->entry("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight").shape, (std::vector<int64_t>{96, 4}));
  EXPECT_EQ(st->entry("base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight").shape, (std::vector<int64_t>{4, 64}));
  // Loaded onto a fresh base it computes the same; merged in fp32 (W + scale (B A)^T) as well.
  auto loaded = Model::load(t.folder, {"cpu", "fp32"});
  loadPeftAdapter(*loaded, d.file("adapter"));
  EXPECT_LT((loaded->logits(ids) - want).abs().max().item<double>(), 1e-4);
  exportMerged(*model, t.folder, d.file("merged"), "fp32");
  auto merged = Model::load(ModelFolder::open(d.file("merged")), {"cpu", "fp32"});
  EXPECT_LT((merged->logits(ids) - want).abs().max().item<double>(), 1e-4);
}
