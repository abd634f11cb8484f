// Dense side of retrieval: embedders (text -> L2-normalised vectors) and a FAISS inner product
// index keyed by chunk keys: exact (IndexIDMap2 over IndexFlatIP: inner product of unit vectors =
// cosine) up to a size, approximate (IndexIDMap2 over IndexHNSWFlat, inner product) above it.
// FAISS headers stay in dense.cpp; torch stays in the embedders.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
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

// "<folder name>:<16 hex digits>": FNV-1a 64 over the contents of `files` (paths inside the model
// folder, in order), then each .safetensors file's name and size (sorted), then (withWeights) 64
// bytes from the middle of every tensor of those files. Embedder identities are built from it, so
// a store notices another model, and weights fine-tuned in place (same names and sizes). Without
// `withWeights`: the identity stores built before 2026-12 recorded (accepted for them).
std::string modelFingerprint(const std::string& modelDir, const std::vector<std::string>& files, bool withWeights = true);

class Embedder {
 public:
  virtual ~Embedder() = default;
  // What built a store's vectors; a store refuses queries from an embedder with another identity.
  virtual std::string identity() const = 0;
  // The identity an older version of this embedder gave the same model ("" when none): a store
  // that recorded it is accepted too.
  virtual std::string legacyIdentity() const { return {}; }
  virtual int dim() const = 0;
  // Unit vectors, row-major [texts.size(), dim()], of passages (what a store indexes).
  virtual std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& progress = {}) const = 0;
  // A query's unit vector [dim()]; embedders with query/passage prefixes use the query one.
  virtual std::vector<float> embedQuery(const std::string& query) const { return embed({query}); }
  // What a store records to reopen this embedder (openEmbedder() reads it back); "" when it cannot.
  virtual std::string spec() const { return ""; }
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
  std::string legacyIdentity() const override { return legacyIdentity_; }
  int dim() const override { return dim_; }
  std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& progress = {}) const override;
  const std::string& modelDir() const { return dir_; }
  std::string spec() const override;

 private:
  std::string dir_, identity_, legacyIdentity_;
  int dim_ = 0, batchSize_, maxTokens_;
  std::shared_ptr<Model> model_;
  std::shared_ptr<Tokenizer> tokenizer_;
};

struct DenseHit {
  int64_t key = 0;
  float cosine = 0;
};

// HNSW settings (FAISS IndexHNSWFlat, METRIC_INNER_PRODUCT): 16 links per node (32 on the
// bottom layer), 64 candidates while building, and max(128, k + tombstones) while searching.
// M 32 / efConstruction 80 built 100k x 768 at 95 vectors/s on the loaded 2-core box; these
// halve the links and cut the build work about 2.5x. Recall@10 against exact search:
// tests/core/test_retrieval_hnsw.cpp (random vectors), tests/bench/retrieval_bench.cpp.
struct HnswSettings {
  int m = 16, efConstruction = 64, efSearch = 128;
};
// Above this many vectors a store's dense index is HNSW (flat at 100k x 768 took 23 ms a query on
// 2 cores, HNSW about 1 ms; below 50k flat stays under ~12 ms and is exact).
constexpr int64_t kDefaultHnswAbove = 50000;

class DenseIndex {
 public:
  enum class Kind { Flat, Hnsw };
  // hnswAbove: the index is (re)built as HNSW once it holds more than this many vectors, and as
  // flat when a compaction finds it at or below (0 = always HNSW, a huge number = always exact).
  explicit DenseIndex(int dim, int64_t hnswAbove = kDefaultHnswAbove, HnswSettings hnsw = {});
  ~DenseIndex();
  DenseIndex(DenseIndex&&) noexcept;
  DenseIndex& operator=(DenseIndex&&) noexcept;
  int dim() const { return dim_; }
  int64_t size() const;  // live vectors (tombstones not counted)
  Kind kind() const { return kind_; }
  int64_t hnswAbove() const { return hnswAbove_; }
  int64_t tombstones() const { return tombstones_; }
  // Takes effect at the next add or compaction.
  void setHnswAbove(int64_t n) { hnswAbove_ = n; }
  // vectors: [keys.size(), dim] unit rows. Converts flat -> HNSW when the size passes hnswAbove.
  void add(const std::vector<int64_t>& keys, const std::vector<float>& vectors);
  // Flat: removed from FAISS. HNSW cannot remove (FAISS 1.7.3), so a removed vector becomes a
  // tombstone (its id_map label set to -1, which the saved file keeps) that search skips by
  // fetching k + tombstones; above 1000 tombstones or 10% of the index the graph is rebuilt from
  // the stored vectors of the live ones (compaction).
  void remove(const std::vector<int64_t>& keys);
  // Top k by inner product, best first (exact when flat). query: [dim] unit vector.
  std::vector<DenseHit> search(const float* query, int k) const;
  // Every live (key, vector), vectors [keys, dim] (as stored: exact copies of what was added).
  void liveVectors(std::vector<int64_t>& keys, std::vector<float>& vectors) const;
  void save(const std::string& path) const;      // faiss::write_index to path + ".tmp", renamed
  // kh::Error with a rebuild hint for a missing or corrupt file or another dimension.
  static DenseIndex load(const std::string& path, int expectedDim, int64_t hnswAbove = kDefaultHnswAbove);

 private:
  void rebuildAs(Kind kind, const std::vector<int64_t>& keys, const std::vector<float>& vectors);
  void refreshHalf();          // after a change: the fp16 mirror is stale (rebuilt when next wanted)
  void buildHalfOnce() const;  // builds the mirror, once per change, whoever searches first
  int dim_;
  int64_t hnswAbove_;
  HnswSettings hnsw_;
  Kind kind_ = Kind::Flat;
  int64_t tombstones_ = 0;
  std::unique_ptr<faiss::Index> index_;  // IndexIDMap2 over IndexFlatIP or IndexHNSWFlat
  // Flat only: the rows rounded to fp16, [ntotal, dim] (empty without F16C), and the largest row
  // norm, for the scan's error bound. Half the bytes a query streams; results stay exact. Built at
  // the second search after a change (a one-query CLI run never pays for it), under halfOnce_.
  mutable std::vector<uint16_t> half_;
  mutable double halfMaxNorm_ = 0;
  mutable std::unique_ptr<std::once_flag> halfOnce_ = std::make_unique<std::once_flag>();
  mutable std::unique_ptr<std::atomic<int>> searches_ = std::make_unique<std::atomic<int>>(0);  // since the change
};

// Row-wise L2 normalisation in place (rows of `dim`); zero rows stay zero.
void normalizeRows(std::vector<float>& v, int dim);

}  // namespace kh::retrieval
