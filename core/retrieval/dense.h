// Dense side of retrieval: embedders (text -> L2-normalised vectors) and an exact FAISS inner
// product index (IndexIDMap2 over IndexFlatIP: inner product of unit vectors = cosine) keyed by
// chunk keys. FAISS headers stay in dense.cpp; torch stays in the decoder embedder.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace faiss {
struct Index;
}

namespace kh {
class Model;
class Tokenizer;
}  // namespace kh

namespace kh::retrieval {

// Called after each batch: texts done so far, of total.
using EmbedProgress = std::function<void(size_t done, size_t total)>;

class Embedder {
 public:
  virtual ~Embedder() = default;
  // What built a store's vectors; a store refuses queries from an embedder with another identity.
  virtual std::string identity() const = 0;
  virtual int dim() const = 0;
  // Unit vectors, row-major [texts.size(), dim()].
  virtual std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& progress = {}) const = 0;
};

// Mean of the final hidden states (after the last norm) of any decoder the engine runs, over the
// real tokens of each text (padding masked by position -1), then L2-normalised. Texts are sorted
// by length into batches of `batchSize`, right-padded, and truncated to `maxTokens`.
// Identity: "decoder-mean:<folder name>:<fnv1a64 of config.json and the weight file sizes>".
class DecoderEmbedder : public Embedder {
 public:
  explicit DecoderEmbedder(const std::string& modelDir, int batchSize = 16, int maxTokens = 256);
  ~DecoderEmbedder() override;
  std::string identity() const override { return identity_; }
  int dim() const override { return dim_; }
  std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& progress = {}) const override;
  const std::string& modelDir() const { return dir_; }

 private:
  std::string dir_, identity_;
  int dim_ = 0, batchSize_, maxTokens_;
  std::shared_ptr<Model> model_;
  std::shared_ptr<Tokenizer> tokenizer_;
};

struct DenseHit {
  int64_t key = 0;
  float cosine = 0;
};

class DenseIndex {
 public:
  explicit DenseIndex(int dim);
  ~DenseIndex();
  DenseIndex(DenseIndex&&) noexcept;
  DenseIndex& operator=(DenseIndex&&) noexcept;
  int dim() const { return dim_; }
  int64_t size() const;
  // vectors: [keys.size(), dim] unit rows.
  void add(const std::vector<int64_t>& keys, const std::vector<float>& vectors);
  void remove(const std::vector<int64_t>& keys);
  // Exact top k by inner product, best first. query: [dim] unit vector.
  std::vector<DenseHit> search(const float* query, int k) const;
  void save(const std::string& path) const;      // faiss::write_index to path + ".tmp", renamed
  static DenseIndex load(const std::string& path, int expectedDim);  // kh::Error with a rebuild hint

 private:
  int dim_;
  std::unique_ptr<faiss::Index> index_;
};

// Row-wise L2 normalisation in place (rows of `dim`); zero rows stay zero.
void normalizeRows(std::vector<float>& v, int dim);

}  // namespace kh::retrieval
