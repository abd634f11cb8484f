// Generation: greedy decoding with the KV cache against a brute-force twin that re-runs the full
// sequence every step; stop ids, stop strings and length; samplers against their definitions
// (softmax frequencies, nucleus membership, transformers' repetition-penalty rule); bad settings.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/model/generate.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

using kh::test::TempDir;

namespace {

bool validUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

class Generation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    kh::TinyOptions o;
    o.family = "gemma2";
    kh::makeTinyCheckpoint(dir_->file("m"), o);
    folder_ = new kh::ModelFolder(kh::ModelFolder::open(dir_->file("m")));
    kh::RunOptions ro;
    ro.dtype = "fp32";
    model_ = kh::Model::load(*folder_, ro);
    tok_ = kh::Tokenizer::fromFolder(dir_->file("m"));
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
TempDir* Generation::dir_ = nullptr;
kh::ModelFolder* Generation::folder_ = nullptr;
std::shared_ptr<kh::Model> Generation::model_;
std::shared_ptr<kh::Tokenizer> Generation::tok_;

}  // namespace

TEST_F(Generation, GreedyWithCacheEqualsFullRecomputation) {
  auto prompt = tok_->encode("名前は小野寺絢音です。");
  kh::SamplingOptions o;
  o.maxNewTokens = 20;
  auto r = kh::generate(*model_, *tok_, prompt, {}, o);
  ASSERT_EQ(r.ids.size(), 20u);
  EXPECT_EQ(r.reason, kh::StopReason::Length);
  // Brute-force twin: no cache, the whole sequence every step, argmax of the last row.
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (int step = 0; step < 20; ++step) {
    int64_t next = model_->logits(seq)[-1].argmax().item<int64_t>();
    EXPECT_EQ(next, r.ids[static_cast<size_t>(step)]) << "step " << step;
    seq.push_back(next);
  }
}

TEST_F(Generation, StopsOnStopIdsAndStopStringsWithoutLeakingThem) {
  auto prompt = tok_->encode("今日は");
  kh::SamplingOptions o;
  o.maxNewTokens = 24;
  auto free = kh::generate(*model_, *tok_, prompt, {}, o);
  // Stop id: the 6th generated token.
  const int stopId = free.ids[5];
  auto r = kh::generate(*model_, *tok_, prompt, {stopId}, o);
  EXPECT_EQ(r.reason, kh::StopReason::Eos);
  ASSERT_LE(r.ids.size(), 6u);
  EXPECT_EQ(r.ids.back(), stopId);
  // Stop string: a piece of the free text; the streamed chunks never contain any of it.
  ASSERT_GT(free.text.size(), 12u);
  size_t cut = 6;
  while (cut < free.text.size() && (static_cast<unsigned char>(free.text[cut]) >> 6) == 2) ++cut;  // char boundary
  std::string stop = free.text.substr(cut, 3);
  while (!validUtf8(stop)) stop.pop_back();
  ASSERT_FALSE(stop.empty());
  o.stopStrings = {stop};
  std::vector<std::string> chunks;
  auto s = kh::generate(*model_, *tok_, prompt, {}, o, [&](const std::string& c) { chunks.push_back(c); });
  EXPECT_EQ(s.reason, kh::StopReason::StopString);
  EXPECT_EQ(s.text, free.text.substr(0, free.text.find(stop)));
  std::string joined;
  for (const auto& c : chunks) {
    EXPECT_TRUE(validUtf8(c)) << "a streamed chunk split a character";
    joined += c;
  }
  EXPECT_EQ(joined, s.text);
}

TEST_F(Generation, SeededSamplingIsReproducibleAndSeedsDiffer) {
  auto prompt = tok_->encode("猫が");
  kh::SamplingOptions o;
  o.temperature = 1.0;
  o.maxNewTokens = 16;
  o.seed = 7;
  auto a = kh::generate(*model_, *tok_, prompt, {}, o);
  auto b = kh::generate(*model_, *tok_, prompt, {}, o);
  EXPECT_EQ(a.ids, b.ids);
  o.seed = 8;
  EXPECT_NE(kh::generate(*model_, *tok_, prompt, {}, o).ids, a.ids);
  // top_k = 1 is greedy whatever the temperature.
  o.topK = 1;
  kh::SamplingOptions g;
  g.maxNewTokens = 16;
  EXPECT_EQ(kh::generate(*model_, *tok_, prompt, {}, o).ids, kh::generate(*model_, *tok_, prompt, {}, g).ids);
}

TEST(Sampler, TemperatureOneDrawsTheSoftmax) {
  at::Tensor logits = at::tensor({1.0f, 0.0f, -1.0f, 2.0f});
  at::Tensor p = logits.softmax(0);
  kh::SamplingOptions o;
  o.temperature = 1.0;
  auto gen = at::detail::createCPUGenerator(1);
  std::vector<int> counts(4, 0);
  const int N = 20000;
  for (int i = 0; i < N; ++i) counts[static_cast<size_t>(kh::sampleNext(logits, {}, o, gen))]++;
  for (int k = 0; k < 4; ++k) {
    const double expect = p[k].item<double>();
    const double sd = std::sqrt(expect * (1 - expect) / N);
    EXPECT_NEAR(counts[static_cast<size_t>(k)] / static_cast<double>(N), expect, 5 * sd) << "token " << k;
  }
}

TEST(Sampler, TopPMinPAndRepetitionPenaltyFollowTheirDefinitions) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.8 keeps exactly {0, 1}.
  at::Tensor logits = at::log(at::tensor({0.5f, 0.3f, 0.15f, 0.05f}));
  auto gen = at::detail::createCPUGenerator(3);
  kh::SamplingOptions o;
  o.temperature = 1.0;
  o.topP = 0.8;
  std::set<int64_t> seen;
  for (int i = 0; i < 3000; ++i) seen.insert(kh::sampleNext(logits, {}, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
  // min_p 0.4: keep p >= 0.4 * 0.5 = 0.2 -> {0, 1}.
  o.topP = 1.0;
  o.minP = 0.4;
  seen.clear();
  for (int i = 0; i < 3000; ++i) seen.insert(kh::sampleNext(logits, {}, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
  // transformers' rule: positive logits divided, negative multiplied, for tokens already seen.
  kh::SamplingOptions greedy;
  greedy.repetitionPenalty = 2.0;
  at::Tensor l2 = at::tensor({2.0f, -2.0f, 1.5f});
  EXPECT_EQ(kh::sampleNext(l2, {}, greedy, gen), 0);
  EXPECT_EQ(kh::sampleNext(l2, {0}, greedy, gen), 2);      // 2 -> 1 < 1.5
  EXPECT_EQ(kh::sampleNext(at::tensor({-1.0f, -1.5f}), {0}, greedy, gen), 1);  // -1 -> -2 < -1.5
}

TEST_F(Generation, BadSettingsAndPromptsAreNamedErrors) {
  auto expectFlag = [](kh::SamplingOptions o, const std::string& flag) {
    try {
      kh::validateSampling(o);
      FAIL() << "accepted bad " << flag;
    } catch (const kh::Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(flag, 0), 0u) << e.what();
    }
  };
  kh::SamplingOptions o;
  o.temperature = -0.1;
  expectFlag(o, "--temperature");
  o = {};
  o.topP = 0;
  expectFlag(o, "--top-p");
  o.topP = 1.5;
  expectFlag(o, "--top-p");
  o = {};
  o.minP = 1.0;
  expectFlag(o, "--min-p");
  o = {};
  o.repetitionPenalty = 0;
  expectFlag(o, "--repetition-penalty");
  EXPECT_THROW(kh::generate(*model_, *tok_, {}, {}, {}), kh::Error);
  std::vector<int> tooLong(static_cast<size_t>(model_->config().maxPositions), 5);
  EXPECT_THROW(kh::generate(*model_, *tok_, tooLong, {}, {}), kh::Error);
}

TEST_F(Generation, CancelStopsBetweenTokensAndKeepsWhatWasSaid) {
  auto prompt = tok_->encode("今日は");
  kh::SamplingOptions o;
  o.maxNewTokens = 100;
  std::atomic<bool> cancel{false};
  int chunks = 0;
  auto r = kh::generate(*model_, *tok_, prompt, {}, o, [&](const std::string&) {
    if (++chunks == 3) cancel = true;  // what Ctrl-C in the terminal chat does
  }, &cancel);
  EXPECT_EQ(r.reason, kh::StopReason::Cancelled);
  EXPECT_LT(r.ids.size(), 20u);
  EXPECT_FALSE(r.text.empty());
}
