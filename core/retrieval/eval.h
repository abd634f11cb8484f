// Retrieval evaluation: labelled queries (JSONL: {"query": ..., "relevant": [doc or chunk ids]})
// scored per method (bm25, dense, fused, and fused+rerank when given a reranker) with recall@k,
// MRR and nDCG@10 (binary relevance).
// Writes a run folder; never changes the store.
#pragma once

#include <string>
#include <vector>

#include "core/retrieval/store.h"

namespace kh::retrieval {

struct LabelledQuery {
  std::string query;
  std::vector<std::string> relevant;  // doc ids or chunk ids
  int line = 0;
};
// kh::Error naming the line for bad JSON, a missing query/relevant, or an id the store lacks.
std::vector<LabelledQuery> readLabelledQueries(const std::string& path, const DocumentStore& store);

struct QueryMetrics {
  double recallAt1 = 0, recallAt5 = 0, recallAt10 = 0, mrr = 0, ndcg10 = 0;
};
// One ranked list against the relevant ids: a hit matches a relevant id equal to its doc or chunk
// id; each relevant id counts once, at its first matching rank.
QueryMetrics scoreRanking(const std::vector<RetrievalHit>& ranked, const std::vector<std::string>& relevant);

struct MethodMetrics {
  std::string method;
  QueryMetrics mean;
  int queries = 0;
};
struct EvalReport {
  std::vector<MethodMetrics> methods;
  std::string table() const;  // fixed-width text table, one row per method
};
// Runs every query with each method the store supports (dense and fused need the embedder; the
// plain rows never rerank, base.reranker adds a "fused+rerank" row and names itself in metrics.json) and
// writes <runDir>/metrics.json, <runDir>/per_query.jsonl and <runDir>/table.txt when runDir is set.
EvalReport evaluateRetrieval(const DocumentStore& store, const std::vector<LabelledQuery>& queries,
                             const SearchOptions& base, const Embedder* embedder, const std::string& runDir);

}  // namespace kh::retrieval
