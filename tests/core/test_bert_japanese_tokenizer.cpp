// BertJapaneseTokenizer (ruri v1/v2: NFKC, MeCab words, WordPiece) on a tiny MeCab dictionary
// compiled at test time from hand-written sources (tests/golden/mecab_tiny: one context id,
// connection costs 0, so the best segmentation is the smallest sum of word costs and can be
// derived by hand). Ids are checked against ids derived by hand; embeddings against the python
// reference (tests/tools/make_mecab_golden.py); the dictionary search, its errors and its place in
// the embedder identity as a user meets them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/retrieval/encoder_embedder.h"
#include "core/retrieval/store.h"
#include "core/text/bert_japanese_tokenizer.h"
#include "core/text/tokenizer.h"
#include "tests/core/mecab_dictionary.h"
#include "tests/core/encoder_golden.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::TempDir;

namespace {

std::string ruriDir() { return kh::test::goldenDir("ruri_tiny"); }

using kh::test::errorOf;

// A copy of ruri_tiny with tokenizer_config.json edited.
std::string ruriWith(const TempDir& d, const std::function<void(nlohmann::json&)>& edit) {
  const std::string dst = d.file("ruri_tiny");
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(ruriDir())) fs::copy_file(e.path(), dst + "/" + e.path().filename().string());
  auto cfg = nlohmann::json::parse(kh::test::readFile(dst + "/tokenizer_config.json"));
  edit(cfg);
  kh::test::writeFile(dst + "/tokenizer_config.json", cfg.dump());
  return dst;
}

std::vector<int> ids(std::initializer_list<int> v) { return std::vector<int>(v); }

class BertJapanese : public ::testing::Test {
 protected:
  void SetUp() override { dic_ = kh::test::compileTinyMecabDictionary(dicRoot_.file("dic")); }
  TempDir dicRoot_;
  std::string dic_;
};

}  // namespace

TEST_F(BertJapanese, IdsMatchTheHandDerivedSegmentation) {
  kh::test::ScopedEnv env(kh::kMecabDicEnv, dic_);
  auto tok = kh::Tokenizer::fromFolder(ruriDir());
  EXPECT_EQ(tok->kind(), kh::TokenizerKind::BertJapanese);
  EXPECT_EQ(tok->vocabSize(), 27);
  const auto g = nlohmann::json::parse(kh::test::readFile(ruriDir() + "/golden.json"));
  ASSERT_GE(g["cases"].size(), 7u);
  for (const auto& c : g["cases"])
    EXPECT_EQ(tok->encode(c["text"].get<std::string>()), c["ids"].get<std::vector<int>>()) << c["text"];
  // Special tokens in the text are split out before MeCab sees it.
  EXPECT_EQ(tok->encode("名前[SEP]は"), ids({2, 5, 3, 6, 3}));
  EXPECT_EQ(tok->encode("名前は", false), ids({5, 6}));
  // A word of 100 characters goes through WordPiece (ア then 99 x ##ア); one of 101 is [UNK]
  // (max_input_chars_per_word). Both are dictionary words, so MeCab keeps them whole.
  std::string a100;
  for (int i = 0; i < 100; ++i) a100 += "ア";
  std::vector<int> want = {2, 16};
  want.insert(want.end(), 99, 17);
  want.insert(want.end(), {13, 3});
  EXPECT_EQ(tok->encode(a100 + "です"), want);
  EXPECT_EQ(tok->encode(a100 + "ア"), ids({2, 1, 3}));
  // Only whitespace, or nothing: [CLS] [SEP].
  EXPECT_EQ(tok->encode(" \t\n\u3000"), ids({2, 3}));
  EXPECT_EQ(tok->encode(""), ids({2, 3}));
  // U+2028 is no MeCab space in this dictionary (an unknown DEFAULT word), but WordPiece's
  // str.split() drops it: no id at all.
  EXPECT_EQ(tok->encode("名前\u2028は"), ids({2, 5, 6, 3}));
  // Decoding joins words with spaces and glues "##" pieces, as transformers' decode does.
  EXPECT_EQ(tok->decode({2, 5, 6, 7, 8, 9, 3}), "名前 は 小野寺 絢音");
  EXPECT_EQ(tok->decode({2, 10, 11, 12, 3}, false), "[CLS] ABC 123 [SEP]");
  EXPECT_EQ(tok->segmenterIdentity().rfind("mecab:unidic_lite:", 0), 0u) << tok->segmenterIdentity();
}

TEST_F(BertJapanese, LowerCaseAndCharacterSubwords) {
  kh::test::ScopedEnv env(kh::kMecabDicEnv, dic_);
  TempDir d1, d2;
  // do_lower_case: ＡＢＣ -> ａｂｃ -> NFKC abc, in the vocab as one token.
  auto lower = kh::Tokenizer::fromFolder(ruriWith(d1, [](nlohmann::json& c) { c["do_lower_case"] = true; }));
  EXPECT_EQ(lower->encode("ＡＢＣ"), ids({2, 23, 3}));
  EXPECT_EQ(kh::Tokenizer::fromFolder(ruriDir())->encode("ＡＢＣ"), ids({2, 10, 11, 3}));
  // subword_tokenizer_type character: one id per character of each word, [UNK] when absent.
  auto chars = kh::Tokenizer::fromFolder(ruriWith(d2, [](nlohmann::json& c) { c["subword_tokenizer_type"] = "character"; }));
  EXPECT_EQ(chars->encode("名前は犬"), ids({2, 21, 22, 6, 1, 3}));
}

TEST_F(BertJapanese, RefusesWhatIsNotReproducedByName) {
  kh::test::ScopedEnv env(kh::kMecabDicEnv, dic_);
  const std::pair<const char*, std::function<void(nlohmann::json&)>> cases[] = {
      {"word_tokenizer_type 'sudachi'", [](nlohmann::json& c) { c["word_tokenizer_type"] = "sudachi"; }},
      {"word_tokenizer_type 'basic'", [](nlohmann::json& c) { c.erase("word_tokenizer_type"); }},
      {"subword_tokenizer_type 'sentencepiece'", [](nlohmann::json& c) { c["subword_tokenizer_type"] = "sentencepiece"; }},
      {"mecab_option '-u user.dic'", [](nlohmann::json& c) { c["mecab_kwargs"]["mecab_option"] = "-u user.dic"; }},
  };
  for (const auto& [what, edit] : cases) {
    TempDir d;
    const std::string dir = ruriWith(d, edit);
    const std::string msg = errorOf([&] { kh::Tokenizer::fromFolder(dir); });
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer_config.json"), std::string::npos) << msg;
  }
}

TEST_F(BertJapanese, DictionaryNotFoundNamesTheFolderAndHowToPointAtOne) {
  kh::test::ScopedEnv env(kh::kMecabDicEnv, nullptr);
  TempDir home;
  kh::test::ScopedEnv h("HOME", home.path().c_str()), v("VIRTUAL_ENV", nullptr);
  for (const char* sys : {"/usr/lib/python3/dist-packages/unidic_lite/dicdir/dicrc"})
    if (fs::exists(sys)) GTEST_SKIP() << "unidic-lite is installed system-wide (" << sys << ")";
  std::string msg = errorOf([] { kh::Tokenizer::fromFolder(ruriDir()); });
  EXPECT_NE(msg.find(ruriDir()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'unidic_lite'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("KUMIHIMO_MECAB_DIC"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unidic_lite/dicdir"), std::string::npos) << msg;  // where it looked
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // The embedder says the same (it used to refuse vocab.txt folders outright).
  msg = errorOf([] { kh::retrieval::EncoderEmbedder e(ruriDir(), "none"); });
  EXPECT_NE(msg.find("KUMIHIMO_MECAB_DIC"), std::string::npos) << msg;

  // A setting that names a folder without a dictionary is refused, naming it and the setting.
  kh::test::ScopedEnv bad(kh::kMecabDicEnv, home.path().c_str());
  msg = errorOf([] { kh::Tokenizer::fromFolder(ruriDir()); });
  EXPECT_NE(msg.find(home.path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("KUMIHIMO_MECAB_DIC"), std::string::npos) << msg;
}

TEST_F(BertJapanese, DictionaryFoundInTheModelFolderAndInAPythonSitePackages) {
  kh::test::ScopedEnv env(kh::kMecabDicEnv, nullptr);
  TempDir home;
  kh::test::ScopedEnv h("HOME", home.path().c_str());
  // <model>/unidic_lite/dicdir
  {
    TempDir d;
    const std::string dir = ruriWith(d, [](nlohmann::json&) {});
    fs::create_directories(dir + "/unidic_lite");
    fs::copy(dic_, dir + "/unidic_lite/dicdir", fs::copy_options::recursive);
    EXPECT_EQ(kh::Tokenizer::fromFolder(dir)->encode("名前は小野寺絢音"), ids({2, 5, 6, 7, 8, 9, 3}));
  }
  // $VIRTUAL_ENV/lib/python3.X/site-packages/unidic_lite/dicdir, as pip installs it.
  {
    TempDir venv;
    fs::create_directories(venv.file("lib/python3.11/site-packages/unidic_lite"));
    fs::copy(dic_, venv.file("lib/python3.11/site-packages/unidic_lite/dicdir"), fs::copy_options::recursive);
    kh::test::ScopedEnv v("VIRTUAL_ENV", venv.path().c_str());
    auto tok = kh::Tokenizer::fromFolder(ruriDir());
    EXPECT_EQ(tok->encode("猫が好き"), ids({2, 14, 24, 25, 3}));
  }
  // The process-wide setting (the CLI's --mecab-dic) beats the environment variable.
  kh::test::ScopedEnv bad(kh::kMecabDicEnv, home.path().c_str());
  kh::setMecabDictionaryOverride(dic_);
  EXPECT_NO_THROW(kh::Tokenizer::fromFolder(ruriDir()));
  kh::setMecabDictionaryOverride("");
  EXPECT_THROW(kh::Tokenizer::fromFolder(ruriDir()), kh::Error);
}

TEST_F(BertJapanese, EmbeddingsMatchThePythonReference) {
  kh::test::ScopedEnv env(kh::kMecabDicEnv, dic_);
  const auto g = nlohmann::json::parse(kh::test::readFile(ruriDir() + "/golden.json"));
  kh::retrieval::EncoderEmbedder emb(ruriDir(), "none", /*batchSize=*/3);
  std::vector<std::string> texts;
  for (const auto& c : g["cases"]) {
    EXPECT_EQ(emb.tokenIds(c["text"]), c["ids"].get<std::vector<int64_t>>()) << c["text"];
    texts.push_back(c["text"]);
  }
  const auto v = emb.embedRaw(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = g["cases"][i]["embedding"].get<std::vector<double>>();
    double m = 0;
    for (size_t k = 0; k < want.size(); ++k) m = std::max(m, std::abs(double(v[i * 32 + k]) - want[k]));
    EXPECT_LT(m, 2e-5) << texts[i];
  }
  // The folder name says ruri: クエリ: / 文章: prefixes.
  EXPECT_EQ(kh::retrieval::EncoderEmbedder(ruriDir()).prefixes().style, "ruri");
}

TEST_F(BertJapanese, AStoreRefusesQueriesTokenizedWithAnotherDictionary) {
  // A second dictionary: the same sources with 小野寺 made expensive, so it splits 小野 | 寺.
  TempDir other;
  const std::string dic2 = kh::test::compileTinyMecabDictionary(other.file("dic"), {{"小野寺,0,0,100,", "小野寺,0,0,900,"}});
  std::string identity1, identity2;
  TempDir d;
  {
    kh::test::ScopedEnv env(kh::kMecabDicEnv, dic_);
    kh::retrieval::EncoderEmbedder emb(ruriDir(), "none");
    identity1 = emb.identity();
    EXPECT_NE(identity1.find(":none:mecab:unidic_lite:"), std::string::npos) << identity1;
    auto s = kh::retrieval::DocumentStore::open(d.file("store"));
    s.importDocuments({{"a", "mem", "名前は小野寺絢音", {}}, {"b", "mem", "猫が好き", {}}}, &emb);
  }
  kh::test::ScopedEnv env(kh::kMecabDicEnv, dic2);
  kh::retrieval::EncoderEmbedder emb2(ruriDir(), "none");
  identity2 = emb2.identity();
  EXPECT_NE(identity1, identity2);
  EXPECT_EQ(emb2.tokenIds("名前は小野寺絢音"), (std::vector<int64_t>{2, 5, 6, 7, 1, 9, 3}));  // 寺 alone: no piece
  auto s = kh::retrieval::DocumentStore::open(d.file("store"));
  kh::retrieval::SearchOptions o;
  o.method = kh::retrieval::Method::Dense;
  const std::string msg = errorOf([&] { s.search("名前", o, &emb2); });
  EXPECT_NE(msg.find(identity1), std::string::npos) << msg;
  EXPECT_NE(msg.find(identity2), std::string::npos) << msg;
}
