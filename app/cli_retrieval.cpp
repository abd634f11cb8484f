// kumihimo-cli index add / index rebuild / retrieve / retrieval-eval: the retrieval workspace from
// the command line. The embedder is the store's recorded model unless --embedder names one (and a
// different one is refused by the store, named).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iomanip>
#include <iostream>

#include "app/cli_commands.h"
#include "app/progress_line.h"
#include "core/error.h"
#include "core/jobs/chat_engine.h"
#include "core/retrieval/encoder_embedder.h"
#include "core/retrieval/eval.h"
#include "core/retrieval/store.h"
#include "core/text/bert_japanese_tokenizer.h"

namespace kh::cli {

namespace {

struct RetrievalArgs {
  std::string store, query, queries, embedder, prefix = "auto", method = "fused", threshold = "relative", out;
  std::vector<std::string> files;
  int k = 5, candidates = 50, chunkChars = 200, overlapChars = 40;
  double k1 = 1.2, b = 0.75, denseWeight = 1.0, bm25Weight = 1.0, ratio = 0.5, zMin = 0.0;
  int64_t hnswAbove = -1;  // -1: the store's recorded value
  bool json = false;
  RerankFlags rerank;
};

retrieval::StoreOptions storeOptions(const RetrievalArgs& a) {
  retrieval::StoreOptions o;
  o.chunking.targetChars = a.chunkChars;
  o.chunking.overlapChars = a.overlapChars;
  o.bm25.k1 = a.k1;
  o.bm25.b = a.b;
  if (a.hnswAbove >= 0) o.hnswAbove = a.hnswAbove;
  return o;
}

std::unique_ptr<retrieval::Embedder> embedderFor(const RetrievalArgs& a, const retrieval::DocumentStore& s) {
  return retrieval::chooseEmbedder(a.embedder, a.prefix, s.embedderModel());
}

std::string denseKind(const retrieval::DocumentStore& s) {
  if (!s.dense()) return "";
  return s.dense()->kind() == retrieval::DenseIndex::Kind::Hnsw ? " (HNSW above " + std::to_string(s.hnswAbove()) + ")"
                                                                : " (exact flat up to " + std::to_string(s.hnswAbove()) + ")";
}

// Embedding progress on stderr: a bar with rate and ETA (ProgressLine: redrawn on a terminal, one
// plain line per tenth on a pipe or a log file).
retrieval::EmbedProgress progressLine(const std::string& what = "embedding") {
  auto start = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  auto line = std::make_shared<ProgressLine>();
  return [=](size_t done, size_t total) {
    if (total == 0) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0.0;
    char tail[96];
    std::snprintf(tail, sizeof tail, " %zu/%zu chunks  %.0f/s  ETA %.0fs", done, total, rate, eta);
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total);
    line->show(static_cast<double>(done) / static_cast<double>(total),
               what + " [" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.') +
                   "]" + tail);
    if (done == total) line->end();
  };
}

void addSearchFlags(CLI::App* sub, RetrievalArgs& a) {
  addMecabDicFlag(sub);
  sub->add_option("--embedder", a.embedder, "Embedder: DIR, encoder:DIR or decoder:DIR (default: the one the store was built with)");
  sub->add_option("--prefix", a.prefix, "Encoder query/passage prefixes: e5 | ruri | ruri-v3 | none | auto (from the folder name)")
      ->default_val("auto");
  sub->add_option("--candidates", a.candidates, "Top-k taken from each of dense and BM25 before fusion")->default_val(50);
  sub->add_option("--dense-weight", a.denseWeight, "RRF weight of the dense ranking")->default_val(1.0);
  sub->add_option("--bm25-weight", a.bm25Weight, "RRF weight of the BM25 ranking")->default_val(1.0);
  sub->add_option("--k1", a.k1, "BM25 k1")->default_val(1.2);
  sub->add_option("--b", a.b, "BM25 b")->default_val(0.75);
  addRerankFlags(sub, a.rerank);
}

retrieval::SearchOptions searchOptions(const RetrievalArgs& a) {
  retrieval::SearchOptions o;
  o.k = a.k;
  o.candidates = a.candidates;
  o.denseWeight = a.denseWeight;
  o.bm25Weight = a.bm25Weight;
  o.method = retrieval::parseMethod(a.method);
  o.threshold = a.threshold;
  o.relativeRatio = a.ratio;
  o.zMin = a.zMin;
  return o;
}

}  // namespace

void addMecabDicFlag(CLI::App* sub) {
  sub->add_option_function<std::string>(
      "--mecab-dic", [](const std::string& dir) { setMecabDictionaryOverride(dir); },
      "MeCab dictionary folder (dicrc, sys.dic) for encoders with BertJapaneseTokenizer (ruri v1/v2 need "
      "unidic-lite's dicdir); default: $KUMIHIMO_MECAB_DIC, the model folder, then pip's unidic_lite/dicdir");
}

void addIndex(CLI::App& app, Action& run) {
  auto a = std::make_shared<RetrievalArgs>();
  auto* index = app.add_subcommand("index", "Build and update a retrieval store");
  index->require_subcommand(1);
  auto* add = index->add_subcommand("add", "Import text, Markdown and JSONL files (changed documents only are redone)");
  add->add_option("store", a->store, "Store folder (created when missing)")->required();
  add->add_option("files", a->files,
                  "Files or folders (.txt .md .markdown .jsonl, recursively) to import; documents that came from them "
                  "and are gone (a deleted file, a JSONL id no longer there) are removed")
      ->required();
  add->add_option("--embedder", a->embedder,
                  "Embedder for the dense index: encoder:DIR (BERT / XLM-RoBERTa / ModernBERT, mean-pooled, e.g. "
                  "multilingual-e5, ruri-v3), decoder:DIR (mean-pooled final hidden states of a decoder), or DIR "
                  "(chosen by config.json model_type)");
  add->add_option("--prefix", a->prefix,
                  "Encoder prefixes (query/passage): e5 = 'query: '/'passage: ', ruri = 'クエリ: '/'文章: ', ruri-v3 = "
                  "'検索クエリ: '/'検索文書: ', none, or auto (from the folder name); part of the store's embedder identity")
      ->default_val("auto");
  addMecabDicFlag(add);
  add->add_option("--chunk-chars", a->chunkChars, "Target chunk length in characters")->default_val(200);
  add->add_option("--overlap-chars", a->overlapChars, "Overlap between chunks in characters (whole sentences)")->default_val(40);
  const std::string hnswHelp = "Dense index: HNSW (M 16, efConstruction 64, efSearch 128) above this many chunks, exact flat "
                               "at or below; recorded in the store (default: the recorded value, else " +
                               std::to_string(retrieval::kDefaultHnswAbove) + ")";
  add->add_option("--hnsw-above", a->hnswAbove, hnswHelp);
  auto* chunkFlag = add->get_option("--chunk-chars");
  auto* overlapFlag = add->get_option("--overlap-chars");
  add->callback([a, &run, chunkFlag, overlapFlag]() {
    const bool chunkingGiven = chunkFlag->count() > 0 || overlapFlag->count() > 0;
    run = [a, chunkingGiven]() {
    auto s = retrieval::DocumentStore::open(a->store, storeOptions(*a));
    if (chunkingGiven && !s.chunks().empty() &&
        (s.chunking().targetChars != a->chunkChars || s.chunking().overlapChars != a->overlapChars))
      throw Error(a->store, "was chunked with --chunk-chars " + std::to_string(s.chunking().targetChars) + " --overlap-chars " +
                                std::to_string(s.chunking().overlapChars) + "; an existing store is not re-chunked",
                  "drop the flags to import with the store's chunking, or import into a new store");
    auto emb = embedderFor(*a, s);
    if (emb && s.embedderModel().empty()) s.setEmbedderModel(emb->spec());
    const auto r = s.importFiles(a->files, emb.get(), progressLine());
    std::cout << a->store << ": " << r.summary() << "; " << s.documents().size() << " documents, " << s.chunks().size() << " chunks"
              << (s.hasDense() ? ", dense by " + s.embedderIdentity() + denseKind(s) : ", BM25 only") << "\n";
  }; });
  auto* rebuild = index->add_subcommand("rebuild", "Rebuild the BM25 and dense indexes from the stored chunks");
  rebuild->add_option("store", a->store, "Store folder")->required();
  rebuild->add_option("--embedder", a->embedder, "Embedder: DIR, encoder:DIR or decoder:DIR (default: the recorded one)");
  rebuild->add_option("--prefix", a->prefix, "Encoder prefixes: e5 | ruri | ruri-v3 | none | auto")->default_val("auto");
  rebuild->add_option("--hnsw-above", a->hnswAbove, hnswHelp);
  addMecabDicFlag(rebuild);
  rebuild->callback([a, &run]() { run = [a]() {
    // Read the chunks without the (possibly corrupt) indexes: open a fresh store from store.json.
    if (!std::filesystem::exists(std::filesystem::path(a->store) / "CURRENT"))
      throw Error(a->store, std::filesystem::exists(a->store) ? "not a retrieval store (no CURRENT file)" : "no such store folder",
                  "build one with `kumihimo-cli index add STORE FILES...`");
    auto s = retrieval::DocumentStore::openChunksOnly(a->store, storeOptions(*a));
    auto emb = embedderFor(*a, s);
    s.rebuild(emb.get(), progressLine());
    std::cout << a->store << ": rebuilt " << s.chunks().size() << " chunks" << denseKind(s) << "\n";
  }; });
}

void addRetrieve(CLI::App& app, Action& run) {
  auto a = std::make_shared<RetrievalArgs>();
  auto* sub = app.add_subcommand("retrieve", "Search a store: hits with dense, BM25, fused scores and the threshold's verdict");
  sub->add_option("store", a->store, "Store folder")->required();
  sub->add_option("query", a->query, "Query text")->required();
  sub->add_option("-k,--k", a->k, "Hits to show")->default_val(5);
  sub->add_option("--method", a->method, "fused | bm25 | dense")->default_val("fused");
  sub->add_option("--threshold", a->threshold, "relative | zscore | none")->default_val("relative");
  sub->add_option("--ratio", a->ratio, "relative: keep score >= ratio x best")->default_val(0.5);
  sub->add_option("--z", a->zMin, "zscore: keep z >= this")->default_val(0.0);
  sub->add_flag("--json", a->json, "One JSON object with every hit and score");
  addSearchFlags(sub, *a);
  sub->callback([a, &run]() { run = [a]() {
    auto s = retrieval::DocumentStore::openExisting(a->store, storeOptions(*a));
    std::unique_ptr<retrieval::Embedder> emb;
    if (a->method != "bm25") emb = embedderFor(*a, s);
    auto o = searchOptions(*a);
    const auto reranker = attachReranker(a->rerank, o);
    const auto hits = s.search(a->query, o, emb.get());
    if (a->json) {
      nlohmann::json j = {{"query", a->query}, {"method", a->method}, {"embedder", s.embedderIdentity()}};
      j["reranker"] = reranker ? reranker->identity() : std::string();
      j["hits"] = nlohmann::json::array();
      for (const auto& h : hits) j["hits"].push_back(h.toJson());
      std::cout << j.dump(2) << "\n";
      return;
    }
    int n = 0;
    for (const auto& h : hits) {
      std::cout << ++n << ". " << h.chunkId << (h.kept ? "" : "  [dropped]") << "  fused " << std::setprecision(4) << h.fusedScore;
      if (h.denseRank) std::cout << "  dense #" << h.denseRank << " cos " << *h.denseCosine;
      if (h.bm25Rank) std::cout << "  bm25 #" << h.bm25Rank << " " << *h.bm25Score;
      if (h.rerankScore) std::cout << "  rerank " << *h.rerankScore;
      std::cout << "\n   " << h.text.substr(0, 300) << "\n   (" << h.threshold << ")\n";
    }
    if (hits.empty()) std::cout << "no hits\n";
  }; });
}

void addRetrievalEval(CLI::App& app, Action& run) {
  auto a = std::make_shared<RetrievalArgs>();
  auto* sub = app.add_subcommand("retrieval-eval", "recall@k, MRR and nDCG@10 of bm25, dense and fused on labelled queries");
  sub->add_option("store", a->store, "Store folder")->required();
  sub->add_option("queries", a->queries, "JSONL: {\"query\": ..., \"relevant\": [doc or chunk ids]}")->required();
  sub->add_option("-o,--out", a->out, "Run folder (default: runs/retrieval-eval-<time>)");
  addSearchFlags(sub, *a);
  sub->callback([a, &run]() { run = [a]() {
    auto s = retrieval::DocumentStore::openExisting(a->store, storeOptions(*a));
    auto emb = embedderFor(*a, s);
    const auto queries = retrieval::readLabelledQueries(a->queries, s);
    std::string dir = a->out;
    if (dir.empty()) {
      std::time_t now = std::time(nullptr);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
      dir = std::string("runs/retrieval-eval-") + stamp;
    }
    auto o = searchOptions(*a);
    const auto reranker = attachReranker(a->rerank, o);
    const auto rep = retrieval::evaluateRetrieval(s, queries, o, emb.get(), dir);
    std::cout << rep.table() << "run folder " << dir << "\n";
  }; });
}

std::function<std::string(const std::string&)> makeRagAugmenter(const std::string& storeDir, int k, const RerankFlags& rerank,
                                                                const std::string& templateFile, const std::string& logFile) {
  std::string promptTemplate = defaultRagTemplate();
  if (!templateFile.empty()) {
    std::ifstream in(templateFile, std::ios::binary);
    if (!in) throw Error(templateFile, "cannot open the prompt template");
    std::stringstream ss;
    ss << in.rdbuf();
    promptTemplate = ss.str();
    try {
      fillRagTemplate(promptTemplate, "[1] x\n", "q");
    } catch (const Error& e) {
      throw Error(templateFile, e.cause(), e.hint());
    }
    if (promptTemplate.find("{context}") == std::string::npos)
      throw Error(templateFile, "has no {context}: the retrieved chunks would never reach the model",
                  "put {context} and {question} where they belong");
  }
  std::shared_ptr<std::ofstream> log;
  if (!logFile.empty()) {
    log = std::make_shared<std::ofstream>(logFile, std::ios::app);
    if (!*log) throw Error(logFile, "cannot open the retrieval log for appending");
  }
  if (!std::filesystem::exists(std::filesystem::path(storeDir) / "CURRENT"))
    throw Error(storeDir, "not a retrieval store", "build one with `kumihimo-cli index add STORE FILES...`");
  auto store = std::make_shared<retrieval::DocumentStore>(retrieval::DocumentStore::open(storeDir));
  RetrievalArgs a;
  std::shared_ptr<retrieval::Embedder> emb = embedderFor(a, *store);
  retrieval::SearchOptions o;
  o.k = std::max(1, k);
  o.method = emb ? retrieval::Method::Fused : retrieval::Method::Bm25;
  if (store->hasDense() && !emb)
    std::cerr << "warning: " << storeDir << ": the embedder that built the dense index ("
              << (store->embedderModel().empty() ? store->embedderIdentity() : store->embedderModel())
              << ") is not there; retrieving with BM25 only\n";
  std::shared_ptr<retrieval::Reranker> reranker = attachReranker(rerank, o);
  std::cerr << "retrieval from " << storeDir << " (" << retrieval::methodName(o.method) << ", " << store->chunks().size()
            << " chunks)\n";
  auto turn = std::make_shared<int>(0);
  return [store, emb, reranker, o, promptTemplate, log, logFile, turn](const std::string& user) {
    std::string context;
    int n = 0;
    const auto hits = store->search(user, o, emb.get());
    nlohmann::json logged = nlohmann::json::array();
    for (const auto& h : hits) {
      auto j = h.toJson();
      j["in_prompt"] = false;
      if (h.kept) {
        context += "[" + std::to_string(++n) + "] " + h.text + "\n";
        std::cerr << "(retrieved " << h.chunkId << ": " << h.threshold << ")\n";
        j["in_prompt"] = true;
      }
      logged.push_back(std::move(j));
    }
    const std::string prompt = fillRagTemplate(promptTemplate, context, user);
    if (log) {
      *log << nlohmann::json{{"turn", ++*turn}, {"user", user}, {"prompt", prompt}, {"method", retrieval::methodName(o.method)},
                             {"hits", logged}}.dump()
           << "\n" << std::flush;
      if (!*log) throw Error(logFile, "write failed (disk full?)");
    }
    return prompt;
  };
}

}  // namespace kh::cli
