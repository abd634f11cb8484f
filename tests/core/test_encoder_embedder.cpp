// BERT / XLM-RoBERTa encoder embedder against the python reference (tests/tools/
// make_encoder_golden.py, golden.json): token ids derived by hand, embeddings of the padded,
// batched C++ forward within fp32 tolerance of the reference's one-sequence-at-a-time forward;
// prefixes per style; refusals of what is not implemented, by name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/retrieval/encoder_embedder.h"
#include "core/retrieval/store.h"
#include "tests/core/encoder_golden.h"
#include "tests/test_util.h"

using namespace kh::retrieval;
using kh::test::TempDir;

namespace {

using kh::test::caseOf;
using kh::test::errorOf;
using kh::test::golden;
using kh::test::goldenDir;
using kh::test::maxDiff;

// A copy of a golden folder with one file replaced.
std::string copyWith(const TempDir& d, const std::string& name, const std::string& file, const std::string& bytes) {
  const std::string dst = d.file(name);
  std::filesystem::create_directories(dst);
  for (const auto& e : std::filesystem::directory_iterator(goldenDir(name)))
    std::filesystem::copy_file(e.path(), dst + "/" + e.path().filename().string());
  if (!file.empty()) kh::test::writeFile(dst + "/" + file, bytes);
  return dst;
}

}  // namespace

class EncoderGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(EncoderGolden, HandDerivedIdsAndReferenceEmbeddings) {
  const auto g = golden(GetParam());
  EncoderEmbedder emb(goldenDir(GetParam()), "none", /*batchSize=*/3);
  EXPECT_EQ(emb.dim(), 32);
  std::vector<std::string> texts;
  for (const auto& c : g["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(emb.tokenIds(text), c["ids"].get<std::vector<int64_t>>()) << GetParam() << ": " << text;
    texts.push_back(text);
  }
  // All at once: length-sorted batches of 3, right-padded, so padding and the mask are exercised.
  const auto v = emb.embedRaw(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = g["cases"][i]["embedding"].get<std::vector<double>>();
    EXPECT_LT(maxDiff(v.data() + i * 32, want), 2e-5) << GetParam() << ": " << texts[i];
    double n = 0;
    for (int k = 0; k < 32; ++k) n += double(v[i * 32 + k]) * v[i * 32 + k];
    EXPECT_NEAR(n, 1.0, 1e-5);
  }
  // e5 prefixes: a passage is embedded as "passage: ...", a query as "query: ...".
  EncoderEmbedder e5(goldenDir(GetParam()), "e5");
  const auto p = e5.embed({"猫が好き"});
  EXPECT_LT(maxDiff(p.data(), caseOf(g, "passage: 猫が好き")["embedding"].get<std::vector<double>>()), 2e-5);
  const auto q = e5.embedQuery("小野寺");
  EXPECT_LT(maxDiff(q.data(), caseOf(g, "query: 小野寺")["embedding"].get<std::vector<double>>()), 2e-5);
  EXPECT_NE(e5.identity(), emb.identity());
  EXPECT_EQ(e5.identity().substr(e5.identity().size() - 3), ":e5");
}

INSTANTIATE_TEST_SUITE_P(Tiny, EncoderGolden, ::testing::Values("bert_tiny", "xlmr_tiny"));

TEST(EncoderEmbedder, PrefixStylesAndAutoFromTheFolderName) {
  EXPECT_EQ(prefixesFor("ruri", "x").query, "クエリ: ");
  EXPECT_EQ(prefixesFor("ruri", "x").passage, "文章: ");
  EXPECT_EQ(prefixesFor("ruri-v3", "x").query, "検索クエリ: ");
  EXPECT_EQ(prefixesFor("ruri-v3", "x").passage, "検索文書: ");
  EXPECT_EQ(prefixesFor("auto", "/m/multilingual-e5-small").style, "e5");
  EXPECT_EQ(prefixesFor("auto", "/m/ruri-v3-310m").style, "ruri-v3");
  EXPECT_EQ(prefixesFor("auto", "/m/ruri-base-v2/").style, "ruri");
  EXPECT_EQ(prefixesFor("auto", "/m/bert_tiny").style, "none");
  EXPECT_NE(errorOf([] { prefixesFor("bge", "x"); }).find("unknown prefix style 'bge'"), std::string::npos);
}

TEST(EncoderEmbedder, StoreRefusesAnotherPrefixStyleByName) {
  TempDir d;
  EncoderEmbedder e5(goldenDir("xlmr_tiny"), "e5"), none(goldenDir("xlmr_tiny"), "none");
  auto s = DocumentStore::open(d.file("store"));
  s.importDocuments({{"a", "mem", "名前は小野寺です。", {}}, {"b", "mem", "猫が好き", {}}}, &e5);
  SearchOptions o;
  o.method = Method::Dense;
  o.threshold = "none";
  const auto hits = s.search("名前は小野寺です。", o, &e5);
  ASSERT_EQ(hits.size(), 2u);
  const std::string msg = errorOf([&] { s.search("猫", o, &none); });
  EXPECT_NE(msg.find(none.identity()), std::string::npos) << msg;
  EXPECT_NE(msg.find(e5.identity()), std::string::npos) << msg;
  // The spec a store records reopens the same embedder (style included).
  auto back = openEmbedder(e5.spec());
  EXPECT_EQ(back->identity(), e5.identity());
  EXPECT_EQ(openEmbedder(goldenDir("bert_tiny"))->identity().rfind("encoder-mean:bert_tiny:", 0), 0u);
}

TEST(EncoderEmbedder, RefusesWhatIsNotImplementedByName) {
  TempDir d;
  // The Precompiled charsmap maps whole graphemes: one that spans code points (here か + a
  // combining voiced mark) is refused, naming the character.
  EncoderEmbedder x(goldenDir("xlmr_tiny"), "none");
  std::string msg = errorOf([&] { x.tokenIds("か\xE3\x82\x99"); });
  EXPECT_NE(msg.find("U+3099"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Precompiled"), std::string::npos) << msg;
  // BertNormalizer stripping accents (NFD) is refused on non-ASCII text.
  auto tj = nlohmann::json::parse(kh::test::readFile(goldenDir("bert_tiny") + "/tokenizer.json"));
  tj["normalizer"]["strip_accents"] = true;
  EncoderEmbedder strip(copyWith(d, "bert_tiny", "tokenizer.json", tj.dump()), "none");
  EXPECT_EQ(strip.tokenIds("Hello, Worlds!"), (std::vector<int64_t>{2, 17, 20, 18, 19, 21, 3}));
  msg = errorOf([&] { strip.tokenIds("が"); });
  EXPECT_NE(msg.find("NFD"), std::string::npos) << msg;
  // config.json's model_type picks the family: a BERT folder relabelled modernbert is refused by
  // the ModernBERT loader, first for its architecture, then (without one) for its weights.
  TempDir d2, d6;
  auto cfg = nlohmann::json::parse(kh::test::readFile(goldenDir("bert_tiny") + "/config.json"));
  cfg["model_type"] = "modernbert";
  msg = errorOf([&] { EncoderEmbedder e(copyWith(d2, "bert_tiny", "config.json", cfg.dump())); });
  EXPECT_NE(msg.find("'BertModel' is not a ModernBERT sentence encoder"), std::string::npos) << msg;
  cfg.erase("architectures");
  msg = errorOf([&] { EncoderEmbedder e(copyWith(d6, "bert_tiny", "config.json", cfg.dump())); });
  EXPECT_NE(msg.find("modernbert encoder"), std::string::npos) << msg;
  EXPECT_NE(msg.find("embeddings.tok_embeddings.weight"), std::string::npos) << msg;
  cfg["model_type"] = "deberta-v2";
  TempDir d5;
  msg = errorOf([&] { EncoderEmbedder e(copyWith(d5, "bert_tiny", "config.json", cfg.dump())); });
  EXPECT_NE(msg.find("model_type 'deberta-v2' is not a supported encoder"), std::string::npos) << msg;
  // A folder with vocab.txt and no tokenizer.json (ruri v1/v2: MeCab word segmentation).
  TempDir d3;
  const std::string mecab = copyWith(d3, "bert_tiny", "vocab.txt", "[PAD]\n");
  std::filesystem::remove(mecab + "/tokenizer.json");
  msg = errorOf([&] { EncoderEmbedder e(mecab); });
  EXPECT_NE(msg.find("MeCab"), std::string::npos) << msg;
  // A weight missing: named.
  TempDir d4;
  cfg = nlohmann::json::parse(kh::test::readFile(goldenDir("bert_tiny") + "/config.json"));
  cfg["num_hidden_layers"] = 3;
  msg = errorOf([&] { EncoderEmbedder e(copyWith(d4, "bert_tiny", "config.json", cfg.dump())); });
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bert.encoder.layer.2."), std::string::npos) << msg;
}
