// BM25 over character n-grams: postings in memory, a flat score array per query.
#include "core/retrieval/bm25.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/retrieval/text.h"

namespace kh::retrieval {

void Bm25Index::add(std::string_view text) {
  const auto terms = searchTerms(normalizeForSearch(decodeUtf8(text, "chunk")), true);
  std::unordered_map<std::string, uint32_t> tf;
  uint32_t len = 0;
  for (const auto& t : terms) {
    ++tf[t];
    if (t[0] != '\x01') ++len;
  }
  const auto id = static_cast<uint32_t>(lengths_.size());
  for (auto& [t, n] : tf) postings_[t].push_back({id, n});
  lengths_.push_back(std::max<uint32_t>(len, 1));
  totalLength_ += lengths_.back();
}

std::vector<std::string> Bm25Index::queryTerms(std::string_view query) {
  auto terms = searchTerms(normalizeForSearch(decodeUtf8(query, "query")), false);
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (auto& t : terms)
    if (seen.insert(t).second) out.push_back(t);
  return out;
}

std::vector<ScoredChunk> Bm25Index::search(std::string_view query, int k) const {
  const auto terms = queryTerms(query);
  const double N = static_cast<double>(lengths_.size());
  if (N == 0 || k <= 0) return {};
  const double avg = static_cast<double>(totalLength_) / N;
  std::vector<double> score(lengths_.size(), 0.0);
  std::vector<uint32_t> touched;
  for (const auto& t : terms) {
    auto it = postings_.find(t);
    if (it == postings_.end()) continue;
    const double df = static_cast<double>(it->second.size());
    const double idf = std::log(1.0 + (N - df + 0.5) / (df + 0.5));
    for (const Posting& p : it->second) {
      const double tf = p.tf, len = lengths_[p.chunk];
      if (score[p.chunk] == 0.0) touched.push_back(p.chunk);
      score[p.chunk] += idf * tf * (params_.k1 + 1) / (tf + params_.k1 * (1 - params_.b + params_.b * len / avg));
    }
  }
  std::vector<ScoredChunk> hits;
  hits.reserve(touched.size());
  for (uint32_t c : touched)
    if (score[c] > 0) hits.push_back({c, score[c]});
  auto better = [](const ScoredChunk& a, const ScoredChunk& b) { return a.score != b.score ? a.score > b.score : a.chunk < b.chunk; };
  const size_t n = std::min(hits.size(), static_cast<size_t>(k));
  std::partial_sort(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(n), hits.end(), better);
  hits.resize(n);
  return hits;
}

namespace {
constexpr char kMagic[8] = {'K', 'H', 'B', 'M', '2', '5', 'v', '1'};
template <class T>
void put(std::ofstream& f, const T& v) { f.write(reinterpret_cast<const char*>(&v), sizeof v); }
template <class T>
void get(std::ifstream& f, T& v) { f.read(reinterpret_cast<char*>(&v), sizeof v); }
}  // namespace

void Bm25Index::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp, "cannot write the BM25 index");
    f.write(kMagic, 8);
    put(f, params_.k1);
    put(f, params_.b);
    put(f, static_cast<uint64_t>(lengths_.size()));
    f.write(reinterpret_cast<const char*>(lengths_.data()), static_cast<std::streamsize>(lengths_.size() * sizeof(uint32_t)));
    put(f, static_cast<uint64_t>(postings_.size()));
    for (const auto& [t, ps] : postings_) {
      put(f, static_cast<uint32_t>(t.size()));
      f.write(t.data(), static_cast<std::streamsize>(t.size()));
      put(f, static_cast<uint64_t>(ps.size()));
      f.write(reinterpret_cast<const char*>(ps.data()), static_cast<std::streamsize>(ps.size() * sizeof(Posting)));
    }
    f.write(kMagic, 8);  // trailer: a truncated file is refused
    if (!f) throw Error(tmp, "write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path, "cannot rename " + tmp + " into place");
}

Bm25Index Bm25Index::load(const std::string& path) {
  const std::string hint = "rebuild the store's indexes with `kumihimo-cli index rebuild STORE`";
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "BM25 index missing", hint);
  auto corrupt = [&](const std::string& why) { return Error(path, "corrupt BM25 index (" + why + ")", hint); };
  char magic[8];
  f.read(magic, 8);
  if (!f || !std::equal(magic, magic + 8, kMagic)) throw corrupt("bad header");
  Bm25Index ix;
  uint64_t n = 0, terms = 0;
  get(f, ix.params_.k1);
  get(f, ix.params_.b);
  get(f, n);
  if (!f || n > (1ull << 32)) throw corrupt("bad chunk count");
  ix.lengths_.resize(n);
  f.read(reinterpret_cast<char*>(ix.lengths_.data()), static_cast<std::streamsize>(n * sizeof(uint32_t)));
  for (uint32_t l : ix.lengths_) ix.totalLength_ += l;
  get(f, terms);
  if (!f || terms > (1ull << 32)) throw corrupt("bad term count");
  for (uint64_t i = 0; i < terms; ++i) {
    uint32_t len = 0;
    uint64_t np = 0;
    get(f, len);
    if (!f || len > 64) throw corrupt("bad term length");
    std::string t(len, '\0');
    f.read(t.data(), len);
    get(f, np);
    if (!f || np > n) throw corrupt("bad posting count");
    auto& ps = ix.postings_[t];
    ps.resize(np);
    f.read(reinterpret_cast<char*>(ps.data()), static_cast<std::streamsize>(np * sizeof(Posting)));
    for (const Posting& p : ps)
      if (p.chunk >= n) throw corrupt("posting beyond the chunk count");
  }
  f.read(magic, 8);
  if (!f || !std::equal(magic, magic + 8, kMagic)) throw corrupt("truncated");
  return ix;
}

}  // namespace kh::retrieval
