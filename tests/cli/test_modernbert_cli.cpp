// kumihimo-cli with a ModernBERT (ruri-v3) encoder, as a user runs it: index add with
// --embedder encoder:DIR (prefixes chosen from the folder name), then retrieve with the recorded
// embedder; the dense cosine it reports is the one the python reference's embeddings give
// (tests/golden/encoder/ruri-v3-tiny/golden.json).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;

TEST(CliModernBert, IndexAndRetrieveWithRuriV3Prefixes) {
  TempDir d;
  const std::string enc = kh::test::sourceDir() + "/tests/golden/encoder/ruri-v3-tiny";
  kh::test::writeFile(d.file("docs.jsonl"),
                      "{\"id\": \"name\", \"text\": \"名前は小野寺絢音です。\"}\n{\"id\": \"cat\", \"text\": \"猫が好き\"}\n");
  auto add = runCli({"index", "add", d.file("store"), d.file("docs.jsonl"), "--embedder", "encoder:" + enc});
  ASSERT_EQ(add.exitCode, 0) << add.err;
  EXPECT_NE(add.out.find("2 added"), std::string::npos) << add.out;
  EXPECT_NE(add.out.find("dense by encoder-mean:ruri-v3-tiny:"), std::string::npos) << add.out;
  EXPECT_NE(add.out.find(":ruri-v3"), std::string::npos) << add.out;

  auto r = runCli({"retrieve", d.file("store"), "あなたの名前は?", "--json", "--k", "2", "--threshold", "none"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const std::string id = j["embedder"];
  EXPECT_EQ(id.substr(id.size() - 8), ":ruri-v3");
  // Reference: cos("検索クエリ: あなたの名前は?", "検索文書: 名前は小野寺絢音です。").
  const auto g = nlohmann::json::parse(kh::test::readFile(enc + "/golden.json"));
  std::vector<double> q, p;
  for (const auto& c : g["cases"]) {
    if (c["text"] == "検索クエリ: あなたの名前は?") q = c["embedding"].get<std::vector<double>>();
    if (c["text"] == "検索文書: 名前は小野寺絢音です。") p = c["embedding"].get<std::vector<double>>();
  }
  ASSERT_EQ(q.size(), p.size());
  double want = 0;
  for (size_t i = 0; i < q.size(); ++i) want += q[i] * p[i];
  bool seen = false;
  for (const auto& h : j["hits"]) {
    if (h["doc"] != "name") continue;
    seen = true;
    ASSERT_TRUE(h["dense_cosine"].is_number()) << h.dump();
    EXPECT_NEAR(h["dense_cosine"].get<double>(), want, 1e-4) << h.dump();
  }
  EXPECT_TRUE(seen) << r.out;
}
