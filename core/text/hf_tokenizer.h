// Hugging Face tokenizer.json models (byte-level BPE as GPT-2/Qwen2, Unigram with Metaspace as
// llm-jp-style fast tokenizers and XLM-RoBERTa, WordPiece with BertNormalizer/BertPreTokenizer as
// BERT encoders): the normalizer, pre-tokenizer, model and decoder settings, parsed
// into a form kh::Tokenizer drives. Must never include torch, and must refuse (kh::Error naming
// tokenizer.json) every configuration it does not implement exactly rather than approximate it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/text/tokenizer.h"

namespace kh {

// Unicode classes used by the pre-tokenizer regexes (general categories L*, N*; White_Space).
bool isUnicodeLetter(uint32_t cp);
bool isUnicodeNumber(uint32_t cp);
bool isUnicodeSpace(uint32_t cp);
bool isUnicodePunctuation(uint32_t cp);  // P*
bool isUnicodeOther(uint32_t cp);        // C* (Cc, Cf, Cs, Co, Cn)
bool isCjkIdeograph(uint32_t cp);        // BERT's _is_chinese_char ranges

// Hand-coded equivalents of the pre-tokenizer regexes (std::regex has no \p{L}); each returns the
// pieces of `text` (valid UTF-8) in order, their concatenation being `text`.
enum class PreTokenizerPattern {
  Gpt2,   // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Qwen2,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Llama3  // as Qwen2 with \p{N}{1,3}
};
std::vector<std::string_view> splitPreTokens(std::string_view text, PreTokenizerPattern pattern);

// GPT-2's byte <-> printable-character table (bytes_to_unicode): the UTF-8 of byte b's stand-in.
const std::string& byteLevelSymbol(uint8_t b);

class HfTokenizerJson {
 public:
  // Parses tokenizer.json; kh::Error(path, ...) on anything malformed or unsupported.
  static std::unique_ptr<HfTokenizerJson> load(const std::string& path);

  enum class ModelType { Bpe, Unigram, WordPiece };
  enum class DecodeStyle {
    ByteLevel,  // each token's characters map back to bytes (GPT-2 table); lossy UTF-8 at the end
    Pieces,     // "▁" -> " " (Metaspace or Replace), <0xNN> byte fallback, optional first-space strip
    WordPiece   // tokens joined by spaces, "##" continuations glued, cleanup before . , ! ? and 's 'm 've 're n't
  };

  // Encodes text between added tokens (normalizer, pre-tokenizer, model). `atTextStart` says the
  // stretch begins at byte 0 of the input (Metaspace prepend_scheme "first").
  void encode(std::string_view text, bool atTextStart, std::vector<int>& out) const;

  const std::string& path() const { return path_; }
  const std::string& wordPiecePrefix() const { return wpPrefix_; }  // "##"
  bool wordPieceCleanup() const { return wpCleanup_; }
  const std::vector<std::string>& vocab() const { return vocab_; }  // by id; "" for holes
  int tokenToId(std::string_view token) const;                     // -1 when absent from the model
  const std::vector<AddedToken>& addedTokens() const { return added_; }
  const std::vector<int>& templatePrefix() const { return prefix_; }  // ids before $A in `single`
  const std::vector<int>& templateSuffix() const { return suffix_; }  // ids after $A
  std::optional<int> unkId() const { return unkId_; }
  DecodeStyle decodeStyle() const { return decodeStyle_; }
  bool byteFallback() const { return byteFallback_; }
  bool decodesByteTokens() const { return decodeBytes_; }  // decoder has ByteFallback
  // Decoder drops one leading space of the first decoded token (Metaspace decoder with a prepend
  // scheme other than "never", or Strip(" ", 1, 0) after Fuse).
  bool stripFirstSpace() const { return stripFirstSpace_; }
  std::string description() const;

 private:
  HfTokenizerJson() = default;
  void encodeWord(const std::string& word, std::vector<int>& out) const;  // BPE on one pre-token
  void encodeUnigram(const std::string& text, std::vector<int>& out) const;
  void encodeWordPiece(const std::string& word, std::vector<int>& out) const;  // greedy longest match
  std::string bertNormalize(const std::string& s) const;
  // Byte fallback, else unk (fused with an unk already pushed at or after out[fuseFrom]).
  void pushUnknown(std::string_view chars, std::vector<int>& out, size_t fuseFrom) const;

  std::string path_;
  ModelType type_ = ModelType::Bpe;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int> ids_;
  std::vector<double> scores_;  // Unigram
  double minScore_ = 0;
  size_t longestPiece_ = 0;
  static uint64_t pairKey(int a, int b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }
  std::unordered_map<uint64_t, std::pair<int, int>> merges_;  // (left id, right id) -> (rank, merged id)
  bool ignoreMerges_ = false;
  bool byteFallback_ = false;
  bool fuseUnk_ = false;
  std::optional<int> unkId_;
  std::vector<int> byteIds_ = std::vector<int>(256, -1);  // <0xNN> ids for byte fallback

  // Normalizer: a sequence of Prepend / Replace steps, and NFC on text NFC leaves alone (text
  // with a code point NFC could change is refused: full NFC composition is not implemented).
  struct NormStep {
    // Precompiled: the SentencePiece charsmap below; SpaceRuns: Replace(Regex " {2,}") -> b;
    // Strip: a = "l", "r" or "lr" (the sides whose whitespace goes).
    enum Kind { Prepend, Replace, NfcCheck, Bert, Precompiled, SpaceRuns, Strip } kind;
    std::string a, b;  // Prepend: a; Replace: a -> b
  };
  // Precompiled charsmap (SentencePiece normalizer as HF's spm_precompiled applies it): a
  // darts-clone double array of UTF-8 keys whose values are offsets into NUL-separated
  // replacements. Applied per grapheme; text whose graphemes span several code points (combining
  // marks, ZWJ, halfwidth voiced marks, jamo, regional indicators...) is refused, CR LF excepted.
  std::vector<uint32_t> charsmapTrie_;
  std::string charsmapNormalized_;
  bool charsmapLookup(std::string_view key, std::string_view& out) const;  // shortest-prefix match, as HF
  std::string applyCharsmap(const std::string& s) const;
  std::vector<NormStep> normalizer_;
  // BertNormalizer. Lowercasing is exact for ASCII; text with other cased letters is refused, as
  // is non-ASCII text when accents are to be stripped (NFD is not implemented).
  bool bertCleanText_ = true, bertChineseChars_ = true, bertStripAccents_ = false, bertLowercase_ = false;
  // WordPiece model.
  std::string wpPrefix_ = "##";
  size_t wpMaxChars_ = 100;
  bool wpCleanup_ = true;
  // Pre-tokenizer.
  enum class Pre { None, ByteLevel, Split, Metaspace, Bert } pre_ = Pre::None;
  PreTokenizerPattern pattern_ = PreTokenizerPattern::Gpt2;
  bool byteLevel_ = false;        // map bytes to GPT-2 symbols before the model
  bool addPrefixSpace_ = false;   // ByteLevel add_prefix_space
  std::string replacement_ = "\xE2\x96\x81";  // Metaspace
  enum class Prepend { Always, First, Never } prepend_ = Prepend::Always;
  bool metaspaceSplit_ = true;

  DecodeStyle decodeStyle_ = DecodeStyle::Pieces;
  bool stripFirstSpace_ = false;
  bool decodeBytes_ = false;
  std::vector<AddedToken> added_;
  std::vector<int> prefix_, suffix_;
  std::string preName_, decoderName_;
};

}  // namespace kh
