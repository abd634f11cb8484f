// kumihimo-cli with an encoder embedder and the store's new rules, as a user runs them: index add
// with --embedder encoder:DIR --prefix e5 --hnsw-above, retrieve with the recorded embedder, a
// query with another prefix style refused by name, and a re-imported folder dropping a deleted file.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;

TEST(CliEncoder, IndexRetrieveWithPrefixesAndRefuseAnotherStyle) {
  TempDir d;
  const std::string enc = kh::test::sourceDir() + "/tests/golden/encoder/xlmr_tiny";
  const std::string docs = kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl";
  auto add = runCli({"index", "add", d.file("store"), docs, "--embedder", "encoder:" + enc, "--prefix", "e5", "--hnsw-above", "5"});
  ASSERT_EQ(add.exitCode, 0) << add.err;
  EXPECT_NE(add.out.find("15 added"), std::string::npos) << add.out;
  EXPECT_NE(add.out.find("dense by encoder-mean:xlmr_tiny:"), std::string::npos) << add.out;
  EXPECT_NE(add.out.find(":e5 (HNSW above 5)"), std::string::npos) << add.out;
  EXPECT_NE(add.err.find("15/15"), std::string::npos) << add.err;  // the progress line

  auto r = runCli({"retrieve", d.file("store"), "あなたの名前はなんですか?", "--json", "--k", "3"});  // recorded embedder
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["embedder"].get<std::string>().substr(j["embedder"].get<std::string>().size() - 3), ":e5");
  ASSERT_EQ(j["hits"].size(), 3u);
  bool dense = false;
  for (const auto& h : j["hits"]) dense = dense || h["dense_cosine"].is_number();
  EXPECT_TRUE(dense);

  auto other = runCli({"retrieve", d.file("store"), "名前", "--embedder", "encoder:" + enc, "--prefix", "none"});
  EXPECT_NE(other.exitCode, 0);
  EXPECT_NE(other.err.find(":none"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find(":e5"), std::string::npos) << other.err;
}

TEST(CliEncoder, ReimportedFolderRemovesADeletedFile) {
  TempDir d;
  std::filesystem::create_directories(d.file("docs"));
  kh::test::writeFile(d.file("docs/a.txt"), "名前は小野寺絢音です。");
  kh::test::writeFile(d.file("docs/b.md"), "趣味はパン作りです。");
  ASSERT_EQ(runCli({"index", "add", d.file("store"), d.file("docs")}).exitCode, 0);
  std::filesystem::remove(d.file("docs/b.md"));
  auto again = runCli({"index", "add", d.file("store"), d.file("docs")});
  ASSERT_EQ(again.exitCode, 0) << again.err;
  EXPECT_NE(again.out.find("1 unchanged, 1 removed; 1 documents"), std::string::npos) << again.out;
  auto r = runCli({"retrieve", d.file("store"), "パン作り", "--method", "bm25"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("no hits"), std::string::npos) << r.out;
}
