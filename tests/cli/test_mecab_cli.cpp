// kumihimo-cli with a ruri v1/v2-style encoder (vocab.txt + BertJapaneseTokenizer, MeCab words) as a
// user runs it: index add / retrieve with the dictionary named by KUMIHIMO_MECAB_DIC or --mecab-dic,
// the one-line error when no dictionary is found, and a store refusing another dictionary.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/core/mecab_dictionary.h"
#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::ScopedEnv;
using kh::test::TempDir;

TEST(CliMecab, IndexAndRetrieveWithARuriStyleEncoder) {
  TempDir d;
  const std::string dic = kh::test::compileTinyMecabDictionary(d.file("dic"));
  const std::string ruri = kh::test::sourceDir() + "/tests/golden/encoder/ruri_tiny";
  std::filesystem::create_directories(d.file("docs"));
  kh::test::writeFile(d.file("docs/a.txt"), "名前は小野寺絢音です。");
  kh::test::writeFile(d.file("docs/b.txt"), "猫が好き");
  kh::test::writeFile(d.file("docs/c.txt"), "ＡＢＣ１２３です");
  ScopedEnv home("HOME", d.path().c_str()), venv("VIRTUAL_ENV", nullptr);
  {
    ScopedEnv env("KUMIHIMO_MECAB_DIC", dic);
    auto add = runCli({"index", "add", d.file("store"), d.file("docs"), "--embedder", "encoder:" + ruri, "--prefix", "none"});
    ASSERT_EQ(add.exitCode, 0) << add.err;
    EXPECT_NE(add.out.find("3 added"), std::string::npos) << add.out;
    EXPECT_NE(add.out.find("dense by encoder-mean:ruri_tiny:"), std::string::npos) << add.out;
    EXPECT_NE(add.out.find(":none:mecab:unidic_lite:"), std::string::npos) << add.out;
  }
  // Without any dictionary setting: one line naming the model folder and the way to point at one.
  {
    ScopedEnv env("KUMIHIMO_MECAB_DIC", nullptr);
    auto r = runCli({"retrieve", d.file("store"), "猫が好き", "--method", "dense"});
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.err.find("ruri_tiny"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("KUMIHIMO_MECAB_DIC"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--mecab-dic"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    // --mecab-dic instead of the environment variable: the text of a document finds it first,
    // with the cosine of identical embeddings.
    auto ok = runCli({"retrieve", d.file("store"), "猫が好き", "--method", "dense", "--json", "--k", "3", "--mecab-dic", dic});
    ASSERT_EQ(ok.exitCode, 0) << ok.err;
    const auto j = nlohmann::json::parse(ok.out);
    ASSERT_EQ(j["hits"].size(), 3u);
    EXPECT_EQ(j["hits"][0]["text"], "猫が好き");
    EXPECT_NEAR(j["hits"][0]["dense_cosine"].get<double>(), 1.0, 1e-5);
    EXPECT_LT(j["hits"][1]["dense_cosine"].get<double>(), 0.9999);
  }
  // Another dictionary (小野寺 split as 小野 | 寺) tokenizes differently: the store refuses it by name.
  const std::string dic2 = kh::test::compileTinyMecabDictionary(d.file("dic2"), {{"小野寺,0,0,100,", "小野寺,0,0,900,"}});
  ScopedEnv env("KUMIHIMO_MECAB_DIC", dic2);
  auto other = runCli({"retrieve", d.file("store"), "名前", "--method", "dense"});
  EXPECT_NE(other.exitCode, 0);
  EXPECT_NE(other.err.find("is not the one that built this store"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find(":mecab:unidic_lite:"), std::string::npos) << other.err;
}
