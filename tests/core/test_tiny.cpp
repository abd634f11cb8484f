// make-tiny: every family's tiny checkpoint opens with an exact layout, carries the real special
// token ids, is byte-for-byte reproducible, and its Gemma tokenizer encodes exactly as Hugging Face
// transformers' GemmaTokenizer does (golden from tests/tools/hf_check.py, which also confirmed that
// transformers loads every family's tiny folder with no missing, unexpected or mis-shaped weights:
// tests/golden/hf/hf_check_report.json).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model/model_folder.h"
#include "core/model/tiny.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

using kh::test::TempDir;

namespace {
std::vector<int> stopIds(const kh::ModelFolder& m) {
  std::vector<int> r;
  for (const auto& s : m.stopTokens) r.push_back(s.id);
  std::sort(r.begin(), r.end());
  return r;
}
}  // namespace

TEST(TinyCheckpoint, EveryFamilyOpensWithExactLayoutAndRealStopIds) {
  // Stop ids as the real models define them: llm-jp-3 </s> 2; Mistral </s> 2; Gemma <eos> 1 and
  // <end_of_turn> 107; llm-jp-1.3b <EOD|LLM-jp> 7; Qwen2 <|im_end|> and <|endoftext|>.
  const std::map<std::string, std::vector<int>> stops = {
      {"llama", {2}}, {"mistral", {2}}, {"gemma2", {1, 107}}, {"gpt2", {7}}, {"qwen2", {1, 3}}};
  TempDir d;
  for (const auto& fam : kh::tinyFamilies()) {
    kh::TinyOptions o;
    o.family = fam;
    kh::makeTinyCheckpoint(d.file(fam), o);
    auto m = kh::ModelFolder::open(d.file(fam));
    EXPECT_EQ(m.config.family, fam);
    EXPECT_TRUE(m.layout.ok()) << fam << ": " << m.layout.summary();
    EXPECT_EQ(stopIds(m), stops.at(fam)) << fam;
    auto tok = kh::Tokenizer::fromFolder(d.file(fam));
    EXPECT_EQ(tok->vocabSize(), m.config.vocabSize) << fam;
  }
  auto gemma = kh::Tokenizer::fromFolder(d.file("gemma2"));
  EXPECT_EQ(gemma->pieceToId("<start_of_turn>"), 106);
  EXPECT_EQ(gemma->pieceToId("<end_of_turn>"), 107);
  auto gpt2 = kh::Tokenizer::fromFolder(d.file("gpt2"));
  EXPECT_EQ(gpt2->pieceToId("<EOD|LLM-jp>"), 7);
}

TEST(TinyCheckpoint, SameSeedGivesIdenticalFiles) {
  TempDir d;
  kh::TinyOptions o;
  o.family = "gemma2";
  o.seed = 11;
  kh::makeTinyCheckpoint(d.file("a"), o);
  kh::makeTinyCheckpoint(d.file("b"), o);
  for (const char* f : {"model.safetensors", "tokenizer.model", "config.json", "tokenizer_config.json"})
    EXPECT_EQ(kh::test::readFile(d.file(std::string("a/") + f)), kh::test::readFile(d.file(std::string("b/") + f))) << f;
  o.seed = 12;
  kh::makeTinyCheckpoint(d.file("c"), o);
  EXPECT_NE(kh::test::readFile(d.file("a/model.safetensors")), kh::test::readFile(d.file("c/model.safetensors")));
}

TEST(TinyCheckpoint, GemmaTokenizerEncodesLikeTransformers) {
  std::ifstream f(kh::test::sourceDir() + "/tests/golden/hf/tiny_gemma2_tokenizer.json");
  ASSERT_TRUE(f.good());
  auto golden = nlohmann::json::parse(f);
  TempDir d;
  kh::TinyOptions o;
  o.family = "gemma2";
  kh::makeTinyCheckpoint(d.file("g"), o);
  auto tok = kh::Tokenizer::fromFolder(d.file("g"));
  for (auto it = golden["encodings"].begin(); it != golden["encodings"].end(); ++it)
    EXPECT_EQ(tok->encode(it.key()), it.value().get<std::vector<int>>()) << "text: " << it.key();
  EXPECT_EQ(tok->bosId(), golden["special"]["bos"].get<int>());
  EXPECT_EQ(tok->eosId(), golden["special"]["eos"].get<int>());
  EXPECT_EQ(tok->padId(), golden["special"]["pad"].get<int>());
}

TEST(TinyCheckpoint, ExistingFolderIsKeptUnlessForced) {
  TempDir d;
  kh::TinyOptions o;
  o.family = "gpt2";
  kh::makeTinyCheckpoint(d.file("m"), o);
  try {
    kh::makeTinyCheckpoint(d.file("m"), o);
    FAIL() << "overwrote an existing folder";
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos);
  }
  o.force = true;
  o.seed = 4;
  EXPECT_NO_THROW(kh::makeTinyCheckpoint(d.file("m"), o));
}
