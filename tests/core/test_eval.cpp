// Evaluation: every metric against hand-computed values (Japanese char F1, full-width and MGSM-style
// numbers, the Japanese-answer rule), suite files with their file:line errors, batched generation
// against generate() row by row, multiple choice against a brute-force log-likelihood, and the
// Evaluator's records against the metric functions.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "core/eval/evaluator.h"
#include "core/eval/metrics.h"
#include "core/eval/suite.h"
#include "core/model/generate.h"
#include "core/model/tiny.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

using kh::test::TempDir;
using kh::test::writeFile;
namespace ev = kh::eval;

namespace {

ev::MetricSpec metric(ev::MetricKind k, bool japanese = false, std::string pattern = "") {
  ev::MetricSpec m;
  m.kind = k;
  m.requireJapanese = japanese;
  m.pattern = std::move(pattern);
  return m;
}

// The kh::Error message of loading `path`, "" when it loads.
std::string loadError(const std::string& path) {
  try {
    ev::loadSuite(path);
  } catch (const kh::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(EvalMetrics, ExactMatchTrimsAndNarrowsWidthButKeepsCase) {
  EXPECT_EQ(ev::normalizeAnswer("\u3000 東京 \n"), "東京");
  EXPECT_EQ(ev::normalizeAnswer("ＡＢＣ１２３"), "ABC123");
  const auto em = metric(ev::MetricKind::ExactMatch);
  EXPECT_EQ(ev::scoreOutput(em, "  東京\n", {"大阪", "東京"}), 1.0);
  EXPECT_EQ(ev::scoreOutput(em, "東京都", {"東京"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(em, "tokyo", {"Tokyo"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(em, "Ｔｏｋｙｏ", {"Tokyo"}), 1.0);
}

TEST(EvalMetrics, ContainsAndRegex) {
  const auto c = metric(ev::MetricKind::Contains);
  EXPECT_EQ(ev::scoreOutput(c, "私の名前は小野寺絢音です。", {"小野寺絢音"}), 1.0);
  EXPECT_EQ(ev::scoreOutput(c, "私の名前は小野寺です。", {"小野寺絢音"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(c, "好きなのは盛岡冷麺", {"ラーメン", "冷麺"}), 1.0);
  // The reference is the pattern, or the metric's pattern when given (references then ignored).
  const auto r = metric(ev::MetricKind::Regex);
  EXPECT_EQ(ev::scoreOutput(r, "answer: 42", {"answer: [0-9]+$"}), 1.0);
  EXPECT_EQ(ev::scoreOutput(r, "answer: 42.", {"answer: [0-9]+$"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(metric(ev::MetricKind::Regex, false, "^盛岡"), "盛岡市です", {"ignored"}), 1.0);
}

TEST(EvalMetrics, LastNumberReadsMgsmStyleAnswers) {
  EXPECT_EQ(ev::lastNumber("答えは 1,234 です"), 1234.0);
  EXPECT_EQ(ev::lastNumber("答えは１，２３４です。"), 1234.0);  // full-width digits and comma
  EXPECT_EQ(ev::lastNumber("12 + 6 = 18。答えは18."), 18.0);    // trailing period ends the number
  EXPECT_EQ(ev::lastNumber("気温は-5度"), -5.0);
  EXPECT_EQ(ev::lastNumber("気温は−3度"), -3.0);  // U+2212 minus
  EXPECT_EQ(ev::lastNumber("気温は－７度"), -7.0);  // full-width minus and digit
  EXPECT_EQ(ev::lastNumber("3-5"), 5.0);          // a hyphen after a digit is not a sign
  EXPECT_EQ(ev::lastNumber("4.3リットル"), 4.3);
  EXPECT_EQ(ev::lastNumber("1234,567"), 567.0);   // not digit groups of three
  EXPECT_EQ(ev::lastNumber("1,23"), 23.0);
  EXPECT_FALSE(ev::lastNumber("答えはわかりません").has_value());
  const auto n = metric(ev::MetricKind::Numeric);
  EXPECT_EQ(ev::scoreOutput(n, "全部で 9,265 人です。", {"9265"}), 1.0);
  EXPECT_EQ(ev::scoreOutput(n, "2.50時間", {"2.5"}), 1.0);
  EXPECT_EQ(ev::scoreOutput(n, "18 ではなく 19", {"18"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(n, "なし", {"0"}), 0.0);
}

TEST(EvalMetrics, CharF1CountsCharactersAsAMultiset) {
  // 東京都 vs 東京: overlap 2, P = 2/3, R = 1, F1 = 0.8.
  EXPECT_NEAR(ev::charF1("東京都", "東京"), 0.8, 1e-12);
  EXPECT_NEAR(ev::charF1("ああい", "あい"), 0.8, 1e-12);  // the second あ has no partner
  EXPECT_NEAR(ev::charF1("東 京", "東京"), 1.0, 1e-12);    // whitespace ignored
  EXPECT_NEAR(ev::charF1("ＡＢ", "AB"), 1.0, 1e-12);       // widths narrowed
  // 小野寺です (5) vs 小野寺絢音 (5): overlap 3 -> P = R = 0.6.
  EXPECT_NEAR(ev::charF1("小野寺です", "小野寺絢音"), 0.6, 1e-12);
  EXPECT_EQ(ev::charF1("abc", "xyz"), 0.0);
  EXPECT_EQ(ev::charF1("", ""), 1.0);
  EXPECT_EQ(ev::charF1("", "a"), 0.0);
  // The best reference counts.
  EXPECT_NEAR(ev::scoreOutput(metric(ev::MetricKind::CharF1), "東京都", {"大阪", "東京", "京"}), 0.8, 1e-12);
}

TEST(EvalMetrics, JapaneseAnswerNeedsKanaAndAJapaneseMajority) {
  EXPECT_TRUE(ev::isJapaneseAnswer("答えは 18 です。"));
  EXPECT_TRUE(ev::isJapaneseAnswer("ｱｲｳ"));  // half-width katakana
  EXPECT_FALSE(ev::isJapaneseAnswer("The answer is 18."));
  EXPECT_FALSE(ev::isJapaneseAnswer("18"));
  EXPECT_FALSE(ev::isJapaneseAnswer("答案是18"));  // Chinese: kanji only, no kana
  EXPECT_FALSE(ev::isJapaneseAnswer("Tokyo は東京"));  // 3 Japanese of 8 letters
  EXPECT_TRUE(ev::isJapaneseAnswer("東京タワーは Tower"));  // 6 of 11
  EXPECT_TRUE(ev::isJapaneseAnswer("東京タワーは Towers"));  // 6 of 12: half counts
  // Combined with numeric: the number must be right and the answer Japanese.
  const auto nj = metric(ev::MetricKind::Numeric, true);
  EXPECT_EQ(nj.name(), "numeric+japanese");
  EXPECT_EQ(ev::scoreOutput(nj, "答えは 18 です。", {"18"}), 1.0);
  EXPECT_EQ(ev::scoreOutput(nj, "The answer is 18.", {"18"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(nj, "答えは 17 です。", {"18"}), 0.0);
  EXPECT_EQ(ev::scoreOutput(metric(ev::MetricKind::Japanese), "はい", {"x"}), 1.0);
}

TEST(EvalSuite, ParsesTasksSplitsFewShotAndRelativePaths) {
  TempDir d;
  std::filesystem::create_directories(d.file("data"));
  writeFile(d.file("data/qa.jsonl"),
            "{\"prompt\": \"Q1:\", \"references\": [\"1\"], \"split\": \"fewshot\", \"target\": \" 1\"}\n"
            "{\"prompt\": \"Q2:\", \"reference\": \"2\"}\n"
            "\n"
            "{\"id\": \"h\", \"prompt\": \"Q3:\", \"references\": [\"3\", \"3.0\"], \"split\": \"heldout\"}\n");
  writeFile(d.file("s.yaml"),
            "name: demo\n"
            "tasks:\n"
            "  - name: qa\n"
            "    data: data/qa.jsonl\n"
            "    metrics: [exact_match, {name: numeric, japanese: true}, contains+japanese]\n"
            "    fitness_metric: numeric+japanese\n"
            "    weight: 2\n"
            "    few_shot: 1\n"
            "    max_new_tokens: 7\n"
            "    stop: \"\\n\"\n");
  auto s = ev::loadSuite(d.file("s.yaml"));
  EXPECT_EQ(s.name, "demo");
  ASSERT_EQ(s.tasks.size(), 1u);
  const auto& t = s.tasks[0];
  EXPECT_EQ(t.metrics.size(), 3u);
  EXPECT_EQ(t.metrics[2].name(), "contains+japanese");
  EXPECT_EQ(t.fitnessMetric, 1u);
  EXPECT_EQ(t.weight, 2.0);
  EXPECT_EQ(t.maxNewTokens, 7);
  EXPECT_EQ(t.stopStrings, std::vector<std::string>{"\n"});
  ASSERT_EQ(t.examples.size(), 1u);
  EXPECT_EQ(t.examples[0].target, " 1");
  ASSERT_EQ(t.items.size(), 2u);
  EXPECT_EQ(t.items[0].split, "fitness");  // the default
  EXPECT_EQ(t.items[0].id, "qa.jsonl:2");
  EXPECT_EQ(t.items[1].id, "h");
  EXPECT_EQ(t.items[1].references.size(), 2u);
  EXPECT_TRUE(ev::splitSelected("heldout", "all"));
  EXPECT_FALSE(ev::splitSelected("fewshot", "all"));
  EXPECT_THROW(ev::validateSplit("test"), kh::Error);
}

TEST(EvalSuite, BadInputNamesFileAndLine) {
  TempDir d;
  writeFile(d.file("ok.jsonl"), "{\"prompt\": \"a\", \"references\": [\"1\"]}\n");
  writeFile(d.file("noref.jsonl"), "{\"prompt\": \"a\", \"references\": [\"1\"]}\n{\"prompt\": \"b\"}\n");
  writeFile(d.file("badjson.jsonl"), "{\"prompt\": \"a\", \"references\": [\"1\"]}\n{\"prompt\": \n");
  writeFile(d.file("nonum.jsonl"), "{\"prompt\": \"a\", \"references\": [\"いくつ\"]}\n");
  auto suite = [&](const std::string& name, const std::string& task) {
    writeFile(d.file(name), "name: s\ntasks:\n" + task);
    return d.file(name);
  };
  struct Case {
    std::string path, fragment;
  };
  const std::vector<Case> cases = {
      {suite("nodata.yaml", "  - name: t\n    metrics: [contains]\n"), "nodata.yaml:3: a task needs 'data'"},
      {suite("unknown.yaml", "  - name: t\n    data: ok.jsonl\n    metrics:\n      - contains\n      - bleu\n"),
       "unknown.yaml:7: unknown metric 'bleu'"},
      {suite("noref.yaml", "  - name: t\n    data: noref.jsonl\n    metrics: [contains]\n"), "noref.jsonl:2: item 'noref.jsonl:2' has no reference"},
      {suite("badjson.yaml", "  - name: t\n    data: badjson.jsonl\n    metrics: [contains]\n"), "badjson.jsonl:2: not valid JSON"},
      {suite("nonum.yaml", "  - name: t\n    data: nonum.jsonl\n    metrics: [numeric]\n"), "nonum.jsonl:1: reference 'いくつ' has no number"},
      {suite("nofile.yaml", "  - name: t\n    data: missing.jsonl\n    metrics: [contains]\n"), "nofile.yaml:4: 'data' file"},
      {suite("key.yaml", "  - name: t\n    data: ok.jsonl\n    metric: [contains]\n"), "key.yaml:5: unknown key 'metric'"},
      {suite("mc.yaml", "  - name: t\n    data: ok.jsonl\n    metrics: [mc_loglik]\n"), "ok.jsonl:1: task 't' scores multiple choice"},
      {suite("shots.yaml", "  - name: t\n    data: ok.jsonl\n    metrics: [contains]\n    few_shot: 2\n"), "shots.yaml:6: few_shot: 2"},
  };
  for (const auto& c : cases) {
    const std::string msg = loadError(c.path);
    EXPECT_NE(msg.find(c.fragment), std::string::npos) << "want '" << c.fragment << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  writeFile(d.file("noname.yaml"), "tasks: []\n");
  EXPECT_NE(loadError(d.file("noname.yaml")).find("noname.yaml:1: the suite needs a 'name'"), std::string::npos);
}

TEST(EvalSuite, ShippedSuitesLoad) {
  auto p = ev::loadSuite(kh::test::sourceDir() + "/resources/suites/persona-qa/suite.yaml");
  ASSERT_EQ(p.tasks.size(), 2u);
  EXPECT_TRUE(p.needsChat());
  auto a = ev::loadSuite(kh::test::sourceDir() + "/resources/suites/ja-arith/suite.yaml");
  ASSERT_EQ(a.tasks.size(), 1u);
  EXPECT_EQ(a.tasks[0].examples.size(), 2u);
  size_t fitness = 0, heldout = 0;
  for (const auto& it : a.tasks[0].items) (it.split == "fitness" ? fitness : heldout) += 1;
  EXPECT_EQ(fitness, 20u);
  EXPECT_EQ(heldout, 10u);
  for (const auto& it : a.tasks[0].items) EXPECT_TRUE(ev::isJapaneseAnswer(it.prompt)) << it.id;
}

namespace {

// One tiny fp32 model for the model-dependent tests (making it trains a tokenizer: ~1 s).
class EvalModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    kh::TinyOptions o;
    o.family = "llama";
    o.initStd = 0.3;  // peaked logits: distinct choices, varied greedy tokens
    kh::makeTinyCheckpoint(dir_->file("m"), o);
    folder_ = new kh::ModelFolder(kh::ModelFolder::open(dir_->file("m")));
    kh::RunOptions ro;
    ro.dtype = "fp32";
    model_ = kh::Model::load(*folder_, ro);
    tok_ = folder_->requireTokenizer();
  }
  static void TearDownTestSuite() {
    model_.reset();
    tok_.reset();
    delete folder_;
    delete dir_;
  }
  static TempDir* dir_;
  static kh::ModelFolder* folder_;
  static std::shared_ptr<kh::Model> model_;
  static std::shared_ptr<kh::Tokenizer> tok_;
};
TempDir* EvalModel::dir_ = nullptr;
kh::ModelFolder* EvalModel::folder_ = nullptr;
std::shared_ptr<kh::Model> EvalModel::model_;
std::shared_ptr<kh::Tokenizer> EvalModel::tok_;

}  // namespace

TEST_F(EvalModel, BatchedGenerationEqualsGeneratePerRow) {
  std::vector<std::vector<int>> prompts;
  for (const char* t : {"名前は小野寺絢音です。", "今日は", "東京タワーの高さは三百三十三メートルです。あなたは", "a"})
    prompts.push_back(tok_->encode(t));
  std::vector<int> stops;
  for (const auto& s : folder_->stopTokens) stops.push_back(s.id);
  kh::SamplingOptions o;
  o.maxNewTokens = 12;
  // Stop strings taken from one row's own output, so that some rows stop early and others do not.
  auto first = kh::generate(*model_, *tok_, prompts[1], stops, o);
  for (const std::vector<std::string>& stopStrings : {std::vector<std::string>{}, std::vector<std::string>{first.text.substr(0, 3)}}) {
    o.stopStrings = stopStrings;
    auto batch = kh::generateBatch(*model_, *tok_, prompts, stops, o);
    ASSERT_EQ(batch.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto one = kh::generate(*model_, *tok_, prompts[i], stops, o);
      EXPECT_EQ(batch[i].ids, one.ids) << "row " << i;
      EXPECT_EQ(batch[i].text, one.text) << "row " << i;
      EXPECT_EQ(batch[i].reason, one.reason) << "row " << i;
      EXPECT_EQ(batch[i].promptTokens, one.promptTokens);
    }
  }
}

TEST_F(EvalModel, MultipleChoicePicksTheLargestBruteForceLogLikelihood) {
  TempDir d;
  writeFile(d.file("mc.jsonl"),
            "{\"prompt\": \"小野寺絢音さんの出身は\", \"choices\": [\"盛岡\", \"札幌市です\", \"福岡\"], \"references\": [\"盛岡\"]}\n"
            "{\"prompt\": \"趣味は\", \"choices\": [\"組紐\", \"将棋を指すこと\"], \"references\": [\"将棋を指すこと\"]}\n"
            "{\"prompt\": \"こむぎは\", \"choices\": [\"犬\", \"猫\", \"鳥\", \"魚\"], \"references\": [\"犬\"]}\n");
  writeFile(d.file("s.yaml"), "name: mc\ntasks:\n  - name: mc\n    data: mc.jsonl\n    metrics: [mc_loglik, mc_loglik_norm]\n");
  auto suite = ev::loadSuite(d.file("s.yaml"));
  ev::EvalOptions eo;
  eo.batchSize = 2;
  ev::Evaluator e(suite, tok_, ev::PromptFormat::forModel(*folder_, *tok_, "", false), eo);
  auto r = e.run(*model_);
  ASSERT_EQ(r.items.size(), 3u);
  double sum = 0, sumNorm = 0;
  for (size_t i = 0; i < r.items.size(); ++i) {
    const auto& item = suite.tasks[0].items[i];
    const auto ctx = tok_->encode(item.prompt);
    std::vector<double> ll;
    size_t best = 0, bestNorm = 0;
    for (size_t c = 0; c < item.choices.size(); ++c) {
      const auto cont = tok_->encode(item.choices[c], false);
      std::vector<int64_t> seq(ctx.begin(), ctx.end());
      seq.insert(seq.end(), cont.begin(), cont.end());
      at::Tensor logp = at::log_softmax(model_->logits(seq), -1);  // [T, V]
      double v = 0;
      for (size_t k = 0; k < cont.size(); ++k) v += logp[static_cast<int64_t>(ctx.size() + k) - 1][cont[k]].item<double>();
      ll.push_back(v);
      if (v > ll[best]) best = c;
      if (v / item.choices[c].size() > ll[bestNorm] / item.choices[bestNorm].size()) bestNorm = c;
      EXPECT_NEAR(r.items[i].choiceLoglik[c], v, 1e-4) << "item " << i << " choice " << c;
    }
    EXPECT_EQ(r.items[i].output, item.choices[best]);
    EXPECT_EQ(r.items[i].stopReason, "loglik");
    const double want = item.choices[best] == item.references[0] ? 1.0 : 0.0;
    const double wantNorm = item.choices[bestNorm] == item.references[0] ? 1.0 : 0.0;
    EXPECT_EQ(r.items[i].scores[0].second, want);
    EXPECT_EQ(r.items[i].scores[1].second, wantNorm);
    sum += want;
    sumNorm += wantNorm;
  }
  EXPECT_NEAR(r.tasks[0].metrics[0].mean, sum / 3, 1e-12);
  EXPECT_NEAR(r.tasks[0].metrics[1].mean, sumNorm / 3, 1e-12);
}

TEST_F(EvalModel, RecordsAgreeWithMetricsAndBatchSizeChangesNothing) {
  TempDir d;
  std::string lines;
  for (int i = 0; i < 5; ++i)
    lines += "{\"prompt\": \"問題" + std::string(static_cast<size_t>(i) * 3, 'x') + "：\", \"references\": [\"" + std::to_string(i) +
             "\"], \"split\": \"" + (i < 4 ? "fitness" : "heldout") + "\"}\n";
  lines += "{\"prompt\": \"例：\", \"references\": [\"7\"], \"target\": \"答えは7\", \"split\": \"fewshot\"}\n";
  writeFile(d.file("q.jsonl"), lines);
  writeFile(d.file("s.yaml"),
            "name: gen\ntasks:\n  - name: q\n    data: q.jsonl\n    metrics: [numeric+japanese, char_f1, contains]\n"
            "    few_shot: 1\n    max_new_tokens: 6\n    weight: 0.5\n");
  auto suite = ev::loadSuite(d.file("s.yaml"));
  auto fmt = ev::PromptFormat::forModel(*folder_, *tok_, "", false);
  ev::EvalOptions one, three;
  one.batchSize = 1;
  three.batchSize = 3;
  auto a = ev::Evaluator(suite, tok_, fmt, one).run(*model_);
  std::vector<ev::EvalProgress> seen;
  auto b = ev::Evaluator(suite, tok_, fmt, three).run(*model_, [&](const ev::EvalProgress& p) { seen.push_back(p); });
  ASSERT_EQ(a.items.size(), 4u);  // fitness only
  ASSERT_EQ(b.items.size(), 4u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().done, 4u);
  EXPECT_EQ(seen.back().total, 4u);
  const auto& task = suite.tasks[0];
  for (size_t i = 0; i < a.items.size(); ++i) {
    EXPECT_EQ(a.items[i].output, b.items[i].output) << i;
    EXPECT_EQ(a.items[i].prompt, "例：答えは7\n\n" + task.items[i].prompt);
    ASSERT_EQ(b.items[i].scores.size(), 3u);
    for (size_t m = 0; m < 3; ++m)
      EXPECT_EQ(b.items[i].scores[m].second, ev::scoreOutput(task.metrics[m], b.items[i].output, task.items[i].references));
  }
  EXPECT_NEAR(b.fitness(), 0.5 * b.tasks[0].metrics[0].mean, 1e-12);
  std::atomic<bool> cancel{true};
  EXPECT_THROW(ev::Evaluator(suite, tok_, fmt, three).run(*model_, {}, &cancel), kh::Cancelled);
  three.split = "heldout";
  three.limit = 1;
  EXPECT_EQ(ev::Evaluator(suite, tok_, fmt, three).itemCount(), 1u);
}
