// Tokenizers of Hugging Face model folders (SentencePiece tokenizer.model plus the JSON around
// it), a streaming detokenizer, and SentencePiece training. Must never include or link
// sentencepiece itself: everything goes through the dlopen'ed shim (core/text/sp_loader.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kh {

enum class TokenizerKind { None, SentencePiece, HfTokenizerJson, BertJapanese };

class HfTokenizerJson;         // core/text/hf_tokenizer.h
class BertJapaneseTokenizer;  // core/text/bert_japanese_tokenizer.h

struct AddedToken {
  int id;
  std::string content;
  bool special;
  bool lstrip = false;  // swallow whitespace before it when encoding (HF AddedToken.lstrip)
  bool rstrip = false;  // ... and after it
};

// What a tokenizer.model says about itself, read straight from its protobuf bytes (no shim).
struct SentencePieceModelInfo {
  std::string modelType = "unigram";  // unigram, bpe, word, char
  int pieces = 0;
  bool byteFallback = false;
  bool addDummyPrefix = true;
  bool removeExtraWhitespaces = true;
  std::string normalizerName;               // e.g. "nmt_nfkc", "identity"
  std::string unkSurface = " \xE2\x81\x87 ";  // what <unk> decodes to
};
// Throws kh::Error(path, ...) when the bytes are not a SentencePiece model.
SentencePieceModelInfo readSentencePieceModelInfo(const std::string& bytes, const std::string& path);

class Tokenizer {
 public:
  // Loads from a Hugging Face model folder: tokenizer.model (SentencePiece) plus, when present,
  // tokenizer_config.json, special_tokens_map.json, added_tokens.json, chat_template.jinja.
  // A folder with only tokenizer.json loads it instead (core/text/hf_tokenizer.h: byte-level BPE,
  // Unigram with Metaspace); bos/eos to add then come from its TemplateProcessing post-processor.
  // A folder whose tokenizer_config.json names BertJapaneseTokenizer (vocab.txt, MeCab words then
  // WordPiece, as ruri v1/v2 and cl-tohoku BERTs) loads that, whatever else the folder holds, as
  // transformers does (core/text/bert_japanese_tokenizer.h); [CLS] ... [SEP] are added then.
  static std::shared_ptr<Tokenizer> fromFolder(const std::string& dir);
  // Detect without loading (for `inspect`): which kind the folder holds, and a short description.
  static TokenizerKind detect(const std::string& dir, std::string* description = nullptr);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  TokenizerKind kind() const {
    return bj_ ? TokenizerKind::BertJapanese : hf_ ? TokenizerKind::HfTokenizerJson : TokenizerKind::SentencePiece;
  }
  // What, beyond the folder's own files, decides the ids: "mecab:<dictionary name>:<fingerprint>"
  // for a MeCab-based tokenizer (the dictionary lives outside the model folder), else "".
  std::string segmenterIdentity() const;
  std::string description() const;  // e.g. "sentencepiece unigram, 512 pieces, byte fallback"
  int vocabSize() const;            // max id + 1 over SP pieces and added tokens
  // Text to ids. Splits on added tokens (longest first), encodes the text between them with
  // SentencePiece, adds bos/eos per add_bos_token/add_eos_token when addSpecial.
  // kh::Error("tokenizer input", "invalid UTF-8 at byte N") on bad input.
  std::vector<int> encode(std::string_view text, bool addSpecial = true) const;
  // SentencePiece decoding; special tokens dropped when skipSpecial, else written as their text.
  // Throws kh::Error for an id outside [0, vocabSize()).
  std::string decode(const std::vector<int>& ids, bool skipSpecial = true) const;
  std::string idToPiece(int id) const;          // kh::Error if out of range
  int pieceToId(std::string_view piece) const;  // -1 when absent (added tokens included)
  std::optional<int> bosId() const { return bosId_; }
  std::optional<int> eosId() const { return eosId_; }
  std::optional<int> padId() const { return padId_; }
  std::optional<int> unkId() const { return unkId_; }
  std::string bosToken() const { return tokenText(bosId_); }  // "" when none
  std::string eosToken() const { return tokenText(eosId_); }
  std::string padToken() const { return tokenText(padId_); }
  std::string unkToken() const { return tokenText(unkId_); }
  const std::vector<AddedToken>& addedTokens() const { return added_; }
  bool isSpecial(int id) const;  // special added tokens, SentencePiece control pieces, bos/eos/pad
  bool addsBos() const { return addBos_ && bosId_.has_value(); }
  bool addsEos() const { return addEos_ && eosId_.has_value(); }
  const std::string& chatTemplate() const { return chatTemplate_; }  // raw template text, "" when none
  const SentencePieceModelInfo& modelInfo() const { return info_; }
  const std::string& modelPath() const { return modelPath_; }
  // The shim's own decode of ids that are all SentencePiece pieces (no added-token handling):
  // the reference that decode() is tested against. kh::Error for a tokenizer.json tokenizer.
  std::string sentencePieceDecode(const std::vector<int>& ids) const;

 private:
  friend class StreamDecoder;
  Tokenizer() = default;
  enum PieceKind : uint8_t { kNormal, kControl, kUnknown, kByte, kUnused, kAdded, kHole };
  struct Piece {
    std::string text;  // piece as stored; for kAdded the added token's content
    PieceKind kind = kNormal;
    uint8_t byte = 0;  // value of a <0xNN> piece
    bool special = false;
  };
  std::string tokenText(const std::optional<int>& id) const;
  void encodeSentencePiece(std::string_view text, std::vector<int>& out) const;
  // The text between added tokens: SentencePiece, or the tokenizer.json model.
  void encodeChunk(std::string_view text, bool atTextStart, std::vector<int>& out) const;
  static std::shared_ptr<Tokenizer> fromHfTokenizerJson(const std::string& dir);
  static std::shared_ptr<Tokenizer> fromBertJapanese(const std::string& dir);
  // tokenizer_config.json, special_tokens_map.json, added_tokens.json, chat templates: fills
  // added_, the special ids and flags on top of the model's `modelPieces` pieces.
  void readFolderJson(const std::string& dir, int modelPieces, std::map<int, AddedToken> added,
                      const std::function<int(const std::string&)>& modelLookup, bool hfJson);
  const Piece& piece(int id) const;  // throws kh::Error when out of range

  struct ShimModel;
  std::unique_ptr<ShimModel> sp_;
  std::unique_ptr<HfTokenizerJson> hf_;  // set instead of sp_ for tokenizer.json folders
  std::unique_ptr<BertJapaneseTokenizer> bj_;  // ... or for BertJapaneseTokenizer folders
  SentencePieceModelInfo info_;
  std::string modelPath_;
  std::vector<Piece> pieces_;  // by id, SP pieces then added tokens beyond them
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, size_t> addedByContent_;  // content -> index in added_
  bool addedFirstByte_[256] = {};                          // bytes an added token starts with
  size_t addedLongest_ = 0;
  std::optional<int> bosId_, eosId_, padId_, unkId_;
  bool addBos_ = true, addEos_ = false;
  std::string chatTemplate_;
};

// Incremental detokenizer for streaming: push ids one at a time, get back only complete UTF-8
// text; a multi-byte character split across byte-fallback tokens is held until complete.
// The concatenation of all push() results plus finish() equals decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skipSpecial = true);
  std::string push(int id);
  std::string finish();  // flushes what is held (an incomplete tail becomes U+FFFD)

 private:
  void flushBytes(std::string& out, bool final);
  std::string pushHf(int id);
  void flushLossy(std::string& out, bool final);
  const Tokenizer& tok_;
  bool skipSpecial_;
  // SentencePiece's decoder state: whether a leading "▁" may still be the dummy prefix
  // (is_bos_ws), whether the last piece consumed one (bos_ws_seen), and whether any text is out.
  bool bosWs_ = true, bosWsSeen_ = false, written_ = false;
  std::string bytes_;  // byte-fallback bytes not yet written
};

// Train a SentencePiece model (through the shim) from sentences; writes <prefix>.model/.vocab.
// The same sentences and options give the same .model bytes, whatever the output folder (no path
// is stored). Keep threads = 1 for models meant to be reproduced: a unigram model trained with
// another thread count has other pieces. `seed` feeds SentencePiece's generator (unused by
// 0.1.97 unless it samples sentences, which we never ask for).
struct SentencePieceTrainOptions {
  int vocabSize = 512;
  std::string modelType = "unigram";
  bool byteFallback = true;
  double characterCoverage = 0.9995;
  int unkId = 0, bosId = 1, eosId = 2, padId = -1;
  std::vector<std::string> userDefinedSymbols;
  std::vector<std::string> controlSymbols;
  uint64_t seed = 1;
  int threads = 1;
  // Normalization as SentencePiece's defaults; Llama-style LLM tokenizers use "identity",
  // addDummyPrefix true, removeExtraWhitespaces false, splitDigits true.
  std::string normalizationRule = "nmt_nfkc";
  bool addDummyPrefix = true;
  bool removeExtraWhitespaces = true;
  bool splitDigits = false;
  bool allowWhitespaceOnlyPieces = false;
  // Surface of the special pieces (Gemma: <bos>, <eos>); SentencePiece's defaults otherwise.
  std::string unkPiece = "<unk>", bosPiece = "<s>", eosPiece = "</s>", padPiece = "<pad>";
};
void trainSentencePiece(const std::vector<std::string>& sentences, const std::string& modelPrefix,
                        const SentencePieceTrainOptions& opt);

// Deterministic synthetic Japanese text (hiragana/katakana/kanji, names, numbers, 。！？ endings,
// some ASCII), written by us, for training tiny tokenizers and for tests.
std::vector<std::string> makeJapaneseCorpus(uint64_t seed, int sentences);

}  // namespace kh
