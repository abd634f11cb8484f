// BM25 over character bigrams (and unigrams) of normalised text (core/retrieval/text.h). Chunks
// are numbered 0..N-1 in the order they were added. Persisted as one binary file; a file that
// does not read back whole is refused with a rebuild hint. Never sees embeddings or torch.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kh::retrieval {

struct Bm25Params {
  double k1 = 1.2;
  double b = 0.75;
};

struct ScoredChunk {
  int64_t chunk = 0;  // 0..N-1
  double score = 0;
};

class Bm25Index {
 public:
  explicit Bm25Index(Bm25Params p = {}) : params_(p) {}
  // Adds the next chunk (number size()); `text` is raw UTF-8 (normalised here).
  void add(std::string_view text);
  int64_t size() const { return static_cast<int64_t>(lengths_.size()); }
  const Bm25Params& params() const { return params_; }
  void setParams(Bm25Params p) { params_ = p; }

  // Query terms: searchTerms(normalizeForSearch(query), false), each distinct term counted once.
  // score(d) = sum_t idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avglen)),
  // idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)); len(d) = the chunk's number of bigram terms.
  // Returns the k best chunks with score > 0, best first (ties: lower chunk number first).
  std::vector<ScoredChunk> search(std::string_view query, int k) const;
  static std::vector<std::string> queryTerms(std::string_view query);

  void save(const std::string& path) const;                   // written to path + ".tmp", then renamed
  static Bm25Index load(const std::string& path);             // kh::Error with a rebuild hint when corrupt

 private:
  struct Posting {
    uint32_t chunk;
    uint32_t tf;
  };
  Bm25Params params_;
  std::unordered_map<std::string, std::vector<Posting>> postings_;  // by term, chunks ascending
  std::vector<uint32_t> lengths_;                                   // bigram terms per chunk
  uint64_t totalLength_ = 0;
};

}  // namespace kh::retrieval
