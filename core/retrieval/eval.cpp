// Retrieval metrics and the evaluation run folder.
#include "core/retrieval/eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace kh::retrieval {

std::vector<LabelledQuery> readLabelledQueries(const std::string& path, const DocumentStore& store) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot open the query file");
  std::vector<LabelledQuery> out;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      throw Error(where, "not a JSON object", "one {\"query\": ..., \"relevant\": [ids]} per line");
    }
    if (!j.is_object() || !j.contains("query") || !j["query"].is_string() || !j.contains("relevant") || !j["relevant"].is_array())
      throw Error(where, "needs \"query\" (string) and \"relevant\" (array of ids)");
    LabelledQuery q;
    q.query = j["query"];
    q.line = n;
    if (q.query.find_first_not_of(" \t\r\n") == std::string::npos) throw Error(where, "empty query");
    std::set<std::string> listed;
    for (const auto& r : j["relevant"]) {
      const std::string id = r.is_string() ? r.get<std::string>() : r.dump();
      if (!listed.insert(id).second) continue;  // listed twice: one relevant item, not two
      if (!store.hasId(id)) throw Error(where, "unknown id '" + id + "': no such document or chunk in " + store.dir(),
                                        "ids are document ids or <doc>#<n> chunk ids");
      q.relevant.push_back(id);
    }
    if (q.relevant.empty()) throw Error(where, "no relevant ids");
    out.push_back(std::move(q));
  }
  if (out.empty()) throw Error(path, "no queries");
  return out;
}

QueryMetrics scoreRanking(const std::vector<RetrievalHit>& ranked, const std::vector<std::string>& listed) {
  QueryMetrics m;
  std::vector<std::string> relevant;  // each id once
  for (const auto& r : listed)
    if (std::find(relevant.begin(), relevant.end(), r) == relevant.end()) relevant.push_back(r);
  if (relevant.empty()) return m;
  std::set<std::string> found;
  double dcg = 0;
  int found1 = 0, found5 = 0, found10 = 0;
  for (size_t i = 0; i < ranked.size(); ++i) {
    const int rank = static_cast<int>(i) + 1;
    bool gain = false;
    for (const auto& r : relevant)
      if ((r == ranked[i].docId || r == ranked[i].chunkId) && found.insert(r).second) gain = true;
    if (!gain) continue;
    if (m.mrr == 0) m.mrr = 1.0 / rank;
    if (rank <= 10) dcg += 1.0 / std::log2(rank + 1.0);
    const int now = static_cast<int>(found.size());
    if (rank <= 1) found1 = now;
    if (rank <= 5) found5 = now;
    if (rank <= 10) found10 = now;
  }
  const double R = static_cast<double>(relevant.size());
  m.recallAt1 = found1 / R;
  m.recallAt5 = found5 / R;
  m.recallAt10 = found10 / R;
  double idcg = 0;
  for (size_t i = 1; i <= std::min<size_t>(relevant.size(), 10); ++i) idcg += 1.0 / std::log2(static_cast<double>(i) + 1.0);
  m.ndcg10 = dcg / idcg;
  return m;
}

std::string EvalReport::table() const {
  std::ostringstream s;
  char buf[200];
  std::snprintf(buf, sizeof buf, "%-12s %7s %9s %9s %9s %7s %8s\n", "method", "queries", "recall@1", "recall@5", "recall@10", "MRR", "nDCG@10");
  s << buf;
  for (const auto& m : methods) {
    std::snprintf(buf, sizeof buf, "%-12s %7d %9.3f %9.3f %9.3f %7.3f %8.3f\n", m.method.c_str(), m.queries, m.mean.recallAt1,
                  m.mean.recallAt5, m.mean.recallAt10, m.mean.mrr, m.mean.ndcg10);
    s << buf;
  }
  return s.str();
}

EvalReport evaluateRetrieval(const DocumentStore& store, const std::vector<LabelledQuery>& queries, const SearchOptions& base,
                             const Embedder* embedder, const std::string& runDir) {
  EvalReport rep;
  // (method, reranked): the plain rows never rerank; with a reranker, one "fused+rerank" row more.
  std::vector<std::pair<Method, bool>> methods = {{Method::Bm25, false}};
  if (store.hasDense()) methods.push_back({Method::Dense, false});
  methods.push_back({Method::Fused, false});
  if (base.reranker) methods.push_back({Method::Fused, true});
  nlohmann::json perQuery = nlohmann::json::array();
  for (const auto& [m, reranked] : methods) {
    SearchOptions o = base;
    o.method = m;
    if (!reranked) o.reranker = nullptr;
    o.k = std::max(o.k, 10);
    o.threshold = "none";  // metrics over the ranking; thresholds are calibrated from these numbers
    MethodMetrics mm;
    mm.method = std::string(methodName(m)) + (reranked ? "+rerank" : "");
    for (const auto& q : queries) {
      const auto hits = store.search(q.query, o, embedder);
      const QueryMetrics qm = scoreRanking(hits, q.relevant);
      mm.mean.recallAt1 += qm.recallAt1, mm.mean.recallAt5 += qm.recallAt5, mm.mean.recallAt10 += qm.recallAt10;
      mm.mean.mrr += qm.mrr, mm.mean.ndcg10 += qm.ndcg10;
      nlohmann::json top = nlohmann::json::array();
      for (size_t i = 0; i < std::min<size_t>(hits.size(), 3); ++i) top.push_back(hits[i].chunkId);
      perQuery.push_back({{"method", mm.method}, {"line", q.line}, {"query", q.query}, {"mrr", qm.mrr}, {"recall@10", qm.recallAt10},
                          {"ndcg@10", qm.ndcg10}, {"top3", top}});
    }
    mm.queries = static_cast<int>(queries.size());
    const double n = std::max<double>(1, mm.queries);
    mm.mean.recallAt1 /= n, mm.mean.recallAt5 /= n, mm.mean.recallAt10 /= n, mm.mean.mrr /= n, mm.mean.ndcg10 /= n;
    rep.methods.push_back(mm);
  }
  if (!runDir.empty()) {
    std::filesystem::create_directories(runDir);
    nlohmann::json j = nlohmann::json::array();
    for (const auto& m : rep.methods)
      j.push_back({{"method", m.method}, {"queries", m.queries}, {"recall@1", m.mean.recallAt1}, {"recall@5", m.mean.recallAt5},
                   {"recall@10", m.mean.recallAt10}, {"mrr", m.mean.mrr}, {"ndcg@10", m.mean.ndcg10}});
    std::ofstream(runDir + "/metrics.json") << nlohmann::json{{"store", store.dir()}, {"embedder", store.embedderIdentity()},
                                                      {"reranker", base.reranker ? base.reranker->identity() : std::string()},
                                                      {"methods", j}}.dump(2) << "\n";
    std::ofstream pq(runDir + "/per_query.jsonl");
    for (const auto& q : perQuery) pq << q.dump() << "\n";
    std::ofstream(runDir + "/table.txt") << rep.table();
  }
  return rep;
}

}  // namespace kh::retrieval
