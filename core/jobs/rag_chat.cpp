// RagStore and the retrieval-augmented chat helpers (see chat_engine.h): core/retrieval's
// DocumentStore and the embedder it recorded (decoder or encoder) behind the torch-free facade. Never changes the store.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <mutex>

#include "core/error.h"
#include "core/jobs/chat_engine.h"
#include "core/retrieval/encoder_embedder.h"
#include "core/retrieval/rerank.h"
#include "core/retrieval/store.h"
#include "core/text/bert_japanese_tokenizer.h"

namespace kh {

namespace fs = std::filesystem;
namespace rt = retrieval;

namespace {

RagHit toRag(const rt::RetrievalHit& h) {
  RagHit r;
  r.chunkId = h.chunkId;
  r.docId = h.docId;
  r.text = h.text;
  r.chunkKey = h.chunkKey;
  r.denseCosine = h.denseCosine;
  r.denseRank = h.denseRank;
  r.bm25Score = h.bm25Score;
  r.bm25Rank = h.bm25Rank;
  r.fusedScore = h.fusedScore;
  r.rerankScore = h.rerankScore;
  r.kept = h.kept;
  r.threshold = h.threshold;
  return r;
}

rt::RetrievalHit fromRag(const RagHit& r) {
  rt::RetrievalHit h;
  h.chunkId = r.chunkId;
  h.docId = r.docId;
  h.text = r.text;
  h.chunkKey = r.chunkKey;
  h.denseCosine = r.denseCosine;
  h.denseRank = r.denseRank;
  h.bm25Score = r.bm25Score;
  h.bm25Rank = r.bm25Rank;
  h.fusedScore = r.fusedScore;
  h.rerankScore = r.rerankScore;
  h.kept = r.kept;
  h.threshold = r.threshold;
  return h;
}

void setThreshold(rt::SearchOptions& o, const RagThreshold& t) {
  if (t.mode != "relative" && t.mode != "zscore" && t.mode != "none")
    throw Error("retrieval threshold", "unknown mode '" + t.mode + "'", "relative, zscore or none");
  o.threshold = t.mode;
  o.relativeRatio = t.ratio;
  o.zMin = t.zMin;
}

}  // namespace

std::string defaultRagTemplate() { return "次の参考情報を使って答えてください。\n{context}\n質問: {question}"; }

std::string fillRagTemplate(const std::string& promptTemplate, const std::string& context, const std::string& question) {
  if (promptTemplate.find("{question}") == std::string::npos)
    throw Error("RAG prompt template", "has no {question}", "put {context} and {question} where they belong");
  if (context.empty()) return question;
  // One pass over the template: what the context or the question contain is never substituted.
  std::string out;
  for (size_t i = 0; i < promptTemplate.size();) {
    if (promptTemplate.compare(i, 9, "{context}") == 0) {
      out += context;
      i += 9;
    } else if (promptTemplate.compare(i, 10, "{question}") == 0) {
      out += question;
      i += 10;
    } else {
      out += promptTemplate[i++];
    }
  }
  return out;
}

std::vector<RagHit> rethreshold(const RagRetrieval& turn, const RagThreshold& threshold) {
  std::vector<rt::RetrievalHit> hits;
  hits.reserve(turn.hits.size());
  for (const auto& h : turn.hits) hits.push_back(fromRag(h));
  rt::SearchOptions o;
  o.method = turn.method.empty() ? rt::Method::Fused : rt::parseMethod(turn.method);
  setThreshold(o, threshold);
  rt::applyThreshold(hits, o);
  std::vector<RagHit> out = turn.hits;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].kept = hits[i].kept;
    out[i].threshold = hits[i].threshold;
  }
  return out;
}

// The reranker last asked for, loaded once per folder (retrieve() is const and may run concurrently).
struct RerankerSlot {
  std::mutex mutex;
  std::string key;  // model folder and answer words it was loaded for
  std::shared_ptr<rt::DecoderReranker> reranker;
};

struct RagStore::Impl {
  rt::DocumentStore store;
  std::unique_ptr<rt::Embedder> embedder;
  std::string missingEmbedder;  // the recorded embedder folder when it is gone
  std::shared_ptr<RerankerSlot> rerank = std::make_shared<RerankerSlot>();
};

RagStore::RagStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RagStore::~RagStore() = default;

void setMecabDictionary(const std::string& dir) { setMecabDictionaryOverride(dir); }

bool ragStoreNeedsRebuild(const std::string& dir) {
  if (!fs::exists(fs::path(dir) / "CURRENT")) return false;
  try {
    rt::DocumentStore::open(dir);
    return false;
  } catch (const Error&) {
  }
  try {
    rt::DocumentStore::openChunksOnly(dir);
    return true;
  } catch (const Error&) {
    return false;
  }
}

void rebuildRagStore(const std::string& dir, const std::function<void(size_t, size_t)>& progress) {
  auto store = rt::DocumentStore::openChunksOnly(dir);
  std::unique_ptr<rt::Embedder> embedder;
  if (!store.embedderIdentity().empty()) {
    const std::string& model = store.embedderModel();
    if (model.empty() || !fs::exists(rt::embedderFolder(model)))
      throw Error(dir, "the embedder that built the dense index (" + (model.empty() ? store.embedderIdentity() : model) +
                           ") is not there", "rebuild with `kumihimo-cli index rebuild STORE --embedder MODEL`");
    embedder = rt::openEmbedder(model, "auto");
  }
  store.rebuild(embedder.get(), progress);
}

std::string importIntoRagStore(const std::string& dir, const std::vector<std::string>& paths, const std::string& embedder,
                               const std::function<void(size_t, size_t)>& progress) {
  if (dir.empty()) throw Error("documents", "no store folder given", "name a folder for the store");
  if (paths.empty()) throw Error(dir, "no files to import", "pick text, Markdown or JSONL files or a folder of them");
  auto store = rt::DocumentStore::open(dir);
  auto emb = rt::chooseEmbedder(embedder, "auto", store.embedderModel());
  if (emb && store.embedderModel().empty()) store.setEmbedderModel(emb->spec());
  return store.importFiles(paths, emb.get(), progress).summary();
}

std::shared_ptr<RagStore> RagStore::open(const std::string& dir) {
  if (dir.empty()) throw Error("documents", "no store folder given", "pick a folder made by `kumihimo-cli index add`");
  if (!fs::exists(fs::path(dir) / "CURRENT"))
    throw Error(dir, "not a retrieval store (no CURRENT file)", "build one with `kumihimo-cli index add STORE FILES...`");
  auto impl = std::make_unique<Impl>(Impl{rt::DocumentStore::open(dir), nullptr, {}});
  const std::string model = impl->store.embedderModel();
  if (impl->store.hasDense()) {
    // The recorded spec (decoder or encoder folder, with its prefix style), as the CLI reopens it.
    if (!model.empty() && fs::exists(rt::embedderFolder(model)))
      impl->embedder = rt::openEmbedder(model, "auto");
    else
      impl->missingEmbedder = model.empty() ? std::string("(not recorded)") : model;
  }
  return std::shared_ptr<RagStore>(new RagStore(std::move(impl)));
}

const std::string& RagStore::dir() const { return impl_->store.dir(); }
size_t RagStore::documentCount() const { return impl_->store.documents().size(); }
size_t RagStore::chunkCount() const { return impl_->store.chunks().size(); }
std::string RagStore::embedder() const { return impl_->store.embedderIdentity(); }

std::string RagStore::describe() const {
  std::string d = std::to_string(documentCount()) + " documents, " + std::to_string(chunkCount()) + " chunks, ";
  if (!impl_->store.hasDense()) return d + "BM25 only";
  if (!impl_->embedder) return d + "dense by " + embedder() + " but its model folder " + impl_->missingEmbedder + " is gone: BM25 only";
  return d + "dense by " + embedder() + " (fused with BM25)";
}

RagRetrieval RagStore::retrieve(const std::string& user, const RagSettings& settings) const {
  if (settings.k < 1) throw Error("retrieval k", "must be at least 1");
  if (settings.candidates < 1) throw Error("retrieval candidates", "must be at least 1");
  rt::SearchOptions o;
  o.k = std::numeric_limits<int>::max();  // keep every candidate: the inspector shows dropped ones too
  o.candidates = settings.candidates;
  o.denseWeight = settings.denseWeight;
  o.bm25Weight = settings.bm25Weight;
  o.method = settings.method.empty() ? (impl_->embedder ? rt::Method::Fused : rt::Method::Bm25) : rt::parseMethod(settings.method);
  if (o.method != rt::Method::Bm25 && !impl_->embedder && impl_->store.hasDense())
    throw Error(dir(), std::string("method ") + rt::methodName(o.method) + " needs the store's embedder " + impl_->missingEmbedder,
                "use bm25, or rebuild the store with an embedder that exists");
  setThreshold(o, settings.threshold);
  std::shared_ptr<rt::DecoderReranker> reranker;
  if (!settings.rerankModel.empty()) {
    if (settings.rerankK < 1) throw Error("rerank k", "must be at least 1");
    std::lock_guard<std::mutex> lock(impl_->rerank->mutex);
    const std::string key = settings.rerankModel + "\n" + settings.rerankAnswers;
    if (impl_->rerank->key != key || !impl_->rerank->reranker) {
      rt::RerankOptions ro;
      ro.answers = rt::parseAnswerWords(settings.rerankAnswers);
      impl_->rerank->reranker = std::make_shared<rt::DecoderReranker>(settings.rerankModel, ro);
      impl_->rerank->key = key;
    }
    reranker = impl_->rerank->reranker;
    o.reranker = reranker.get();
    o.rerankK = settings.rerankK;
  }
  RagRetrieval r;
  r.reranker = reranker ? reranker->identity() : std::string();
  r.storeDir = dir();
  r.query = user;
  r.method = rt::methodName(o.method);
  r.settings = settings;
  std::string context;
  int n = 0;
  for (const auto& h : impl_->store.search(user, o, impl_->embedder.get())) {
    RagHit rh = toRag(h);
    if (rh.kept && n < settings.k) {
      rh.inPrompt = true;
      context += "[" + std::to_string(++n) + "] " + rh.text + "\n";
    }
    r.hits.push_back(std::move(rh));
  }
  r.prompt = fillRagTemplate(settings.promptTemplate, context, user);
  return r;
}

RagSource RagStore::source(const std::string& chunkId) const {
  const auto& chunks = impl_->store.chunks();
  auto c = std::find_if(chunks.begin(), chunks.end(), [&](const rt::Chunk& x) { return x.id == chunkId; });
  if (c == chunks.end()) throw Error(dir(), "no chunk '" + chunkId + "' in this store", "was the store re-imported?");
  const auto& docs = impl_->store.documents();
  auto d = std::find_if(docs.begin(), docs.end(), [&](const rt::Document& x) { return x.id == c->docId; });
  if (d == docs.end()) throw Error(dir(), "chunk '" + chunkId + "' names document '" + c->docId + "' that the store lacks");
  RagSource s;
  s.docId = d->id;
  s.source = d->source;
  s.path = d->source;
  s.begin = c->begin;
  s.end = c->end;
  // A JSONL document is recorded as "file.jsonl:LINE".
  if (const size_t colon = s.source.rfind(':'); colon != std::string::npos && colon + 1 < s.source.size() &&
      s.source.find_first_not_of("0123456789", colon + 1) == std::string::npos && !fs::exists(s.source)) {
    s.path = s.source.substr(0, colon);
    s.line = std::stoi(s.source.substr(colon + 1));
  }
  // The absolute path recorded at import (the source may be relative to wherever that ran).
  if (!d->origin.empty()) s.path = d->origin;
  else if (fs::exists(s.path)) s.path = fs::absolute(s.path).lexically_normal().string();
  // The text from the file, when it still holds this document (the same JSONL line) with this
  // chunk where it was.
  bool fromFile = false;
  try {
    if (fs::is_regular_file(s.path))
      for (const auto& sd : rt::readSourceFile(s.path)) {
        if (s.line > 0 && sd.source != s.path + ":" + std::to_string(s.line)) continue;
        const auto cps = rt::decodeUtf8(sd.text, s.path);
        if (static_cast<size_t>(c->end) <= cps.size() &&
            rt::encodeUtf8(cps, static_cast<size_t>(c->begin), static_cast<size_t>(c->end)) == c->text) {
          s.text = sd.text;
          fromFile = true;
        }
        break;
      }
  } catch (const Error&) {
    // unreadable now: fall back to the stored chunks below
  }
  if (!fromFile) {
    // Rebuilt from the document's chunks at their offsets (the blanks between sentences as spaces).
    std::vector<char32_t> cps;
    for (const auto& x : chunks) {
      if (x.docId != d->id) continue;
      const auto piece = rt::decodeUtf8(x.text, x.id);
      const size_t end = static_cast<size_t>(x.begin) + piece.size();
      if (cps.size() < end) cps.resize(end, U' ');
      std::copy(piece.begin(), piece.end(), cps.begin() + x.begin);
    }
    s.text = rt::encodeUtf8(cps);
    s.note = fs::exists(s.path) ? "the source file changed since import; showing the stored chunks"
                                : "the source file is gone; showing the stored chunks";
  }
  const auto cps = rt::decodeUtf8(s.text, s.path);
  s.byteBegin = rt::encodeUtf8(cps, 0, static_cast<size_t>(s.begin)).size();
  s.byteEnd = s.byteBegin + rt::encodeUtf8(cps, static_cast<size_t>(s.begin), static_cast<size_t>(s.end)).size();
  return s;
}

}  // namespace kh
