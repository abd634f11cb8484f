// Fine-tuning: data formats rendered as chat renders them, labels (end of turn trained, padding
// masked by position), the label audit, LoRA gradients against finite differences, the PEFT export
// round trip, and the behaviour that matters: a model trained with its end-of-turn labels stops.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <fstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/text/tokenizer.h"
#include "core/train/data.h"
#include "core/train/preflight.h"
#include "core/train/trainer.h"
#include "tests/core/stop_task.h"
#include "tests/core/train_checks.h"
#include "tests/test_util.h"

using namespace kh;
using namespace kh::train;

namespace {

struct Tiny {
  std::unique_ptr<test::TempDir> dir = std::make_unique<test::TempDir>();
  std::string path;
  ModelFolder folder;
  std::shared_ptr<Tokenizer> tok;
  TemplateContext tc{ChatFormat::Gemma, {}, {}};
  explicit Tiny(const std::string& family, int64_t hidden = 64, int64_t layers = 2) {
    TinyOptions o;
    o.family = family;
    o.hidden = hidden;
    o.intermediate = hidden * 2;
    o.layers = layers;
    o.seed = 7;
    path = dir->file("m");
    makeTinyCheckpoint(path, o);
    folder = ModelFolder::open(path);
    tok = folder.requireTokenizer();
    tc.format = resolveChatFormat(*tok, "", path);
    tc.render.bosToken = tok->bosToken();
    tc.render.eosToken = tok->eosToken();
    for (const auto& s : folder.stopTokens) tc.stopIds.push_back(s.id);
    const int eot = tok->pieceToId(endOfTurnText(tc.format, tc.render));
    if (eot >= 0 && std::find(tc.stopIds.begin(), tc.stopIds.end(), eot) == tc.stopIds.end()) tc.stopIds.push_back(eot);
  }
  std::vector<int> chatPrompt(std::vector<ChatMessage> m) const {
    ChatRenderOptions r = tc.render;
    r.addGenerationPrompt = true;
    return tok->encode(renderChat(tc.format, m, r), false);
  }
};

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(TrainData, EveryFormatParsesToTheSameConversationAndRendersAsChatDoes) {
  Tiny t("gemma2");
  const std::vector<std::string> lines = {
      R"({"messages": [{"role": "user", "content": "空は何色ですか"}, {"role": "assistant", "content": "青です"}]})",
      R"({"conversations": [{"from": "human", "value": "空は何色ですか"}, {"from": "gpt", "value": "青です"}]})",
      R"({"instruction": "空は何色ですか", "input": "", "output": "青です"})",
      R"({"prompt": "空は何色ですか", "completion": "青です"})"};
  const std::vector<ChatMessage> want = {{"user", "空は何色ですか"}, {"assistant", "青です"}};
  for (const auto& l : lines) {
    Conversation c = parseConversation(l, "x.jsonl:1");
    ASSERT_EQ(c.messages.size(), 2u) << l;
    EXPECT_EQ(c.messages[0].content, want[0].content);
    EXPECT_EQ(c.messages[1].content, want[1].content);
    TokenizedExample x = tokenizeConversation(c, t.tc, *t.tok, {});
    EXPECT_EQ(x.lastPrompt, t.chatPrompt({want[0]})) << "training prompt must be the chat path's prompt";
    // The whole example decodes to the template's full rendering.
    ChatRenderOptions r = t.tc.render;
    r.addGenerationPrompt = false;
    EXPECT_EQ(t.tok->decode(x.ids, false), t.tok->decode(t.tok->encode(renderChat(t.tc.format, want, r), false), false));
  }
  // SentencePiece with a dummy prefix (tiny llama, llm-jp-3 template): the training ids are the
  // tokenization of the whole rendered conversation, not of its pieces (no stray "▁" before the answer).
  {
    Tiny l("llama");
    TokenizedExample x = tokenizeConversation(parseConversation(lines[0], "l:1"), l.tc, *l.tok, {});
    ChatRenderOptions r = l.tc.render;
    r.addGenerationPrompt = false;
    EXPECT_EQ(x.ids, l.tok->encode(renderChat(l.tc.format, want, r), false));
    EXPECT_EQ(x.lastPrompt, l.chatPrompt({want[0]}));
  }
  // Alpaca's input joins the instruction.
  Conversation a = parseConversation(R"({"instruction": "訳して", "input": "猫", "output": "cat"})", "a:1");
  EXPECT_EQ(a.messages[0].content, "訳して\n\n猫");
  // Multi-turn with a system message: Gemma folds it into the first user turn, and the audit says so.
  Conversation m = parseConversation(
      R"({"messages": [{"role": "system", "content": "短く"}, {"role": "user", "content": "一"}, {"role": "assistant", "content": "二"}, {"role": "user", "content": "三"}, {"role": "assistant", "content": "四"}]})",
      "m:1");
  TokenizedExample mx = tokenizeConversation(m, t.tc, *t.tok, {});
  EXPECT_EQ(mx.answerStart.size(), 2u);
  LabelAudit audit = auditLabels({mx}, {m}, t.tc, *t.tok);
  EXPECT_NE(audit.report.find("folded into the first user turn"), std::string::npos) << audit.report;
  EXPECT_NE(audit.report.find("training vs chat"), std::string::npos);
}

TEST(TrainData, BadInputIsOneLineErrorNamingFileAndLine) {
  test::TempDir d;
  test::writeFile(d.file("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\n{not json\n");
  EXPECT_NE(errorOf([&] { loadConversations(d.file("bad.jsonl")); }).find("bad.jsonl:2"), std::string::npos);
  test::writeFile(d.file("empty.jsonl"), "\n\n");
  EXPECT_NE(errorOf([&] { loadConversations(d.file("empty.jsonl")); }).find("empty"), std::string::npos);
  test::writeFile(d.file("noa.jsonl"), R"({"messages": [{"role": "user", "content": "hi"}]})" "\n");
  EXPECT_NE(errorOf([&] { loadConversations(d.file("noa.jsonl")); }).find("noa.jsonl:1"), std::string::npos);
  EXPECT_NE(errorOf([&] { loadConversations(d.file("noa.jsonl")); }).find("no assistant turn"), std::string::npos);
  EXPECT_NE(errorOf([&] { parseConversation(R"({"foo": 1})", "f:3"); }).find("f:3"), std::string::npos);
  Tiny t("gemma2");
  Conversation c = parseConversation(R"({"prompt": "空は何色ですか空は何色ですか", "completion": "青"})", "long.jsonl:4");
  LabelOptions o;
  o.maxLength = 4;
  const std::string e = errorOf([&] { tokenizeConversation(c, t.tc, *t.tok, o); });
  EXPECT_NE(e.find("long.jsonl:4"), std::string::npos) << e;
  EXPECT_NE(e.find("max_length"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // A template that cannot express a system message (Mistral v0.2) refuses it, naming the example.
  Tiny m("mistral");
  Conversation sys = parseConversation(
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})",
      "sys.jsonl:7");
  const std::string es = errorOf([&] { tokenizeConversation(sys, m.tc, *m.tok, {}); });
  EXPECT_NE(es.find("sys.jsonl:7"), std::string::npos) << es;
  EXPECT_NE(es.find("cannot express a system message"), std::string::npos) << es;
  // Examples longer than max_length are cut and counted; a cut answer is not counted as unterminated.
  Conversation lng = parseConversation(R"({"prompt": "一", "completion": "二三四五六七八九十二三四五六七八九十"})", "c:1");
  LabelOptions shortLen;
  shortLen.maxLength = tokenizeConversation(lng, t.tc, *t.tok, {}).answerStart[0] + 3;  // prompt + 3 answer tokens
  TokenizedExample cx = tokenizeConversation(lng, t.tc, *t.tok, shortLen);
  EXPECT_TRUE(cx.cut);
  EXPECT_EQ(static_cast<int64_t>(cx.ids.size()), shortLen.maxLength);
  LabelAudit ca = auditLabels({cx, tokenizeConversation(c, t.tc, *t.tok, {})}, {lng}, t.tc, *t.tok);
  EXPECT_EQ(ca.cutExamples, 1);
  EXPECT_EQ(ca.cutTurns, 1);
  EXPECT_TRUE(ca.ok()) << ca.report;
}

TEST(TrainLabels, EndOfTurnIsTrainedAndPaddingIsMaskedByPositionEvenWhenPadIsEos) {
  {  // Gemma: <end_of_turn> (107), not eos (1), ends the answer and is trained; the "\n" after it is not.
    Tiny t("gemma2");
    const int eot = t.tok->pieceToId("<end_of_turn>");
    ASSERT_EQ(eot, 107);
    TokenizedExample x = tokenizeConversation(parseConversation(R"({"prompt": "一", "completion": "二"})", "g:1"), t.tc, *t.tok, {});
    const int64_t last = x.lastTrained[0];
    ASSERT_GE(last, 0);
    EXPECT_EQ(x.ids[static_cast<size_t>(last)], eot);
    for (size_t k = static_cast<size_t>(last) + 1; k < x.ids.size(); ++k) EXPECT_FALSE(x.trained[k]);
    for (int64_t k = 0; k < x.answerStart[0]; ++k) EXPECT_FALSE(x.trained[static_cast<size_t>(k)]) << "prompt tokens are not trained";
    LabelOptions all;
    all.mode = LabelMode::All;
    TokenizedExample xa = tokenizeConversation(parseConversation(R"({"prompt": "一", "completion": "二"})", "g:1"), t.tc, *t.tok, all);
    EXPECT_TRUE(xa.trained[1]);
    // last_turn: only the final answer is trained; every answer is trained by default.
    Conversation two = parseConversation(
        R"({"messages": [{"role": "user", "content": "一"}, {"role": "assistant", "content": "二"}, {"role": "user", "content": "三"}, {"role": "assistant", "content": "四"}]})",
        "g:2");
    LabelOptions lastTurn;
    lastTurn.mode = LabelMode::LastTurn;
    TokenizedExample xl = tokenizeConversation(two, t.tc, *t.tok, lastTurn);
    TokenizedExample xd = tokenizeConversation(two, t.tc, *t.tok, {});
    EXPECT_FALSE(xl.trained[static_cast<size_t>(xl.answerStart[0])]);
    EXPECT_TRUE(xl.trained[static_cast<size_t>(xl.answerStart[1])]);
    EXPECT_TRUE(xd.trained[static_cast<size_t>(xd.answerStart[0])]);
    EXPECT_EQ(xd.ids[static_cast<size_t>(xd.lastTrained[0])], eot);
    EXPECT_EQ(xd.ids[static_cast<size_t>(xd.lastTrained[1])], eot);
    EXPECT_TRUE(auditLabels({xl}, {two}, t.tc, *t.tok).ok());
  }
  {  // llm-jp-3 (tiny llama): the answer ends on </s>; batched with pad == eos, that eos stays trained.
    Tiny t("llama");
    const int eos = *t.tok->eosId();
    TokenizedExample a = tokenizeConversation(parseConversation(R"({"prompt": "一", "completion": "二"})", "l:1"), t.tc, *t.tok, {});
    TokenizedExample b = tokenizeConversation(parseConversation(R"({"prompt": "一二三四五六七", "completion": "八九十です"})", "l:2"), t.tc, *t.tok, {});
    ASSERT_EQ(a.ids.back(), eos);
    ASSERT_LT(a.ids.size(), b.ids.size());
    Batch batch = collate({&a, &b}, /*padId=*/eos);
    const int64_t lastReal = static_cast<int64_t>(a.ids.size()) - 1;
    EXPECT_EQ(batch.ids[0][lastReal].item<int64_t>(), eos);
    EXPECT_TRUE(batch.trained[0][lastReal].item<bool>()) << "the real eos must stay labelled when pad == eos";
    for (int64_t k = lastReal + 1; k < batch.ids.size(1); ++k) {
      EXPECT_EQ(batch.ids[0][k].item<int64_t>(), eos);  // padding written with the eos id ...
      EXPECT_FALSE(batch.trained[0][k].item<bool>());   // ... and masked by its position
      EXPECT_EQ(batch.positions[0][k].item<int64_t>(), -1);
    }
  }
}

TEST(TrainAudit, MaskedEndOfTurnIsFlaggedAndTheRunRefusesToStart) {
  Tiny t("gemma2");
  Conversation c = parseConversation(R"({"prompt": "一", "completion": "二"})", "g:1");
  LabelOptions o;
  o.maskEndOfTurn = true;
  LabelAudit bad = auditLabels({tokenizeConversation(c, t.tc, *t.tok, o)}, {c}, t.tc, *t.tok);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.report.find("MUST BE 100%"), std::string::npos) << bad.report;
  LabelAudit good = auditLabels({tokenizeConversation(c, t.tc, *t.tok, {})}, {c}, t.tc, *t.tok);
  EXPECT_TRUE(good.ok()) << good.report;
  EXPECT_DOUBLE_EQ(good.stopShare(), 1.0);

  test::TempDir d;
  test::writeFile(d.file("data.jsonl"), R"({"prompt": "一", "completion": "二"})" "\n" R"({"prompt": "三", "completion": "四"})" "\n");
  TrainConfig cfg = parseTrainConfig("model: " + t.path + "\ndata: " + d.file("data.jsonl") + "\nmask_end_of_turn: true\n", "t.yaml");
  const std::string e = errorOf([&] { runTraining(cfg, d.file("run")); });
  EXPECT_NE(e.find("would not learn to stop"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(d.file("run"))) << "nothing is trained or written";
  // A target pattern that matches nothing is an error.
  auto model = Model::load(t.folder, {"cpu", "fp32"});
  EXPECT_NE(errorOf([&] { loraTargets(*model, "nonexistent_proj"); }).find("matches no linear layer"), std::string::npos);
  EXPECT_NE(errorOf([&] { parseTrainConfig("model: m\ndata: d\nbogus: 1\n", "t.yaml"); }).find("unknown key 'bogus'"), std::string::npos);
}

TEST(TrainLora, GradientsMatchFiniteDifferences) {
  Tiny t("llama", 32, 2);
  // Double weights through fromWeights: an fp64 model computes norms, softmax and logits in fp64.
  std::unordered_map<std::string, at::Tensor> w;
  for (const auto& n : t.folder.weights->names()) w[n] = t.folder.weights->tensor(n).to(at::kDouble);
  auto model = Model::fromWeights(t.folder, w, c10::kCPU, at::kDouble);
  LoraSpec spec;
  spec.rank = 2;
  spec.alpha = 4;
  spec.targetModules = "q_proj|v_proj|down_proj";
  auto targets = attachLora(*model, spec, 3);
  ASSERT_EQ(targets.size(), 6u);
  // B starts at zero; give it values so A's gradient is not trivially zero.
  auto bGen = at::detail::createCPUGenerator(5);
  for (const auto& m : targets) {
    at::NoGradGuard g;
    const_cast<at::Tensor&>(model->adapter(m)->B).normal_(0, 0.2, bGen);
  }
  TokenizedExample x = tokenizeConversation(parseConversation(R"({"prompt": "一二三", "completion": "四五"})", "g:1"), t.tc, *t.tok, {});
  Batch b = collate({&x}, 0);
  at::Tensor loss = batchLoss(*model, b);
  loss.backward();
  // Directional derivatives (whole tensors, so the change in the loss is far above fp32 rounding):
  // along the gradient itself (must be |g|) and along a fixed random direction (must be g . u).
  auto gen = at::detail::createCPUGenerator(11);
  for (const std::string m : {targets[0], targets[5]}) {
    for (const at::Tensor* p : {&model->adapter(m)->A, &model->adapter(m)->B})
      test::expectGradientMatchesFiniteDifferences(*p, [&] { return batchLoss(*model, b).item<double>(); }, gen, m);
  }
}

TEST(TrainLora, ExportedAdapterMergedEqualsBasePlusAdapterAndLoads) {
  Tiny t("llama", 32, 2);
  test::TempDir d;
  auto model = Model::load(t.folder, {"cpu", "fp32"});
  LoraSpec spec;
  spec.rank = 4;
  spec.alpha = 8;
  spec.rsLora = true;
  spec.targetModules = "q_proj|v_proj|up_proj";
  auto targets = attachLora(*model, spec, 5);
  for (const auto& m : targets) {
    at::NoGradGuard g;
    const_cast<at::Tensor&>(model->adapter(m)->B).normal_(0, 0.3);
  }
  const std::vector<int64_t> ids = {1, 40, 41, 42, 43, 44};
  at::Tensor want;
  {
    at::NoGradGuard g;
    want = model->logits(ids);
  }
  exportPeftAdapter(*model, spec, t.path, d.file("adapter"));
  auto cfg = nlohmann::json::parse(test::readFile(d.file("adapter/adapter_config.json")));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["bias"], "none");
  auto st = SafetensorsFile::open(d.file("adapter/adapter_model.safetensors"));
  const auto& ea = st->entry("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(ea.shape, (std::vector<int64_t>{4, 32}));
  const auto& eb = st->entry("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(eb.shape[1], 4);
  // Base + loaded adapter at run time.
  auto base = Model::load(t.folder, {"cpu", "fp32"});
  LoraSpec read = loadPeftAdapter(*base, d.file("adapter"));
  EXPECT_DOUBLE_EQ(read.scale(), 8.0 / 2.0);
  at::Tensor viaAdapter = base->logits(ids);
  EXPECT_LT((viaAdapter - want).abs().max().item<double>(), 1e-4);
  // Merged folder (weights stored in the base's bf16) loads as a normal model and agrees to bf16 rounding.
  exportMerged(*model, t.folder, d.file("merged"));
  ModelFolder mf = ModelFolder::open(d.file("merged"));
  auto merged = Model::load(mf, {"cpu", "fp32"});
  at::Tensor viaMerged = merged->logits(ids);
  EXPECT_LT((viaMerged - want).abs().max().item<double>(), 0.05 * want.abs().max().item<double>() + 0.05);
  // Merged in fp32 it is the same model: logits agree to fp32 rounding.
  exportMerged(*model, t.folder, d.file("merged32"), "fp32");
  auto merged32 = Model::load(ModelFolder::open(d.file("merged32")), {"cpu", "fp32"});
  EXPECT_LT((merged32->logits(ids) - want).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(mf.tokenizer != nullptr);
}

TEST(TrainRun, ATinyModelLearnsToStopOnlyWhenItsEndOfTurnIsTrained) {
  Tiny t("gemma2", 64, 2);
  test::TempDir d;
  test::writeFile(d.file("data.jsonl"), test::stopTaskData());
  const std::string yaml = test::stopTaskYaml(t.path, d.file("data.jsonl"));
  std::vector<std::string> lines;
  TrainResult good = runTraining(parseTrainConfig(yaml, "t.yaml"), d.file("good"), [&](const std::string& s) { lines.push_back(s); });
  TrainConfig maskedCfg = parseTrainConfig(yaml + "mask_end_of_turn: true\nallow_unterminated: true\n", "t.yaml");
  TrainResult masked = runTraining(maskedCfg, d.file("masked"));
  std::cout << "stop-rate with end of turn trained " << good.eval.stopRate() << ", masked " << masked.eval.stopRate()
            << "; generated tokens " << good.eval.meanGenerated << " vs " << masked.eval.meanGenerated << " (reference "
            << good.eval.meanReference << ")\n";
  EXPECT_LT(good.finalLoss, good.firstLoss);
  EXPECT_GE(good.eval.stopRate(), 0.85) << "trained end of turn: answers must stop";
  EXPECT_LE(masked.eval.stopRate(), 0.25) << "masked end of turn: answers ramble";
  EXPECT_EQ(good.eval.prompts, 8);
  // The run folder: config copy, audit, metrics with train and eval lines, PEFT adapter.
  EXPECT_TRUE(std::filesystem::exists(d.file("good/config.yaml")));
  EXPECT_TRUE(std::filesystem::exists(d.file("good/audit.txt")));
  EXPECT_TRUE(std::filesystem::exists(d.file("good/adapter/adapter_model.safetensors")));
  const std::string metrics = test::readFile(d.file("good/metrics.jsonl"));
  EXPECT_NE(metrics.find("\"tokens_per_s\""), std::string::npos);
  EXPECT_NE(metrics.find("\"stop_rate\""), std::string::npos);
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines.front().find("label audit"), std::string::npos);
}

TEST(TrainRun, CancelledRunResumesToTheSameAdapterAsAnUninterruptedOne) {
  Tiny t("llama", 32, 2);
  test::TempDir d;
  test::writeFile(d.file("data.jsonl"), test::promptCompletionData(12));
  const std::string yaml = "model: " + t.path + "\ndata: " + d.file("data.jsonl") +
                           "\nlora: {rank: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj]}\nsteps: 8\nbatch_size: 3\n"
                           "grad_accum: 2\nweight_decay: 0.01\nschedule: linear\nwarmup_steps: 2\neval_prompts: 2\neval_max_new_tokens: 4\n"
                           "export_merged: false\nlearning_rate: 0.01\n";
  const TrainConfig cfg = parseTrainConfig(yaml, "t.yaml");
  runTraining(cfg, d.file("whole"));
  std::atomic<bool> stop{false};
  EXPECT_THROW(runTraining(cfg, d.file("cut"), [&](const std::string& s) { if (s.rfind("step 5/8", 0) == 0) stop = true; }, &stop),
               Cancelled);
  EXPECT_TRUE(std::filesystem::exists(d.file("cut/checkpoint/trainer_state.safetensors")));
  TrainResult resumed = resumeTraining(d.file("cut"));
  auto a = SafetensorsFile::open(d.file("whole/adapter/adapter_model.safetensors"));
  auto b = SafetensorsFile::open(resumed.adapterDir + "/adapter_model.safetensors");
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const auto& e : a->tensors())
    EXPECT_LT((a->tensor(e.name) - b->tensor(e.name)).abs().max().item<double>(), 1e-5) << e.name;
  EXPECT_NE(errorOf([&] { resumeTraining(d.file("cut")); }).find("finished"), std::string::npos);
  EXPECT_NE(errorOf([&] { resumeTraining(d.file("nothing")); }).find("not a training run"), std::string::npos);
}

// The run starts with the preflight (one code path): the audit it prints and writes and the memory
// plan line are the preflight's. The structured progress comes every step, its learning rate is the
// schedule's closed form, and the printed progress lines keep their own cadence (every total/20).
TEST(TrainRun, RunPrintsThePreflightAndReportsProgressEveryStep) {
  Tiny t("llama", 32, 2);
  test::TempDir d;
  test::writeFile(d.file("data.jsonl"), test::promptCompletionData(10));
  const std::string yaml = "model: " + t.path + "\ndata: " + d.file("data.jsonl") +
                           "\nlora: {rank: 2, alpha: 4, target_modules: [q_proj]}\nsteps: 45\nbatch_size: 2\neval_prompts: 1\n"
                           "eval_max_new_tokens: 2\nexport_merged: false\nlearning_rate: 0.01\nschedule: cosine\n"
                           "gradient_checkpointing: true\n";
  const TrainConfig cfg = parseTrainConfig(yaml, "t.yaml");
  const TrainPreflight pre = preflightTraining(cfg);
  EXPECT_EQ(pre.steps, 45);
  EXPECT_EQ(pre.memoryPlan.rfind("memory plan (batch 2 x ", 0), 0u) << pre.memoryPlan;
  EXPECT_NE(pre.memoryPlan.find("gradient checkpointing"), std::string::npos) << pre.memoryPlan;
  std::vector<std::string> lines;
  std::vector<TrainProgress> progress;
  runTraining(cfg, d.file("run"), [&](const std::string& s) { lines.push_back(s); }, nullptr,
              [&](const TrainProgress& p) { progress.push_back(p); });
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0], pre.audit.report);
  EXPECT_EQ(lines[1], pre.memoryPlan);
  EXPECT_EQ(test::readFile(d.file("run/audit.txt")), pre.audit.report);

  ASSERT_EQ(progress.size(), 45u);
  int printed = 0;
  for (size_t i = 0; i < progress.size(); ++i) {
    const TrainProgress& p = progress[i];
    EXPECT_EQ(p.step, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(p.steps, 45);
    EXPECT_NEAR(p.lr, 0.01 * 0.5 * (1 + std::cos(M_PI * static_cast<double>(i) / 45.0)), 1e-12) << "step " << p.step;
    EXPECT_TRUE(std::isfinite(p.loss) && p.loss > 0);
    EXPECT_GE(p.etaSeconds, 0);
    const std::string head = "step " + std::to_string(p.step) + "/45  loss ";
    for (const auto& l : lines)
      if (l.rfind(head, 0) == 0) {
        ++printed;
        char loss[32];
        std::snprintf(loss, sizeof loss, "%.4f", p.loss);
        EXPECT_EQ(l.substr(head.size(), std::string(loss).size()), loss) << l;
      }
  }
  EXPECT_EQ(printed, 23);  // every 2nd step (45 / 20) and the last
}
