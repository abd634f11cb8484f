// Dense index above its HNSW threshold: recall@10 against exhaustive brute-force search, exact
// equality below it, removal (tombstones, compaction), persistence, and the store's recorded choice.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "core/retrieval/store.h"
#include "tests/test_util.h"
#include "tests/core/bytes_embedder.h"

using namespace kh::retrieval;
using kh::test::TempDir;

namespace {

std::vector<float> randomUnit(int n, int dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> v(static_cast<size_t>(n) * static_cast<size_t>(dim));
  for (auto& x : v) x = g(rng);
  normalizeRows(v, dim);
  return v;
}

// Exhaustive top k (double dot products) over the rows whose key is not in `gone`.
std::vector<std::pair<double, int64_t>> bruteForce(const float* q, const std::vector<float>& v, const std::vector<int64_t>& keys,
                                                    int dim, int k, const std::set<int64_t>& gone = {}) {
  std::vector<std::pair<double, int64_t>> all;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (gone.count(keys[i])) continue;
    double s = 0;
    for (int c = 0; c < dim; ++c) s += double(q[c]) * v[i * static_cast<size_t>(dim) + static_cast<size_t>(c)];
    all.push_back({s, keys[i]});
  }
  std::partial_sort(all.begin(), all.begin() + k, all.end(), [](auto& a, auto& b) { return a.first > b.first; });
  all.resize(static_cast<size_t>(k));
  return all;
}

// Mean recall@10 of the index against brute force over `nq` random queries; no removed key may appear.
double recallAt10(const DenseIndex& ix, const std::vector<float>& v, const std::vector<int64_t>& keys, int dim,
                  const std::set<int64_t>& gone = {}) {
  const int nq = 100;
  const auto qs = randomUnit(nq, dim, 99);
  double hit = 0;
  for (int q = 0; q < nq; ++q) {
    const float* qv = qs.data() + static_cast<size_t>(q) * static_cast<size_t>(dim);
    const auto truth = bruteForce(qv, v, keys, dim, 10, gone);
    const auto got = ix.search(qv, 10);
    EXPECT_EQ(got.size(), 10u);
    std::set<int64_t> want;
    for (const auto& t : truth) want.insert(t.second);
    for (const auto& h : got) {
      EXPECT_EQ(gone.count(h.key), 0u) << "removed key " << h.key << " returned";
      hit += want.count(h.key);
      // The reported cosine is the hit's true inner product with the query.
      const auto row = std::find(keys.begin(), keys.end(), h.key) - keys.begin();
      double dot = 0;
      for (int c = 0; c < dim; ++c) dot += double(qv[c]) * v[static_cast<size_t>(row) * static_cast<size_t>(dim) + static_cast<size_t>(c)];
      EXPECT_NEAR(h.cosine, dot, 1e-5);
    }
  }
  return hit / (nq * 10.0);
}

}  // namespace

TEST(RetrievalHnsw, FlatBelowThresholdIsExactHnswAboveRecallsAtLeast95Percent) {
  const int dim = 48, n = 4000;
  const auto v = randomUnit(n, dim, 1);
  std::vector<int64_t> keys(n);
  for (int i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = 7 + 2 * i;
  DenseIndex ix(dim, /*hnswAbove=*/1000);
  // 1000 vectors: still flat, and equal to brute force exactly (order and cosine).
  ix.add(std::vector<int64_t>(keys.begin(), keys.begin() + 1000), std::vector<float>(v.begin(), v.begin() + 1000 * dim));
  EXPECT_EQ(ix.kind(), DenseIndex::Kind::Flat);
  const auto qs = randomUnit(20, dim, 5);
  const std::vector<int64_t> first(keys.begin(), keys.begin() + 1000);
  for (int q = 0; q < 20; ++q) {
    const auto truth = bruteForce(qs.data() + q * dim, v, first, dim, 10);
    const auto got = ix.search(qs.data() + q * dim, 10);
    ASSERT_EQ(got.size(), 10u);
    for (size_t r = 0; r < 10; ++r) {
      EXPECT_EQ(got[r].key, truth[r].second);
      EXPECT_NEAR(got[r].cosine, truth[r].first, 1e-5);
    }
  }
  // One more batch takes it past 1000: rebuilt as HNSW with every vector.
  ix.add(std::vector<int64_t>(keys.begin() + 1000, keys.end()), std::vector<float>(v.begin() + 1000 * dim, v.end()));
  EXPECT_EQ(ix.kind(), DenseIndex::Kind::Hnsw);
  EXPECT_EQ(ix.size(), n);
  const double r = recallAt10(ix, v, keys, dim);
  EXPECT_GE(r, 0.95);
  // The stored vectors are the ones added (the flat -> HNSW conversion copied them exactly).
  std::vector<int64_t> lk;
  std::vector<float> lv;
  ix.liveVectors(lk, lv);
  ASSERT_EQ(lk, keys);
  EXPECT_EQ(lv, v);
}

TEST(RetrievalHnsw, RemovalTombstonesPersistAndCompactionRebuilds) {
  const int dim = 32, n = 3000;
  const auto v = randomUnit(n, dim, 2);
  std::vector<int64_t> keys(n);
  for (int i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = i;
  DenseIndex ix(dim, 0);  // always HNSW
  ix.add(keys, v);
  ASSERT_EQ(ix.kind(), DenseIndex::Kind::Hnsw);
  // Remove the 100 true nearest neighbours of the first queries' answers and some others.
  std::set<int64_t> gone;
  const auto qs = randomUnit(100, dim, 99);
  for (int q = 0; q < 10; ++q)
    for (const auto& t : bruteForce(qs.data() + q * dim, v, keys, dim, 10)) gone.insert(t.second);
  for (int i = 0; i < 100; ++i) gone.insert(i * 17);
  ix.remove(std::vector<int64_t>(gone.begin(), gone.end()));
  EXPECT_EQ(ix.tombstones(), static_cast<int64_t>(gone.size()));  // below 10%: no compaction yet
  EXPECT_EQ(ix.size(), n - static_cast<int64_t>(gone.size()));
  EXPECT_GE(recallAt10(ix, v, keys, dim, gone), 0.95);
  // Saved and loaded: still HNSW, the removed keys still gone.
  TempDir d;
  ix.save(d.file("h.faiss"));
  auto back = DenseIndex::load(d.file("h.faiss"), dim, 0);
  EXPECT_EQ(back.kind(), DenseIndex::Kind::Hnsw);
  EXPECT_EQ(back.size(), ix.size());
  EXPECT_EQ(back.tombstones(), ix.tombstones());
  EXPECT_GE(recallAt10(back, v, keys, dim, gone), 0.95);
  // Past 10% removed: the graph is rebuilt from the live vectors (no tombstones left); with the
  // threshold raised above the remaining count, the rebuilt index is exact flat again.
  back.setHnswAbove(100000);
  std::vector<int64_t> more;
  for (int i = 0; i < 400; ++i)
    if (!gone.count(i * 7 + 1)) more.push_back(i * 7 + 1), gone.insert(i * 7 + 1);
  back.remove(more);
  EXPECT_EQ(back.tombstones(), 0);
  EXPECT_EQ(back.kind(), DenseIndex::Kind::Flat);
  EXPECT_EQ(back.size(), n - static_cast<int64_t>(gone.size()));
  EXPECT_DOUBLE_EQ(recallAt10(back, v, keys, dim, gone), 1.0);
}

using HashEmbedder = kh::test::BytesEmbedder;

TEST(RetrievalHnsw, StoreRecordsItsThresholdAndChoosesTheKind) {
  TempDir d;
  std::vector<SourceDocument> docs;
  for (int i = 0; i < 12; ++i) docs.push_back({"d" + std::to_string(i), "mem", "文書" + std::to_string(i) + "は猫の話です。", {}});
  HashEmbedder emb;
  StoreOptions o;
  o.hnswAbove = 10;
  auto s = DocumentStore::open(d.file("store"), o);
  s.importDocuments(std::vector<SourceDocument>(docs.begin(), docs.begin() + 8), &emb);
  EXPECT_EQ(s.dense()->kind(), DenseIndex::Kind::Flat);
  auto s2 = DocumentStore::open(d.file("store"));  // no option: the recorded 10
  EXPECT_EQ(s2.hnswAbove(), 10);
  s2.importDocuments(docs, &emb);
  EXPECT_EQ(s2.dense()->kind(), DenseIndex::Kind::Hnsw);
  auto s3 = DocumentStore::open(d.file("store"));
  EXPECT_EQ(s3.dense()->kind(), DenseIndex::Kind::Hnsw);
  EXPECT_EQ(s3.dense()->size(), 12);
  SearchOptions so;
  so.method = Method::Dense;
  so.k = 12;
  so.threshold = "none";
  EXPECT_EQ(s3.search("文書3は猫の話です。", so, &emb).size(), 12u);
}
