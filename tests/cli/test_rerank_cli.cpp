// kumihimo-cli --rerank MODEL [--rerank-k N] as a user runs it on retrieve, retrieval-eval and
// chat --rag: a BM25 store of the persona set and a tiny random Llama as the reranker (noise scores;
// the mechanics are what is checked), and the one-line refusals of folders that are no model.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;

TEST(CliRerank, RetrieveEvaluateAndChatWithAReranker) {
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m")}).exitCode, 0);
  const std::string docs = kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl";
  ASSERT_EQ(runCli({"index", "add", d.file("store"), docs}).exitCode, 0);
  const std::string q = "あなたの名前はなんですか?";

  auto plain = runCli({"retrieve", d.file("store"), q, "--json", "--k", "4", "--threshold", "none"});
  ASSERT_EQ(plain.exitCode, 0) << plain.err;
  std::set<std::string> best4;
  const auto pj = nlohmann::json::parse(plain.out);
  for (const auto& h : pj["hits"]) best4.insert(h["chunk"].get<std::string>());
  ASSERT_EQ(best4.size(), 4u);

  auto r = runCli({"retrieve", d.file("store"), q, "--json", "--k", "10", "--threshold", "none", "--rerank", d.file("m"),
                   "--rerank-k", "4", "--rerank-answers", "Y,N"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["reranker"], "decoder-yesno:" + d.file("m"));
  ASSERT_EQ(j["hits"].size(), 10u);
  // Only the best 4 fused candidates were rescored, listed first; the rest are dropped, unscored.
  double prev = 1e300;
  for (size_t i = 4; i < 10; ++i) {
    const auto& h = j["hits"][i];
    EXPECT_TRUE(h["rerank_score"].is_null()) << h;
    EXPECT_FALSE(h["kept"].get<bool>()) << h;
    EXPECT_EQ(h["threshold"].get<std::string>().rfind("not reranked", 0), 0u) << h;
  }
  for (size_t i = 0; i < 4; ++i) {
    const auto& h = j["hits"][i];
    EXPECT_EQ(best4.count(h["chunk"].get<std::string>()), 1u) << h["chunk"];
    ASSERT_TRUE(h["rerank_score"].is_number());
    EXPECT_LE(h["rerank_score"].get<double>(), prev);
    prev = h["rerank_score"].get<double>();
  }

  auto e = runCli({"retrieval-eval", d.file("store"), kh::test::sourceDir() + "/resources/retrieval/ja_persona_queries.jsonl",
                   "-o", d.file("run"), "--rerank", d.file("m"), "--rerank-k", "10", "--rerank-answers", "Y,N"});
  ASSERT_EQ(e.exitCode, 0) << e.err;
  EXPECT_NE(e.out.find("fused+rerank"), std::string::npos) << e.out;
  std::ifstream mf(d.file("run/metrics.json"));
  const auto m = nlohmann::json::parse(mf);
  EXPECT_EQ(m["reranker"], "decoder-yesno:" + d.file("m"));
  ASSERT_EQ(m["methods"].size(), 3u);  // bm25, fused, fused+rerank (no dense index)
  EXPECT_EQ(m["methods"][2]["method"], "fused+rerank");
  // Reranking reorders the same 10 fused candidates: recall@10 cannot change (every relevant id in
  // this set is found within the top 10 or not at all, either way).
  EXPECT_DOUBLE_EQ(m["methods"][2]["recall@10"].get<double>(), m["methods"][1]["recall@10"].get<double>());

  auto chat = runCli({"chat", d.file("m"), "--rag", d.file("store"), "--rerank", d.file("m"), "--rerank-answers", "Y,N", "--max-new-tokens", "3"},
                     q + "\n/quit\n");
  ASSERT_EQ(chat.exitCode, 0) << chat.err;
  EXPECT_NE(chat.err.find("reranking the best 20"), std::string::npos) << chat.err;
  EXPECT_NE(chat.err.find(": rerank "), std::string::npos) << chat.err;  // the kept hits' threshold is on the rerank score
}

TEST(CliRerank, RefusesFoldersThatAreNoModelInOneLine) {
  TempDir d;
  const std::string docs = kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl";
  ASSERT_EQ(runCli({"index", "add", d.file("store"), docs}).exitCode, 0);
  auto missing = runCli({"retrieve", d.file("store"), "名前", "--rerank", d.file("nowhere")});
  EXPECT_NE(missing.exitCode, 0);
  EXPECT_NE(missing.err.find("nowhere"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.err;
  EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1) << missing.err;
  auto store = runCli({"retrieve", d.file("store"), "名前", "--rerank", d.file("store")});
  EXPECT_NE(store.exitCode, 0);
  EXPECT_NE(store.err.find("not a model folder"), std::string::npos) << store.err;
  // The tiny tokenizer spells はい and yes with several tokens: refused, both pairs named.
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m")}).exitCode, 0);
  auto words = runCli({"retrieve", d.file("store"), "名前", "--rerank", d.file("m")});
  EXPECT_NE(words.exitCode, 0);
  EXPECT_NE(words.err.find("'はい'/'いいえ', 'yes'/'no' are not single tokens"), std::string::npos) << words.err;
  auto bad = runCli({"retrieve", d.file("store"), "名前", "--rerank", d.file("m"), "--rerank-answers", "Y"});
  EXPECT_NE(bad.exitCode, 0);
  EXPECT_NE(bad.err.find("not two different words"), std::string::npos) << bad.err;
  auto k0 = runCli({"retrieve", d.file("store"), "名前", "--rerank", d.file("store"), "--rerank-k", "0"});
  EXPECT_NE(k0.exitCode, 0);
  EXPECT_NE(k0.err.find("--rerank-k"), std::string::npos) << k0.err;
}
