// Decoder-LLM reranker: batched scores equal unpadded one-pair scores, the score is the log-odds
// read from an independent unbatched forward pass, search orders and thresholds by the rerank
// score (recounted by hand), and bad folders are refused by name. Tiny random models: noise
// scores, real mechanics.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/retrieval/rerank.h"
#include "core/retrieval/store.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

using namespace kh::retrieval;
using kh::test::TempDir;

namespace {

std::string expectError(const std::function<void()>& f) {
  try {
    f();
  } catch (const kh::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no kh::Error";
  return {};
}

std::string tinyModel(const TempDir& d, const std::string& family, uint64_t seed = 5) {
  kh::TinyOptions to;
  to.family = family;
  to.seed = seed;
  kh::makeTinyCheckpoint(d.file(family), to);
  return d.file(family);
}

// The tiny SentencePiece vocabulary is almost one piece per character: はい and yes are several
// tokens, Y and N one each.
RerankOptions tinyAnswers(int batchSize = 8) {
  RerankOptions o;
  o.answers = std::make_pair(std::string("Y"), std::string("N"));
  o.batchSize = batchSize;
  return o;
}

const std::vector<std::string> kChunks = {
    "名前は小野寺絢音です。", "東京は日本の首都で、人口が多い都市です。", "猫",
    "明日の天気は晴れのち曇り、午後から風が強くなるでしょう。気温は二十度前後です。",
    "The answer is 42.", "私の趣味は読書と散歩です。週末には図書館に行きます。"};

// log P(yes) - log P(no) at the last prompt token, from the plain one-sequence forward pass
// (the `kumihimo-cli logits` path): no batching, no padding, no positions of ours.
double unbatchedLogOdds(const DecoderReranker& r, const std::string& q, const std::string& chunk) {
  const auto ids32 = r.promptIds(q, chunk);
  const std::vector<int64_t> ids(ids32.begin(), ids32.end());
  const at::Tensor lp = at::log_softmax(r.model().logits(ids)[-1].to(at::kDouble), -1);  // [V]
  return lp[r.yesToken()].item<double>() - lp[r.noToken()].item<double>();
}

}  // namespace

TEST(Rerank, BatchedScoresEqualOnePairAtATimeAndTheLogitsLogOdds) {
  TempDir d;
  for (const std::string family : {"llama", "gemma2", "qwen2"}) {
    SCOPED_TRACE(family);
    const std::string dir = tinyModel(d, family);
    DecoderReranker r(dir, tinyAnswers(4));  // 6 pairs of different lengths: one padded batch of 4, one of 2
    // The answer words are single tokens that spell what the prompt asks for.
    auto tok = kh::Tokenizer::fromFolder(dir);
    EXPECT_NE(tok->decode({r.yesToken()}).find(r.yesWord()), std::string::npos) << tok->decode({r.yesToken()});
    EXPECT_NE(tok->decode({r.noToken()}).find(r.noWord()), std::string::npos) << tok->decode({r.noToken()});
    const std::string q = "あなたの名前はなんですか?";
    // The prompt the model sees holds the instruction with the answer words, the query and the chunk.
    const std::string shown = tok->decode(r.promptIds(q, kChunks[1]), false);
    EXPECT_NE(shown.find("「" + r.yesWord() + "」、含んでいなければ「" + r.noWord() + "」"), std::string::npos) << shown;
    EXPECT_NE(shown.find("質問: " + q), std::string::npos) << shown;
    EXPECT_NE(shown.find("文章: " + kChunks[1]), std::string::npos) << shown;
    size_t lastDone = 0, calls = 0;
    const auto all = r.scoreAll(q, kChunks, [&](size_t done, size_t total) {
      EXPECT_EQ(total, kChunks.size());
      EXPECT_GT(done, lastDone);
      lastDone = done, ++calls;
    });
    EXPECT_EQ(calls, 2u);
    EXPECT_EQ(lastDone, kChunks.size());
    ASSERT_EQ(all.size(), kChunks.size());
    // The prompts really differ in length, so the batch really was padded.
    std::set<size_t> lengths;
    for (const auto& c : kChunks) lengths.insert(r.promptIds(q, c).size());
    EXPECT_GE(lengths.size(), 4u);
    DecoderReranker one(dir, tinyAnswers(1));
    double spread = 0;
    for (size_t i = 0; i < kChunks.size(); ++i) {
      ASSERT_TRUE(all[i].has_value());
      EXPECT_NEAR(*all[i], *one.score(q, kChunks[i]), 2e-4) << i;
      EXPECT_NEAR(*all[i], unbatchedLogOdds(r, q, kChunks[i]), 2e-4) << i;
      spread = std::max(spread, std::fabs(*all[i] - *all[0]));
    }
    EXPECT_GT(spread, 1e-6);  // the chunk reaches the answer position: scores are not all one number
  }
}

TEST(Rerank, LogitBudgetCutsBatchesWithoutChangingScores) {
  TempDir d;
  const std::string dir = tinyModel(d, "llama");
  RerankOptions budget = tinyAnswers(8);
  // Room for two rows of the longest prompt's logits: batches of at most 2, so at least 3 passes.
  DecoderReranker big(dir, tinyAnswers(8));
  size_t longest = 0;
  for (const auto& c : kChunks) longest = std::max(longest, big.promptIds("質問", c).size());
  budget.maxLogitBytes = 2 * static_cast<int64_t>(longest) * 4 * big.model().config().vocabSize;
  DecoderReranker small(dir, budget);
  size_t passes = 0, bigPasses = 0;
  const auto a = small.scoreAll("質問", kChunks, [&](size_t, size_t) { ++passes; });
  const auto b = big.scoreAll("質問", kChunks, [&](size_t, size_t) { ++bigPasses; });
  EXPECT_EQ(bigPasses, 1u);
  EXPECT_GE(passes, 3u);
  for (size_t i = 0; i < kChunks.size(); ++i) EXPECT_NEAR(*a[i], *b[i], 2e-4) << i;
}

TEST(Rerank, SearchOrdersAndThresholdsByTheRerankScore) {
  TempDir d;
  DecoderReranker r(tinyModel(d, "llama", 7), tinyAnswers());
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, nullptr);
  const std::string q = "あなたの名前はなんですか?";
  SearchOptions plain;
  plain.k = 100;
  plain.threshold = "none";
  const auto fused = s.search(q, plain, nullptr);  // BM25 only store: the method's score, best first
  ASSERT_GE(fused.size(), 6u);
  for (const std::string mode : {"relative", "zscore"}) {
    SCOPED_TRACE(mode);
    SearchOptions o = plain;
    o.reranker = &r;
    o.rerankK = 5;
    o.threshold = mode;
    o.relativeRatio = 0.5;
    o.zMin = 0.3;
    auto hits = s.search(q, o, nullptr);
    ASSERT_EQ(hits.size(), fused.size());
    // The rest follow in the method's order, unscored and dropped.
    for (size_t i = 5; i < hits.size(); ++i) {
      EXPECT_EQ(hits[i].chunkId, fused[i].chunkId);
      EXPECT_FALSE(hits[i].rerankScore.has_value());
      EXPECT_FALSE(hits[i].kept);
      EXPECT_EQ(hits[i].threshold.rfind("not reranked", 0), 0u) << hits[i].threshold;
    }
    hits.resize(5);
    // First exactly the best 5 fused candidates, each scored as one pair on its own.
    std::map<std::string, double> expected;
    for (size_t i = 0; i < 5; ++i) expected[fused[i].chunkId] = *r.score(q, fused[i].text);
    std::vector<double> scores;
    for (const auto& h : hits) {
      ASSERT_EQ(expected.count(h.chunkId), 1u) << h.chunkId;
      ASSERT_TRUE(h.rerankScore.has_value());
      EXPECT_NEAR(*h.rerankScore, expected[h.chunkId], 2e-4);
      scores.push_back(*h.rerankScore);
    }
    EXPECT_TRUE(std::is_sorted(scores.rbegin(), scores.rend()));
    // Kept or dropped, recounted from the scores alone.
    const double best = scores[0];
    double mean = 0, var = 0;
    for (double v : scores) mean += v;
    mean /= 5;
    for (double v : scores) var += (v - mean) * (v - mean);
    const double sd = std::sqrt(var / 5);
    for (size_t i = 0; i < 5; ++i) {
      bool keep;
      if (mode == "relative") keep = best >= 0 ? scores[i] >= 0.5 * best : scores[i] >= best / 0.5;
      else keep = (scores[i] - mean) / sd >= 0.3;
      EXPECT_EQ(hits[i].kept, keep) << i << " " << hits[i].threshold;
      EXPECT_EQ(hits[i].threshold.rfind("rerank", 0), 0u) << hits[i].threshold;
    }
    EXPECT_TRUE(hits[0].kept);
  }
}

TEST(Rerank, RelativeThresholdOnNegativeLogOddsKeepsTheBest) {
  std::vector<RetrievalHit> hits(4);
  const double sc[] = {-1.0, -1.5, -2.0, -3.0};
  for (size_t i = 0; i < 4; ++i) hits[i].rerankScore = sc[i];
  SearchOptions o;
  o.relativeRatio = 0.5;  // negative best: keep down to best / 0.5 = -2
  applyThreshold(hits, o);
  EXPECT_TRUE(hits[0].kept);
  EXPECT_TRUE(hits[1].kept);
  EXPECT_TRUE(hits[2].kept);
  EXPECT_FALSE(hits[3].kept);
  EXPECT_NE(hits[3].threshold.find("best -1 / 0.5"), std::string::npos) << hits[3].threshold;
}

TEST(Rerank, RefusesWhatIsNoModelAndStopsWhenCancelled) {
  TempDir d;
  std::string msg = expectError([&] { DecoderReranker r(d.file("nowhere")); });
  EXPECT_NE(msg.find("nowhere"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  std::filesystem::create_directories(d.file("notes"));  // a folder, but not a model
  kh::test::writeFile(d.file("notes/a.txt"), "名前は小野寺絢音");
  msg = expectError([&] { DecoderReranker r(d.file("notes")); });
  EXPECT_NE(msg.find("not a model folder"), std::string::npos) << msg;
  const std::string dir = tinyModel(d, "llama");
  msg = expectError([&] {
    RerankOptions o;
    o.templateOverride = "no-such-format";
    DecoderReranker r(dir, o);
  });
  EXPECT_NE(msg.find("no-such-format"), std::string::npos) << msg;
  // Its tokenizer spells はい and yes with several tokens: refused, naming both pairs.
  msg = expectError([&] { DecoderReranker r(dir); });
  EXPECT_NE(msg.find("'はい'/'いいえ', 'yes'/'no' are not single tokens"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  msg = expectError([&] { parseAnswerWords("Y,Y"); });
  EXPECT_NE(msg.find("not two different words"), std::string::npos) << msg;
  std::atomic<bool> cancel{true};
  RerankOptions o = tinyAnswers();
  o.cancel = &cancel;
  DecoderReranker r(dir, o);
  msg = expectError([&] { r.scoreAll("質問", kChunks); });
  EXPECT_NE(msg.find("cancelled"), std::string::npos) << msg;
}
