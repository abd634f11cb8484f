// Tests of the SentencePiece tokenizer against golden ids/decodes written by the Python binding
// (tests/tools/sp_reference.py), plus streaming, added tokens, errors, training determinism and
// torch + sentencepiece in one process. Must never need Python at run time.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "core/text/sp_loader.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

namespace {

using kh::test::TempDir;
using kh::test::readFile;
using kh::test::writeFile;
using nlohmann::json;

std::string goldenDir() { return kh::test::sourceDir() + "/tests/golden/tokenizer"; }

// Strict UTF-8 check written independently of the tokenizer's own.
bool validUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t minCp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minCp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// The two committed golden models and how they were trained (by our C++ code; see
// TokenizerTraining.ReproducesCommittedGoldenModels).
struct GoldenSpec {
  const char* name;
  kh::SentencePieceTrainOptions options;
};

std::vector<GoldenSpec> goldenSpecs() {
  kh::SentencePieceTrainOptions llamaLike;  // unigram, identity, dummy prefix, whitespace kept
  llamaLike.vocabSize = 1000;
  llamaLike.normalizationRule = "identity";
  llamaLike.removeExtraWhitespaces = false;
  llamaLike.splitDigits = true;
  llamaLike.allowWhitespaceOnlyPieces = true;
  llamaLike.userDefinedSymbols = {"<start_of_turn>", "<end_of_turn>"};
  kh::SentencePieceTrainOptions gemmaLike = llamaLike;  // BPE, no dummy prefix
  gemmaLike.modelType = "bpe";
  gemmaLike.addDummyPrefix = false;
  return {{"tiny_sp", llamaLike}, {"tiny_bpe", gemmaLike}};
}

std::vector<std::string> goldenCorpus() { return kh::makeJapaneseCorpus(1, 3000); }

// A model folder holding a golden model as tokenizer.model.
std::string modelFolder(const TempDir& dir, const std::string& name) {
  writeFile(dir.file("tokenizer.model"), readFile(goldenDir() + "/" + name + ".model"));
  return dir.path();
}

json loadGolden(const std::string& name) { return json::parse(readFile(goldenDir() + "/" + name + "_golden.json")); }

std::string joinStream(const kh::Tokenizer& tok, const std::vector<int>& ids, bool skipSpecial) {
  kh::StreamDecoder d(tok, skipSpecial);
  std::string all;
  for (int id : ids) {
    std::string part = d.push(id);
    EXPECT_TRUE(validUtf8(part)) << "push(" << id << ") returned invalid UTF-8";
    all += part;
  }
  std::string tail = d.finish();
  EXPECT_TRUE(validUtf8(tail));
  return all + tail;
}

// ---- golden comparisons, for each committed model ------------------------------------------

class TokenizerGolden : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    golden = loadGolden(GetParam());
    tok = kh::Tokenizer::fromFolder(modelFolder(dir, GetParam()));
  }
  TempDir dir;
  json golden;
  std::shared_ptr<kh::Tokenizer> tok;
};

TEST_P(TokenizerGolden, VocabularyMatchesPythonSentencePiece) {
  ASSERT_EQ(tok->vocabSize(), golden["piece_size"].get<int>());
  const auto pieces = golden["pieces"].get<std::vector<std::string>>();
  for (int id = 0; id < tok->vocabSize(); ++id) {
    EXPECT_EQ(tok->idToPiece(id), pieces[static_cast<size_t>(id)]) << "id " << id;
    EXPECT_EQ(tok->pieceToId(pieces[static_cast<size_t>(id)]), id);
  }
  EXPECT_EQ(tok->bosId().value_or(-1), golden["bos_id"].get<int>());
  EXPECT_EQ(tok->eosId().value_or(-1), golden["eos_id"].get<int>());
  EXPECT_EQ(tok->unkId().value_or(-1), golden["unk_id"].get<int>());
  EXPECT_EQ(tok->padId().value_or(-1), golden["pad_id"].get<int>());
  for (int id : golden["control"].get<std::vector<int>>()) EXPECT_TRUE(tok->isSpecial(id)) << id;
  EXPECT_EQ(tok->pieceToId("no such piece"), -1);
  EXPECT_EQ(tok->bosToken(), "<s>");
  EXPECT_EQ(tok->padToken(), "");
}

TEST_P(TokenizerGolden, EncodeMatchesPythonSentencePiece) {
  for (const json& c : golden["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok->encode(text, /*addSpecial=*/false), c["ids"].get<std::vector<int>>()) << "text: " << text;
  }
}

TEST_P(TokenizerGolden, EncodeAddsBosByDefault) {
  const json& c = golden["cases"][0];
  std::vector<int> expected{tok->bosId().value()};
  for (int id : c["ids"]) expected.push_back(id);
  EXPECT_TRUE(tok->addsBos());
  EXPECT_FALSE(tok->addsEos());
  EXPECT_EQ(tok->encode(c["text"].get<std::string>()), expected);
}

TEST_P(TokenizerGolden, DecodeMatchesPythonSentencePiece) {
  for (const json& c : golden["cases"]) {
    const auto ids = c["ids"].get<std::vector<int>>();
    EXPECT_EQ(tok->decode(ids), c["decode"].get<std::string>()) << "text: " << c["text"].get<std::string>();
  }
}

// Arbitrary id sequences (cut-off characters, invalid bytes, control and unknown pieces).
TEST_P(TokenizerGolden, RandomIdSequencesDecodeLikePythonSentencePiece) {
  ASSERT_GT(golden["random_decodes"].size(), 100u);
  for (const json& c : golden["random_decodes"]) {
    const auto ids = c["ids"].get<std::vector<int>>();
    const std::string expected = c["decode"];
    EXPECT_EQ(tok->decode(ids), expected) << "ids: " << c["ids"].dump();
    EXPECT_EQ(tok->sentencePieceDecode(ids), expected) << "ids: " << c["ids"].dump();
  }
}

TEST_P(TokenizerGolden, StreamDecoderEqualsDecodeOneIdAtATime) {
  for (const json& c : golden["cases"]) {
    const auto ids = c["ids"].get<std::vector<int>>();
    EXPECT_EQ(joinStream(*tok, ids, true), tok->decode(ids, true)) << "text: " << c["text"].get<std::string>();
  }
  for (const json& c : golden["random_decodes"]) {
    const auto ids = c["ids"].get<std::vector<int>>();
    for (bool skip : {true, false})
      EXPECT_EQ(joinStream(*tok, ids, skip), tok->decode(ids, skip)) << "ids: " << c["ids"].dump();
  }
}

INSTANTIATE_TEST_SUITE_P(CommittedModels, TokenizerGolden, ::testing::Values("tiny_sp", "tiny_bpe"));

// ---- torch and sentencepiece in one process ------------------------------------------------

// kh_core_tests links libtorch (and with it libprotobuf 3.21); Debian's libsentencepiece carries
// protobuf 3.14. Linked together they crash at start-up; through the dlopen'ed shim they must not.
TEST(TokenizerTorch, EncodedIdsFeedATensorOpInTheSameProcess) {
  at::manual_seed(7);
  at::Tensor table = at::randn({64, 4});  // table: [64, 4] f32, torch used before the tokenizer
  TempDir dir;
  auto tok = kh::Tokenizer::fromFolder(modelFolder(dir, "tiny_sp"));
  const std::vector<int> ids = tok->encode("今日は晴れですね。Hello!");
  ASSERT_FALSE(ids.empty());
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  at::Tensor t = at::tensor(ids64, at::kLong);                             // t: [T] i64
  at::Tensor rows = at::embedding(table, at::remainder(t, table.size(0)));  // rows: [T, 4] f32
  EXPECT_EQ(rows.size(0), static_cast<int64_t>(ids.size()));
  EXPECT_EQ(rows.size(1), 4);
  EXPECT_EQ(t.sum().item<int64_t>(), std::accumulate(ids64.begin(), ids64.end(), int64_t{0}));
  EXPECT_EQ(tok->decode(ids), "今日は晴れですね。Hello!");
}

// ---- added and special tokens ---------------------------------------------------------------

TEST(TokenizerAddedTokens, SplitsOnAddedTokensLongestFirst) {
  TempDir plainDir, dir;
  auto plain = kh::Tokenizer::fromFolder(modelFolder(plainDir, "tiny_sp"));
  modelFolder(dir, "tiny_sp");
  ASSERT_EQ(plain->pieceToId("<start_of_turn>"), 3);  // user-defined pieces of the model
  ASSERT_EQ(plain->pieceToId("<end_of_turn>"), 4);
  writeFile(dir.file("tokenizer_config.json"), R"({
    "added_tokens_decoder": {
      "0": {"content": "<unk>", "special": true},
      "1": {"content": "<s>", "special": true},
      "2": {"content": "</s>", "special": true},
      "3": {"content": "<start_of_turn>", "special": true},
      "4": {"content": "<end_of_turn>", "special": true},
      "1000": {"content": "[A]", "special": false},
      "1001": {"content": "[A][B]", "special": false},
      "1002": {"content": "<R>", "special": false, "rstrip": true}
    },
    "bos_token": "<s>", "eos_token": {"content": "</s>", "__type": "AddedToken"}, "unk_token": "<unk>",
    "pad_token": null, "add_bos_token": true, "add_eos_token": false,
    "chat_template": "{{ messages }}"
  })");
  auto tok = kh::Tokenizer::fromFolder(dir.path());
  EXPECT_EQ(tok->vocabSize(), 1003);
  EXPECT_EQ(tok->addedTokens().size(), 8u);
  EXPECT_EQ(tok->pieceToId("[A][B]"), 1001);
  EXPECT_EQ(tok->idToPiece(1000), "[A]");
  EXPECT_TRUE(tok->isSpecial(3));
  EXPECT_FALSE(tok->isSpecial(1000));
  EXPECT_EQ(tok->bosToken(), "<s>");
  EXPECT_EQ(tok->eosToken(), "</s>");
  EXPECT_EQ(tok->unkToken(), "<unk>");
  EXPECT_EQ(tok->padToken(), "");
  EXPECT_FALSE(tok->padId().has_value());
  EXPECT_EQ(tok->chatTemplate(), "{{ messages }}");
  EXPECT_NE(tok->description().find("8 added tokens"), std::string::npos) << tok->description();

  // The text between added tokens is encoded on its own (HF slow "legacy" behaviour).
  auto cat = [](std::vector<int> a, const std::vector<int>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::string chat = "<start_of_turn>user\nこんにちは<end_of_turn>";
  std::vector<int> expected = cat(cat({1, 3}, plain->encode("user\nこんにちは", false)), {4});
  const std::vector<int> ids = tok->encode(chat);
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tok->decode(ids), "user\nこんにちは");
  EXPECT_EQ(tok->decode(ids, /*skipSpecial=*/false), "<s><start_of_turn> user\nこんにちは<end_of_turn>");

  expected = cat(cat(cat(plain->encode("x", false), {1001}), plain->encode("y", false)), {1000});
  EXPECT_EQ(tok->encode("x[A][B]y[A]", false), expected);
  EXPECT_EQ(tok->decode(expected), "x[A][B] y[A]");  // non-special added tokens stay
  EXPECT_EQ(tok->encode("<R>   abc", false), cat({1002}, plain->encode("abc", false)));
  // "<s>" in text is the bos token once the config names it; without a config it is plain text.
  EXPECT_EQ(tok->encode("<s>", false), std::vector<int>{1});
  EXPECT_NE(plain->encode("<s>", false), std::vector<int>{1});
}

TEST(TokenizerAddedTokens, ReadsSpecialTokensMapAddedTokensAndJinjaTemplate) {
  TempDir dir;
  modelFolder(dir, "tiny_sp");
  writeFile(dir.file("tokenizer_config.json"),
            R"({"add_bos_token": false, "add_eos_token": true, "chat_template": "from config"})");
  writeFile(dir.file("special_tokens_map.json"), R"({
    "eos_token": {"content": "<end_of_turn>", "lstrip": false, "rstrip": false},
    "pad_token": "<unk>",
    "additional_special_tokens": ["<start_of_turn>"]})");
  writeFile(dir.file("added_tokens.json"), R"({"<extra>": 1000})");
  writeFile(dir.file("chat_template.jinja"), "from jinja");
  auto tok = kh::Tokenizer::fromFolder(dir.path());
  EXPECT_EQ(tok->eosId(), 4);
  EXPECT_EQ(tok->eosToken(), "<end_of_turn>");
  EXPECT_EQ(tok->padId(), 0);
  EXPECT_FALSE(tok->addsBos());
  EXPECT_TRUE(tok->addsEos());
  EXPECT_TRUE(tok->isSpecial(3));
  EXPECT_FALSE(tok->isSpecial(1000));
  EXPECT_EQ(tok->pieceToId("<extra>"), 1000);
  EXPECT_EQ(tok->chatTemplate(), "from jinja");
  const auto ids = tok->encode("今日は<extra>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_NE(ids.front(), 1);
  EXPECT_EQ(ids[ids.size() - 2], 1000);
  EXPECT_EQ(ids.back(), 4);
}

// ---- streaming -------------------------------------------------------------------------------

TEST(StreamDecoder, HoldsACharacterSplitAcrossBytePiecesUntilComplete) {
  TempDir dir;
  auto tok = kh::Tokenizer::fromFolder(modelFolder(dir, "tiny_sp"));
  auto byteId = [&](int b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    return tok->pieceToId(name);
  };
  kh::StreamDecoder d(*tok);
  EXPECT_EQ(d.push(byteId(0xF0)), "");  // 😀 = F0 9F 98 80
  EXPECT_EQ(d.push(byteId(0x9F)), "");
  EXPECT_EQ(d.push(byteId(0x98)), "");
  EXPECT_EQ(d.push(byteId(0x80)), "😀");
  EXPECT_EQ(d.push(byteId(0xE3)), "");
  EXPECT_EQ(d.push(byteId(0x81)), "");
  EXPECT_EQ(d.finish(), "\xEF\xBF\xBD\xEF\xBF\xBD");  // cut-off tail: U+FFFD per byte, like decode()
}

// ---- errors ----------------------------------------------------------------------------------

TEST(TokenizerErrors, InvalidUtf8InputNamesTheByteOffset) {
  TempDir dir;
  auto tok = kh::Tokenizer::fromFolder(modelFolder(dir, "tiny_sp"));
  const std::pair<std::string, std::string> cases[] = {
      {"abcde\xff", "invalid UTF-8 at byte 5"},
      {"ok\xE3\x81", "invalid UTF-8 at byte 2"},  // cut-off あ
      {"\xC0\x80", "invalid UTF-8 at byte 0"},    // overlong NUL
      {"x\xED\xA0\x80", "invalid UTF-8 at byte 1"},  // surrogate
  };
  for (const auto& [text, cause] : cases) {
    try {
      tok->encode(text);
      ADD_FAILURE() << "no error for " << cause;
    } catch (const kh::Error& e) {
      EXPECT_EQ(e.where(), "tokenizer input");
      EXPECT_EQ(e.cause(), cause);
    }
  }
}

TEST(TokenizerErrors, MissingTokenizerModelNamesTheFile) {
  TempDir dir;
  try {
    kh::Tokenizer::fromFolder(dir.path());
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), dir.file("tokenizer.model"));
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos);
  }
  EXPECT_EQ(kh::Tokenizer::detect(dir.path()), kh::TokenizerKind::None);
}

TEST(TokenizerErrors, MalformedTokenizerJsonNamesIt) {
  TempDir dir;
  writeFile(dir.file("tokenizer.json"), R"({"model": {"type": "BPE"}})");  // no vocab
  std::string description;
  EXPECT_EQ(kh::Tokenizer::detect(dir.path(), &description), kh::TokenizerKind::HfTokenizerJson);
  EXPECT_NE(description.find("cannot load"), std::string::npos) << description;
  try {
    kh::Tokenizer::fromFolder(dir.path());
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), dir.file("tokenizer.json")) << e.what();
  }
}

TEST(TokenizerErrors, CorruptModelAndConfigNameTheirFiles) {
  TempDir dir;
  writeFile(dir.file("tokenizer.model"), "this is not a protobuf \xff\xff\xff\xff");
  EXPECT_THROW(
      {
        try {
          kh::Tokenizer::fromFolder(dir.path());
        } catch (const kh::Error& e) {
          EXPECT_EQ(e.where(), dir.file("tokenizer.model"));
          throw;
        }
      },
      kh::Error);
  TempDir dir2;
  modelFolder(dir2, "tiny_sp");
  writeFile(dir2.file("tokenizer_config.json"), "{\"add_bos_token\": ");
  try {
    kh::Tokenizer::fromFolder(dir2.path());
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), dir2.file("tokenizer_config.json"));
  }
  writeFile(dir2.file("tokenizer_config.json"), R"({"eos_token": "<not in vocab>"})");
  EXPECT_THROW(kh::Tokenizer::fromFolder(dir2.path()), kh::Error);
}

TEST(TokenizerErrors, OutOfRangeIdsAreErrors) {
  TempDir dir;
  auto tok = kh::Tokenizer::fromFolder(modelFolder(dir, "tiny_sp"));
  EXPECT_THROW(tok->decode({5, 100000}), kh::Error);
  EXPECT_THROW(tok->idToPiece(-1), kh::Error);
  EXPECT_THROW(tok->idToPiece(tok->vocabSize()), kh::Error);
  kh::StreamDecoder d(*tok);
  EXPECT_THROW(d.push(-3), kh::Error);
}

TEST(SpShimLoader, FailuresNameThePlacesTried) {
  try {
    kh::sp::openShim("/nonexistent/libkumihimo_spshim.so");
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), "/nonexistent/libkumihimo_spshim.so");
  }
  const char* old = std::getenv("KH_SPSHIM");
  std::string saved = old ? old : "";
  setenv("KH_SPSHIM", "/somewhere/else.so", 1);
  EXPECT_EQ(kh::sp::shimSearchPaths(), std::vector<std::string>{"/somewhere/else.so"});
  if (old) setenv("KH_SPSHIM", saved.c_str(), 1);
  else unsetenv("KH_SPSHIM");
  const auto paths = kh::sp::shimSearchPaths();
  ASSERT_GE(paths.size(), 2u);
  EXPECT_EQ(kh::sp::shim().abi_version(), KH_SPSHIM_ABI_VERSION);
}

// ---- detection, corpus, training -------------------------------------------------------------

TEST(TokenizerDetect, DescribesASentencePieceFolderWithoutLoadingIt) {
  TempDir dir;
  std::string desc;
  EXPECT_EQ(kh::Tokenizer::detect(modelFolder(dir, "tiny_sp"), &desc), kh::TokenizerKind::SentencePiece);
  EXPECT_EQ(desc, "sentencepiece unigram, 1000 pieces, byte fallback");
  TempDir bpe;
  EXPECT_EQ(kh::Tokenizer::detect(modelFolder(bpe, "tiny_bpe"), &desc), kh::TokenizerKind::SentencePiece);
  EXPECT_EQ(desc, "sentencepiece bpe, 1000 pieces, byte fallback");
  auto tok = kh::Tokenizer::fromFolder(bpe.path());
  EXPECT_EQ(tok->description(), desc);
  EXPECT_FALSE(tok->modelInfo().addDummyPrefix);
  EXPECT_EQ(tok->modelInfo().normalizerName, "identity");
}

TEST(JapaneseCorpus, IsDeterministicAndCoversTheScripts) {
  const auto a = kh::makeJapaneseCorpus(5, 400);
  EXPECT_EQ(a, kh::makeJapaneseCorpus(5, 400));
  EXPECT_NE(a, kh::makeJapaneseCorpus(6, 400));
  ASSERT_EQ(a.size(), 400u);
  std::string all;
  for (const auto& s : a) {
    EXPECT_TRUE(validUtf8(s));
    all += s;
  }
  for (const char* needle : {"さん", "パラメータ", "東京", "。", "！", "？", "年", "AI"})
    EXPECT_NE(all.find(needle), std::string::npos) << needle;
  EXPECT_NE(all.find_first_of("0123456789"), std::string::npos);
}

TEST(TokenizerTraining, SameCorpusTwiceGivesIdenticalModelBytes) {
  TempDir a, b;
  const auto corpus = kh::makeJapaneseCorpus(11, 1500);
  kh::SentencePieceTrainOptions opt;
  opt.vocabSize = 600;
  opt.userDefinedSymbols = {"<start_of_turn>"};
  kh::trainSentencePiece(corpus, a.file("m"), opt);
  kh::trainSentencePiece(corpus, b.file("m"), opt);  // another folder: the path is not stored
  const std::string model = readFile(a.file("m.model"));
  EXPECT_EQ(model, readFile(b.file("m.model")));
  EXPECT_EQ(readFile(a.file("m.vocab")), readFile(b.file("m.vocab")));
  std::filesystem::rename(a.file("m.model"), a.file("tokenizer.model"));
  auto tok = kh::Tokenizer::fromFolder(a.path());
  EXPECT_EQ(tok->vocabSize(), 600);
  EXPECT_EQ(tok->pieceToId("<start_of_turn>"), 3);
  EXPECT_EQ(tok->decode(tok->encode("今日は晴れですね。")), "今日は晴れですね。");
}

// The golden models keep whitespace; SentencePiece's default normalization (nmt_nfkc, extra
// whitespace removed) decodes leading whitespace differently. Reference: the shim's own Decode.
TEST(TokenizerTraining, DefaultNormalizationModelDecodesLikeSentencePiece) {
  TempDir dir;
  kh::SentencePieceTrainOptions opt;  // SentencePiece's defaults
  opt.vocabSize = 600;
  kh::trainSentencePiece(kh::makeJapaneseCorpus(3, 1500), dir.file("tokenizer"), opt);
  auto tok = kh::Tokenizer::fromFolder(dir.path());
  EXPECT_EQ(tok->modelInfo().normalizerName, "nmt_nfkc");
  EXPECT_TRUE(tok->modelInfo().removeExtraWhitespaces);
  EXPECT_EQ(tok->decode(tok->encode("  ｈｅｌｌｏ　　ＷＯＲＬＤ！  ")), "hello WORLD!");
  std::vector<int> interesting;  // whitespace, byte and control pieces, drawn more often
  for (int id = 0; id < tok->vocabSize(); ++id) {
    const std::string p = tok->idToPiece(id);
    if (p == "\xE2\x96\x81" || tok->isSpecial(id) || p.rfind("<0x", 0) == 0) interesting.push_back(id);
  }
  uint64_t s = 12345;
  auto next = [&] { return (s = s * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  for (int round = 0; round < 2000; ++round) {
    std::vector<int> ids(1 + next() % 12);
    for (int& id : ids)
      id = next() % 2 ? interesting[next() % interesting.size()] : static_cast<int>(next() % tok->vocabSize());
    EXPECT_EQ(tok->decode(ids), tok->sentencePieceDecode(ids)) << ::testing::PrintToString(ids);
    EXPECT_EQ(joinStream(*tok, ids, true), tok->decode(ids));
  }
}

TEST(TokenizerTraining, ImpossibleVocabularySizeIsAnErrorWithAHint) {
  TempDir dir;
  kh::SentencePieceTrainOptions opt;
  opt.vocabSize = 50000;
  try {
    kh::trainSentencePiece(kh::makeJapaneseCorpus(1, 50), dir.file("m"), opt);
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), dir.file("m.model"));
    EXPECT_FALSE(e.hint().empty()) << e.what();
  }
}

// The committed golden models are ours: this is how they were made. With KH_REGENERATE_GOLDEN=1
// it rewrites them (then run tests/tools/sp_reference.py for the JSON).
TEST(TokenizerTraining, ReproducesCommittedGoldenModels) {
  const bool regenerate = std::getenv("KH_REGENERATE_GOLDEN") != nullptr;
  for (const GoldenSpec& g : goldenSpecs()) {
    TempDir dir;
    const std::string prefix = regenerate ? goldenDir() + "/" + g.name : dir.file(g.name);
    kh::trainSentencePiece(goldenCorpus(), prefix, g.options);
    if (regenerate) {
      std::filesystem::remove(prefix + ".vocab");
      continue;
    }
    EXPECT_TRUE(readFile(prefix + ".model") == readFile(goldenDir() + "/" + g.name + ".model"))
        << g.name << ": training no longer reproduces the committed model (another sentencepiece "
        << "version?); regenerate with KH_REGENERATE_GOLDEN=1 and tests/tools/sp_reference.py";
  }
}

}  // namespace
