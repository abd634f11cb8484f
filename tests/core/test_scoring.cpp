// Continuation scoring against a brute-force twin: each pair run alone, unpadded, its
// log-probabilities summed by hand. Batching, padding and batch size must not change a score.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/model/scoring.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

TEST(Scoring, BatchedScoresEqualOneByOneBruteForce) {
  kh::test::TempDir d;
  kh::TinyOptions o;
  o.family = "qwen2";
  o.initStd = 0.3;  // peaked enough that scores differ clearly between choices
  kh::makeTinyCheckpoint(d.file("m"), o);
  kh::RunOptions ro;
  ro.dtype = "fp32";
  auto m = kh::Model::load(kh::ModelFolder::open(d.file("m")), ro);
  std::vector<std::vector<int>> ctx = {{5, 6, 7, 8, 9, 10}, {40}, {100, 200, 300}, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
  std::vector<std::vector<int>> cont = {{11, 12}, {41, 42, 43, 44}, {301}, {500, 501, 502}};
  for (int64_t batch : {1, 3, 8}) {
    auto scores = kh::scoreContinuations(*m, ctx, cont, batch);
    ASSERT_EQ(scores.size(), ctx.size());
    for (size_t i = 0; i < ctx.size(); ++i) {
      std::vector<int64_t> seq(ctx[i].begin(), ctx[i].end());
      seq.insert(seq.end(), cont[i].begin(), cont[i].end());
      at::Tensor logp = at::log_softmax(m->logits(seq), -1);  // [T, V]
      double want = 0;
      bool greedy = true;
      for (size_t k = 0; k < cont[i].size(); ++k) {
        const int64_t row = static_cast<int64_t>(ctx[i].size() + k) - 1;
        want += logp[row][cont[i][k]].item<double>();
        greedy = greedy && logp[row].argmax().item<int64_t>() == cont[i][k];
      }
      EXPECT_NEAR(scores[i].logLikelihood, want, 1e-4) << "pair " << i << " batch " << batch;
      EXPECT_EQ(scores[i].greedy, greedy);
      EXPECT_EQ(scores[i].tokens, static_cast<int64_t>(cont[i].size()));
    }
  }
  EXPECT_THROW(kh::scoreContinuations(*m, {{}}, {{1}}), kh::Error);
  EXPECT_THROW(kh::scoreContinuations(*m, {{1}}, {{}}), kh::Error);
  EXPECT_THROW(kh::scoreContinuations(*m, {{1}, {2}}, {{1}}), kh::Error);
}
