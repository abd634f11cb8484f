// A retrieval workspace: documents imported from text, Markdown and JSONL files, their chunks,
// a BM25 index and (with an embedder) a FAISS index, all in one folder. Every update writes a
// new generation folder and then switches the CURRENT file to it (rename), so a reader sees the
// old store or the new one, never a mix. Search fuses dense and BM25 ranks by reciprocal rank
// fusion and explains every hit. Never holds a model unless given an embedder.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/retrieval/bm25.h"
#include "core/retrieval/dense.h"
#include "core/retrieval/text.h"

namespace kh::retrieval {

struct Chunk {
  int64_t key = 0;    // stable number (FAISS id); never reused within a store
  std::string id;     // "<doc id>#<n>"
  std::string docId;
  std::string text;
  int64_t begin = 0, end = 0;  // code points in the document
};

struct Document {
  std::string id;
  std::string source;  // file it came from (with ":<line>" for JSONL)
  std::string origin;  // absolute path of that file ("" when not imported from a file)
  std::string hash;    // fnv1a64 of the text, hex
  nlohmann::json metadata = nlohmann::json::object();
  std::vector<int64_t> chunkKeys;
};

// A document read from a file, not yet in a store.
struct SourceDocument {
  std::string id, source, text;
  nlohmann::json metadata = nlohmann::json::object();
  std::string origin;  // absolute path of the file (readSourceFile sets it)
  bool markdown = false;  // .md / .markdown: chunked by sections (ChunkOptions::markdownSections)
};
// .jsonl: one {"text": ..., "id"?: ..., "metadata"?: {...}} per line (id default "<name without
// extension>:<line>"); anything else (.txt, .md, ...) is one document with id = `name` (default: the
// file name; an import of a folder passes the path below it, e.g. "notes/a.md"). Markdown keeps its
// text as written (offsets point into the file) and is chunked by sections: a heading starts a new
// chunk. A leading UTF-8 byte order mark is dropped. kh::Error for an empty file (or one of
// only blanks and punctuation), a binary (NUL byte) file, invalid UTF-8 (byte offset and line), a
// bad JSONL line (line number).
std::vector<SourceDocument> readSourceFile(const std::string& path, const std::string& name = "");
// The files an import of `path` reads: the file itself, or every .txt, .md, .markdown and .jsonl
// under a folder (recursively, sorted). kh::Error when it does not exist or a folder has none.
std::vector<std::string> sourceFilesOf(const std::string& path);

struct ImportReport {
  int added = 0, updated = 0, unchanged = 0, removed = 0;
  int renamed = 0;  // of the unchanged: the same text from the same file under a new id (kept its vectors)
  int64_t chunksEmbedded = 0;
  // "2 added, 1 updated, 13 unchanged (1 under a new id), 0 removed": what the CLI and GUI print.
  std::string summary() const;
};

// Reranker: may rescore fused candidates (higher = better); the default keeps the fused order.
// Concrete one: DecoderReranker (core/retrieval/rerank.h).
class Reranker {
 public:
  virtual ~Reranker() = default;
  virtual std::optional<double> score(const std::string& query, const std::string& chunkText) const = 0;
  // Every chunk for one query (what search() calls); the default asks score() one at a time.
  // `progress` gets (done, total) after each step.
  virtual std::vector<std::optional<double>> scoreAll(const std::string& query, const std::vector<std::string>& chunkTexts,
                                                      const EmbedProgress& progress = {}) const {
    std::vector<std::optional<double>> out;
    for (const auto& t : chunkTexts) {
      out.push_back(score(query, t));
      if (progress) progress(out.size(), chunkTexts.size());
    }
    return out;
  }
  // What scored (e.g. "decoder-yesno:<model folder>"), for explanations; "" when unnamed.
  virtual std::string identity() const { return {}; }
};

enum class Method { Bm25, Dense, Fused };
const char* methodName(Method m);
Method parseMethod(const std::string& s);

struct SearchOptions {
  int k = 10;               // hits returned
  int candidates = 50;      // top-k taken from each of dense and BM25 before fusion
  double rrfK = 60;
  double denseWeight = 1.0, bm25Weight = 1.0;
  Method method = Method::Fused;
  // Threshold relative to the query: "relative" keeps hits with score >= relativeRatio * best;
  // "zscore" keeps hits whose score is >= zMin standard deviations above the candidates' mean;
  // "none" keeps all. The score is the reranker's when it gave one, else the method's. With a
  // negative best (a reranker's log-odds) "relative" keeps score >= best / relativeRatio.
  std::string threshold = "relative";
  double relativeRatio = 0.5;
  double zMin = 0.0;
  const Reranker* reranker = nullptr;
  // With a reranker: only the best `rerankK` candidates by the method's score are rescored; they
  // come first, ordered by the reranker's score, then the rest in the method's order, dropped
  // ("not reranked: ...").
  int rerankK = 20;
  EmbedProgress rerankProgress;  // (done, total) while reranking; may throw to cancel
};

struct RetrievalHit {
  std::string chunkId, docId, text;
  int64_t chunkKey = 0;
  std::optional<double> denseCosine;
  int denseRank = 0;  // 1-based; 0 = not in the dense top candidates
  std::optional<double> bm25Score;
  int bm25Rank = 0;
  double fusedScore = 0;  // RRF (Fused), or the method's own score (Bm25: BM25, Dense: cosine)
  std::optional<double> rerankScore;
  bool kept = true;
  std::string threshold;  // why it was kept or dropped, e.g. "fused 0.0328 >= 0.5 x best 0.0328"
  nlohmann::json toJson() const;
};

// The threshold step of search(), on its own: sets `kept` and `threshold` on every hit of a list
// sorted best first (all candidates: the z-score's mean and spread are over the whole list), by the
// reranker's score where a hit has one, else fusedScore; `options.method` names the score. In a
// reranked list (the first hit has a reranker score) the hits without one are dropped as not
// reranked and the threshold judges the others. Lets a caller re-apply another threshold to stored
// hits without querying again. kh::Error for an unknown threshold.
void applyThreshold(std::vector<RetrievalHit>& hits, const SearchOptions& options);

struct StoreOptions {
  ChunkOptions chunking;
  Bm25Params bm25;
  // Dense index kind: HNSW above this many chunks, exact flat at or below. Unset: what the store
  // recorded (store.json "hnsw_above"), else kDefaultHnswAbove. Set: recorded for later opens.
  std::optional<int64_t> hnswAbove;
};

class DocumentStore {
 public:
  // Opens the store in `dir` (creating an empty one when the folder has no store).
  static DocumentStore open(const std::string& dir, const StoreOptions& options = {});
  // As open(), for a store that must already exist: kh::Error naming `dir` when it has no CURRENT
  // file (a mistyped path is not an empty store).
  static DocumentStore openExisting(const std::string& dir, const StoreOptions& options = {});
  // The documents and chunks only, indexes not read (for rebuild() after a corrupt index).
  static DocumentStore openChunksOnly(const std::string& dir, const StoreOptions& options = {});
  // Imports files and folders: new documents are added, documents whose text hash changed are
  // re-chunked (and re-embedded), unchanged ones keep their chunks and vectors. Vanished
  // documents are removed (rule per source path): every document of the store whose file is one
  // of `paths`, or lies under one of the folders in `paths`, and that this import did not produce
  // (a JSONL line's id that is gone, a file deleted from the folder) leaves the store, BM25 and
  // the dense index. Documents from other files are untouched. A document whose text is unchanged
  // but whose id is new (a JSONL line without an id, renumbered by a line inserted above it) keeps
  // its chunks and vectors under the new id. An id that another, still existing file already gave a
  // document is refused. All of it is one new generation (or nothing, on an error; the object is
  // then as the store on disk). The embedder must match the one that built the store (kh::Error
  // naming both otherwise); with none, a store that has dense vectors refuses.
  ImportReport importFiles(const std::vector<std::string>& paths, const Embedder* embedder,
                           const EmbedProgress& progress = {});
  // As importFiles, for documents already read; `scopes` are the absolute file or folder paths
  // whose vanished documents are removed (none: nothing is removed).
  ImportReport importDocuments(const std::vector<SourceDocument>& docs, const Embedder* embedder,
                               const EmbedProgress& progress = {}, const std::vector<std::string>& scopes = {});
  // Rebuilds BM25 from the chunks and (with an embedder) the dense index from scratch; saves.
  void rebuild(const Embedder* embedder, const EmbedProgress& progress = {});

  // Ranked hits (kept and dropped, best first, at most options.k). kh::Error for an empty query,
  // for a dense/fused query without an embedder on a store that has vectors, or with another one.
  std::vector<RetrievalHit> search(const std::string& query, const SearchOptions& options,
                                   const Embedder* embedder) const;

  const std::string& dir() const { return dir_; }
  const ChunkOptions& chunking() const { return options_.chunking; }  // as the store recorded it
  const std::vector<Document>& documents() const { return docs_; }
  const std::vector<Chunk>& chunks() const { return chunks_; }
  const std::string& embedderIdentity() const { return embedderIdentity_; }  // "" when BM25 only
  const std::string& embedderModel() const { return embedderModel_; }        // model folder it was given as
  void setEmbedderModel(const std::string& dir) { embedderModel_ = dir; }
  bool hasDense() const { return dense_ != nullptr; }
  const DenseIndex* dense() const { return dense_.get(); }
  int64_t hnswAbove() const { return hnswAbove_; }
  Bm25Index& bm25() { return bm25_; }
  const Bm25Index& bm25() const { return bm25_; }
  const Chunk* chunkByKey(int64_t key) const;
  bool hasId(const std::string& docOrChunkId) const;

 private:
  static DocumentStore openImpl(const std::string& dir, const StoreOptions& options, bool withIndexes);
  void rebuildImpl(const Embedder* embedder, const EmbedProgress& progress);
  // After a failed update: the object becomes the store as on disk (CURRENT still names the old
  // generation); without its indexes when those cannot be read.
  void reloadFromDisk();
  ImportReport importImpl(const std::vector<SourceDocument>& docs, const Embedder* embedder, const EmbedProgress& progress,
                          const std::vector<std::string>& scopes);
  void checkEmbedder(const Embedder* embedder, bool forQuery) const;
  void rebuildBm25();
  void save();
  std::string dir_;
  StoreOptions options_;
  std::vector<Document> docs_;
  std::vector<Chunk> chunks_;  // BM25 numbering = position here
  int64_t nextKey_ = 0;
  std::string embedderIdentity_, embedderModel_;
  int embedderDim_ = 0;
  int64_t hnswAbove_ = kDefaultHnswAbove;
  Bm25Index bm25_;
  std::unique_ptr<DenseIndex> dense_;
  std::unordered_map<int64_t, size_t> byKey_;
  int64_t generation_ = 0;
};

}  // namespace kh::retrieval
