// kumihimo-cli index add / retrieve / retrieval-eval as a user runs them: the persona set with the
// bundled embedder (resources/models/tiny-ja-embedder) at the default fusion settings, JSON hits with
// every score, the eval table and run folder, and the refusals.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;

TEST(CliRetrieval, IndexRetrieveAndEvaluate) {
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m")}).exitCode, 0);
  ASSERT_EQ(runCli({"make-tiny", "qwen2", "-o", d.file("other")}).exitCode, 0);
  const std::string docs = kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl";
  const std::string embedder = kh::test::sourceDir() + "/resources/models/tiny-ja-embedder";
  auto add = runCli({"index", "add", d.file("store"), docs, "--embedder", embedder});
  ASSERT_EQ(add.exitCode, 0) << add.err;
  EXPECT_NE(add.out.find("15 added"), std::string::npos) << add.out;
  auto again = runCli({"index", "add", d.file("store"), docs});  // recorded embedder, nothing changed
  ASSERT_EQ(again.exitCode, 0) << again.err;
  EXPECT_NE(again.out.find("15 unchanged"), std::string::npos) << again.out;

  auto r = runCli({"retrieve", d.file("store"), "あなたの名前はなんですか?", "--json", "--k", "3"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["hits"].size(), 3u);
  const auto& top = j["hits"][0];
  EXPECT_EQ(top["doc"], "persona-name");
  EXPECT_EQ(top["bm25_rank"], 1);
  EXPECT_EQ(top["dense_rank"], 1);
  EXPECT_TRUE(top["dense_cosine"].is_number());
  EXPECT_TRUE(top["bm25_score"].is_number());
  EXPECT_TRUE(top["fused_score"].is_number());
  EXPECT_TRUE(top["rerank_score"].is_null());
  EXPECT_FALSE(top["threshold"].get<std::string>().empty());

  auto e = runCli({"retrieval-eval", d.file("store"), kh::test::sourceDir() + "/resources/retrieval/ja_persona_queries.jsonl",
                   "-o", d.file("run")});
  ASSERT_EQ(e.exitCode, 0) << e.err;
  EXPECT_NE(e.out.find("bm25"), std::string::npos);
  EXPECT_NE(e.out.find("dense"), std::string::npos);
  EXPECT_NE(e.out.find("fused"), std::string::npos);
  ASSERT_TRUE(std::filesystem::exists(d.file("run/metrics.json")));
  // On the labelled example set fusion answers every query first, better than either side alone.
  const auto metrics = nlohmann::json::parse(kh::test::readFile(d.file("run/metrics.json")));
  std::map<std::string, double> recall1;
  for (const auto& m : metrics["methods"]) recall1[m["method"].get<std::string>()] = m["recall@1"].get<double>();
  ASSERT_EQ(recall1.size(), 3u);
  EXPECT_EQ(recall1["fused"], 1.0);
  EXPECT_LT(recall1["bm25"], recall1["fused"]);
  EXPECT_LT(recall1["dense"], recall1["fused"]);

  auto refused = runCli({"retrieve", d.file("store"), "名前", "--embedder", d.file("other")});
  EXPECT_NE(refused.exitCode, 0);
  EXPECT_NE(refused.err.find("is not the one that built this store"), std::string::npos) << refused.err;
  // chat --rag: the retrieved chunks are named on stderr and the chat answers.
  auto chat = runCli({"chat", d.file("m"), "--rag", d.file("store"), "--max-new-tokens", "3"}, "あなたの名前はなんですか?\n/quit\n");
  ASSERT_EQ(chat.exitCode, 0) << chat.err;
  EXPECT_NE(chat.err.find("(retrieved "), std::string::npos) << chat.err;
  auto empty = runCli({"retrieve", d.file("store"), ""});
  EXPECT_NE(empty.exitCode, 0);
  EXPECT_NE(empty.err.find("empty query"), std::string::npos) << empty.err;
}

// A mistyped store path is an error, not an empty store; an existing store is not silently
// imported with other chunking.
TEST(CliRetrieval, RefusesAMissingStoreAndOtherChunking) {
  TempDir d;
  for (auto args : std::vector<std::vector<std::string>>{{"retrieve", d.file("typo"), "名前"},
                                                          {"index", "rebuild", d.file("typo")},
                                                          {"retrieval-eval", d.file("typo"), d.file("q.jsonl")}}) {
    auto r = runCli(args);
    EXPECT_EQ(r.exitCode, 1) << args[0];
    EXPECT_NE(r.err.find(d.file("typo") + ": no such store folder"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(d.file("typo")));
  }
  const std::string docs = kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl";
  ASSERT_EQ(runCli({"index", "add", d.file("store"), docs, "--chunk-chars", "100"}).exitCode, 0);
  auto other = runCli({"index", "add", d.file("store"), docs, "--chunk-chars", "300"});
  EXPECT_EQ(other.exitCode, 1);
  EXPECT_NE(other.err.find("was chunked with --chunk-chars 100 --overlap-chars 40"), std::string::npos) << other.err;
  auto same = runCli({"index", "add", d.file("store"), docs});  // the store's own chunking
  EXPECT_EQ(same.exitCode, 0) << same.err;
  EXPECT_NE(same.out.find("15 unchanged"), std::string::npos) << same.out;
}

// chat --rag with the user's own prompt template and a retrieval log: each turn's line holds the
// message, the prompt as sent (the template filled with the kept chunks) and every hit's scores.
TEST(CliRetrieval, ChatRagTemplateAndLogKeepWhatEachTurnRetrieved) {
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m")}).exitCode, 0);
  const std::string docs = kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl";
  ASSERT_EQ(runCli({"index", "add", d.file("store"), docs}).exitCode, 0);  // BM25 only
  kh::test::writeFile(d.file("t.txt"), "資料:\n{context}\n問い: {question}");
  auto chat = runCli({"chat", d.file("m"), "--rag", d.file("store"), "--rag-k", "2", "--rag-template", d.file("t.txt"),
                      "--rag-log", d.file("log.jsonl"), "--max-new-tokens", "2"},
                     "あなたの名前はなんですか?\n趣味は何ですか?\n/quit\n");
  ASSERT_EQ(chat.exitCode, 0) << chat.err;
  std::vector<nlohmann::json> turns;
  {
    std::ifstream in(d.file("log.jsonl"));
    for (std::string line; std::getline(in, line);) turns.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(turns[0]["turn"], 1);
  EXPECT_EQ(turns[0]["user"], "あなたの名前はなんですか?");
  const auto& hits = turns[0]["hits"];
  ASSERT_GE(hits.size(), 2u);
  EXPECT_EQ(hits[0]["doc"], "persona-name");
  EXPECT_TRUE(hits[0]["bm25_score"].is_number());
  int inPrompt = 0;
  std::string context;
  for (const auto& h : hits)
    if (h["in_prompt"].get<bool>()) context += "[" + std::to_string(++inPrompt) + "] " + h["text"].get<std::string>() + "\n";
  EXPECT_GE(inPrompt, 1);
  EXPECT_EQ(turns[0]["prompt"], "資料:\n" + context + "\n問い: あなたの名前はなんですか?");
  // A template without {context} or {question} is refused before the chat starts.
  kh::test::writeFile(d.file("bad.txt"), "問い: {question}");
  auto bad = runCli({"chat", d.file("m"), "--rag", d.file("store"), "--rag-template", d.file("bad.txt")}, "/quit\n");
  EXPECT_EQ(bad.exitCode, 1);
  EXPECT_NE(bad.err.find("bad.txt: has no {context}"), std::string::npos) << bad.err;
}
