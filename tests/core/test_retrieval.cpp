// Retrieval: chunking, normalisation, BM25 against a brute-force twin, FAISS against exhaustive
// search, fused search on the researcher's persona case, re-import, persistence and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <random>
#include <set>

#include "core/error.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/retrieval/encoder_embedder.h"
#include "core/retrieval/eval.h"
#include "core/retrieval/store.h"
#include "tests/test_util.h"
#include "tests/core/bytes_embedder.h"

using namespace kh::retrieval;
using kh::test::TempDir;
using kh::test::writeFile;

namespace {

std::vector<char32_t> cps(const std::string& s) { return decodeUtf8(s, "test"); }

using CountingEmbedder = kh::test::BytesEmbedder;  // bag of bytes, counts what it embedded

// The cosine of a query and a text embedded again, outside the store (unit vectors: a dot product).
double reembeddedCosine(const Embedder& emb, const std::string& query, const std::string& text) {
  const auto qv = emb.embedQuery(query);
  const auto cv = emb.embed({text});
  double dot = 0;
  for (size_t i = 0; i < static_cast<size_t>(emb.dim()); ++i) dot += double(qv[i]) * cv[i];
  return dot;
}

std::string expectError(const std::function<void()>& f) {
  try {
    f();
  } catch (const kh::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no kh::Error";
  return {};
}

}  // namespace

TEST(RetrievalText, ChunksAtSentenceEndsAndNewlinesWithOverlap) {
  const auto doc = cps("一文目です。二文目です！三文目？\n四行目");
  ChunkOptions o;
  o.targetChars = 8;
  o.overlapChars = 0;
  auto c = chunkText(doc, o);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].text, "一文目です。二文目です！");
  EXPECT_EQ(c[0].begin, 0);
  EXPECT_EQ(c[0].end, 12);
  EXPECT_EQ(c[1].text, "三文目？\n四行目");
  EXPECT_EQ(c[1].begin, 12);
  EXPECT_EQ(c[1].end, 20);
  o.overlapChars = 6;  // the last whole sentence (6 chars) of a chunk starts the next
  c = chunkText(doc, o);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[1].text, "二文目です！三文目？");
  EXPECT_EQ(c[2].text, "三文目？\n四行目");
  // A sentence longer than the target is cut at the target.
  o.overlapChars = 0;
  std::string longSentence;
  for (int i = 0; i < 20; ++i) longSentence += "あ";
  c = chunkText(cps(longSentence), o);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].end - c[0].begin, 8);
  EXPECT_EQ(c[2].end - c[2].begin, 4);
  // Closing brackets stay with their sentence.
  c = chunkText(cps("「はい。」と言った。"), ChunkOptions{5, 0});
  ASSERT_GE(c.size(), 1u);
  EXPECT_EQ(c[0].text, "「はい。」");
}

// NFKC as Python's unicodedata computes it (tests/golden/retrieval/nfkc.jsonl, written by
// tests/tools/make_nfkc_golden.py), then ASCII lower case: squares, circled numbers, ligatures,
// non-BMP letters, combining marks, a code point that expands to 18.
TEST(RetrievalText, NormalisationIsNfkcAsUnicodedataComputesIt) {
  std::ifstream in(kh::test::sourceDir() + "/tests/golden/retrieval/nfkc.jsonl");
  ASSERT_TRUE(in) << "missing golden file";
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    const std::string text = j["text"], want = j["normalized"];
    EXPECT_EQ(encodeUtf8(normalizeForSearch(cps(text))), want) << text;
    ++n;
  }
  EXPECT_EQ(n, 10);
}

TEST(RetrievalText, NormalisesFullWidthAndHalfWidthKana) {
  EXPECT_EQ(encodeUtf8(normalizeForSearch(cps("ＡＢＣ１２３　ｘ"))), "abc123 x");
  EXPECT_EQ(encodeUtf8(normalizeForSearch(cps("ｶﾞｷﾞﾊﾟｱｲｳｰ"))), "ガギパアイウー");
  EXPECT_EQ(encodeUtf8(normalizeForSearch(cps("名前は？"))), "名前は?");
  // Bigrams, and a unigram for a one-character piece.
  const auto t = searchTerms(normalizeForSearch(cps("名前は 猫")), false);
  EXPECT_EQ(t, (std::vector<std::string>{"名前", "前は", "\x01猫"}));
}

TEST(RetrievalText, InvalidUtf8NamesByteAndLine) {
  const std::string bad = std::string("ok\nあ") + '\xE3' + 'x';
  const std::string msg = expectError([&] { decodeUtf8(bad, "f.txt"); });
  EXPECT_NE(msg.find("invalid UTF-8 at byte 6 (line 2)"), std::string::npos) << msg;
}

// BM25 computed plainly: bigrams of each text, tf, df, Lucene idf, length in bigrams.
TEST(RetrievalBm25, MatchesBruteForce) {
  const std::vector<std::string> docs = {"名前は小野寺絢音です", "出身は宮城県の気仙沼市です", "猫の名前を呼ぶ",
                                         "趣味はパン作りです", "名前名前名前の話", "東北新幹線は速い"};
  const std::string query = "あなたの名前はなんですか";
  const double k1 = 1.5, b = 0.6;
  auto bigrams = [](const std::string& s) {
    auto c = decodeUtf8(s, "t");
    std::vector<std::string> out;
    for (size_t i = 0; i + 1 < c.size(); ++i) out.push_back(encodeUtf8(c, i, i + 2));
    return out;
  };
  std::vector<std::vector<std::string>> dterms;
  double avg = 0;
  for (const auto& d : docs) dterms.push_back(bigrams(d)), avg += static_cast<double>(dterms.back().size());
  avg /= static_cast<double>(docs.size());
  std::set<std::string> qterms;
  for (const auto& t : bigrams(query)) qterms.insert(t);
  std::vector<double> expected(docs.size(), 0.0);
  for (const auto& t : qterms) {
    double df = 0;
    for (const auto& d : dterms) df += std::count(d.begin(), d.end(), t) > 0;
    if (df == 0) continue;
    const double idf = std::log(1 + (docs.size() - df + 0.5) / (df + 0.5));
    for (size_t i = 0; i < docs.size(); ++i) {
      const double tf = static_cast<double>(std::count(dterms[i].begin(), dterms[i].end(), t));
      const double len = static_cast<double>(dterms[i].size());
      expected[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg));
    }
  }
  Bm25Index ix({k1, b});
  for (const auto& d : docs) ix.add(d);
  const auto hits = ix.search(query, 10);
  size_t positive = 0;
  for (double e : expected) positive += e > 0;
  ASSERT_EQ(hits.size(), positive);
  for (size_t r = 0; r < hits.size(); ++r) {
    EXPECT_NEAR(hits[r].score, expected[static_cast<size_t>(hits[r].chunk)], 1e-9);
    if (r) EXPECT_GE(hits[r - 1].score, hits[r].score);
  }
  EXPECT_EQ(hits[0].chunk, 0);  // 名前は小野寺絢音: 名前 and 前は
  // Persisted and read back: same scores; a damaged file is refused with a rebuild hint.
  TempDir d;
  ix.save(d.file("bm25.bin"));
  const auto back = Bm25Index::load(d.file("bm25.bin")).search(query, 10);
  ASSERT_EQ(back.size(), hits.size());
  EXPECT_DOUBLE_EQ(back[0].score, hits[0].score);
  std::string bytes = kh::test::readFile(d.file("bm25.bin"));
  writeFile(d.file("bm25.bin"), bytes.substr(0, bytes.size() / 2));
  const std::string msg = expectError([&] { Bm25Index::load(d.file("bm25.bin")); });
  EXPECT_NE(msg.find("corrupt BM25 index"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index rebuild"), std::string::npos) << msg;
  // One-character query: unigrams.
  EXPECT_EQ(ix.search("猫", 5).size(), 1u);
}

TEST(RetrievalDense, FlatIndexEqualsExhaustiveSearch) {
  const int dim = 32, n = 500;
  std::mt19937 rng(7);
  std::normal_distribution<float> g;
  std::vector<float> v(static_cast<size_t>(n * dim));
  for (auto& x : v) x = g(rng);
  normalizeRows(v, dim);
  std::vector<int64_t> keys(n);
  for (int i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = 1000 + 3 * i;
  DenseIndex ix(dim);
  ix.add(keys, v);
  ix.remove({1000, 1003});
  for (int q = 0; q < 10; ++q) {
    std::vector<float> qv(static_cast<size_t>(dim));
    for (auto& x : qv) x = g(rng);
    normalizeRows(qv, dim);
    std::vector<std::pair<float, int64_t>> all;
    for (int i = 2; i < n; ++i) {
      double s = 0;
      for (int k = 0; k < dim; ++k) s += double(qv[static_cast<size_t>(k)]) * v[static_cast<size_t>(i * dim + k)];
      all.push_back({static_cast<float>(s), keys[static_cast<size_t>(i)]});
    }
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first; });
    const auto hits = ix.search(qv.data(), 10);
    ASSERT_EQ(hits.size(), 10u);
    for (size_t r = 0; r < 10; ++r) {
      EXPECT_EQ(hits[r].key, all[r].second);
      EXPECT_NEAR(hits[r].cosine, all[r].first, 1e-5);
    }
  }
  TempDir d;
  ix.save(d.file("x.faiss"));
  EXPECT_EQ(DenseIndex::load(d.file("x.faiss"), dim).size(), n - 2);
  writeFile(d.file("x.faiss"), "not a faiss index");
  const std::string msg = expectError([&] { DenseIndex::load(d.file("x.faiss"), dim); });
  EXPECT_NE(msg.find("corrupt dense index"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index rebuild"), std::string::npos) << msg;
}

// THE RESEARCHER'S CASE, at the default settings (RRF k = 60, equal weights, relative threshold).
// The embedder is the bundled resources/models/tiny-ja-embedder, a small BERT this project trained
// on generated question/passage pairs that never included this example set
// (tests/tools/train_tiny_embedder.cpp): a real dense ranking, as multilingual-e5 or ruri would give,
// not noise. BM25 ranks 「名前は小野寺絢音」 first (名前 and 前は are bigrams of both texts), the
// embedder ranks it first too, and fusion keeps it there.
TEST(RetrievalStore, NameQueryFindsThePersonaNameFirstThroughFusion) {
  TempDir d;
  EncoderEmbedder emb(kh::test::sourceDir() + "/resources/models/tiny-ja-embedder");
  size_t calls = 0;
  auto store = DocumentStore::open(d.file("store"));
  const auto rep = store.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, &emb,
                                     [&](size_t, size_t) { ++calls; });
  EXPECT_EQ(rep.added, 15);
  EXPECT_GT(calls, 0u);
  SearchOptions o;  // defaults: what `retrieve` and the chat view use
  o.k = 5;
  const auto hits = store.search("あなたの名前はなんですか?", o, &emb);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].docId, "persona-name");
  EXPECT_EQ(hits[0].bm25Rank, 1);
  ASSERT_TRUE(hits[0].denseCosine.has_value());
  EXPECT_EQ(hits[0].denseRank, 1);
  EXPECT_TRUE(hits[0].kept);
  EXPECT_NE(hits[0].threshold.find(">="), std::string::npos) << hits[0].threshold;
  EXPECT_NEAR(hits[0].fusedScore, 2.0 / 61, 1e-12);
  // The vectors are the embedder's mean-pooled states: re-embedding gives the stored cosine.
  EXPECT_NEAR(*hits[0].denseCosine, reembeddedCosine(emb, "あなたの名前はなんですか?", hits[0].text), 1e-4);
  // Reopened from disk: same answer. Another embedder is refused, named.
  auto again = DocumentStore::open(d.file("store"));
  EXPECT_EQ(again.search("あなたの名前はなんですか?", o, &emb)[0].chunkId, hits[0].chunkId);
  CountingEmbedder other("fake-other");
  const std::string msg = expectError([&] { again.search("名前", o, &other); });
  EXPECT_NE(msg.find("fake-other"), std::string::npos) << msg;
  EXPECT_NE(msg.find(emb.identity()), std::string::npos) << msg;
}

// With a dense side that is pure noise (a tiny random Llama, mean-pooled), equal RRF weights can
// lose the BM25 winner (here sengoku, BM25 #2, comes first). With BM25 weight w_b and dense weight
// w_d, the BM25 #1 document wins against ANY dense ranking of N <= 15 documents when
// w_b (1/61 - 1/62) > w_d (1/61 - 1/75), i.e. w_b / w_d > 11.6: the weights are there for an
// embedder one does not trust, and 20 : 1 puts the persona document first.
TEST(RetrievalStore, BM25WeightOutvotesANoiseEmbedder) {
  TempDir d;
  kh::TinyOptions to;
  to.family = "llama";
  to.seed = 3;
  kh::makeTinyCheckpoint(d.file("tiny"), to);
  DecoderEmbedder emb(d.file("tiny"), 8);
  auto store = DocumentStore::open(d.file("store"));
  store.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, &emb);
  SearchOptions o;
  o.k = 5;
  EXPECT_EQ(store.search("あなたの名前はなんですか?", o, &emb)[0].docId, "sengoku");  // equal weights: noise wins
  o.denseWeight = 0.05;
  const auto hits = store.search("あなたの名前はなんですか?", o, &emb);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].docId, "persona-name");
  EXPECT_EQ(hits[0].bm25Rank, 1);
  ASSERT_TRUE(hits[0].denseCosine.has_value());  // the dense side took part
  EXPECT_NEAR(hits[0].fusedScore, 1.0 / 61 + 0.05 / (60 + hits[0].denseRank), 1e-12);
  EXPECT_NEAR(*hits[0].denseCosine, reembeddedCosine(emb, "あなたの名前はなんですか?", hits[0].text), 1e-4);
}

TEST(RetrievalStore, ReimportRedoesOnlyChangedDocuments) {
  TempDir d;
  writeFile(d.file("a.txt"), "名前は小野寺絢音です。");
  writeFile(d.file("b.md"), "# 趣味\nパン作りです。");
  writeFile(d.file("c.jsonl"), "{\"id\": \"x\", \"text\": \"猫が好き。\", \"metadata\": {\"k\": 1}}\n{\"text\": \"犬も好き。\"}\n");
  CountingEmbedder emb("fake-a");
  auto s = DocumentStore::open(d.file("store"));
  auto r = s.importFiles({d.file("a.txt"), d.file("b.md"), d.file("c.jsonl")}, &emb);
  EXPECT_EQ(r.added, 4);
  EXPECT_TRUE(s.hasId("c:2"));
  EXPECT_TRUE(s.hasId("x#0"));
  const size_t before = emb.embedded;
  std::map<std::string, std::vector<int64_t>> keys;
  for (const auto& doc : s.documents()) keys[doc.id] = doc.chunkKeys;
  writeFile(d.file("b.md"), "# 趣味\nフィルムカメラです。");
  auto s2 = DocumentStore::open(d.file("store"));
  r = s2.importFiles({d.file("a.txt"), d.file("b.md"), d.file("c.jsonl")}, &emb);
  EXPECT_EQ(r.added, 0);
  EXPECT_EQ(r.updated, 1);
  EXPECT_EQ(r.unchanged, 3);
  EXPECT_EQ(emb.embedded - before, static_cast<size_t>(r.chunksEmbedded));
  for (const auto& doc : s2.documents()) {
    if (doc.id == "b.md") EXPECT_NE(doc.chunkKeys, keys[doc.id]);
    else EXPECT_EQ(doc.chunkKeys, keys[doc.id]) << doc.id;
  }
  auto s3 = DocumentStore::open(d.file("store"));
  EXPECT_EQ(s3.chunks().size(), s2.chunks().size());
  SearchOptions o;
  EXPECT_EQ(s3.search("フィルム", o, &emb)[0].docId, "b.md");
  SearchOptions bm;
  bm.method = Method::Bm25;
  EXPECT_TRUE(s3.search("パン作り", bm, nullptr).empty());  // the old text is gone from BM25
  // One generation folder on disk, named by CURRENT.
  int gens = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.file("store"))) gens += e.is_directory();
  EXPECT_EQ(gens, 1);
}

TEST(RetrievalStore, RefusesBadInputAndCorruptIndexes) {
  TempDir d;
  writeFile(d.file("empty.txt"), " \n");
  writeFile(d.file("bin.txt"), std::string("ab\0cd", 5));
  writeFile(d.file("bad.txt"), std::string("名前") + '\xFF');
  writeFile(d.file("ok.txt"), "名前は小野寺絢音。");
  auto s = DocumentStore::open(d.file("store"));
  EXPECT_NE(expectError([&] { s.importFiles({d.file("empty.txt")}, nullptr); }).find("empty file"), std::string::npos);
  EXPECT_NE(expectError([&] { s.importFiles({d.file("bin.txt")}, nullptr); }).find("NUL byte at byte 2"), std::string::npos);
  EXPECT_NE(expectError([&] { s.importFiles({d.file("bad.txt")}, nullptr); }).find("invalid UTF-8 at byte 6"), std::string::npos);
  CountingEmbedder a("fake-a"), b("fake-b");
  s.importFiles({d.file("ok.txt")}, &a);
  EXPECT_NE(expectError([&] { s.search("  ", SearchOptions{}, &a); }).find("empty query"), std::string::npos);
  const std::string other = expectError([&] { s.search("名前", SearchOptions{}, &b); });
  EXPECT_NE(other.find("fake-b"), std::string::npos) << other;
  EXPECT_NE(other.find("fake-a"), std::string::npos) << other;
  EXPECT_NE(expectError([&] { s.importFiles({d.file("ok.txt")}, &b); }).find("fake-a"), std::string::npos);
  // BM25-only searches need no embedder.
  SearchOptions bm;
  bm.method = Method::Bm25;
  EXPECT_EQ(s.search("名前", bm, nullptr).size(), 1u);
  // Corrupt dense index: refused on open with a rebuild hint; rebuild repairs it.
  const std::string gen = [&] { std::string g = kh::test::readFile(d.file("store/CURRENT")); g.pop_back(); return g; }();
  writeFile(d.file("store/" + gen + "/dense.faiss"), "garbage");
  const std::string msg = expectError([&] { DocumentStore::open(d.file("store")); });
  EXPECT_NE(msg.find("corrupt dense index"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index rebuild"), std::string::npos) << msg;
  auto fix = DocumentStore::openChunksOnly(d.file("store"));
  fix.rebuild(&a);
  EXPECT_EQ(DocumentStore::open(d.file("store")).search("名前", SearchOptions{}, &a).size(), 1u);
  // A query file naming an id the store lacks.
  writeFile(d.file("q.jsonl"), "{\"query\": \"名前\", \"relevant\": [\"ok.txt\"]}\n{\"query\": \"x\", \"relevant\": [\"nope\"]}\n");
  const std::string q = expectError([&] { readLabelledQueries(d.file("q.jsonl"), DocumentStore::open(d.file("store"))); });
  EXPECT_NE(q.find("q.jsonl:2"), std::string::npos) << q;
  EXPECT_NE(q.find("unknown id 'nope'"), std::string::npos) << q;
}

TEST(RetrievalEval, MetricsByHandAndOnTheBundledSet) {
  RetrievalHit x, rel;
  x.docId = "x", x.chunkId = "x#0";
  rel.docId = "r", rel.chunkId = "r#0";
  const auto m = scoreRanking({x, rel}, {"r"});
  EXPECT_DOUBLE_EQ(m.mrr, 0.5);
  EXPECT_DOUBLE_EQ(m.recallAt1, 0.0);
  EXPECT_DOUBLE_EQ(m.recallAt5, 1.0);
  EXPECT_NEAR(m.ndcg10, 1.0 / std::log2(3.0), 1e-12);
  TempDir d;
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, nullptr);
  const auto qs = readLabelledQueries(kh::test::sourceDir() + "/resources/retrieval/ja_persona_queries.jsonl", s);
  EXPECT_GE(qs.size(), 15u);
  const auto rep = evaluateRetrieval(s, qs, SearchOptions{}, nullptr, d.file("run"));
  ASSERT_EQ(rep.methods.size(), 2u);  // bm25 and fused (no dense index)
  EXPECT_EQ(rep.methods[0].method, "bm25");
  EXPECT_GT(rep.methods[0].mean.mrr, 0.6);
  EXPECT_TRUE(std::filesystem::exists(d.file("run/metrics.json")));
  EXPECT_TRUE(std::filesystem::exists(d.file("run/table.txt")));
}

// forwardHidden is the state the output head projects: lm_head(hidden) equals forward's logits,
// for a padded batch too.
TEST(RetrievalEmbedder, ForwardHiddenIsWhatTheHeadProjects) {
  TempDir d;
  kh::TinyOptions to;
  to.family = "llama";
  to.dtype = kh::st::DType::F32;
  kh::makeTinyCheckpoint(d.file("m"), to);
  auto model = kh::Model::load(kh::ModelFolder::open(d.file("m")));
  kh::ForwardBatch b;
  b.ids = at::tensor(std::vector<int64_t>{5, 6, 7, 8, 9, 10}, at::kLong).view({2, 3});
  b.positions = at::tensor(std::vector<int64_t>{0, 1, 2, 0, 1, -1}, at::kLong).view({2, 3});
  auto c1 = model->newCache(2, 3), c2 = model->newCache(2, 3);
  const at::Tensor logits = model->forward(b, c1);      // [2, 3, V]
  const at::Tensor hidden = model->forwardHidden(b, c2);  // [2, 3, D]
  ASSERT_EQ(hidden.size(2), model->config().hiddenSize);
  const std::string head = model->hasWeight("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight";
  EXPECT_TRUE(at::allclose(at::linear(hidden, model->weight(head)), logits, 1e-5, 1e-5));
}

TEST(RetrievalStore, RerankerAndZScoreThresholdExplainThemselves) {
  struct ShortFirst : Reranker {
    std::optional<double> score(const std::string&, const std::string& text) const override { return -double(text.size()); }
  } shortFirst;
  TempDir d;
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, nullptr);
  SearchOptions o;
  o.reranker = &shortFirst;
  o.threshold = "zscore";
  o.zMin = 0.5;
  const auto hits = s.search("名前は何ですか", o, nullptr);
  ASSERT_GE(hits.size(), 3u);
  for (size_t i = 1; i < hits.size(); ++i) EXPECT_GE(*hits[i - 1].rerankScore, *hits[i].rerankScore);
  EXPECT_NE(hits[0].threshold.find("rerank z"), std::string::npos) << hits[0].threshold;
  EXPECT_TRUE(hits.front().kept);
  EXPECT_FALSE(hits.back().kept);
}

TEST(RetrievalStore, CandidatesOutsideRerankKStayListedAsDropped) {
  struct ShortFirst : Reranker {
    std::optional<double> score(const std::string&, const std::string& text) const override { return -double(text.size()); }
  } shortFirst;
  TempDir d;
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, nullptr);
  SearchOptions plain;
  plain.k = 1000;
  plain.threshold = "none";
  const auto fused = s.search("名前は何ですか", plain, nullptr);  // the method's own order
  ASSERT_GE(fused.size(), 6u);
  SearchOptions o = plain;
  o.reranker = &shortFirst;
  o.rerankK = 3;
  auto hits = s.search("名前は何ですか", o, nullptr);
  ASSERT_EQ(hits.size(), fused.size());  // nothing vanishes: the inspector shows every candidate
  std::set<std::string> best3, reranked;
  for (size_t i = 0; i < 3; ++i) best3.insert(fused[i].chunkId), reranked.insert(hits[i].chunkId);
  EXPECT_EQ(reranked, best3);  // the reranker saw the method's best three
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(hits[i].rerankScore);
    EXPECT_EQ(*hits[i].rerankScore, -double(hits[i].text.size()));
    EXPECT_TRUE(hits[i].kept);
  }
  for (size_t i = 3; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i].chunkId, fused[i].chunkId) << i;  // the rest keep the method's order
    EXPECT_FALSE(hits[i].rerankScore);
    EXPECT_FALSE(hits[i].kept) << hits[i].threshold;
    EXPECT_EQ(hits[i].threshold.rfind("not reranked: fused ", 0), 0u) << hits[i].threshold;
    EXPECT_NE(hits[i].threshold.find("best 3 "), std::string::npos) << hits[i].threshold;
  }
  // Another threshold over the stored list (the inspector's slider) judges the three alone: the
  // z-score of the shortest among three texts, recounted by hand.
  o.threshold = "zscore";
  o.zMin = 0.0;
  applyThreshold(hits, o);
  double mean = 0, var = 0;
  for (size_t i = 0; i < 3; ++i) mean += *hits[i].rerankScore / 3;
  for (size_t i = 0; i < 3; ++i) var += (*hits[i].rerankScore - mean) * (*hits[i].rerankScore - mean) / 3;
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(hits[i].kept, var == 0 || (*hits[i].rerankScore - mean) / std::sqrt(var) >= 0) << hits[i].threshold;
  EXPECT_NE(hits[0].threshold.find("over 3 candidates"), std::string::npos) << hits[0].threshold;
  for (size_t i = 3; i < hits.size(); ++i) EXPECT_FALSE(hits[i].kept);
}

namespace {

// A dense side that is informative, for the default-weight test below: each text's character
// bigrams hashed into 256 bins, L2-normalised (shared wording = close), standing in for a real
// encoder such as multilingual-e5, which cannot be downloaded here.
class BigramEmbedder : public Embedder {
 public:
  std::string identity() const override { return "test-bigram-256"; }
  int dim() const override { return 256; }
  std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& = {}) const override {
    std::vector<float> v(texts.size() * 256, 0.f);
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto c = decodeUtf8(texts[i], "test");
      for (size_t k = 0; k + 1 < c.size(); ++k) v[i * 256 + (c[k] * 31u + c[k + 1]) % 256] += 1.f;
    }
    normalizeRows(v, 256);
    return v;
  }
};

// Fails on the embed() call number `failAt` (0-based), as a cancelled or crashed embedding does.
class FailingEmbedder : public kh::test::BytesEmbedder {
 public:
  explicit FailingEmbedder(int failAt) : BytesEmbedder("fake-a"), failAt_(failAt) {}
  std::vector<float> embed(const std::vector<std::string>& texts, const EmbedProgress& p = {}) const override {
    if (calls_++ == failAt_) throw kh::Error("embedder", "cancelled");
    return BytesEmbedder::embed(texts, p);
  }

 private:
  int failAt_;
  mutable int calls_ = 0;
};

}  // namespace

// The researcher's case with the settings `retrieve` and `chat --rag` use (RRF k 60, equal
// weights): with a dense side that ranks by shared wording, the name document is first.
TEST(RetrievalStore, NameQueryFindsThePersonaNameFirstWithDefaultWeights) {
  TempDir d;
  BigramEmbedder emb;
  auto store = DocumentStore::open(d.file("store"));
  store.importFiles({kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"}, &emb);
  const SearchOptions o;  // defaults
  ASSERT_DOUBLE_EQ(o.denseWeight, 1.0);
  ASSERT_DOUBLE_EQ(o.bm25Weight, 1.0);
  const auto hits = store.search("あなたの名前はなんですか?", o, &emb);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].docId, "persona-name");
  EXPECT_EQ(hits[0].bm25Rank, 1);
  ASSERT_GT(hits[0].denseRank, 0);
  EXPECT_NEAR(hits[0].fusedScore, 1.0 / 61 + 1.0 / (60 + hits[0].denseRank), 1e-12);
  EXPECT_TRUE(hits[0].kept);
}

// Several relevant ids, one listed twice, a document hit twice: numbers worked out by hand.
TEST(RetrievalEval, SeveralRelevantIdsByHand) {
  auto hit = [](const std::string& doc, int n) {
    RetrievalHit h;
    h.docId = doc;
    h.chunkId = doc + "#" + std::to_string(n);
    return h;
  };
  // Ranks: 1 a (relevant), 2 x, 3 b#1 (relevant by chunk id), 4 a again (already found), 5 y, 6 c.
  const std::vector<RetrievalHit> ranked = {hit("a", 0), hit("x", 0), hit("b", 1), hit("a", 1), hit("y", 0), hit("c", 0)};
  const auto m = scoreRanking(ranked, {"a", "b#1", "c", "d", "a"});
  EXPECT_DOUBLE_EQ(m.mrr, 1.0);
  EXPECT_DOUBLE_EQ(m.recallAt1, 0.25);
  EXPECT_DOUBLE_EQ(m.recallAt5, 0.5);
  EXPECT_DOUBLE_EQ(m.recallAt10, 0.75);
  // DCG = 1 + 1/log2(4) + 1/log2(7) = 1.856207; ideal with 4 relevant = 1 + 1/log2(3) + 1/2 + 1/log2(5) = 2.561606.
  EXPECT_NEAR(m.ndcg10, 0.7246262544989281, 1e-12);
  const auto none = scoreRanking({hit("x", 0)}, {"a"});
  EXPECT_DOUBLE_EQ(none.mrr, 0.0);
  EXPECT_DOUBLE_EQ(none.ndcg10, 0.0);
}

TEST(RetrievalStore, FolderDocumentsAreNamedByTheirPathBelowTheFolder) {
  TempDir d;
  for (const char* sub : {"docs/a", "docs/b", "other"}) std::filesystem::create_directories(d.file(sub));
  writeFile(d.file("docs/a/README.md"), "猫の話です。");
  writeFile(d.file("docs/b/README.md"), "犬の話です。");
  writeFile(d.file("docs/notes.md"), "メモです。");
  writeFile(d.file("other/notes.md"), "別のメモです。");
  auto s = DocumentStore::open(d.file("store"));
  const auto r = s.importFiles({d.file("docs")}, nullptr);
  EXPECT_EQ(r.added, 3);
  EXPECT_TRUE(s.hasId("a/README.md"));
  EXPECT_TRUE(s.hasId("b/README.md#0"));
  EXPECT_TRUE(s.hasId("notes.md"));
  // Another file of the same name, given alone: a clash, not a silent replacement.
  const std::string msg = expectError([&] { s.importFiles({d.file("other/notes.md")}, nullptr); });
  EXPECT_NE(msg.find("'notes.md' is already in the store from " + std::filesystem::absolute(d.file("docs/notes.md")).string()),
            std::string::npos) << msg;
  EXPECT_EQ(s.documents().size(), 3u);
  SearchOptions bm;
  bm.method = Method::Bm25;
  EXPECT_EQ(s.search("メモ", bm, nullptr).size(), 1u);
}

TEST(RetrievalStore, JsonlLineInsertedAboveKeepsTheOthersVectors) {
  TempDir d;
  writeFile(d.file("c.jsonl"), "{\"text\": \"猫が好き。\"}\n{\"text\": \"犬も好き。\"}\n{\"text\": \"鳥は苦手。\"}\n");
  CountingEmbedder emb("fake-a");
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({d.file("c.jsonl")}, &emb);
  std::map<std::string, std::vector<int64_t>> keysByText;
  for (const auto& c : s.chunks()) keysByText[c.text].push_back(c.key);
  const size_t before = emb.embedded;
  writeFile(d.file("c.jsonl"), "{\"text\": \"魚を飼っている。\"}\n{\"text\": \"猫が好き。\"}\n{\"text\": \"犬も好き。\"}\n{\"text\": \"鳥は苦手。\"}\n");
  const auto r = s.importFiles({d.file("c.jsonl")}, &emb);
  EXPECT_EQ(r.added, 1);
  EXPECT_EQ(r.unchanged, 3);
  EXPECT_EQ(r.renamed, 3);
  EXPECT_EQ(r.removed, 0);
  EXPECT_EQ(emb.embedded - before, 1u);  // only the new line
  auto again = DocumentStore::open(d.file("store"));
  ASSERT_EQ(again.chunks().size(), 4u);
  for (const auto& c : again.chunks()) {
    if (c.text == "魚を飼っている。") {
      EXPECT_EQ(c.id, "c:1#0");
      continue;
    }
    EXPECT_EQ(std::vector<int64_t>{c.key}, keysByText[c.text]) << c.text;  // same vector
  }
  SearchOptions o;
  EXPECT_EQ(again.search("鳥は苦手", o, &emb)[0].chunkId, "c:4#0");
  EXPECT_EQ(again.dense()->size(), 4);
}

TEST(RetrievalStore, FailedImportLeavesTheStoreAsOnDisk) {
  TempDir d;
  writeFile(d.file("a.txt"), "名前は小野寺絢音です。");
  writeFile(d.file("b.txt"), "趣味はパン作りです。");
  FailingEmbedder emb(1);  // the first import embeds, the second fails
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({d.file("a.txt")}, &emb);
  const std::string current = kh::test::readFile(d.file("store/CURRENT"));
  EXPECT_NE(expectError([&] { s.importFiles({d.file("b.txt")}, &emb); }).find("cancelled"), std::string::npos);
  EXPECT_EQ(kh::test::readFile(d.file("store/CURRENT")), current);
  ASSERT_EQ(s.documents().size(), 1u);  // the object too, not only the disk
  EXPECT_EQ(s.documents()[0].id, "a.txt");
  EXPECT_EQ(s.chunks().size(), 1u);
  SearchOptions bm;
  bm.method = Method::Bm25;
  EXPECT_TRUE(s.search("パン", bm, nullptr).empty());
  EXPECT_EQ(s.search("名前", bm, nullptr).size(), 1u);
}

TEST(RetrievalStore, BlankAndPunctuationOnlyInputIsRefused) {
  TempDir d;
  writeFile(d.file("ideographic.txt"), "\u3000\u3000\n");
  writeFile(d.file("marks.txt"), "?!...\n");
  writeFile(d.file("bom.txt"), "\xEF\xBB\xBF名前は小野寺絢音。");
  writeFile(d.file("blank.jsonl"), "{\"text\": \"\u3000\"}\n");
  auto s = DocumentStore::open(d.file("store"));
  EXPECT_NE(expectError([&] { s.importFiles({d.file("ideographic.txt")}, nullptr); }).find("empty file"), std::string::npos);
  EXPECT_NE(expectError([&] { s.importFiles({d.file("marks.txt")}, nullptr); }).find("empty file"), std::string::npos);
  EXPECT_NE(expectError([&] { s.importFiles({d.file("blank.jsonl")}, nullptr); }).find("blank.jsonl:1: empty text"),
            std::string::npos);
  s.importFiles({d.file("bom.txt")}, nullptr);
  EXPECT_EQ(s.chunks()[0].text, "名前は小野寺絢音。");  // no byte order mark in the text
  SearchOptions bm;
  bm.method = Method::Bm25;
  for (const char* q : {"\u3000", "??", " \t"})
    EXPECT_NE(expectError([&] { s.search(q, bm, nullptr); }).find("empty query"), std::string::npos) << q;
  EXPECT_NE(expectError([&] { DocumentStore::openExisting(d.file("no-store")); }).find("no such store folder"), std::string::npos);
  EXPECT_NE(expectError([&] { DocumentStore::openExisting(d.file("")); }).find("not a retrieval store"), std::string::npos);
}

// Weights fine-tuned in place (same folder name, config and file sizes) are another embedder; a
// store from before weights were sampled (its recorded identity is the legacy one) still opens.
TEST(RetrievalEmbedder, IdentityNoticesWeightsChangedInPlace) {
  TempDir d;
  std::filesystem::create_directories(d.file("one"));
  std::filesystem::create_directories(d.file("two"));
  kh::TinyOptions to;
  to.family = "llama";
  to.seed = 3;
  kh::makeTinyCheckpoint(d.file("one/m"), to);
  to.seed = 4;
  kh::makeTinyCheckpoint(d.file("two/m"), to);
  ASSERT_EQ(kh::test::readFile(d.file("one/m/config.json")), kh::test::readFile(d.file("two/m/config.json")));
  ASSERT_EQ(std::filesystem::file_size(d.file("one/m/model.safetensors")),
            std::filesystem::file_size(d.file("two/m/model.safetensors")));
  DecoderEmbedder a(d.file("one/m"), 8), b(d.file("two/m"), 8);
  EXPECT_NE(a.identity(), b.identity());
  EXPECT_EQ(a.legacyIdentity(), b.legacyIdentity());  // what the old fingerprint could not tell apart
  writeFile(d.file("doc.txt"), "名前は小野寺絢音です。");
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({d.file("doc.txt")}, &a);
  EXPECT_NE(expectError([&] { s.search("名前", SearchOptions{}, &b); }).find("is not the one that built this store"),
            std::string::npos);
  // A store that recorded the legacy identity: accepted for the same model.
  const std::string gen = [&] { std::string g = kh::test::readFile(d.file("store/CURRENT")); g.pop_back(); return g; }();
  auto j = nlohmann::json::parse(kh::test::readFile(d.file("store/" + gen + "/store.json")));
  j["embedder"] = a.legacyIdentity();
  writeFile(d.file("store/" + gen + "/store.json"), j.dump());
  EXPECT_EQ(DocumentStore::open(d.file("store")).search("名前", SearchOptions{}, &a).size(), 1u);
}

// The flat scan reads fp16 rows first and rescores in fp32: scores 1e-5 apart (fp16 resolves
// about 5e-4 here) must still come back in their exact order. Known answer: each row is built at
// a chosen cosine to the query, cos = 0.9 + 1e-5 * rank of a shuffled order.
TEST(RetrievalDense, FlatScanIsExactBelowFp16Resolution) {
  const int dim = 64, n = 1000;
  std::mt19937 rng(11);
  std::normal_distribution<float> g;
  std::vector<double> q(dim);
  for (auto& x : q) x = g(rng);
  double qn = 0;
  for (double x : q) qn += x * x;
  for (auto& x : q) x /= std::sqrt(qn);
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<float> v(static_cast<size_t>(n * dim));
  std::vector<int64_t> keys(n);
  for (int i = 0; i < n; ++i) {
    keys[static_cast<size_t>(i)] = i;
    std::vector<double> u(dim);  // a random unit vector orthogonal to q
    for (auto& x : u) x = g(rng);
    double uq = 0, un = 0;
    for (int k = 0; k < dim; ++k) uq += u[static_cast<size_t>(k)] * q[static_cast<size_t>(k)];
    for (int k = 0; k < dim; ++k) u[static_cast<size_t>(k)] -= uq * q[static_cast<size_t>(k)], un += u[static_cast<size_t>(k)] * u[static_cast<size_t>(k)];
    const double c = 0.9 + 1e-5 * order[static_cast<size_t>(i)], sn = std::sqrt(1 - c * c);
    for (int k = 0; k < dim; ++k)
      v[static_cast<size_t>(i * dim + k)] = static_cast<float>(c * q[static_cast<size_t>(k)] + sn * u[static_cast<size_t>(k)] / std::sqrt(un));
  }
  DenseIndex ix(dim);
  ix.add(keys, v);
  std::vector<float> qf(q.begin(), q.end());
  // The first search after a change scans fp32 rows; later ones the fp16 mirror, then rescore.
  for (int pass = 0; pass < 3; ++pass) {
    const auto hits = ix.search(qf.data(), 50);
    ASSERT_EQ(hits.size(), 50u);
    for (int r = 0; r < 50; ++r) {
      const int want = static_cast<int>(std::find(order.begin(), order.end(), n - 1 - r) - order.begin());
      EXPECT_EQ(hits[static_cast<size_t>(r)].key, want) << "pass " << pass << " rank " << r;
      EXPECT_NEAR(hits[static_cast<size_t>(r)].cosine, 0.9 + 1e-5 * (n - 1 - r), 2e-6);
    }
  }
}

// Markdown is chunked by sections: a heading starts a chunk and no overlap reaches back over it;
// the same text as .txt packs by length alone. Offsets still point into the file as written.
TEST(RetrievalText, MarkdownHeadingsStartChunks) {
  const std::string text = "# 名前\n名前は小野寺絢音です。\n## 趣味\nパン作りです。\n#タグではない行。\n猫が好きです。";
  ChunkOptions o;
  o.targetChars = 200;
  o.overlapChars = 40;
  EXPECT_EQ(chunkText(cps(text), o).size(), 1u);  // plain text: everything fits one chunk
  o.markdownSections = true;
  const auto chunks = chunkText(cps(text), o);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].text, "# 名前\n名前は小野寺絢音です。");
  EXPECT_EQ(chunks[1].text, "## 趣味\nパン作りです。\n#タグではない行。\n猫が好きです。");  // "#タグ" is no heading
  EXPECT_EQ(encodeUtf8(cps(text), static_cast<size_t>(chunks[1].begin), static_cast<size_t>(chunks[1].end)), chunks[1].text);
  TempDir d;
  writeFile(d.file("n.md"), text);
  writeFile(d.file("n.txt"), text);
  auto s = DocumentStore::open(d.file("store"));
  s.importFiles({d.file("n.md"), d.file("n.txt")}, nullptr);
  int md = 0, txt = 0;
  for (const auto& c : s.chunks()) (c.docId == "n.md" ? md : txt) += 1;
  EXPECT_EQ(md, 2);
  EXPECT_EQ(txt, 1);
}
