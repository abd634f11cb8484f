// The retrieval workspace: import, generations on disk, fused search with explanations.
#include "core/retrieval/store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace fs = std::filesystem;

namespace kh::retrieval {

namespace {

std::string hashHex(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::string readAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open the file");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void writeAtomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << bytes;
    if (!f) throw Error(tmp, "write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path, "cannot rename " + tmp + " into place");
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// Nothing to search for or index: no BM25 term once normalised (only blanks, U+3000 included, and
// ASCII punctuation). `s` must be valid UTF-8.
bool nothingToSearch(const std::string& s, const std::string& where) {
  return blank(s) || searchTerms(normalizeForSearch(decodeUtf8(s, where)), false).empty();
}

std::string absolutePath(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

// `origin` is `scope` or lies under the folder `scope`.
bool inScope(const std::string& origin, const std::string& scope) {
  if (origin.empty()) return false;
  if (origin == scope) return true;
  const std::string dir = !scope.empty() && scope.back() == '/' ? scope : scope + "/";
  return origin.compare(0, dir.size(), dir) == 0;
}

}  // namespace

std::vector<std::string> sourceFilesOf(const std::string& path) {
  if (fs::is_regular_file(path)) return {path};
  if (!fs::is_directory(path)) throw Error(path, "no such file or folder");
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(path)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".txt" || ext == ".md" || ext == ".markdown" || ext == ".jsonl"))
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(path, "folder has no .txt, .md, .markdown or .jsonl files");
  return files;
}

std::vector<SourceDocument> readSourceFile(const std::string& path, const std::string& name) {
  if (!fs::is_regular_file(path)) throw Error(path, "no such file");
  std::string bytes = readAll(path);
  if (bytes.compare(0, 3, "\xEF\xBB\xBF") == 0) bytes.erase(0, 3);  // a UTF-8 byte order mark is not text
  if (blank(bytes)) throw Error(path, "empty file", "nothing to import");
  if (auto nul = bytes.find('\0'); nul != std::string::npos)
    throw Error(path, "binary file (NUL byte at byte " + std::to_string(nul) + ")", "import text, Markdown or JSONL");
  decodeUtf8(bytes, path);  // throws with the byte offset and line
  const fs::path p(path);
  // The document's name: as the import named it (relative to the folder imported), else the file's.
  const fs::path named = name.empty() ? p.filename() : fs::path(name);
  const std::string origin = absolutePath(path);
  std::vector<SourceDocument> out;
  if (p.extension() == ".jsonl") {
    std::istringstream in(bytes);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (blank(line)) continue;
      const std::string where = path + ":" + std::to_string(n);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        throw Error(where, "not a JSON object", "one {\"text\": ...} per line");
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(where, "needs a string \"text\"", "one {\"text\": ..., \"id\": ..., \"metadata\": {...}} per line");
      SourceDocument d;
      d.text = j["text"].get<std::string>();
      if (nothingToSearch(d.text, where)) throw Error(where, "empty text (only blanks or punctuation)");
      d.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                              : (named.parent_path() / named.stem()).generic_string() + ":" + std::to_string(n);
      if (j.contains("metadata")) d.metadata = j["metadata"];
      d.source = where;
      d.origin = origin;
      out.push_back(std::move(d));
    }
    if (out.empty()) throw Error(path, "empty file (no JSONL lines)", "nothing to import");
  } else {
    if (nothingToSearch(bytes, path)) throw Error(path, "empty file (only blanks or punctuation)", "nothing to import");
    SourceDocument d;
    d.id = named.generic_string();
    d.text = bytes;
    d.markdown = p.extension() == ".md" || p.extension() == ".markdown";
    d.source = path;
    d.origin = origin;
    out.push_back(std::move(d));
  }
  return out;
}

const char* methodName(Method m) { return m == Method::Bm25 ? "bm25" : m == Method::Dense ? "dense" : "fused"; }
Method parseMethod(const std::string& s) {
  if (s == "bm25") return Method::Bm25;
  if (s == "dense") return Method::Dense;
  if (s == "fused") return Method::Fused;
  throw Error("--method", "unknown method '" + s + "'", "bm25, dense or fused");
}

std::string ImportReport::summary() const {
  return std::to_string(added) + " added, " + std::to_string(updated) + " updated, " + std::to_string(unchanged) + " unchanged" +
         (renamed ? " (" + std::to_string(renamed) + " under a new id)" : std::string()) + ", " + std::to_string(removed) +
         " removed";
}

nlohmann::json RetrievalHit::toJson() const {
  nlohmann::json j = {{"chunk", chunkId}, {"doc", docId}, {"text", text}, {"fused_score", fusedScore},
                      {"dense_rank", denseRank}, {"bm25_rank", bm25Rank}, {"kept", kept}, {"threshold", threshold}};
  j["dense_cosine"] = denseCosine ? nlohmann::json(*denseCosine) : nlohmann::json();
  j["bm25_score"] = bm25Score ? nlohmann::json(*bm25Score) : nlohmann::json();
  j["rerank_score"] = rerankScore ? nlohmann::json(*rerankScore) : nlohmann::json();
  return j;
}

// ---------------------------------------------------------------------------------------------

DocumentStore DocumentStore::open(const std::string& dir, const StoreOptions& options) { return openImpl(dir, options, true); }
DocumentStore DocumentStore::openExisting(const std::string& dir, const StoreOptions& options) {
  if (!fs::exists(fs::path(dir) / "CURRENT"))
    throw Error(dir, fs::exists(dir) ? "not a retrieval store (no CURRENT file)" : "no such store folder",
                "build one with `kumihimo-cli index add STORE FILES...`");
  return openImpl(dir, options, true);
}
DocumentStore DocumentStore::openChunksOnly(const std::string& dir, const StoreOptions& options) {
  return openImpl(dir, options, false);
}

DocumentStore DocumentStore::openImpl(const std::string& dir, const StoreOptions& options, bool withIndexes) {
  DocumentStore s;
  s.dir_ = dir;
  s.options_ = options;
  s.bm25_ = Bm25Index(options.bm25);
  s.hnswAbove_ = options.hnswAbove.value_or(kDefaultHnswAbove);
  const fs::path current = fs::path(dir) / "CURRENT";
  if (!fs::exists(current)) return s;
  std::string gen = readAll(current.string());
  while (!gen.empty() && (gen.back() == '\n' || gen.back() == ' ')) gen.pop_back();
  const fs::path g = fs::path(dir) / gen;
  const std::string hint = "rebuild the store's indexes with `kumihimo-cli index rebuild STORE`";
  if (!fs::is_regular_file(g / "store.json"))
    throw Error((g / "store.json").string(), "missing: CURRENT names generation '" + gen + "', which is not there",
                "the store folder was damaged; re-import the documents into a new store");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(readAll((g / "store.json").string()));
  } catch (const nlohmann::json::exception&) {
    throw Error((g / "store.json").string(), "corrupt store file", "re-import the documents into a new store");
  }
  s.generation_ = j.value("generation", 0);
  s.nextKey_ = j.value("next_key", 0);
  s.embedderIdentity_ = j.value("embedder", "");
  s.embedderModel_ = j.value("embedder_model", "");
  s.embedderDim_ = j.value("embedder_dim", 0);
  s.hnswAbove_ = options.hnswAbove ? *options.hnswAbove : j.value("hnsw_above", kDefaultHnswAbove);
  if (j.contains("chunking")) {
    s.options_.chunking.targetChars = j["chunking"].value("target_chars", 200);
    s.options_.chunking.overlapChars = j["chunking"].value("overlap_chars", 40);
  }
  for (const auto& c : j["chunks"]) {
    Chunk ch;
    ch.key = c["key"];
    ch.id = c["id"];
    ch.docId = c["doc"];
    ch.text = c["text"];
    ch.begin = c["begin"];
    ch.end = c["end"];
    s.byKey_[ch.key] = s.chunks_.size();
    s.chunks_.push_back(std::move(ch));
  }
  for (const auto& d : j["documents"]) {
    Document doc;
    doc.id = d["id"];
    doc.source = d["source"];
    doc.origin = d.value("origin", "");  // stores from before origins: nothing vanishes
    doc.hash = d["hash"];
    doc.metadata = d["metadata"];
    doc.chunkKeys = d["chunks"].get<std::vector<int64_t>>();
    s.docs_.push_back(std::move(doc));
  }
  if (!withIndexes) return s;
  s.bm25_ = Bm25Index::load((g / "bm25.bin").string());
  s.bm25_.setParams(options.bm25);
  if (s.bm25_.size() != static_cast<int64_t>(s.chunks_.size()))
    throw Error((g / "bm25.bin").string(), "BM25 index has " + std::to_string(s.bm25_.size()) + " chunks, the store " +
                                               std::to_string(s.chunks_.size()), hint);
  if (!s.embedderIdentity_.empty()) {
    s.dense_ = std::make_unique<DenseIndex>(DenseIndex::load((g / "dense.faiss").string(), s.embedderDim_, s.hnswAbove_));
    if (s.dense_->size() != static_cast<int64_t>(s.chunks_.size()))
      throw Error((g / "dense.faiss").string(), "dense index has " + std::to_string(s.dense_->size()) +
                                                    " vectors, the store " + std::to_string(s.chunks_.size()) + " chunks", hint);
  }
  return s;
}

void DocumentStore::save() {
  fs::create_directories(dir_);
  ++generation_;
  const std::string gen = "gen-" + std::to_string(generation_);
  const fs::path g = fs::path(dir_) / gen;
  fs::remove_all(g);
  fs::create_directories(g);
  nlohmann::json j = {{"format", "kumihimo-retrieval-store"}, {"version", 1}, {"generation", generation_},
                      {"next_key", nextKey_}, {"embedder", embedderIdentity_}, {"embedder_model", embedderModel_},
                      {"embedder_dim", embedderDim_}, {"hnsw_above", hnswAbove_},
                      {"chunking", {{"target_chars", options_.chunking.targetChars}, {"overlap_chars", options_.chunking.overlapChars}}}};
  nlohmann::json docs = nlohmann::json::array(), chunks = nlohmann::json::array();
  for (const auto& d : docs_)
    docs.push_back({{"id", d.id}, {"source", d.source}, {"origin", d.origin}, {"hash", d.hash}, {"metadata", d.metadata}, {"chunks", d.chunkKeys}});
  for (const auto& c : chunks_)
    chunks.push_back({{"key", c.key}, {"id", c.id}, {"doc", c.docId}, {"text", c.text}, {"begin", c.begin}, {"end", c.end}});
  j["documents"] = std::move(docs);
  j["chunks"] = std::move(chunks);
  writeAtomically((g / "store.json").string(), j.dump(1));
  bm25_.save((g / "bm25.bin").string());
  if (dense_) dense_->save((g / "dense.faiss").string());
  writeAtomically((fs::path(dir_) / "CURRENT").string(), gen + "\n");  // the switch
  for (const auto& e : fs::directory_iterator(dir_))  // older generations are no longer read
    if (e.is_directory() && e.path().filename().string().rfind("gen-", 0) == 0 && e.path().filename() != gen)
      fs::remove_all(e.path());
}

void DocumentStore::checkEmbedder(const Embedder* embedder, bool forQuery) const {
  if (embedderIdentity_.empty()) return;
  if (!embedder)
    throw Error(dir_, std::string("the store's dense index was built by ") + embedderIdentity_ + " and no embedder was given",
                forQuery ? "pass the same model, or use --method bm25" : "pass --embedder " + embedderModel_);
  if (embedder->identity() != embedderIdentity_ && embedder->legacyIdentity() != embedderIdentity_)
    throw Error(dir_, "embedder " + embedder->identity() + " is not the one that built this store (" + embedderIdentity_ + ")",
                "query with " + (embedderModel_.empty() ? embedderIdentity_ : embedderModel_) + ", or build a new store");
}

const Chunk* DocumentStore::chunkByKey(int64_t key) const {
  auto it = byKey_.find(key);
  return it == byKey_.end() ? nullptr : &chunks_[it->second];
}

bool DocumentStore::hasId(const std::string& id) const {
  for (const auto& d : docs_)
    if (d.id == id) return true;
  for (const auto& c : chunks_)
    if (c.id == id) return true;
  return false;
}

void DocumentStore::rebuildBm25() {
  bm25_ = Bm25Index(options_.bm25);
  byKey_.clear();
  for (size_t i = 0; i < chunks_.size(); ++i) {
    bm25_.add(chunks_[i].text);
    byKey_[chunks_[i].key] = i;
  }
}

ImportReport DocumentStore::importFiles(const std::vector<std::string>& paths, const Embedder* embedder,
                                        const EmbedProgress& progress) {
  std::vector<SourceDocument> docs;
  std::vector<std::string> scopes;
  for (const auto& path : paths) {
    const bool folder = fs::is_directory(path);
    for (const auto& f : sourceFilesOf(path)) {
      // In a folder a document is named by its path below the folder (a/README.md and b/README.md
      // are two documents); a file given alone by its file name.
      auto d = readSourceFile(f, folder ? fs::path(f).lexically_relative(path).generic_string() : std::string());
      docs.insert(docs.end(), std::make_move_iterator(d.begin()), std::make_move_iterator(d.end()));
    }
    scopes.push_back(absolutePath(path));
  }
  return importDocuments(docs, embedder, progress, scopes);
}

void DocumentStore::reloadFromDisk() {
  try {
    *this = openImpl(dir_, options_, true);
  } catch (const Error&) {
    *this = openImpl(dir_, options_, false);  // its indexes were already unreadable
  }
}

ImportReport DocumentStore::importDocuments(const std::vector<SourceDocument>& in, const Embedder* embedder,
                                            const EmbedProgress& progress, const std::vector<std::string>& scopes) {
  // All or nothing, in memory too: on any error (a bad document, a cancelled embedding, a full
  // disk) the store is put back as it is on disk, where CURRENT still names the old generation.
  try {
    return importImpl(in, embedder, progress, scopes);
  } catch (...) {
    reloadFromDisk();
    throw;
  }
}

ImportReport DocumentStore::importImpl(const std::vector<SourceDocument>& in, const Embedder* embedder,
                                       const EmbedProgress& progress, const std::vector<std::string>& scopes) {
  if (embedder && embedderIdentity_.empty() && chunks_.empty()) {
    embedderIdentity_ = embedder->identity();
    embedderDim_ = embedder->dim();
    dense_ = std::make_unique<DenseIndex>(embedderDim_, hnswAbove_);
  } else if (embedder && embedderIdentity_.empty()) {
    throw Error(dir_, "this store was built without an embedder", "build a new store with --embedder");
  }
  checkEmbedder(embedder, false);
  ImportReport report;
  std::set<std::string> seen;
  std::vector<std::string> hashes;
  for (const auto& sd : in) {
    if (!seen.insert(sd.id).second) throw Error(sd.source, "document id '" + sd.id + "' appears twice in this import");
    hashes.push_back(hashHex(sd.text));
  }
  auto inScopes = [&](const Document& d) {
    return std::any_of(scopes.begin(), scopes.end(), [&](const std::string& sc) { return inScope(d.origin, sc); });
  };
  // Which stored document each incoming one continues (-1: none), in three rounds:
  //  1. the same id and the same text: unchanged;
  //  2. the same text from the same file, under another id, where this import covers that file
  //     (JSONL lines without ids are named by line number, so a line inserted above renumbers the
  //     rest): renamed, keeping its chunks and vectors;
  //  3. the same id with other text: re-chunked and re-embedded.
  std::unordered_map<std::string, size_t> byId;
  for (size_t i = 0; i < docs_.size(); ++i) byId[docs_[i].id] = i;
  std::vector<long> match(in.size(), -1);
  std::vector<bool> claimed(docs_.size(), false);
  for (size_t k = 0; k < in.size(); ++k)
    if (auto it = byId.find(in[k].id); it != byId.end() && docs_[it->second].hash == hashes[k]) {
      match[k] = static_cast<long>(it->second);
      claimed[it->second] = true;
    }
  std::unordered_map<std::string, std::vector<size_t>> movable;  // origin + "\n" + hash -> stored docs
  for (size_t i = docs_.size(); i-- > 0;)
    if (!claimed[i] && !docs_[i].origin.empty() && inScopes(docs_[i])) movable[docs_[i].origin + "\n" + docs_[i].hash].push_back(i);
  for (size_t k = 0; k < in.size(); ++k) {
    if (match[k] >= 0 || in[k].origin.empty()) continue;
    auto it = movable.find(absolutePath(in[k].origin) + "\n" + hashes[k]);
    while (it != movable.end() && !it->second.empty() && claimed[it->second.back()]) it->second.pop_back();
    if (it == movable.end() || it->second.empty()) continue;
    match[k] = static_cast<long>(it->second.back());
    claimed[it->second.back()] = true;
    it->second.pop_back();
  }
  for (size_t k = 0; k < in.size(); ++k) {
    if (match[k] >= 0) continue;
    auto it = byId.find(in[k].id);
    if (it == byId.end() || claimed[it->second]) continue;
    const Document& old = docs_[it->second];
    // The same name from another file that still exists is a clash, not an update: one would
    // silently replace the other.
    if (!old.origin.empty() && !in[k].origin.empty() && old.origin != absolutePath(in[k].origin) && fs::exists(old.origin) &&
        !inScopes(old))
      throw Error(in[k].source, "document id '" + in[k].id + "' is already in the store from " + old.origin,
                  "import the folder above both (documents are named by their path below it), or give JSONL lines ids");
    match[k] = static_cast<long>(it->second);
    claimed[it->second] = true;
  }

  std::set<int64_t> removed;
  std::vector<Chunk> fresh;
  std::unordered_map<int64_t, std::string> renamedChunks;  // chunk key -> new chunk id
  std::vector<Document> next;
  next.reserve(docs_.size() + in.size());
  std::vector<bool> carried(docs_.size(), false);
  std::vector<long> nextOf(docs_.size(), -1);  // stored document -> its continuation in `next`
  for (size_t k = 0; k < in.size(); ++k) {
    const SourceDocument& sd = in[k];
    Document doc;
    if (match[k] >= 0) {
      doc = docs_[static_cast<size_t>(match[k])];
      carried[static_cast<size_t>(match[k])] = true;
      nextOf[static_cast<size_t>(match[k])] = static_cast<long>(k);
      if (doc.hash == hashes[k]) {
        if (doc.id != sd.id) {
          ++report.renamed;
          for (size_t n = 0; n < doc.chunkKeys.size(); ++n) renamedChunks[doc.chunkKeys[n]] = sd.id + "#" + std::to_string(n);
          doc.id = sd.id;
        }
        doc.metadata = sd.metadata;
        doc.source = sd.source;
        doc.origin = sd.origin;
        ++report.unchanged;
        next.push_back(std::move(doc));
        continue;
      }
      removed.insert(doc.chunkKeys.begin(), doc.chunkKeys.end());
      doc.chunkKeys.clear();
      ++report.updated;
    } else {
      doc.id = sd.id;
      ++report.added;
    }
    doc.source = sd.source;
    doc.origin = sd.origin;
    doc.hash = hashes[k];
    doc.metadata = sd.metadata;
    ChunkOptions chunking = options_.chunking;
    chunking.markdownSections = sd.markdown;
    const auto pieces = chunkText(decodeUtf8(sd.text, sd.source), chunking);
    for (size_t n = 0; n < pieces.size(); ++n) {
      Chunk c;
      c.key = nextKey_++;
      c.id = sd.id + "#" + std::to_string(n);
      c.docId = sd.id;
      c.text = pieces[n].text;
      c.begin = pieces[n].begin;
      c.end = pieces[n].end;
      doc.chunkKeys.push_back(c.key);
      fresh.push_back(std::move(c));
    }
    next.push_back(std::move(doc));
  }
  // The stored documents in their order (continued ones updated in place; the others kept, unless
  // they came from the imported files and folders: vanished, as a deleted file or a JSONL id no
  // longer there), then the new ones in import order.
  std::vector<Document> result;
  result.reserve(next.size() + docs_.size());
  for (size_t i = 0; i < docs_.size(); ++i) {
    if (carried[i]) {
      result.push_back(std::move(next[static_cast<size_t>(nextOf[i])]));
    } else if (inScopes(docs_[i])) {
      removed.insert(docs_[i].chunkKeys.begin(), docs_[i].chunkKeys.end());
      ++report.removed;
    } else {
      result.push_back(std::move(docs_[i]));
    }
  }
  for (size_t k = 0; k < in.size(); ++k)
    if (match[k] < 0) result.push_back(std::move(next[k]));
  if (dense_) {
    std::vector<std::string> texts;
    std::vector<int64_t> keys;
    for (const auto& c : fresh) texts.push_back(c.text), keys.push_back(c.key);
    auto vecs = embedder->embed(texts, progress);
    dense_->remove(std::vector<int64_t>(removed.begin(), removed.end()));
    dense_->add(keys, vecs);
    report.chunksEmbedded = static_cast<int64_t>(keys.size());
  }
  docs_ = std::move(result);
  if (!removed.empty())
    chunks_.erase(std::remove_if(chunks_.begin(), chunks_.end(), [&](const Chunk& c) { return removed.count(c.key) != 0; }),
                  chunks_.end());
  for (auto& c : chunks_)
    if (auto it = renamedChunks.find(c.key); it != renamedChunks.end()) {
      c.id = it->second;
      c.docId = it->second.substr(0, it->second.rfind('#'));
    }
  for (auto& c : fresh) chunks_.push_back(std::move(c));
  rebuildBm25();
  save();
  return report;
}

void DocumentStore::rebuild(const Embedder* embedder, const EmbedProgress& progress) {
  try {
    rebuildImpl(embedder, progress);
  } catch (...) {
    reloadFromDisk();
    throw;
  }
}

void DocumentStore::rebuildImpl(const Embedder* embedder, const EmbedProgress& progress) {
  rebuildBm25();
  if (!embedderIdentity_.empty()) {
    checkEmbedder(embedder, false);
    dense_ = std::make_unique<DenseIndex>(embedderDim_, hnswAbove_);
    std::vector<std::string> texts;
    std::vector<int64_t> keys;
    for (const auto& c : chunks_) texts.push_back(c.text), keys.push_back(c.key);
    dense_->add(keys, embedder->embed(texts, progress));
  }
  save();
}

// ---------------------------------------------------------------------------------------------

std::vector<RetrievalHit> DocumentStore::search(const std::string& query, const SearchOptions& o,
                                                const Embedder* embedder) const {
  if (blank(query)) throw Error("query", "empty query", "ask something");
  if (nothingToSearch(query, "query")) throw Error("query", "empty query (only blanks or punctuation)", "ask something");
  const bool wantDense = o.method != Method::Bm25 && dense_ != nullptr;
  if (o.method == Method::Dense && !dense_) throw Error(dir_, "this store has no dense index", "use --method bm25 or fused");
  if (wantDense) checkEmbedder(embedder, true);

  std::unordered_map<int64_t, RetrievalHit> byKey;
  std::vector<int64_t> order;
  auto hit = [&](int64_t key) -> RetrievalHit& {
    auto [it, inserted] = byKey.try_emplace(key);
    if (inserted) {
      const Chunk& c = *chunkByKey(key);
      it->second.chunkKey = key;
      it->second.chunkId = c.id;
      it->second.docId = c.docId;
      it->second.text = c.text;
      order.push_back(key);
    }
    return it->second;
  };
  if (wantDense) {
    const auto qv = embedder->embedQuery(query);
    const auto dh = dense_->search(qv.data(), o.candidates);
    for (size_t r = 0; r < dh.size(); ++r) {
      RetrievalHit& h = hit(dh[r].key);
      h.denseCosine = dh[r].cosine;
      h.denseRank = static_cast<int>(r) + 1;
    }
  }
  if (o.method != Method::Dense) {
    const auto bh = bm25_.search(query, o.candidates);
    for (size_t r = 0; r < bh.size(); ++r) {
      RetrievalHit& h = hit(chunks_[static_cast<size_t>(bh[r].chunk)].key);
      h.bm25Score = bh[r].score;
      h.bm25Rank = static_cast<int>(r) + 1;
    }
  }
  std::vector<RetrievalHit> hits;
  for (int64_t key : order) {
    RetrievalHit h = byKey[key];
    if (o.method == Method::Bm25) h.fusedScore = h.bm25Score.value_or(0);
    else if (o.method == Method::Dense) h.fusedScore = h.denseCosine.value_or(0);
    else
      h.fusedScore = (h.denseRank ? o.denseWeight / (o.rrfK + h.denseRank) : 0.0) +
                     (h.bm25Rank ? o.bm25Weight / (o.rrfK + h.bm25Rank) : 0.0);
    hits.push_back(std::move(h));
  }
  auto scoreOf = [](const RetrievalHit& h) { return h.rerankScore.value_or(h.fusedScore); };
  auto bestFirst = [&](const RetrievalHit& a, const RetrievalHit& b) {
    if (scoreOf(a) != scoreOf(b)) return scoreOf(a) > scoreOf(b);
    return a.chunkKey < b.chunkKey;
  };
  // Candidates outside the best rerankK: not rescored, kept after the reranked ones in the
  // method's order, dropped by applyThreshold with the reason (the inspector shows them too).
  std::vector<RetrievalHit> notReranked;
  if (o.reranker) {
    // Only the best rerankK by the method's score are worth a model call each.
    std::stable_sort(hits.begin(), hits.end(), bestFirst);
    const size_t keep = static_cast<size_t>(std::max(1, o.rerankK));
    if (hits.size() > keep) {
      notReranked.assign(std::make_move_iterator(hits.begin() + static_cast<std::ptrdiff_t>(keep)),
                         std::make_move_iterator(hits.end()));
      hits.resize(keep);
    }
    std::vector<std::string> texts;
    for (const auto& h : hits) texts.push_back(h.text);
    const auto scores = o.reranker->scoreAll(query, texts, o.rerankProgress);
    KH_ASSERT(scores.size() == hits.size(), "a reranker must score every candidate");
    for (size_t i = 0; i < hits.size(); ++i) hits[i].rerankScore = scores[i];
  }
  std::stable_sort(hits.begin(), hits.end(), bestFirst);
  hits.insert(hits.end(), std::make_move_iterator(notReranked.begin()), std::make_move_iterator(notReranked.end()));
  applyThreshold(hits, o);
  if (hits.size() > static_cast<size_t>(std::max(0, o.k))) hits.resize(static_cast<size_t>(std::max(0, o.k)));
  return hits;
}

void applyThreshold(std::vector<RetrievalHit>& all, const SearchOptions& o) {
  auto scoreOf = [](const RetrievalHit* h) { return h->rerankScore.value_or(h->fusedScore); };
  if (all.empty()) return;
  if (o.threshold != "relative" && o.threshold != "zscore" && o.threshold != "none")
    throw Error("--threshold", "unknown threshold '" + o.threshold + "'", "relative, zscore or none");
  // With a reranker the threshold judges the rescored hits (search() puts them first) on the
  // reranker's scale; the others were cut before reranking and are dropped, saying so.
  const bool reranked = all[0].rerankScore.has_value();
  std::vector<RetrievalHit*> hits;
  for (auto& h : all)
    if (!reranked || h.rerankScore) hits.push_back(&h);
  char buf[160];
  if (reranked)
    for (auto& h : all)
      if (!h.rerankScore) {
        std::snprintf(buf, sizeof buf, "not reranked: %s %.4g, outside the best %zu the reranker rescored",
                      methodName(o.method), h.fusedScore, hits.size());
        h.kept = false;
        h.threshold = buf;
      }
  const char* what = reranked ? "rerank" : methodName(o.method);
  if (o.threshold == "relative") {
    // A negative best (a reranker's log-odds) keeps scores within the same factor below it:
    // cut = best / ratio, so the best hit is always kept whatever the sign of the scores.
    const double best = scoreOf(hits[0]), cut = best >= 0 || o.relativeRatio <= 0 ? o.relativeRatio * best : best / o.relativeRatio;
    for (RetrievalHit* h : hits) {
      h->kept = scoreOf(h) >= cut;
      if (best >= 0 || o.relativeRatio <= 0)
        std::snprintf(buf, sizeof buf, "%s %.4g %s %.3g x best %.4g", what, scoreOf(h), h->kept ? ">=" : "<", o.relativeRatio, best);
      else
        std::snprintf(buf, sizeof buf, "%s %.4g %s best %.4g / %.3g", what, scoreOf(h), h->kept ? ">=" : "<", best, o.relativeRatio);
      h->threshold = buf;
    }
  } else if (o.threshold == "zscore") {
    double mean = 0, var = 0;
    for (const RetrievalHit* h : hits) mean += scoreOf(h);
    mean /= static_cast<double>(hits.size());
    for (const RetrievalHit* h : hits) var += (scoreOf(h) - mean) * (scoreOf(h) - mean);
    const double sd = std::sqrt(var / static_cast<double>(hits.size()));
    for (RetrievalHit* h : hits) {
      const double z = sd > 0 ? (scoreOf(h) - mean) / sd : 0.0;
      h->kept = z >= o.zMin;
      std::snprintf(buf, sizeof buf, "%s z %.3g %s %.3g over %zu candidates", what, z, h->kept ? ">=" : "<", o.zMin, hits.size());
      h->threshold = buf;
    }
  } else {
    for (RetrievalHit* h : hits) h->kept = true, h->threshold = "no threshold";
  }
}

}  // namespace kh::retrieval
