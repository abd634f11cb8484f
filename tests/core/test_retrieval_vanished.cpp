// Re-importing a file or folder removes the documents that came from it and are gone, from the
// store, BM25 and the dense index; compared against a store built fresh from what remains.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/retrieval/store.h"
#include "tests/test_util.h"
#include "tests/core/bytes_embedder.h"

using namespace kh::retrieval;
using kh::test::TempDir;
using kh::test::writeFile;

namespace {

using HashEmbedder = kh::test::BytesEmbedder;

std::set<std::string> docIds(const DocumentStore& s) {
  std::set<std::string> ids;
  for (const auto& d : s.documents()) ids.insert(d.id);
  return ids;
}

// Every BM25 hit (doc id, score) for a query, for comparing two stores' BM25 statistics.
std::vector<std::pair<std::string, double>> bm25Scores(const DocumentStore& s, const std::string& q) {
  SearchOptions o;
  o.method = Method::Bm25;
  o.k = 100;
  o.candidates = 100;
  o.threshold = "none";
  std::vector<std::pair<std::string, double>> out;
  for (const auto& h : s.search(q, o, nullptr)) out.push_back({h.docId, *h.bm25Score});
  return out;
}

}  // namespace

TEST(RetrievalVanished, ReimportedFolderAndJsonlDropWhatIsGoneOnly) {
  TempDir d;
  std::filesystem::create_directories(d.file("docs/sub"));
  writeFile(d.file("docs/a.txt"), "名前は小野寺絢音です。猫が好きです。");
  writeFile(d.file("docs/sub/b.md"), "# 趣味\n猫の写真を撮ることです。");
  writeFile(d.file("docs/c.jsonl"),
            "{\"id\": \"x\", \"text\": \"犬も好きです。\"}\n{\"id\": \"y\", \"text\": \"猫の名前はタマです。\"}\n");
  writeFile(d.file("other.txt"), "別の場所の猫の文書です。");
  HashEmbedder emb;
  auto s = DocumentStore::open(d.file("store"));
  auto r = s.importFiles({d.file("docs"), d.file("other.txt")}, &emb);
  EXPECT_EQ(r.added, 5);
  EXPECT_EQ(r.removed, 0);

  // b.md deleted from the folder, y gone from the JSONL: re-import the folder only.
  std::filesystem::remove(d.file("docs/sub/b.md"));
  writeFile(d.file("docs/c.jsonl"), "{\"id\": \"x\", \"text\": \"犬も好きです。\"}\n");
  auto s2 = DocumentStore::open(d.file("store"));
  r = s2.importFiles({d.file("docs")}, &emb);
  EXPECT_EQ(r.removed, 2);
  EXPECT_EQ(r.unchanged, 2);
  EXPECT_EQ(docIds(s2), (std::set<std::string>{"a.txt", "x", "other.txt"}));  // other.txt is outside the folder

  // On disk, through every index: no hit from the removed documents, dense size = chunks.
  auto s3 = DocumentStore::open(d.file("store"));
  EXPECT_EQ(s3.dense()->size(), static_cast<int64_t>(s3.chunks().size()));
  SearchOptions all;
  all.k = 100;
  all.threshold = "none";
  for (Method m : {Method::Bm25, Method::Dense, Method::Fused}) {
    all.method = m;
    for (const auto& h : s3.search("猫の写真 タマ", all, &emb)) {
      EXPECT_NE(h.docId, "b.md") << methodName(m);
      EXPECT_NE(h.docId, "y") << methodName(m);
    }
  }
  // BM25 statistics equal a store built fresh from the remaining files.
  auto fresh = DocumentStore::open(d.file("fresh"));
  fresh.importFiles({d.file("docs/a.txt"), d.file("docs/c.jsonl"), d.file("other.txt")}, &emb);
  EXPECT_EQ(s3.chunks().size(), fresh.chunks().size());
  EXPECT_EQ(s3.bm25().size(), fresh.bm25().size());
  for (const std::string q : {"猫", "名前は", "犬も好き", "別の場所"}) {
    const auto a = bm25Scores(s3, q), b = bm25Scores(fresh, q);
    ASSERT_EQ(a.size(), b.size()) << q;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first) << q;
      EXPECT_DOUBLE_EQ(a[i].second, b[i].second) << q;
    }
  }

  // Importing one file removes only that file's vanished documents.
  writeFile(d.file("docs/c.jsonl"), "{\"id\": \"z\", \"text\": \"鳥も好きです。\"}\n");
  r = s3.importFiles({d.file("docs/c.jsonl")}, &emb);
  EXPECT_EQ(r.added, 1);
  EXPECT_EQ(r.removed, 1);
  EXPECT_EQ(docIds(s3), (std::set<std::string>{"a.txt", "z", "other.txt"}));
  // A failed import (an empty file in the folder) changes nothing on disk.
  writeFile(d.file("docs/empty.txt"), "\n");
  std::filesystem::remove(d.file("docs/a.txt"));
  EXPECT_THROW(s3.importFiles({d.file("docs")}, &emb), kh::Error);
  EXPECT_EQ(docIds(DocumentStore::open(d.file("store"))), (std::set<std::string>{"a.txt", "z", "other.txt"}));
}
