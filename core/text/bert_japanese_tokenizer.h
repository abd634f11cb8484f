// transformers' BertJapaneseTokenizer for vocab.txt folders (ruri v1/v2, cl-tohoku BERTs): NFKC,
// MeCab words with the dictionary the folder names (mecab_kwargs.mecab_dic), then WordPiece or
// characters per word. Must never include torch, and must refuse (kh::Error naming the file and
// setting) every configuration it does not reproduce exactly: sudachi, jumanpp, basic word
// splitting, sentencepiece subwords, extra mecab_option.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kh {

// The environment variable that names a MeCab dictionary folder (the one holding dicrc, sys.dic).
inline constexpr const char* kMecabDicEnv = "KUMIHIMO_MECAB_DIC";

// A process-wide dictionary folder that beats KUMIHIMO_MECAB_DIC (the CLI's --mecab-dic); "" clears.
void setMecabDictionaryOverride(const std::string& dir);

// Where a model's MeCab dictionary is: the override, then $KUMIHIMO_MECAB_DIC, then inside the
// model folder (<name>/dicdir, <name>, dicdir), then the pip package's dicdir in the usual Python
// folders (/usr/lib/python3/dist-packages, /usr/local/lib/python3*/{dist,site}-packages,
// ~/.local/lib/python3*/site-packages, $VIRTUAL_ENV/lib/python3*/site-packages). `name` is
// mecab_kwargs.mecab_dic: unidic_lite, ipadic or unidic. kh::Error naming the model folder, the
// dictionary, the places looked at and how to point at one when none holds dicrc + sys.dic.
std::string findMecabDictionary(const std::string& modelDir, const std::string& name);
// A content fingerprint of a dictionary folder (dicrc, char.bin, unk.dic, the sizes of sys.dic and
// matrix.bin, the first MiB of sys.dic): 16 hex digits. Copies of one dictionary agree.
std::string mecabDictionaryFingerprint(const std::string& dicDir);

class BertJapaneseTokenizer {
 public:
  // True when dir/tokenizer_config.json names tokenizer_class BertJapaneseTokenizer.
  static bool isBertJapaneseFolder(const std::string& dir);
  // Reads vocab.txt and tokenizer_config.json, opens MeCab on the dictionary (findMecabDictionary).
  static std::unique_ptr<BertJapaneseTokenizer> load(const std::string& dir);
  ~BertJapaneseTokenizer();

  // Text between special tokens to ids: [lower] -> NFKC -> MeCab surfaces [-> lower] -> per word
  // whitespace split, then WordPiece (greedy longest match, "##", > 100 characters or no match:
  // [UNK]) or one id per character ([UNK] when absent).
  void encode(std::string_view text, std::vector<int>& out) const;
  // The words MeCab gives for text (after normalisation and lowercasing): for tests and `tokenize`.
  std::vector<std::string> words(std::string_view text) const;

  const std::vector<std::string>& vocab() const { return vocab_; }  // by id (vocab.txt line)
  int tokenToId(std::string_view token) const;                      // -1 when absent
  int unkId() const { return unkId_; }
  bool lowerCase() const { return lowerCase_; }
  const std::string& dictionaryName() const { return dicName_; }
  const std::string& dictionaryDir() const { return dicDir_; }
  const std::string& dictionaryFingerprint() const { return dicFingerprint_; }
  std::string description() const;

 private:
  BertJapaneseTokenizer() = default;
  void wordPiece(const std::string& word, std::vector<int>& out) const;

  struct Mecab;
  std::unique_ptr<Mecab> mecab_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int> ids_;
  int unkId_ = -1;
  bool lowerCase_ = false, normalize_ = true, characters_ = false;
  std::string dicName_, dicDir_, dicFingerprint_, unkToken_;
  std::vector<std::string> neverSplit_;  // words not lowercased
};

}  // namespace kh
