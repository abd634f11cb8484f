// A reranker from any decoder LLM the engine runs: asks the model, through its own chat template,
// whether a passage answers the query, and scores log P(yes) - log P(no) at the answer position.
// Never generates text and never changes the model; useful scores need a real instruction model
// (the tiny random test models give noise, which is enough to test the mechanics).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/retrieval/store.h"

namespace kh {
class Model;
class Tokenizer;
}  // namespace kh

namespace kh::retrieval {

// The fixed relevance prompt: one user turn, rendered with the model's chat template and its
// generation prompt (the assistant turn is open; the answer is the next token):
//   次の文章が質問の答えを含んでいるか判定してください。含んでいれば「<yes>」、含んでいなければ
//   「<no>」とだけ答えてください。\n\n質問: <query>\n\n文章: <chunk>
// Answer words, tried in order: (はい, いいえ), then (yes, no), unless RerankOptions::answers names
// the pair. A pair is used when each word is one token right after the rendered prompt (prompt +
// word tokenises as the prompt's tokens plus exactly one more) and the two tokens differ; the
// <yes>/<no> in the prompt are that pair's words.
std::string rerankPrompt(const std::string& query, const std::string& chunk, const std::string& yes, const std::string& no);

// "YES,NO" -> {YES, NO}; "" -> nullopt (the default pairs). kh::Error unless two different
// non-empty words separated by one comma.
std::optional<std::pair<std::string, std::string>> parseAnswerWords(const std::string& text);

struct RerankOptions {
  // The answer pair to use instead of the defaults (e.g. {"Yes", "No"} for a model that answers
  // capitalised, or whatever single tokens a small test tokenizer has).
  std::optional<std::pair<std::string, std::string>> answers;
  int batchSize = 8;      // pairs per forward pass (right-padded; padding masked by position -1)
  // A forward pass returns logits for every position, [B, T, vocab] fp32: a batch is cut smaller
  // when it would exceed this (gemma-2's 256k vocabulary x 500 tokens is 0.5 GB a row).
  int64_t maxLogitBytes = int64_t(1) << 30;
  int maxChunkTokens = 384;  // the chunk is cut to this many tokens (of its own encoding) first
  std::string templateOverride;  // chat format name; "" = detect from the tokenizer
  std::string device = "cpu";
  const std::atomic<bool>* cancel = nullptr;  // checked between batches: kh::Error("rerank", "cancelled")
};

class DecoderReranker : public Reranker {
 public:
  // kh::Error naming the folder when it is not a model folder, has no tokenizer or no known chat
  // template, or when neither answer pair is single tokens for its tokenizer (both named).
  explicit DecoderReranker(const std::string& modelDir, const RerankOptions& options = {});
  ~DecoderReranker() override;

  std::optional<double> score(const std::string& query, const std::string& chunkText) const override;
  std::vector<std::optional<double>> scoreAll(const std::string& query, const std::vector<std::string>& chunkTexts,
                                              const EmbedProgress& progress = {}) const override;
  std::string identity() const override { return "decoder-yesno:" + dir_; }

  const std::string& modelDir() const { return dir_; }
  const std::string& yesWord() const { return yes_; }
  const std::string& noWord() const { return no_; }
  int yesToken() const { return yesId_; }
  int noToken() const { return noId_; }
  // The prompt's token ids for one pair exactly as scored (chunk already cut); the model's next
  // token after them is the answer. What a test feeds to an unbatched forward pass.
  std::vector<int> promptIds(const std::string& query, const std::string& chunkText) const;
  const Model& model() const { return *model_; }

 private:
  std::string dir_;
  RerankOptions options_;
  std::shared_ptr<Model> model_;
  std::shared_ptr<Tokenizer> tok_;
  int format_ = 0;  // kh::ChatFormat
  std::string bos_, eos_, yes_, no_;
  int yesId_ = -1, noId_ = -1;
};

}  // namespace kh::retrieval
