// Sentence embeddings from BERT / XLM-RoBERTa / ModernBERT encoders (multilingual-e5, ruri v1/v2,
// ruri-v3): the prefixes their model cards prescribe, mean pooling over real tokens, L2
// normalisation; and openEmbedder(), which turns a CLI --embedder spec or a store's record into
// an embedder. Never used for generation; holds one encoder and its tokenizer.
#pragma once

#include <memory>
#include <string>

#include "core/retrieval/dense.h"

namespace kh {
class TextEncoder;
class Tokenizer;
}  // namespace kh

namespace kh::retrieval {

// Query / passage prefixes per model card: e5 "query: " / "passage: "; ruri (v1, v2) "クエリ: " /
// "文章: "; ruri-v3 "検索クエリ: " / "検索文書: "; none: no prefix.
struct EmbedPrefixes {
  std::string style, query, passage;
};
// kh::Error for an unknown style. "auto": from the folder name (e5, ruri-v3, ruri; else none).
EmbedPrefixes prefixesFor(const std::string& style, const std::string& modelDir);

// Identity: "encoder-mean:<folder name>:<fnv1a64 of config.json, tokenizer.json (vocab.txt and
// tokenizer_config.json for BertJapaneseTokenizer) and the weight file sizes>:<prefix style>
// [:mecab:<dictionary>:<fingerprint>]", so a store built with other prefixes or another MeCab
// dictionary refuses the queries.
class EncoderEmbedder : public Embedder {
 public:
  // kh::Error for an unsupported encoder (see loadTextEncoder) or tokenizer: a folder needs
  // tokenizer.json, or vocab.txt with BertJapaneseTokenizer (ruri v1/v2: MeCab + WordPiece, its
  // dictionary found as core/text/bert_japanese_tokenizer.h says, e.g. $KUMIHIMO_MECAB_DIC).
  EncoderEmbedder(const std::string& modelDir, const std::string& prefixStyle = "auto", int batchSize = 16,
                  int maxTokens = 512);
  ~EncoderEmbedder() override;
  std::string identity() const override { return identity_; }
  std::string legacyIdentity() const override { return legacyIdentity_; }
  int dim() const override { return dim_; }
  std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& progress = {}) const override;
  std::vector<float> embedQuery(const std::string& query) const override;
  std::string spec() const override;  // "encoder[<style>]:<absolute folder>"
  const EmbedPrefixes& prefixes() const { return prefixes_; }
  // The token ids embed() feeds the encoder for one text (prefix already added by the caller).
  std::vector<int64_t> tokenIds(const std::string& text) const;
  // Embeds texts exactly as given (no prefix added).
  std::vector<float> embedRaw(const std::vector<std::string>& texts, const EmbedProgress& progress = {}) const;

 private:
  std::string dir_, identity_, legacyIdentity_;
  EmbedPrefixes prefixes_;
  int dim_ = 0, batchSize_, maxTokens_;
  std::shared_ptr<TextEncoder> model_;
  std::shared_ptr<Tokenizer> tokenizer_;
};

// Opens an embedder from a spec: "encoder:DIR" or "encoder[STYLE]:DIR" (STYLE overrides
// `prefixStyle`), "decoder:DIR", or a bare DIR (an encoder when config.json's model_type is
// bert, xlm-roberta or modernbert, else a decoder). kh::Error naming the folder otherwise.
std::unique_ptr<Embedder> openEmbedder(const std::string& spec, const std::string& prefixStyle = "auto");
// The model folder a spec names.
std::string embedderFolder(const std::string& spec);
// The embedder to import or search with: `spec` when given (with `prefixStyle`), else the one a
// store recorded (`recorded`, its prefix style inside) when its folder still exists, else nullptr
// (the store then refuses what needs vectors, naming the missing model).
std::unique_ptr<Embedder> chooseEmbedder(const std::string& spec, const std::string& prefixStyle, const std::string& recorded);

}  // namespace kh::retrieval
