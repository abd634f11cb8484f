// The chat facade's retrieval (core/jobs/chat_engine.h): the prompt template against the literal
// text `chat --rag` has always sent, re-thresholding stored hits against a new search with that
// threshold, and a chunk's source against the JSONL file it came from.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/jobs/chat_engine.h"
#include "core/retrieval/store.h"
#include "tests/test_util.h"

using kh::test::TempDir;

namespace {

std::string personaDocs() { return kh::test::sourceDir() + "/resources/retrieval/ja_persona_docs.jsonl"; }

std::string makeStore(const TempDir& d) {
  auto s = kh::retrieval::DocumentStore::open(d.file("store"));
  s.importFiles({personaDocs()}, nullptr);
  return d.file("store");
}

}  // namespace

TEST(RagChat, TemplateIsTheCliPromptAndRefusesOneWithoutTheQuestion) {
  const std::string ctx = "[1] 名前は小野寺絢音です。\n";
  EXPECT_EQ(kh::fillRagTemplate(kh::defaultRagTemplate(), ctx, "名前は?"),
            "次の参考情報を使って答えてください。\n[1] 名前は小野寺絢音です。\n\n質問: 名前は?");
  EXPECT_EQ(kh::fillRagTemplate(kh::defaultRagTemplate(), "", "名前は?"), "名前は?");  // nothing kept
  // Placeholders inside the question or the context stay as typed.
  EXPECT_EQ(kh::fillRagTemplate("Q={question} C={context}", "{question}", "{context}?"), "Q={context}? C={question}");
  EXPECT_THROW(kh::fillRagTemplate("only {context}", ctx, "q"), kh::Error);
}

TEST(RagChat, RethresholdEqualsSearchingAgainWithThatThreshold) {
  TempDir d;
  auto rag = kh::RagStore::open(makeStore(d));
  EXPECT_EQ(rag->documentCount(), 15u);
  EXPECT_NE(rag->describe().find("BM25 only"), std::string::npos) << rag->describe();
  kh::RagSettings s;
  s.k = 2;
  const auto turn = rag->retrieve("あなたの名前はなんですか?", s);
  ASSERT_GT(turn.hits.size(), 3u);
  EXPECT_EQ(turn.method, "bm25");
  EXPECT_EQ(turn.hits[0].docId, "persona-name");
  int inPrompt = 0;
  for (const auto& h : turn.hits) inPrompt += h.inPrompt;
  EXPECT_EQ(inPrompt, 2);
  EXPECT_NE(turn.prompt.find("[1] " + turn.hits[0].text), std::string::npos);
  EXPECT_NE(turn.prompt.find("[2] " + turn.hits[1].text), std::string::npos);
  EXPECT_EQ(turn.prompt.find("[3] "), std::string::npos);

  auto store = kh::retrieval::DocumentStore::open(d.file("store"));
  for (const kh::RagThreshold& t : {kh::RagThreshold{"relative", 0.9, 0}, kh::RagThreshold{"relative", 0.2, 0},
                                    kh::RagThreshold{"zscore", 0, 0.5}, kh::RagThreshold{"zscore", 0, -1},
                                    kh::RagThreshold{"none", 0, 0}}) {
    kh::retrieval::SearchOptions o;
    o.k = 1000;
    o.method = kh::retrieval::Method::Bm25;
    o.threshold = t.mode;
    o.relativeRatio = t.ratio;
    o.zMin = t.zMin;
    const auto want = store.search("あなたの名前はなんですか?", o, nullptr);
    const auto got = kh::rethreshold(turn, t);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].chunkId, want[i].chunkId);
      EXPECT_EQ(got[i].kept, want[i].kept) << t.mode << " " << i;
      EXPECT_EQ(got[i].threshold, want[i].threshold);
      EXPECT_EQ(got[i].inPrompt, turn.hits[i].inPrompt);  // what was sent stays what was sent
    }
  }
  EXPECT_THROW(kh::rethreshold(turn, kh::RagThreshold{"cosine", 0.8, 0}), kh::Error);
}

TEST(RagChat, SourceIsTheJsonlLineWithTheChunkSpan) {
  TempDir d;
  auto rag = kh::RagStore::open(makeStore(d));
  const kh::RagSource s = rag->source("persona-food#0");
  EXPECT_EQ(s.docId, "persona-food");
  EXPECT_EQ(s.line, 5);  // the fifth line of the file
  EXPECT_TRUE(s.note.empty()) << s.note;
  EXPECT_EQ(s.text, "好きな食べ物はずんだ餅とカキフライです。苦手な食べ物はセロリです。");
  EXPECT_EQ(s.text.substr(s.byteBegin, s.byteEnd - s.byteBegin), s.text);  // one chunk: the whole document
  EXPECT_THROW(rag->source("no-such#0"), kh::Error);
  EXPECT_THROW(kh::RagStore::open(d.file("nothing")), kh::Error);
}

// A store imported with relative paths, opened later from another working folder (the GUI's):
// the source is found by the absolute path recorded at import.
TEST(RagChat, SourceOfARelativeImportIsFoundFromAnotherFolder) {
  namespace fs = std::filesystem;
  TempDir d;
  fs::create_directories(d.file("docs"));
  kh::test::writeFile(d.file("docs/a.txt"), "名前は小野寺絢音です。趣味はパン作りです。");
  const fs::path was = fs::current_path();
  fs::current_path(d.file(""));
  {
    auto s = kh::retrieval::DocumentStore::open("store");
    s.importFiles({"docs/a.txt"}, nullptr);
  }
  fs::current_path(fs::temp_directory_path());
  auto rag = kh::RagStore::open(d.file("store"));
  const kh::RagSource s = rag->source("a.txt#0");
  fs::current_path(was);
  EXPECT_EQ(fs::path(s.path), fs::absolute(d.file("docs/a.txt")).lexically_normal());
  EXPECT_TRUE(s.note.empty()) << s.note;
  EXPECT_EQ(s.text, "名前は小野寺絢音です。趣味はパン作りです。");
}
