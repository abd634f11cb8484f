// Embedders and the FAISS index (flat, or HNSW above a size) for retrieval.
#include "core/retrieval/dense.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/utils/Heap.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_io.h>

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors_header.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/text/tokenizer.h"

namespace kh::retrieval {

void normalizeRows(std::vector<float>& v, int dim) {
  for (size_t r = 0; r + static_cast<size_t>(dim) <= v.size(); r += static_cast<size_t>(dim)) {
    double s = 0;
    for (int i = 0; i < dim; ++i) s += double(v[r + i]) * v[r + i];
    if (s <= 0) continue;
    const float inv = static_cast<float>(1.0 / std::sqrt(s));
    for (int i = 0; i < dim; ++i) v[r + i] *= inv;
  }
}

// ---------------------------------------------------------------------------------------------

namespace {

// FNV-1a over 64 bytes from the middle of every tensor of a safetensors file (read with pread: a
// few hundred small reads for a 7B model). A file whose header does not parse adds nothing here;
// loading the model reports it properly.
uint64_t hashTensorSamples(uint64_t h, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return h;
  struct stat info {};
  std::vector<uint8_t> head(8);
  try {
    if (::fstat(fd, &info) != 0 || ::pread(fd, head.data(), 8, 0) != 8) throw Error(path, "unreadable");
    const uint64_t size = static_cast<uint64_t>(info.st_size);
    const uint64_t n = st::readHeaderLength(head.data(), size, path);
    head.resize(8 + n);
    if (::pread(fd, head.data() + 8, n, 8) != static_cast<ssize_t>(n)) throw Error(path, "unreadable");
    const st::Header hdr = st::parseHeader(head.data(), head.size(), size, path);
    uint8_t buf[64];
    for (const auto& t : hdr.tensors) {
      const uint64_t len = std::min<uint64_t>(64, t.nbytes());
      const uint64_t at = hdr.dataOffset + t.begin + (t.nbytes() - len) / 2;
      if (len == 0 || ::pread(fd, buf, len, static_cast<off_t>(at)) != static_cast<ssize_t>(len)) continue;
      for (uint64_t i = 0; i < len; ++i) h = (h ^ buf[i]) * 1099511628211ull;
    }
  } catch (const Error&) {
  }
  ::close(fd);
  return h;
}

}  // namespace

std::string modelFingerprint(const std::string& modelDir, const std::vector<std::string>& files, bool withWeights) {
  namespace fs = std::filesystem;
  auto fnv1a = [](uint64_t h, const std::string& s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
  };
  uint64_t h = 1469598103934665603ull;
  for (const auto& f : files) {
    std::ifstream in(fs::path(modelDir) / f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    h = fnv1a(h, ss.str());
  }
  std::vector<std::string> weights;
  for (const auto& e : fs::directory_iterator(modelDir))
    if (e.path().extension() == ".safetensors") weights.push_back(e.path().filename().string() + ":" + std::to_string(e.file_size()));
  std::sort(weights.begin(), weights.end());
  for (const auto& w : weights) h = fnv1a(h, w);
  if (withWeights)
    for (const auto& w : weights) h = hashTensorSamples(h, (fs::path(modelDir) / w.substr(0, w.rfind(':'))).string());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  std::string name = fs::path(modelDir).filename().string();
  if (name.empty()) name = fs::path(modelDir).parent_path().filename().string();
  return name + ":" + hex;
}

DecoderEmbedder::DecoderEmbedder(const std::string& modelDir, int batchSize, int maxTokens)
    : dir_(modelDir), batchSize_(std::max(1, batchSize)), maxTokens_(std::max(1, maxTokens)) {
  namespace fs = std::filesystem;
  ModelFolder folder = ModelFolder::open(modelDir);
  tokenizer_ = folder.requireTokenizer();
  model_ = Model::load(folder);
  dim_ = static_cast<int>(model_->config().hiddenSize);
  identity_ = "decoder-mean:" + modelFingerprint(modelDir, {"config.json"});
  legacyIdentity_ = "decoder-mean:" + modelFingerprint(modelDir, {"config.json"}, false);
}

DecoderEmbedder::~DecoderEmbedder() = default;
std::string DecoderEmbedder::spec() const { return std::filesystem::absolute(dir_).lexically_normal().string(); }

std::vector<float> DecoderEmbedder::embed(const std::vector<std::string>& texts, const EmbedProgress& progress) const {
  std::vector<std::vector<int64_t>> ids(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto t = tokenizer_->encode(texts[i], true);
    if (t.empty()) t.push_back(tokenizer_->bosId().value_or(0));
    if (t.size() > static_cast<size_t>(maxTokens_)) t.resize(static_cast<size_t>(maxTokens_));
    ids[i].assign(t.begin(), t.end());
  }
  std::vector<size_t> order(texts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ids[a].size() < ids[b].size(); });
  std::vector<float> out(texts.size() * static_cast<size_t>(dim_), 0.f);
  const int64_t pad = tokenizer_->padId().value_or(0);
  at::NoGradGuard noGrad;
  for (size_t s = 0; s < order.size(); s += static_cast<size_t>(batchSize_)) {
    const size_t e = std::min(order.size(), s + static_cast<size_t>(batchSize_));
    const int64_t B = static_cast<int64_t>(e - s), T = static_cast<int64_t>(ids[order[e - 1]].size());
    std::vector<int64_t> idv(static_cast<size_t>(B * T), pad), posv(static_cast<size_t>(B * T), -1);
    for (int64_t r = 0; r < B; ++r) {
      const auto& row = ids[order[s + static_cast<size_t>(r)]];
      for (size_t t = 0; t < row.size(); ++t) {
        idv[static_cast<size_t>(r * T) + t] = row[t];
        posv[static_cast<size_t>(r * T) + t] = static_cast<int64_t>(t);
      }
    }
    ForwardBatch b;
    b.ids = at::tensor(idv, at::kLong).view({B, T}).to(model_->device());
    b.positions = at::tensor(posv, at::kLong).view({B, T}).to(model_->device());
    KVCache cache = model_->newCache(B, T);
    at::Tensor h = model_->forwardHidden(b, cache);                    // [B, T, D] fp32
    at::Tensor mask = b.positions.ge(0).to(at::kFloat).unsqueeze(-1);  // [B, T, 1]
    at::Tensor mean = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0);  // [B, D]
    mean = (mean / mean.norm(2, -1, true).clamp_min(1e-12)).contiguous().cpu();
    const float* p = mean.data_ptr<float>();
    for (int64_t r = 0; r < B; ++r)
      std::copy(p + r * dim_, p + (r + 1) * dim_, out.begin() + static_cast<std::ptrdiff_t>(order[s + static_cast<size_t>(r)] * static_cast<size_t>(dim_)));
    if (progress) progress(e, order.size());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

namespace {

// Inner product of two float rows. Debian's FAISS is built for baseline x86-64, where its
// fvec_inner_product is a scalar loop with one serial accumulator (about 1 us at dim 768); HNSW
// spends nearly all its time there. Here: AVX2 + FMA when the CPU has them, else SSE with four
// accumulators. Same sum up to float rounding order.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float dotAvx2(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float r = _mm_cvtss_f32(h);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}
float dotSse(const float* a, const float* b, size_t n) {
  __m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps(), s2 = _mm_setzero_ps(), s3 = _mm_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm_add_ps(s0, _mm_mul_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
    s1 = _mm_add_ps(s1, _mm_mul_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4)));
    s2 = _mm_add_ps(s2, _mm_mul_ps(_mm_loadu_ps(a + i + 8), _mm_loadu_ps(b + i + 8)));
    s3 = _mm_add_ps(s3, _mm_mul_ps(_mm_loadu_ps(a + i + 12), _mm_loadu_ps(b + i + 12)));
  }
  __m128 h = _mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float r = _mm_cvtss_f32(h);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}
using DotFn = float (*)(const float*, const float*, size_t);
DotFn pickDot() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? dotAvx2 : dotSse;
}
#else
float dotPlain(const float* a, const float* b, size_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}
using DotFn = float (*)(const float*, const float*, size_t);
DotFn pickDot() { return dotPlain; }
#endif
const DotFn kDot = pickDot();

// The flat scan's fp16 mirror: the stored rows rounded to fp16 (half the bytes to stream per
// query), converted and scanned with F16C. Absent (nullptr) on CPUs without it; the scan then
// reads the fp32 rows.
#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) float dotHalfF16c(const float* q, const uint16_t* h, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
// (a macro, not a lambda: a lambda does not inherit the function's target attributes)
#define KH_HALF8(k) _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + (k))))
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), KH_HALF8(i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), KH_HALF8(i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 16), KH_HALF8(i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 24), KH_HALF8(i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), KH_HALF8(i), s0);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 r4 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  r4 = _mm_add_ps(r4, _mm_movehl_ps(r4, r4));
  r4 = _mm_add_ss(r4, _mm_shuffle_ps(r4, r4, 1));
  float r = _mm_cvtss_f32(r4);
  for (; i < n; ++i) r += q[i] * _cvtsh_ss(h[i]);
  return r;
#undef KH_HALF8
}
__attribute__((target("avx2,f16c"))) void toHalfF16c(const float* x, uint16_t* h, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) h[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}
using HalfDotFn = float (*)(const float*, const uint16_t*, size_t);
using ToHalfFn = void (*)(const float*, uint16_t*, size_t);
bool hasF16c() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
const HalfDotFn kHalfDot = hasF16c() ? dotHalfF16c : nullptr;
const ToHalfFn kToHalf = hasF16c() ? toHalfF16c : nullptr;
#else
using HalfDotFn = float (*)(const float*, const uint16_t*, size_t);
using ToHalfFn = void (*)(const float*, uint16_t*, size_t);
const HalfDotFn kHalfDot = nullptr;
const ToHalfFn kToHalf = nullptr;
#endif

// HNSW storage: FAISS's flat inner-product store with the fast dot product above. Saved by
// write_index as a plain IndexFlatIP ("IxFI"); load() swaps it back in.
// sign -1 turns similarity into the distance HNSW minimises (FAISS's IndexHNSW wraps the +1 one
// in its own negation when it builds; DenseIndex::search uses -1 directly).
struct FastIPDistance : faiss::FlatCodesDistanceComputer {
  const float* xb;
  size_t d;
  float sign;
  const float* q = nullptr;
  FastIPDistance(const float* xb_, size_t d_, size_t codeSize, float sign_ = 1.f)
      : faiss::FlatCodesDistanceComputer(reinterpret_cast<const uint8_t*>(xb_), codeSize), xb(xb_), d(d_), sign(sign_) {}
  void set_query(const float* x) override { q = x; }
  float distance_to_code(const uint8_t* code) override { return sign * kDot(q, reinterpret_cast<const float*>(code), d); }
  float symmetric_dis(idx_t i, idx_t j) override { return sign * kDot(xb + i * d, xb + j * d, d); }
};
struct FastFlatIP : faiss::IndexFlatIP {
  explicit FastFlatIP(idx_t d) : faiss::IndexFlatIP(d) {}
  faiss::FlatCodesDistanceComputer* get_FlatCodesDistanceComputer() const override {
    return new FastIPDistance(get_xb(), static_cast<size_t>(d), code_size);
  }
};

faiss::IndexHNSWFlat* newHnsw(int dim, const HnswSettings& hs) {
  auto* h = new faiss::IndexHNSWFlat(dim, hs.m, faiss::METRIC_INNER_PRODUCT);
  delete h->storage;  // owned (own_fields); replaced by the fast store
  h->storage = new FastFlatIP(dim);
  h->hnsw.efConstruction = hs.efConstruction;
  h->hnsw.efSearch = hs.efSearch;
  return h;
}

faiss::IndexIDMap2* newMap(int dim, DenseIndex::Kind kind, const HnswSettings& hs) {
  faiss::Index* inner = nullptr;
  if (kind == DenseIndex::Kind::Flat) inner = new faiss::IndexFlatIP(dim);
  else inner = newHnsw(dim, hs);
  auto* map = new faiss::IndexIDMap2(inner);
  map->own_fields = true;
  return map;
}

faiss::IndexIDMap2& asMap(const std::unique_ptr<faiss::Index>& ix) { return *static_cast<faiss::IndexIDMap2*>(ix.get()); }

}  // namespace

DenseIndex::DenseIndex(int dim, int64_t hnswAbove, HnswSettings hnsw) : dim_(dim), hnswAbove_(hnswAbove), hnsw_(hnsw) {
  index_.reset(newMap(dim, Kind::Flat, hnsw_));
}
DenseIndex::~DenseIndex() = default;
DenseIndex::DenseIndex(DenseIndex&&) noexcept = default;
DenseIndex& DenseIndex::operator=(DenseIndex&&) noexcept = default;

int64_t DenseIndex::size() const { return index_->ntotal - tombstones_; }

void DenseIndex::rebuildAs(Kind kind, const std::vector<int64_t>& keys, const std::vector<float>& vectors) {
  std::unique_ptr<faiss::Index> fresh(newMap(dim_, kind, hnsw_));
  std::vector<faiss::Index::idx_t> ids(keys.begin(), keys.end());
  if (!ids.empty()) fresh->add_with_ids(static_cast<faiss::Index::idx_t>(ids.size()), vectors.data(), ids.data());
  index_ = std::move(fresh);
  kind_ = kind;
  tombstones_ = 0;
  refreshHalf();
}

void DenseIndex::refreshHalf() {
  half_.clear();
  halfOnce_ = std::make_unique<std::once_flag>();
  searches_ = std::make_unique<std::atomic<int>>(0);
}

void DenseIndex::buildHalfOnce() const {
  std::call_once(*halfOnce_, [this] {
    if (kind_ != Kind::Flat || !kToHalf) return;
    const auto& map = asMap(index_);
    const float* xb = static_cast<const faiss::IndexFlat*>(map.index)->get_xb();
    const size_t n = static_cast<size_t>(map.ntotal), d = static_cast<size_t>(dim_);
    double maxNorm = 0;
    for (size_t i = 0; i < n; ++i) maxNorm = std::max(maxNorm, static_cast<double>(kDot(xb + i * d, xb + i * d, d)));
    maxNorm = std::sqrt(maxNorm);
    if (!(maxNorm < 1e3)) return;  // fp16 would overflow or lose the rows: scan the fp32 ones
    std::vector<uint16_t> h(n * d);
    kToHalf(xb, h.data(), n * d);
    halfMaxNorm_ = maxNorm;
    half_ = std::move(h);
  });
}

void DenseIndex::liveVectors(std::vector<int64_t>& keys, std::vector<float>& vectors) const {
  const auto& map = asMap(index_);
  keys.clear();
  vectors.clear();
  keys.reserve(static_cast<size_t>(size()));
  vectors.reserve(static_cast<size_t>(size()) * static_cast<size_t>(dim_));
  std::vector<float> row(static_cast<size_t>(dim_));
  for (faiss::Index::idx_t i = 0; i < map.ntotal; ++i) {
    const auto key = map.id_map[static_cast<size_t>(i)];
    if (key < 0) continue;  // tombstone
    map.index->reconstruct(i, row.data());
    keys.push_back(key);
    vectors.insert(vectors.end(), row.begin(), row.end());
  }
}

void DenseIndex::add(const std::vector<int64_t>& keys, const std::vector<float>& vectors) {
  KH_ASSERT(vectors.size() == keys.size() * static_cast<size_t>(dim_), "vectors must be [keys, dim]");
  if (keys.empty()) return;
  if (kind_ == Kind::Flat && size() + static_cast<int64_t>(keys.size()) > hnswAbove_) {
    std::vector<int64_t> all;
    std::vector<float> vecs;
    liveVectors(all, vecs);
    all.insert(all.end(), keys.begin(), keys.end());
    vecs.insert(vecs.end(), vectors.begin(), vectors.end());
    rebuildAs(Kind::Hnsw, all, vecs);
    return;
  }
  std::vector<faiss::Index::idx_t> ids(keys.begin(), keys.end());
  index_->add_with_ids(static_cast<faiss::Index::idx_t>(keys.size()), vectors.data(), ids.data());
  if (kind_ == Kind::Flat) refreshHalf();
}

void DenseIndex::remove(const std::vector<int64_t>& keys) {
  if (keys.empty()) return;
  std::vector<faiss::Index::idx_t> ids(keys.begin(), keys.end());
  if (kind_ == Kind::Flat) {
    faiss::IDSelectorBatch sel(ids.size(), ids.data());
    index_->remove_ids(sel);
    refreshHalf();
    return;
  }
  auto& map = asMap(index_);
  for (auto key : ids) {
    auto it = map.rev_map.find(key);
    if (it == map.rev_map.end()) continue;
    map.id_map[static_cast<size_t>(it->second)] = -1;
    map.rev_map.erase(it);
    ++tombstones_;
  }
  if (tombstones_ > 1000 || tombstones_ * 10 > index_->ntotal) {  // compaction
    std::vector<int64_t> live;
    std::vector<float> vecs;
    liveVectors(live, vecs);
    rebuildAs(static_cast<int64_t>(live.size()) > hnswAbove_ ? Kind::Hnsw : Kind::Flat, live, vecs);
  }
}

std::vector<DenseHit> DenseIndex::search(const float* query, int k) const {
  k = static_cast<int>(std::min<int64_t>(k, size()));
  if (k <= 0) return {};
  std::vector<DenseHit> hits;
  if (kind_ == Kind::Flat) {
    // Exhaustive scan on this thread. FAISS's own flat search merges each 1024-vector block's
    // results in an OpenMP parallel loop: for one query on a busy 2-core machine those ~100
    // barriers per 100k vectors cost more than the scan (346 ms wall, 85 ms CPU measured there).
    const auto& map = asMap(index_);
    const float* xb = static_cast<const faiss::IndexFlat*>(map.index)->get_xb();
    const size_t n = static_cast<size_t>(map.ntotal), d = static_cast<size_t>(dim_);
    std::vector<std::pair<float, int64_t>> all;  // (cosine, key)
    // Read half_ only after call_once (which orders its writes before this thread's reads).
    bool useHalf = false;
    if (searches_->fetch_add(1) >= 1) {
      buildHalfOnce();
      useHalf = !half_.empty() && half_.size() == n * d;
    }
    if (useHalf) {
      // Two steps with the exact answer of one: fp16 scores of every row, then the fp32 score
      // (kDot, as the one-step scan) of each row whose fp16 score could put it in the top k.
      // |fp16 score - exact| <= delta: rounding a row to fp16 moves each element by at most
      // 2^-11 of it (2^-25 when subnormal), so the dot moves by at most
      // 2^-11 |q| |x| + 2^-25 sum|q_i|; float summation in either order adds at most
      // d 2^-24 |q| |x| each. A true top-k row then scores at least the k-th fp16 score - 2 delta.
      double qq = 0, qabs = 0;
      for (size_t i = 0; i < d; ++i) qq += double(query[i]) * query[i], qabs += std::fabs(double(query[i]));
      const double qn = std::sqrt(qq);
      const double delta = 1.01 * (qn * halfMaxNorm_ * (std::ldexp(1.0, -11) + 2.0 * static_cast<double>(d) * std::ldexp(1.0, -24)) +
                                   std::ldexp(1.0, -25) * qabs) + 1e-7;
      std::vector<float> approx(n);
      for (size_t i = 0; i < n; ++i) approx[i] = kHalfDot(query, half_.data() + i * d, d);
      std::vector<float> top(approx);
      std::nth_element(top.begin(), top.begin() + (k - 1), top.end(), std::greater<float>());
      const double cut = static_cast<double>(top[static_cast<size_t>(k - 1)]) - 2.0 * delta;
      for (size_t i = 0; i < n; ++i)
        if (static_cast<double>(approx[i]) >= cut) all.push_back({kDot(query, xb + i * d, d), map.id_map[i]});
    } else {
      all.resize(n);
      for (size_t i = 0; i < n; ++i) all[i] = {kDot(query, xb + i * d, d), map.id_map[i]};
    }
    auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    std::partial_sort(all.begin(), all.begin() + k, all.end(), better);
    for (int i = 0; i < k; ++i) hits.push_back({all[static_cast<size_t>(i)].second, all[static_cast<size_t>(i)].first});
    return hits;
  }
  // HNSW: walk the graph directly on this thread (IndexHNSW::search opens an OpenMP team even for
  // one query, which on a busy 2-core machine waits for a second core), with room for the
  // tombstones, and map graph positions to keys here. Nothing shared is written, so concurrent
  // searches are safe.
  const auto& map = asMap(index_);
  const auto* h = static_cast<const faiss::IndexHNSWFlat*>(map.index);
  const auto* store = static_cast<const FastFlatIP*>(h->storage);
  const auto kk = static_cast<faiss::Index::idx_t>(std::min<int64_t>(index_->ntotal, k + tombstones_));
  faiss::SearchParametersHNSW params;
  params.efSearch = static_cast<int>(std::max<int64_t>(hnsw_.efSearch, kk));
  std::vector<float> d(static_cast<size_t>(kk));
  std::vector<faiss::Index::idx_t> l(static_cast<size_t>(kk));
  FastIPDistance dis(store->get_xb(), static_cast<size_t>(dim_), store->code_size, -1.f);
  dis.set_query(query);
  faiss::VisitedTable visited(static_cast<int>(h->ntotal));
  faiss::maxheap_heapify(static_cast<size_t>(kk), d.data(), l.data());
  h->hnsw.search(dis, static_cast<int>(kk), l.data(), d.data(), visited, &params);
  faiss::maxheap_reorder(static_cast<size_t>(kk), d.data(), l.data());
  for (faiss::Index::idx_t i = 0; i < kk && static_cast<int>(hits.size()) < k; ++i) {
    const auto pos = l[static_cast<size_t>(i)];
    if (pos < 0) continue;
    const auto key = map.id_map[static_cast<size_t>(pos)];
    if (key >= 0) hits.push_back({key, -d[static_cast<size_t>(i)]});
  }
  return hits;
}

void DenseIndex::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  try {
    faiss::write_index(index_.get(), tmp.c_str());
  } catch (const faiss::FaissException& e) {
    throw Error(tmp, std::string("cannot write the dense index: ") + e.what());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path, "cannot rename " + tmp + " into place");
}

DenseIndex DenseIndex::load(const std::string& path, int expectedDim, int64_t hnswAbove) {
  const std::string hint = "rebuild the store's indexes with `kumihimo-cli index rebuild STORE`";
  if (!std::filesystem::exists(path)) throw Error(path, "dense index missing", hint);
  faiss::Index* raw = nullptr;
  try {
    raw = faiss::read_index(path.c_str());
  } catch (const std::exception&) {  // FAISS's message is several lines of its own source paths
    throw Error(path, "corrupt dense index (FAISS could not read it)", hint);
  }
  std::unique_ptr<faiss::Index> owned(raw);
  auto* map = dynamic_cast<faiss::IndexIDMap2*>(raw);
  if (!map || raw->d != expectedDim)
    throw Error(path, "dense index is not an IndexIDMap2 of dimension " + std::to_string(expectedDim), hint);
  DenseIndex ix(expectedDim, hnswAbove);
  if (auto* h = dynamic_cast<faiss::IndexHNSWFlat*>(map->index); h && h->metric_type == faiss::METRIC_INNER_PRODUCT) {
    auto* stored = dynamic_cast<faiss::IndexFlatIP*>(h->storage);
    if (!stored || stored->d != expectedDim) throw Error(path, "HNSW index without a flat inner-product store", hint);
    auto* fast = new FastFlatIP(expectedDim);  // same vectors, fast distances
    fast->codes = std::move(stored->codes);
    fast->ntotal = stored->ntotal;
    delete h->storage;
    h->storage = fast;
    ix.kind_ = Kind::Hnsw;
    ix.tombstones_ = std::count(map->id_map.begin(), map->id_map.end(), faiss::Index::idx_t(-1));
  } else if (!dynamic_cast<faiss::IndexFlatIP*>(map->index)) {
    throw Error(path, "dense index is neither flat nor HNSW inner product", hint);
  }
  ix.index_ = std::move(owned);
  ix.refreshHalf();
  return ix;
}

}  // namespace kh::retrieval
