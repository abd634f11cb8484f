// Hugging Face tokenizer.json tokenizers (core/text/hf_tokenizer.h) on two small hand-made
// files: byte-level BPE with the Qwen2 pre-tokenizer, and Unigram with Metaspace and byte
// fallback. Expected ids are worked out by hand from the merge ranks and piece scores below;
// tests/tools/hf_tokenizer_reference.py prints the `tokenizers` library's ids for the same texts.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

namespace {

using nlohmann::json;
using Ids = std::vector<int>;
using kh::test::readFile;
using kh::test::sourceDir;
using kh::test::TempDir;
using kh::test::writeFile;

std::string goldenDir(const std::string& name) { return sourceDir() + "/tests/golden/hf_tokenizer/" + name; }

std::shared_ptr<kh::Tokenizer> load(const std::string& name) { return kh::Tokenizer::fromFolder(goldenDir(name)); }

json goldenJson(const std::string& name) { return json::parse(readFile(goldenDir(name) + "/tokenizer.json")); }

// A copy of a golden tokenizer.json with edits, in its own folder.
struct Variant {
  TempDir dir;
  explicit Variant(const json& j) { writeFile(dir.file("tokenizer.json"), j.dump()); }
  std::shared_ptr<kh::Tokenizer> load() const { return kh::Tokenizer::fromFolder(dir.path()); }
};

std::string streamDecode(const kh::Tokenizer& tok, const Ids& ids, bool skipSpecial) {
  kh::StreamDecoder d(tok, skipSpecial);
  std::string out;
  for (int id : ids) out += d.push(id);
  return out + d.finish();
}

// Error from loading `j`, checked to name tokenizer.json and to contain `needle`.
void expectLoadError(const json& j, const std::string& needle) {
  Variant v(j);
  try {
    v.load();
    ADD_FAILURE() << "no error; expected one about " << needle;
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), v.dir.file("tokenizer.json")) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// ---- vocabulary of bpe_bytelevel: id b (0..255) is byte b's GPT-2 symbol; merges by rank:
//  0 Ġ t->256  1 h e->257  2 Ġt he->258  3 i n->259  4 Ġ a->260  5 e r->261  6 æ Ĺ->262
//  7 æĹ ¥->263 (日)  8 æ ľ->264  9 æľ ¬->265 (本)  10 æĹ¥ æľ¬->266 (日本)  11 ã ģ->267  12 ãģ ®->268 (の)
//  13 Ġ Ġ->269  14 Ċ Ċ->270  15 l l->271  16 o r->272  17 Ġ w->273  18 Ġw or->274  19 H e->275
//  20 He ll->276  21 Hell o->277; added: 278 <|endoftext|> 279 <|im_start|> 280 <|im_end|>
//  (special), 281 <tool> (not special), 282 <mask> (special, lstrip).

struct Case {
  const char* text;
  Ids ids;
  const char* why;
};

const Case kBpeCases[] = {
    {"the", {116, 257}, "one pre-token; only 'h e' (rank 1) applies; 't he' is no merge"},
    {"in the", {259, 258}, "'in' by rank 3; ' the' = Ġ t h e: Ġt (0), he (1), Ġt he (2)"},
    {"Hello world", {277, 274, 108, 100}, "l l (15) < H e (19) < He ll (20) < Hell o (21); Ġwor then l, d"},
    {"日本の", {266, 268}, "CJK and kana are letters: one pre-token; bytes merge to 日, 本, 日本, の"},
    {"日本語", {266, 232, 170, 158}, "語 (E8 AA 9E) has no merges: three byte symbols"},
    {"a  b", {97, 32, 32, 98}, "\\s+(?!\\S) takes one of the two spaces, the other goes with b; 'Ġ b' no merge"},
    {"a\n\nb", {97, 270, 98}, "\\s*[\\r\\n]+ takes both newlines: Ċ Ċ (14)"},
    {"hi   ", {104, 105, 269, 32}, "trailing spaces are one piece; Ġ Ġ merges leftmost first"},
    {"it's", {105, 116, 39, 115}, "'s is a contraction piece"},
    {"IT'S", {73, 84, 39, 83}, "(?i:'s) matches 'S too"},
    {"2024年", {50, 48, 50, 52, 229, 185, 180}, "\\p{N} takes one digit at a time; 年 is E5 B9 B4"},
    {"Hi 😀!", {72, 105, 32, 240, 159, 152, 128, 33}, "' ?[^\\s\\p{L}\\p{N}]+' keeps ' 😀!' together"},
    {"。日本", {227, 128, 130, 266}, "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+ glues 。 to the letters; 。 is E3 80 82, no merges"},
    {"<|im_start|>user\nHi<|im_end|>", {279, 117, 115, 261, 10, 72, 105, 280}, "added tokens split first; e r (5)"},
    {"a <mask>", {97, 282}, "<mask> has lstrip: the space before it goes"},
    {"x<tool>y", {120, 281, 121}, "a non-special added token splits too"},
};

TEST(HfTokenizerBpe, ExactIdsFromMergeRanks) {
  auto tok = load("bpe_bytelevel");
  EXPECT_EQ(tok->kind(), kh::TokenizerKind::HfTokenizerJson);
  for (const Case& c : kBpeCases) {
    EXPECT_EQ(tok->encode(c.text, false), c.ids) << c.text << ": " << c.why;
    EXPECT_EQ(tok->encode(c.text, true), c.ids) << c.text << ": no template, nothing added";
  }
}

TEST(HfTokenizerBpe, RoundTripsAndStreaming) {
  auto tok = load("bpe_bytelevel");
  const char* texts[] = {"the", "Hello world", "日本の日本語です。", "a  b\n\n\tc   ", "  leading", "Hi 😀!🎉",
                         "x \n\n y", "mixed ASCII と 日本語 123 and emoji 👍🏽", "", " ", "\r\n"};
  for (const char* t : texts) {
    Ids ids = tok->encode(t, false);
    EXPECT_EQ(tok->decode(ids), t);
    EXPECT_EQ(streamDecode(*tok, ids, true), tok->decode(ids, true)) << t;
    EXPECT_EQ(streamDecode(*tok, ids, false), tok->decode(ids, false)) << t;
  }
  // A 4-byte character split over byte tokens comes out whole, at its last byte.
  kh::StreamDecoder d(*tok);
  EXPECT_EQ(d.push(72), "H");
  EXPECT_EQ(d.push(240), "");
  EXPECT_EQ(d.push(159), "");
  EXPECT_EQ(d.push(152), "");
  EXPECT_EQ(d.push(128), "😀");
  // A cut-off character at the end is one U+FFFD (from_utf8_lossy replaces the maximal prefix).
  EXPECT_EQ(tok->decode({72, 240, 159}), "H\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({240, 159, 72}), "\xEF\xBF\xBDH");
}

TEST(HfTokenizerBpe, SpecialTokensAndPieces) {
  auto tok = load("bpe_bytelevel");
  EXPECT_EQ(tok->vocabSize(), 283);
  EXPECT_EQ(tok->pieceToId("Ġthe"), 258);
  EXPECT_EQ(tok->idToPiece(258), "Ġthe");
  EXPECT_EQ(tok->pieceToId("<|im_end|>"), 280);
  EXPECT_EQ(tok->pieceToId("nope"), -1);
  EXPECT_TRUE(tok->isSpecial(280));
  EXPECT_FALSE(tok->isSpecial(281));
  EXPECT_FALSE(tok->isSpecial(258));
  EXPECT_FALSE(tok->bosId().has_value());
  EXPECT_EQ(tok->addedTokens().size(), 5u);
  Ids ids = tok->encode("<|im_start|>user\nHi<|im_end|>x<tool>", false);
  EXPECT_EQ(tok->decode(ids, true), "user\nHix<tool>");
  EXPECT_EQ(tok->decode(ids, false), "<|im_start|>user\nHi<|im_end|>x<tool>");
  EXPECT_THROW(tok->decode({283}), kh::Error);
}

TEST(HfTokenizerBpe, FolderJsonAddsEosAndChatTemplate) {
  TempDir dir;
  writeFile(dir.file("tokenizer.json"), readFile(goldenDir("bpe_bytelevel") + "/tokenizer.json"));
  writeFile(dir.file("tokenizer_config.json"),
            R"({"bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                "chat_template": "{{ messages }}"})");
  auto tok = kh::Tokenizer::fromFolder(dir.path());
  EXPECT_EQ(tok->eosId(), 280);
  EXPECT_EQ(tok->padId(), 278);
  EXPECT_FALSE(tok->bosId().has_value());
  EXPECT_FALSE(tok->addsBos());
  EXPECT_EQ(tok->chatTemplate(), "{{ messages }}");
  EXPECT_EQ(tok->encode("the", true), (Ids{116, 257}));
}

TEST(HfTokenizerBpe, Gpt2ByteLevelRegexVariant) {
  json j = goldenJson("bpe_bytelevel");
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  auto tok = Variant(j).load();
  EXPECT_EQ(tok->encode("Hello world", false), (Ids{277, 274, 108, 100}));
  EXPECT_EQ(tok->encode("in the", false), (Ids{259, 258}));
  EXPECT_EQ(tok->encode("2024", false), (Ids{50, 48, 50, 52}));
  EXPECT_EQ(tok->decode(tok->encode("x \n\n y 日本", false)), "x \n\n y 日本");
  // add_prefix_space puts a space before the text: "the" becomes " the".
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(Variant(j).load()->encode("the", false), (Ids{258}));
}

TEST(HfTokenizerBpe, MergesAsPairsGiveTheSameIds) {
  json j = goldenJson("bpe_bytelevel");
  json pairs = json::array();
  for (const json& m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  j["model"]["merges"] = pairs;
  auto tok = Variant(j).load();
  for (const Case& c : kBpeCases) EXPECT_EQ(tok->encode(c.text, false), c.ids) << c.text;
}

// Longer texts, ids as printed by tests/tools/hf_tokenizer_reference.py with tokenizers 0.23.2
// (tests/golden/hf_tokenizer/reference_tokenizers_0.23.2.jsonl holds the first part of its output).
TEST(HfTokenizerBpe, LongerTextsMatchTokenizersLibrary) {
  auto tok = load("bpe_bytelevel");
  const std::pair<const char*, Ids> cases[] = {
      {"日本の日本語です。", {266, 268, 266, 232, 170, 158, 267, 167, 267, 153, 227, 128, 130}},
      {"a  b\n\n\tc   ", {97, 32, 32, 98, 270, 9, 99, 269, 32}},
      {"  leading", {32, 32, 108, 101, 97, 100, 259, 103}},
      {"Hi 😀!🎉", {72, 105, 32, 240, 159, 152, 128, 33, 240, 159, 142, 137}},
      {"mixed ASCII と 日本語 123 and emoji 👍🏽",
       {109, 105, 120, 101, 100, 32, 65, 83, 67, 73, 73, 32, 267, 168, 32, 266, 232, 170, 158, 32, 49, 50, 51, 260,
        110, 100, 32, 101, 109, 111, 106, 105, 32, 240, 159, 145, 141, 240, 159, 143, 189}},
      {" ", {32}},
      {"\r\n", {13, 10}},
  };
  for (const auto& [text, ids] : cases) EXPECT_EQ(tok->encode(text, false), ids) << text;
  auto uni = load("unigram_metaspace");
  EXPECT_EQ(uni->encode("日本の猫は😀です", true),
            (Ids{1, 266, 271, 234, 143, 174, 272, 243, 162, 155, 131, 230, 132, 170, 230, 132, 156}));
}

TEST(HfTokenizerBpe, LongPreTokenMergesInLinearishTime) {
  // 20000 CJK characters are one Qwen2 pre-token (60000 byte symbols): a quadratic merge loop
  // would take minutes; the heap takes milliseconds.
  auto tok = load("bpe_bytelevel");
  std::string text;
  for (int i = 0; i < 10000; ++i) text += "日本";
  Ids ids = tok->encode(text, false);
  ASSERT_EQ(ids.size(), 10000u);
  EXPECT_EQ(ids.front(), 266);
  EXPECT_EQ(ids.back(), 266);
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(HfTokenizerPreTokenizer, Qwen2Gpt2AndLlama3Splits) {
  using P = kh::PreTokenizerPattern;
  using V = std::vector<std::string_view>;
  EXPECT_EQ(kh::splitPreTokens("a  b", P::Qwen2), (V{"a", " ", " b"}));
  EXPECT_EQ(kh::splitPreTokens("x \n\n y", P::Qwen2), (V{"x", " \n\n", " y"}));
  EXPECT_EQ(kh::splitPreTokens("IT'S", P::Qwen2), (V{"IT", "'S"}));
  EXPECT_EQ(kh::splitPreTokens("!!\n\nx", P::Qwen2), (V{"!!\n\n", "x"}));
  EXPECT_EQ(kh::splitPreTokens("。日本", P::Qwen2), (V{"。日本"}));
  EXPECT_EQ(kh::splitPreTokens("12345", P::Qwen2), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(kh::splitPreTokens("12345", P::Llama3), (V{"123", "45"}));
  EXPECT_EQ(kh::splitPreTokens("カタカナとひらがな、漢字", P::Qwen2), (V{"カタカナとひらがな", "、漢字"}));
  EXPECT_EQ(kh::splitPreTokens("IT'S", P::Gpt2), (V{"IT", "'", "S"}));
  EXPECT_EQ(kh::splitPreTokens("it's 2024年", P::Gpt2), (V{"it", "'s", " 2024", "年"}));
  EXPECT_EQ(kh::splitPreTokens("x \n\n y", P::Gpt2), (V{"x", " \n\n", " y"}));
  EXPECT_EQ(kh::splitPreTokens("。日本", P::Gpt2), (V{"。", "日本"}));
  EXPECT_EQ(kh::splitPreTokens("Hi 😀!  ", P::Gpt2), (V{"Hi", " 😀!", "  "}));
  // Classes: Latin, Greek, Cyrillic, kana, CJK (BMP and extension B), Hangul are letters; full-
  // width and Roman-numeral digits are numbers; the ideographic space is whitespace.
  for (uint32_t cp : {0x41u, 0xE9u, 0x3B1u, 0x416u, 0x3042u, 0x30A2u, 0x4E00u, 0x20000u, 0xAC00u, 0xFF21u})
    EXPECT_TRUE(kh::isUnicodeLetter(cp)) << std::hex << cp;
  for (uint32_t cp : {0x30u, 0xFF10u, 0x2160u, 0x2460u, 0x0660u}) EXPECT_TRUE(kh::isUnicodeNumber(cp)) << std::hex << cp;
  for (uint32_t cp : {0x20u, 0x3001u, 0x3002u, 0x1F600u, 0x21u}) EXPECT_FALSE(kh::isUnicodeLetter(cp)) << std::hex << cp;
  EXPECT_TRUE(kh::isUnicodeSpace(0x3000));
  EXPECT_FALSE(kh::isUnicodeSpace(0x200B));  // zero-width space is not White_Space
}

// ---- unigram_metaspace: 0 <unk> 1 <s> 2 </s>, 3..258 <0x00>..<0xFF> (score 0), then
//  259 ▁ -2, 260 ▁the -3, 261 ▁cat -4, 262 ▁ca -3, 263 ▁world -4.5, 264 ▁wor -3, 265 ld -1,
//  266 ▁日本 -2.5, 267 日本 -3, 268 日 -4, 269 本 -4, 270 語 -4.5, 271 の -3, 272 は -3.5,
//  273.. single letters t h e c a w o l d s i n r H W at -5. Unknown characters score
//  min score - 10 = -15. Metaspace prepend_scheme "first"; template "<s> $A".

const Case kUnigramCases[] = {
    {"the cat", {260, 261}, "▁the (-3); ▁cat (-4) beats ▁ca + t (-8)"},
    {"world", {264, 265}, "▁wor + ld (-4) beats ▁world (-4.5): Viterbi, not longest match"},
    {"日本語", {266, 270}, "▁日本 + 語 (-7) beats ▁ + 日本 + 語 (-9.5)"},
    {"日本😀", {266, 243, 162, 155, 131}, "😀 has no piece: byte fallback F0 9F 98 80 -> ids 3 + byte"},
    {"the</s>the", {260, 2, 273, 274, 275}, "prepend 'first': the text after </s> gets no ▁"},
    {"the  cat", {260, 259, 261}, "split before each ▁: ▁the, ▁, ▁cat"},
};

TEST(HfTokenizerUnigram, ExactIdsFromViterbi) {
  auto tok = load("unigram_metaspace");
  for (const Case& c : kUnigramCases) {
    EXPECT_EQ(tok->encode(c.text, false), c.ids) << c.text << ": " << c.why;
    Ids withBos = c.ids;
    withBos.insert(withBos.begin(), 1);
    EXPECT_EQ(tok->encode(c.text, true), withBos) << c.text << ": template <s> $A";
  }
  EXPECT_EQ(tok->bosId(), 1);
  EXPECT_TRUE(tok->addsBos());
  EXPECT_FALSE(tok->addsEos());
  EXPECT_EQ(tok->unkId(), 0);
  EXPECT_TRUE(tok->isSpecial(1));
}

TEST(HfTokenizerUnigram, DecodeAndStreaming) {
  auto tok = load("unigram_metaspace");
  EXPECT_EQ(tok->decode({1, 260, 261}), "the cat");
  EXPECT_EQ(tok->decode({1, 260, 261}, false), "<s> the cat");  // Strip sees "<s> the cat"
  EXPECT_EQ(tok->decode({260, 2, 273, 274, 275}), "thethe");
  for (const char* t : {"the cat", "world", "日本語", "日本😀", "the  cat", "日本の猫は😀です"}) {
    Ids ids = tok->encode(t, true);
    EXPECT_EQ(tok->decode(ids), t);
    EXPECT_EQ(streamDecode(*tok, ids, true), tok->decode(ids, true)) << t;
    EXPECT_EQ(streamDecode(*tok, ids, false), tok->decode(ids, false)) << t;
  }
  kh::StreamDecoder d(*tok);
  EXPECT_EQ(d.push(1), "");
  EXPECT_EQ(d.push(266), "日本");
  EXPECT_EQ(d.push(243), "");
  EXPECT_EQ(d.push(162), "");
  EXPECT_EQ(d.push(155), "");
  EXPECT_EQ(d.push(131), "😀");
}

TEST(HfTokenizerUnigram, PrependAlwaysAndNoByteFallback) {
  json j = goldenJson("unigram_metaspace");
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  EXPECT_EQ(Variant(j).load()->encode("the</s>the", false), (Ids{260, 2, 260}));
  j["model"]["byte_fallback"] = false;
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  auto tok = Variant(j).load();
  EXPECT_EQ(tok->encode("日本😀🎉", false), (Ids{266, 0})) << "a run of unknown characters is one <unk>";
  EXPECT_EQ(tok->decode({260, 261}), "the cat");
}

// Llama-2-style tokenizer.json: BPE with byte fallback, no pre-tokenizer, the normalizer
// prepending "▁" and turning spaces into "▁", the Replace/ByteFallback/Fuse/Strip decoder.
json llamaStyleJson() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"▁", "t", "h", "e", "▁t", "he", "▁the", "日", "本", "日本"}) vocab[t] = id++;
  json added = json::array();
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", i}, {"content", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>"}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  return {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab},
        {"merges", {"▁ t", "h e", "▁t he", "日 本"}}}},
  };
}

TEST(HfTokenizerBpe, LlamaStyleByteFallbackBpe) {
  auto tok = Variant(llamaStyleJson()).load();
  // "▁the▁日本😀": ▁ t (0), h e (1), ▁t he (2), 日 本 (3); 😀 is not in the vocab: F0 9F 98 80.
  const Ids ids{265, 259, 268, 243, 162, 155, 131};
  EXPECT_EQ(tok->encode("the 日本😀", false), ids);
  Ids withBos = ids;
  withBos.insert(withBos.begin(), 1);
  EXPECT_EQ(tok->encode("the 日本😀", true), withBos);
  EXPECT_EQ(tok->decode(withBos), "the 日本😀");
  EXPECT_EQ(tok->decode(withBos, false), "<s> the 日本😀");
  EXPECT_EQ(streamDecode(*tok, withBos, true), "the 日本😀");
  // Each stretch between added tokens gets its own "▁" (Prepend runs per stretch).
  EXPECT_EQ(tok->encode("the</s>the", false), (Ids{265, 2, 265}));
}

TEST(HfTokenizerErrors, RefusedConfigurationsNameTokenizerJson) {
  json j = goldenJson("bpe_bytelevel");
  j["model"]["type"] = "WordPiece";
  expectLoadError(j, "WordPiece");

  j = goldenJson("bpe_bytelevel");
  j["model"]["merges"][3] = "in";
  expectLoadError(j, "malformed merge 3");

  j = goldenJson("bpe_bytelevel");
  j["model"]["merges"][3] = "q z";
  expectLoadError(j, "missing from the vocab");

  j = goldenJson("bpe_bytelevel");
  j["normalizer"] = {{"type", "NFKC"}};
  expectLoadError(j, "NFKC");

  j = goldenJson("bpe_bytelevel");
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expectLoadError(j, "Whitespace");

  j = goldenJson("bpe_bytelevel");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  expectLoadError(j, "regex");

  j = goldenJson("unigram_metaspace");
  j["decoder"] = nullptr;
  expectLoadError(j, "no decoder");

  j = goldenJson("unigram_metaspace");
  j["post_processor"] = {{"type", "BertProcessing"}};
  expectLoadError(j, "BertProcessing");

}

TEST(HfTokenizerErrors, NfcInputItCannotNormalizeIsRefused) {
  auto tok = load("bpe_bytelevel");  // normalizer NFC
  EXPECT_EQ(tok->encode("caf\xC3\xA9", false).size(), 5u);  // precomposed é: NFC leaves it alone
  try {
    tok->encode("cafe\xCC\x81", false);  // e + U+0301 would compose
    FAIL() << "no error";
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("U+0301"), std::string::npos) << e.what();
  }
}

}  // namespace

// BertNormalizer's lowercase is Rust's char::to_lowercase, char by char: the full Unicode mapping
// (İ becomes two code points), and characters without case (々, halfwidth ｶ) pass unchanged. The
// expected forms are Python's str.lower() of each character (same SpecialCasing data):
//   python3 -c "print([c.lower() for c in 'ÉΣİＡⅫᎠ々ｶǅ'])"
TEST(HfTokenizerWordPiece, LowercaseIsTheFullUnicodeMappingCharByChar) {
  json j = json::parse(readFile(sourceDir() + "/tests/golden/encoder/bert_tiny/tokenizer.json"));
  const std::vector<std::string> lower = {"é", "σ", "i\xCC\x87", "ａ", "ⅻ", "\xEA\xAD\xB0", "々", "ｶ", "ǆ"};
  json vocab = {{"[PAD]", 0}, {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}, {"[MASK]", 4}};
  for (size_t i = 0; i < lower.size(); ++i) vocab[lower[i]] = 5 + i;
  j["model"]["vocab"] = vocab;
  Variant v(j);
  auto tok = v.load();
  EXPECT_EQ(tok->encode("É Σ İ Ａ Ⅻ \xE1\x8E\xA0 々 ｶ ǅ", false), (Ids{5, 6, 7, 8, 9, 10, 11, 12, 13}));
  EXPECT_EQ(tok->encode("é σ", false), (Ids{5, 6}));  // already lower case: unchanged
}
