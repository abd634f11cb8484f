// The merge methods: mergekit's per-tensor formulas in fp32 on the inputs' device (see
// methods.h for the decisions). Must never touch files or global RNG state; every random mask
// comes from uniformMask(seed, name, numel).
#include "core/merge/methods.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <cmath>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace kh::merge {
namespace {

struct MethodInfo {
  Method m;
  const char* name;
};
constexpr MethodInfo kMethods[] = {
    {Method::Linear, "linear"},
    {Method::TaskArithmetic, "task_arithmetic"},
    {Method::Ties, "ties"},
    {Method::DareTies, "dare_ties"},
    {Method::DareLinear, "dare_linear"},
    {Method::Breadcrumbs, "breadcrumbs"},
    {Method::BreadcrumbsTies, "breadcrumbs_ties"},
    {Method::Della, "della"},
    {Method::DellaLinear, "della_linear"},
    {Method::Slerp, "slerp"},
    {Method::NuSlerp, "nuslerp"},
    {Method::ModelStock, "model_stock"},
    {Method::Passthrough, "passthrough"},
};

enum class Sparsifier { None, Magnitude, Random, MagnitudeOutliers, DellaMagprune };

Sparsifier sparsifierOf(Method m) {
  switch (m) {
    case Method::Ties: return Sparsifier::Magnitude;
    case Method::DareTies:
    case Method::DareLinear: return Sparsifier::Random;
    case Method::Breadcrumbs:
    case Method::BreadcrumbsTies: return Sparsifier::MagnitudeOutliers;
    case Method::Della:
    case Method::DellaLinear: return Sparsifier::DellaMagprune;
    default: return Sparsifier::None;
  }
}

bool isTaskArithmetic(Method m) {
  switch (m) {
    case Method::TaskArithmetic:
    case Method::Ties:
    case Method::DareTies:
    case Method::DareLinear:
    case Method::Breadcrumbs:
    case Method::BreadcrumbsTies:
    case Method::Della:
    case Method::DellaLinear: return true;
    default: return false;
  }
}

bool usesSignConsensus(Method m) {
  return m == Method::Ties || m == Method::DareTies || m == Method::BreadcrumbsTies || m == Method::Della;
}

std::string shapeString(at::IntArrayRef s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

[[noreturn]] void fail(const MethodParams& mp, const std::string& cause, const std::string& hint = {}) {
  throw Error("merge " + mp.tensorName, cause, hint);
}

at::Tensor toF32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

uint64_t splitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

void checkModelParams(Method m, const std::vector<ModelParams>& params, const MethodParams& mp,
                      const std::vector<std::string>& names) {
  const Sparsifier s = sparsifierOf(m);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const std::string who = i < names.size() ? names[i] : "model " + std::to_string(i + 1);
    if (!std::isfinite(p.weight)) fail(mp, who + ": weight is not a finite number");
    if (!std::isfinite(p.scale)) fail(mp, who + ": scale is not a finite number");
    // mergekit's task_arithmetic takes density (and rescale) but, with no sparsification method,
    // never uses them (generalized_task_arithmetic.py): refused rather than ignored.
    if (m == Method::TaskArithmetic && p.density != 1.0)
      fail(mp, who + ": density " + std::to_string(p.density) + " has no effect in task_arithmetic, which does not sparsify",
           "use dare_linear, breadcrumbs or della_linear to sparsify the task vectors, or remove density");
    if (s == Sparsifier::None) continue;
    if (!(p.density > 0.0 && p.density <= 1.0))
      fail(mp, who + ": density " + std::to_string(p.density) + " is outside (0, 1]",
           "density is the fraction of the task vector kept; 1 keeps all of it");
    if (s == Sparsifier::MagnitudeOutliers && !(p.gamma >= 0.0 && p.gamma < 1.0))
      fail(mp, who + ": gamma " + std::to_string(p.gamma) + " is outside [0, 1)");
    if (s == Sparsifier::DellaMagprune && p.density < 1.0 &&
        !(p.epsilon >= 0.0 && p.density - p.epsilon > 0.0 && p.density + p.epsilon <= 1.0))
      fail(mp,
           who + ": density +- epsilon (" + std::to_string(p.density) + " +- " + std::to_string(p.epsilon) +
               ") leaves (0, 1]",
           "choose epsilon < min(density, 1 - density)");
  }
}

// ---------------------------------------------------------------------------------------------
// Rank cuts over a whole tensor, from its chunks.

// The fp32 bits of non-negative values as int32: ordered like the values.
at::Tensor bitsOf(const at::Tensor& a) { return a.contiguous().view(at::kInt); }

// Adds to `hist` the count of each key of `bits` (int32, contiguous): with wantBin < 0 the key is
// bits >> 16 (32768 keys for non-negative values); otherwise only elements whose high half equals
// wantBin count, keyed by their low 16 bits.
void histogram(const at::Tensor& bits, int32_t wantBin, std::vector<int64_t>& hist) {
  const int64_t n = bits.numel();
  if (n == 0) return;
  if (bits.device().is_cpu()) {
    const int32_t* p = bits.data_ptr<int32_t>();
    std::vector<std::vector<int64_t>> local(static_cast<size_t>(at::get_num_threads()));
    at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
      auto& h = local[static_cast<size_t>(at::get_thread_num())];
      if (h.empty()) h.assign(hist.size(), 0);
      if (wantBin < 0) {
        for (int64_t i = begin; i < end; ++i) ++h[static_cast<uint32_t>(p[i]) >> 16];
      } else {
        for (int64_t i = begin; i < end; ++i)
          if ((p[i] >> 16) == wantBin) ++h[static_cast<uint32_t>(p[i]) & 0xFFFFu];
      }
    });
    for (const auto& h : local)
      for (size_t k = 0; k < h.size(); ++k) hist[k] += h[k];
    return;
  }
  at::Tensor keys = at::bitwise_right_shift(bits.reshape({-1}), 16);
  if (wantBin >= 0) keys = at::bitwise_and(bits.reshape({-1}).masked_select(keys == wantBin), 0xFFFF);
  auto counts = at::bincount(keys.to(at::kLong), {}, static_cast<int64_t>(hist.size())).to(at::kCPU).contiguous();
  const int64_t* c = counts.data_ptr<int64_t>();
  for (size_t k = 0; k < hist.size(); ++k) hist[k] += c[k];
}

// Hot bf16 loops are also compiled for x86-64-v4 (AVX-512) and v3 (AVX2) and chosen at load time.
// This file is built with -ffp-contract=off (core/CMakeLists.txt), so no clone fuses a multiply and
// an add: every clone computes the same fp32 operations and gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KH_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KH_SIMD_CLONES
#endif

// Element i of CPU rows as fp32: the rows as stored (fp32, or bf16 read in place: bf16 -> fp32 is
// exact, a 16-bit shift, so results do not depend on which form a chunk came in).
inline float loadF(const float* p, int64_t i) { return p[i]; }
inline float loadF(const uint16_t* p, int64_t i) {
  const uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// keys[j] = the fp32 bits of |o[j] - b[j]| for j < m (ordered like the magnitudes): a loop that
// vectorises, run before the counting that uses the keys.
template <class T>
inline void diffKeys(const T* o, const T* b, int64_t m, uint32_t* keys) {
  for (int64_t j = 0; j < m; ++j) {
    const float a = std::fabs(loadF(o, j) - loadF(b, j));
    std::memcpy(&keys[j], &a, 4);
  }
}

// Per-thread histograms of the fused path: four uint32 counters per key, side by side (elements
// count in lanes 0-3 in turn), so runs of equal keys (magnitudes cluster in a few hundred keys) do not
// form one chain of increments to the same address; folded into int64 totals before a count could
// overflow and at the end of each pass.
struct LocalHistograms {
  std::vector<std::vector<uint32_t>> perThread;
  std::vector<int64_t> added;  // elements counted by each thread since the last fold
  void foldInto(std::vector<int64_t>& hist) {
    for (auto& h : perThread) {
      for (size_t k = 0; k < h.size() / 4; ++k)
        hist[k] += static_cast<int64_t>(h[4 * k]) + h[4 * k + 1] + h[4 * k + 2] + h[4 * k + 3];
      h.clear();
    }
    std::fill(added.begin(), added.end(), 0);
  }
};

// histogram() of |o - b| for CPU rows (fp32 or bf16, T), without materialising the difference,
// into per-thread histograms of `hist.size()` keys, folded once per pass (not per chunk: zeroing
// and summing 65536 keys per thread per chunk cost about a tenth of the pass).
template <class T>
void histogramOfDiff(const T* o, const T* b, int64_t n, int32_t wantBin, std::vector<int64_t>& hist,
                     LocalHistograms& local) {
  const size_t threads = static_cast<size_t>(at::get_num_threads());
  if (local.perThread.size() < threads) {
    local.perThread.resize(threads);
    local.added.resize(threads, 0);
  }
  // A lane counts at most `added` / 4 + 1 elements: fold long before uint32 could wrap.
  for (int64_t a : local.added)
    if (a + n > (int64_t{1} << 33)) {
      local.foldInto(hist);
      break;
    }
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    const size_t t = static_cast<size_t>(at::get_thread_num());
    auto& h = local.perThread[t];
    if (h.empty()) h.assign(4 * hist.size(), 0);
    local.added[t] += end - begin;
    uint32_t* c = h.data();
    // The keys of 512 elements first (a loop that vectorises), then the counting.
    constexpr int64_t kRun = 512;
    uint32_t keys[kRun];
    for (int64_t s0 = begin; s0 < end; s0 += kRun) {
      const int64_t m = std::min(kRun, end - s0);
      diffKeys(o + s0, b + s0, m, keys);
      if (wantBin < 0) {
        int64_t j = 0;
        for (; j + 4 <= m; j += 4) {
          ++c[((keys[j] >> 16) << 2) | 0u];
          ++c[((keys[j + 1] >> 16) << 2) | 1u];
          ++c[((keys[j + 2] >> 16) << 2) | 2u];
          ++c[((keys[j + 3] >> 16) << 2) | 3u];
        }
        for (; j < m; ++j) ++c[(keys[j] >> 16) << 2];
      } else {
        const uint32_t want = static_cast<uint32_t>(wantBin);
        for (int64_t j = 0; j < m; ++j)
          if ((keys[j] >> 16) == want) ++c[((keys[j] & 0xFFFFu) << 2) | (static_cast<uint32_t>(j) & 3u)];
      }
    }
  });
}

// The sampled-window pass of a rank cut (RankCut::setWindow): counts |o - b| keys below `lo`
// into `below` and each key in [lo, lo + span] into hist[key - lo], one histogram per thread
// (`local`, span + 1 counts each, added up at the end of the pass: shared atomic adds made the
// two cores fight over the same cache lines, half this pass's time). Exact counts, so the
// threshold found from them is the two-pass histogram's, whatever the thread count.
// One run of at most 512 elements of windowOfDiff: returns how many keys lie below `lo`.
template <class T>
inline __attribute__((always_inline)) int32_t windowRun(const T* o, const T* b, int64_t m, uint32_t lo, uint32_t span,
                                                        uint32_t* hist) {
  uint32_t keys[512];
  diffKeys(o, b, m, keys);
  // One loop that vectorises: the count below the window and a byte per element, 1 when its key
  // is inside. The window holds ~2% of the elements: the adds then visit only the 8-byte words
  // with any (a branch per element over all of them cost a fifth of a ties merge).
  alignas(64) uint8_t inside[512 + 8];
  int32_t runBelow = 0;
  for (int64_t j = 0; j < m; ++j) {
    runBelow += static_cast<int32_t>(keys[j] < lo);
    inside[j] = static_cast<uint8_t>(keys[j] - lo <= span);
  }
  std::memset(inside + m, 0, 8);
  for (int64_t w = 0; w < m; w += 8) {
    uint64_t word;
    std::memcpy(&word, inside + w, 8);
    while (word != 0) {
      const int64_t j = w + (__builtin_ctzll(word) >> 3);
      ++hist[keys[j] - lo];
      word &= word - 1;  // each byte is 0 or 1: this clears element j
    }
  }
  return runBelow;
}
// The bf16 runs (what real checkpoints are) also compiled for AVX-512 and AVX2, picked at run time:
// integer keys and exact fp32 subtractions, so the counts are the same on any CPU.
KH_SIMD_CLONES int32_t windowRunBf16(const uint16_t* o, const uint16_t* b, int64_t m, uint32_t lo, uint32_t span,
                                     uint32_t* hist) {
  return windowRun(o, b, m, lo, span, hist);
}

template <class T>
void windowOfDiff(const T* o, const T* b, int64_t n, uint32_t lo, uint32_t span, std::vector<std::vector<uint32_t>>& local,
                  int64_t& below) {
  std::atomic<int64_t> under{0};
  if (local.size() < static_cast<size_t>(at::get_num_threads())) local.resize(static_cast<size_t>(at::get_num_threads()));
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    auto& h = local[static_cast<size_t>(at::get_thread_num())];
    if (h.empty()) h.assign(static_cast<size_t>(span) + 1, 0u);
    uint32_t* hist = h.data();
    constexpr int64_t kRun = 512;
    int64_t count = 0;
    for (int64_t s0 = begin; s0 < end; s0 += kRun) {
      const int64_t m = std::min(kRun, end - s0);
      if constexpr (std::is_same_v<T, uint16_t>) count += windowRunBf16(o + s0, b + s0, m, lo, span, hist);
      else count += windowRun(o + s0, b + s0, m, lo, span, hist);
    }
    under += count;
  });
  below += under.load();
}

// "The ascending stable rank of a >= r" for a tensor of n non-negative values seen chunk by chunk
// in index order: equal values rank by index. Two histogram passes find the value at rank r
// exactly (addHigh over every chunk, endHigh, addLow over every chunk, endLow); then keep() marks
// the chunks, again in order, after restart().
class RankCut {
 public:
  RankCut() = default;
  RankCut(int64_t n, int64_t r) : n_(n), r_(std::clamp<int64_t>(r, 0, n)) {}
  bool trivial() const { return r_ <= 0 || r_ >= n_; }
  // The fused path's passes, one stage per pass over the chunks (addDiff, then endPass): a sampled
  // window when setWindow() was called (one pass, usually enough), else the two histograms.
  bool settled() const { return trivial() || stage_ == Stage::Done; }
  int64_t rank() const { return r_; }
  int64_t size() const { return n_; }
  // The threshold's key is expected in [lo, lo + span] (RankWindow, from a sample of the tensor):
  // one pass counts the keys below the window and histograms those inside it. When the rank falls
  // outside, the cut goes on with the two histogram passes.
  void setWindow(uint32_t lo, uint32_t span) {
    if (trivial()) return;
    stage_ = Stage::Window;
    windowLo_ = lo;
    windowSpan_ = span;
    windowLocal_.clear();
    below_ = 0;
  }
  template <class T>
  void addDiff(const T* o, const T* b, int64_t n) {
    switch (stage_) {
      case Stage::Window:
        windowOfDiff(o, b, n, windowLo_, windowSpan_, windowLocal_, below_);
        break;
      case Stage::High: addHighDiff(o, b, n); break;
      case Stage::Low: addLowDiff(o, b, n); break;
      case Stage::Done: break;
    }
  }
  void endPass() {
    if (trivial()) return;
    switch (stage_) {
      case Stage::Window: {
        // The threads' counts added up (each key's total is at most n < 2^32).
        std::vector<uint32_t> window(static_cast<size_t>(windowSpan_) + 1, 0u);
        for (const auto& h : windowLocal_)
          for (size_t l = 0; l < h.size(); ++l) window[l] += h[l];
        std::vector<std::vector<uint32_t>>().swap(windowLocal_);
        int64_t cum = below_;
        stage_ = Stage::High;
        if (r_ >= cum)
          for (size_t l = 0; l < window.size(); ++l) {
            if (cum + window[l] > r_) {
              threshold_ = static_cast<int32_t>(windowLo_ + static_cast<uint32_t>(l));
              quota_ = r_ - cum;
              stage_ = Stage::Done;
              break;
            }
            cum += window[l];
          }
        below_ = 0;
        break;
      }
      case Stage::High: endHigh(); stage_ = Stage::Low; break;
      case Stage::Low: endLow(); stage_ = Stage::Done; break;
      case Stage::Done: break;
    }
  }
  void addHigh(const at::Tensor& a) {
    if (trivial()) return;
    if (hist_.empty()) hist_.assign(32768, 0);
    histogram(bitsOf(a), -1, hist_);
  }
  void endHigh() {
    if (trivial()) return;
    fold();
    int64_t cum = 0;
    for (size_t b = 0; b < hist_.size(); ++b) {
      if (cum + hist_[b] > r_) {
        bin_ = static_cast<int32_t>(b);
        below_ = cum;
        break;
      }
      cum += hist_[b];
    }
    hist_.assign(65536, 0);
  }
  void addLow(const at::Tensor& a) {
    if (!trivial()) histogram(bitsOf(a), bin_, hist_);
  }
  // The same for |o - b| of CPU rows (the fused path; T = float or bf16 bits).
  template <class T>
  void addHighDiff(const T* o, const T* b, int64_t n) {
    if (trivial()) return;
    if (hist_.empty()) hist_.assign(32768, 0);
    histogramOfDiff(o, b, n, -1, hist_, local_);
  }
  template <class T>
  void addLowDiff(const T* o, const T* b, int64_t n) {
    if (!trivial()) histogramOfDiff(o, b, n, bin_, hist_, local_);
  }
  // For the fused path: keep all (r <= 0), keep none (r >= n), or by threshold and quota.
  bool keepsAll() const { return r_ <= 0; }
  bool keepsNone() const { return r_ >= n_; }
  int32_t threshold() const { return threshold_; }
  int64_t quota() const { return quota_; }
  int64_t& seen() { return seen_; }
  void endLow() {
    if (trivial()) return;
    fold();
    const int64_t r = r_ - below_;
    int64_t cum = 0;
    for (size_t l = 0; l < hist_.size(); ++l) {
      if (cum + hist_[l] > r) {
        threshold_ = (bin_ << 16) | static_cast<int32_t>(l);
        quota_ = r - cum;
        break;
      }
      cum += hist_[l];
    }
    hist_.clear();
  }
  void restart() { seen_ = 0; }
  // bool, a's shape: the elements of this chunk whose rank is at least r.
  at::Tensor keep(const at::Tensor& a) {
    if (r_ <= 0) return at::ones(a.sizes(), a.options().dtype(at::kBool));
    if (r_ >= n_) return at::zeros(a.sizes(), a.options().dtype(at::kBool));
    auto bits = bitsOf(a);
    auto kept = bits > threshold_;
    auto eq = bits == threshold_;
    // The first quota_ elements equal to the threshold (by index) rank below r; they are usually
    // few, so only their positions are materialised.
    auto pos = at::nonzero(eq.reshape({-1})).reshape({-1});  // [equal] int64, ascending
    const int64_t equal = pos.numel();
    if (equal > 0) {
      const int64_t skip = std::clamp<int64_t>(quota_ - seen_, 0, equal);
      if (skip < equal) kept.reshape({-1}).index_fill_(0, pos.slice(0, skip), true);
      seen_ += equal;
    }
    return kept;
  }

 private:
  // Adds the per-thread histograms of the fused path into hist_.
  void fold() { local_.foldInto(hist_); }
  enum class Stage { Window, High, Low, Done };
  Stage stage_ = Stage::High;
  uint32_t windowLo_ = 0, windowSpan_ = 0;
  std::vector<std::vector<uint32_t>> windowLocal_;  // per thread, span + 1 counts each
  int64_t n_ = 0, r_ = 0;
  std::vector<int64_t> hist_;
  LocalHistograms local_;
  int32_t bin_ = 0, threshold_ = 0;
  int64_t below_ = 0, quota_ = 0, seen_ = 0;
};

// Tensors this large take a sampled window (RankCut::setWindow) on the fused path; smaller ones
// the two histogram passes, which then run in cache.
constexpr int64_t kWindowMinElements = int64_t{1} << 22;
// The widest window, in keys: its counts are the memory plan's kWindowBytes per model.
constexpr uint32_t kWindowMaxSpan = (1u << 20) - 1;

// Where the threshold of `cut` is expected from `sample`, keys of |o - b| at elements spread over
// the tensor: between the sample's quantiles at r/n -+ (5 standard errors + 0.0015). False when
// that spans more than kWindowMaxSpan keys (the cut then takes the two histogram passes).
bool rankWindow(std::vector<uint32_t>& sample, const RankCut& cut, uint32_t& lo, uint32_t& span) {
  const double S = static_cast<double>(sample.size());
  if (S < 1024 || cut.trivial()) return false;
  const double q = static_cast<double>(cut.rank()) / static_cast<double>(cut.size());
  const double delta = 5.0 * std::sqrt(q * (1.0 - q) / S) + 0.0015;
  const auto at = [&](double f) {
    const auto i = static_cast<std::ptrdiff_t>(std::clamp(f * S, 0.0, S - 1.0));
    std::nth_element(sample.begin(), sample.begin() + i, sample.end());
    return sample[static_cast<size_t>(i)];
  };
  const uint32_t kLo = q - delta <= 0.0 ? 0u : at(q - delta);
  const uint32_t kHi = q + delta >= 1.0 ? 0x7FFFFFFFu : at(q + delta);
  if (kHi < kLo || kHi - kLo > kWindowMaxSpan) return false;
  lo = kLo;
  span = kHi - kLo;
  return true;
}

double sumD(const at::Tensor& t) { return t.sum(at::kDouble).item<double>(); }

template <class F>
void eachChunk(const RowGrid& g, F f) {
  for (int64_t r0 = 0; r0 < g.rows; r0 += g.rowsPerChunk) f(r0, std::min(g.rows, r0 + g.rowsPerChunk));
}


// Task-arithmetic family: sparsified, weighted task vectors, with or without sign consensus.
// The rank cuts and L1 norms take passes of their own before the final one.
struct SparsePlan {
  Sparsifier s = Sparsifier::None;
  bool normalize = false, rescale = false;
  std::vector<bool> sparse;            // per model: sparsified at all (density < 1)
  std::vector<RankCut> keepFrom, dropFrom;  // magnitude: rank >= n - k; breadcrumbs: [nBot, n - nTop)
  bool select = false, norms = false;
};

SparsePlan sparsePlan(Method m, const RowGrid& g, const std::vector<ModelParams>& params, const MethodParams& mp) {
  SparsePlan p;
  p.s = sparsifierOf(m);
  p.normalize = mp.normalize.value_or(defaultNormalize(m));
  p.rescale = mp.rescale.value_or(defaultRescale(m));
  const int64_t n = g.rows * g.cols;
  p.keepFrom.resize(params.size());
  p.dropFrom.resize(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const bool sp = p.s != Sparsifier::None && params[i].density < 1.0;
    p.sparse.push_back(sp);
    if (!sp) continue;
    p.norms = p.norms || p.rescale;
    const int64_t keep = static_cast<int64_t>(params[i].density * static_cast<double>(n));
    if (p.s == Sparsifier::Magnitude) {
      p.keepFrom[i] = RankCut(n, n - keep);
      p.dropFrom[i] = RankCut(n, n);
    } else if (p.s == Sparsifier::MagnitudeOutliers) {
      int64_t nTop = static_cast<int64_t>(params[i].gamma * static_cast<double>(n));
      int64_t nBot = n - keep - nTop;
      if (nBot < 0) {
        nTop += nBot;
        nBot = 0;
      }
      p.keepFrom[i] = RankCut(n, nBot);
      p.dropFrom[i] = RankCut(n, n - nTop);
    }
    p.select = p.select || !p.keepFrom[i].trivial() || !p.dropFrom[i].trivial();
  }
  return p;
}

// The float mask of model i's task-vector chunk d (rows from r0), or undefined for "keep all".
at::Tensor chunkMask(SparsePlan& p, size_t i, const at::Tensor& d, int64_t r0, const std::vector<ModelParams>& params,
                     const MethodParams& mp) {
  if (!p.sparse[i]) return {};
  auto random = [&](const at::Tensor& keepProb) {
    auto u = uniformMask(mp.seed, mp.tensorName + "#" + std::to_string(i), d.numel(), r0 * d.size(1))
                 .to(d.device())
                 .view(d.sizes());  // [r, cols] f32
    return (u < keepProb).to(at::kFloat);
  };
  switch (p.s) {
    case Sparsifier::Magnitude: return p.keepFrom[i].keep(d.abs()).to(at::kFloat);
    case Sparsifier::MagnitudeOutliers: {
      auto a = d.abs();
      return (p.keepFrom[i].keep(a) & ~p.dropFrom[i].keep(a)).to(at::kFloat);
    }
    case Sparsifier::Random: return random(at::full({}, params[i].density, d.options()));
    case Sparsifier::DellaMagprune: return random(dellaKeepProbabilities(d, params[i].density, params[i].epsilon));
    case Sparsifier::None: break;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// The fused CPU path of the task-arithmetic family: one loop per chunk instead of ~40 tensor ops,
// for the sparsifiers whose masks need no per-row sort (none, magnitude, random). The arithmetic is
// the ATen path's, operation for operation in fp32 (d * mask, * scale, * weight, sign consensus,
// divide, lambda, add the base), and the random masks are uniformMask's bits; the L1 sums are fp64.

constexpr uint64_t kMaskStride = 0xd1b54a32d192ed03ull;

struct FusedModel {
  const void* x = nullptr;  // the model's rows: const float* or const uint16_t* (bf16), as the chunk came
  enum Kind { All, Rank, Random, None } kind = All;
  bool sparse = false, rescale = false;
  RankCut* cut = nullptr;   // Rank
  uint64_t key = 0;         // Random: uniformMask's key for "<tensor>#<model>"
  float density = 1, scale = 1, weight = 1;
};

bool fusable(Sparsifier s) { return s == Sparsifier::None || s == Sparsifier::Magnitude || s == Sparsifier::Random; }

uint64_t maskKey(uint64_t seed, const std::string& name) { return splitMix64(seed ^ splitMix64(fnv1a(name))); }

// 1.0f when `yes`, else 0.0f, by bit masking: GCC turns a bool-to-float conversion back into a
// branch, which mispredicts on coin-flip data.
inline float oneIf(bool yes) {
  const uint32_t bits = (0u - static_cast<uint32_t>(yes)) & 0x3f800000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// keep[i] = 1.0f when DARE keeps element first + i (uniformMask's bits: the top 24 bits of
// splitMix64(key + index * stride) below ceil(density * 2^24)), else 0.0f. The 64-bit multiplies
// are most of a DARE merge; with AVX-512DQ (x86-64-v4) they vectorise (vpmullq), so the loop is
// also compiled for it and for AVX2 and picked at run time: the same integer arithmetic, so the
// same bits on any CPU. merge_kernels_bench: dare_ties 11.8 -> 7.2 ns per element.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void randomKeep(uint64_t key, uint64_t first,
                                                                                uint32_t below, int64_t n,
                                                                                float* keep) {
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = key + (first + static_cast<uint64_t>(i)) * kMaskStride + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z = z ^ (z >> 31);
    keep[i] = oneIf(static_cast<uint32_t>(z >> 40) < below);
  }
}

// X = ((d * keep) * scale) * weight for elements [begin, end) of one model, into x[0, end - begin).
// `seen`: for a rank cut, how many elements equal to its threshold precede `begin` in the tensor
// (the first quota() of them are dropped); advanced past this block's.
template <class T>
inline __attribute__((always_inline)) void weightedDeltas(FusedModel& m, const T* b, int64_t begin, int64_t end,
                                                          int64_t offset, float* x, int64_t& seen) {
  const T* xs = static_cast<const T*>(m.x);
  const int64_t n = end - begin;
  if (!m.sparse || m.kind == FusedModel::All) {
    for (int64_t i = 0; i < n; ++i) {
      float d = loadF(xs, begin + i) - loadF(b, begin + i);
      if (m.sparse) {
        d = d * 1.0f;
        if (m.rescale) d = d * m.scale;
      }
      x[i] = d * m.weight;
    }
    return;
  }
  // Branch-free inner loops: the keep decisions are coin flips, and mispredicted branches cost
  // more than the arithmetic (measured: 100 -> ~10 ns per element for dare_ties).
  const float scale = m.rescale ? m.scale : 1.0f;
  if (m.kind == FusedModel::Random) {
    const uint64_t first = static_cast<uint64_t>(offset + begin);
    // u = r / 2^24 < density  <=>  r < ceil(density * 2^24): an integer compare, no branch.
    const uint32_t below = static_cast<uint32_t>(std::ceil(static_cast<double>(m.density) * 16777216.0));
    // x doubles as the keep buffer: each x[i] is read before it is written.
    randomKeep(m.key, first, below, n, x);
    for (int64_t i = 0; i < n; ++i) {
      const float d = loadF(xs, begin + i) - loadF(b, begin + i);
      float v = d * x[i];
      if (m.rescale) v = v * scale;
      x[i] = v * m.weight;
    }
  } else if (m.kind == FusedModel::None) {
    for (int64_t i = 0; i < n; ++i) {
      float v = (loadF(xs, begin + i) - loadF(b, begin + i)) * 0.0f;
      if (m.rescale) v = v * scale;
      x[i] = v * m.weight;
    }
  } else {
    // Above the threshold: kept. Equal to it: kept unless among the first quota() by index. The
    // main loop has no branch (it vectorises) and counts the equal ones per 256 elements; a run
    // with any is fixed up in a second loop. Bf16 weights tie often: most blocks hold one or two.
    const int32_t threshold = m.cut->threshold();
    const int64_t quota = m.cut->quota();
    constexpr int64_t kRun = 256;
    for (int64_t r0 = 0; r0 < n; r0 += kRun) {
      const int64_t r1 = std::min(n, r0 + kRun);
      int32_t equal = 0;
      for (int64_t i = r0; i < r1; ++i) {
        const float d = loadF(xs, begin + i) - loadF(b, begin + i);
        const float a = std::fabs(d);
        int32_t bits;
        std::memcpy(&bits, &a, 4);
        equal += static_cast<int32_t>(bits == threshold);
        float v = d * oneIf(bits > threshold);
        if (m.rescale) v = v * scale;
        x[i] = v * m.weight;
      }
      if (equal == 0) continue;
      for (int64_t i = r0; i < r1; ++i) {
        const float d = loadF(xs, begin + i) - loadF(b, begin + i);
        const float a = std::fabs(d);
        int32_t bits;
        std::memcpy(&bits, &a, 4);
        if (bits != threshold) continue;
        float v = d * (seen++ >= quota ? 1.0f : 0.0f);
        if (m.rescale) v = v * scale;
        x[i] = v * m.weight;
      }
    }
  }
}

// How many elements of [begin, end) have |x - b| equal to the cut's threshold.
template <class T>
inline __attribute__((always_inline)) int64_t equalToThreshold(const FusedModel& m, const T* b, int64_t begin, int64_t end) {
  const int32_t threshold = m.cut->threshold();
  const T* xs = static_cast<const T*>(m.x);
  int64_t equal = 0;
  for (int64_t i = begin; i < end; ++i) {
    const float a = std::fabs(loadF(xs, i) - loadF(b, i));
    int32_t bits;
    std::memcpy(&bits, &a, 4);
    equal += static_cast<int64_t>(bits == threshold);
  }
  return equal;
}

KH_SIMD_CLONES int64_t equalToThresholdBf16(const FusedModel& m, const uint16_t* b, int64_t begin, int64_t end) {
  return equalToThreshold(m, b, begin, end);
}

// The L1 pass's lanes: lanes[j % kNormLanes] += |v[j]| in fp64, in order within each lane. Sixteen
// lanes are two AVX-512 (four AVX2) vectors of doubles: the loop vectorises, where four scalar
// chains ran at one add per cycle (the L1 pass was a fifth of a dare_ties merge). Callers start at
// multiples of 4096, so a lane of a block is the same lane of the whole tensor.
constexpr int kNormLanes = 16;
inline __attribute__((always_inline)) void absLaneSums(double* lanes, const float* v, int64_t n) {
  double acc[kNormLanes];
  for (int l = 0; l < kNormLanes; ++l) acc[l] = lanes[l];
  int64_t j = 0;
  for (; j + kNormLanes <= n; j += kNormLanes)
    for (int l = 0; l < kNormLanes; ++l) acc[l] += std::fabs(static_cast<double>(v[j + l]));
  for (int l = 0; j + l < n; ++l) acc[l] += std::fabs(static_cast<double>(v[j + l]));
  for (int l = 0; l < kNormLanes; ++l) lanes[l] = acc[l];
}
// The lanes' total, added pairwise in a fixed order.
inline double laneTotal(const double* lanes) {
  double t[kNormLanes];
  for (int l = 0; l < kNormLanes; ++l) t[l] = lanes[l];
  for (int w = kNormLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] = t[l] + t[l + w];
  return t[0];
}

// One block of the L1 pass (rescale): the kNormLanes fp64 lane sums of |d| into `in` and of the
// masked deltas |kept d| (weight 1, unscaled) into `out`; `kept` is a block-sized scratch.
template <class T>
inline __attribute__((always_inline)) void normsBlock(FusedModel& m, const T* b, int64_t s0, int64_t s1, int64_t offset,
                                                      float* kept, int64_t& seen, double* in, double* out) {
  const T* xi = static_cast<const T*>(m.x) + s0;
  const T* bi = b + s0;
  const int64_t n = s1 - s0;
  for (int64_t j = 0; j < n; ++j) kept[j] = loadF(xi, j) - loadF(bi, j);  // d, as weightedDeltas computes it
  absLaneSums(in, kept, n);
  weightedDeltas(m, b, s0, s1, offset, kept, seen);
  absLaneSums(out, kept, n);
}
KH_SIMD_CLONES void normsBlockBf16(FusedModel& m, const uint16_t* b, int64_t s0, int64_t s1, int64_t offset, float* kept,
                                   int64_t& seen, double* in, double* out) {
  normsBlock(m, b, s0, s1, offset, kept, seen, in, out);
}

// What fusedBlocks needs of fusedApply's arguments.
struct FusedArgs {
  std::vector<FusedModel>* ms;
  const std::vector<std::vector<int64_t>>* first;  // first[j][blk]: model j's tie ordinal at block blk
  float* out;
  int64_t n, offset;
  bool consensus, normalize;
  float wsum;
  double lambda;
};

// fusedApply's blocks [firstBlock, lastBlock) of 4096 elements.
template <class T>
inline __attribute__((always_inline)) void fusedBlocks(const T* b, const FusedArgs& a, int64_t firstBlock, int64_t lastBlock) {
  constexpr int64_t kBlock = 4096;
  std::vector<FusedModel>& ms = *a.ms;
  const std::vector<std::vector<int64_t>>& first = *a.first;
  float* out = a.out;
  const int64_t n = a.n, offset = a.offset;
  const bool consensus = a.consensus, normalize = a.normalize;
  const float wsum = a.wsum;
  const double lambda = a.lambda;
  const float lam = static_cast<float>(lambda);
  const size_t k = ms.size();
  std::vector<float> xbuf(k * kBlock), total(kBlock), mixed(kBlock), divisor(kBlock);
  for (int64_t blk = firstBlock; blk < lastBlock; ++blk) {
    const int64_t begin = blk * kBlock, end = std::min(n, begin + kBlock), len = end - begin;
    for (size_t j = 0; j < k; ++j) {
      int64_t seen = first[j].empty() ? 0 : first[j][static_cast<size_t>(blk)];
      weightedDeltas(ms[j], b, begin, end, offset, xbuf.data() + j * kBlock, seen);
    }
    const float* x = xbuf.data();
    float* t = total.data();
    float* mx = mixed.data();
    if (consensus) {
      // s = sign(sum X_j), >= 0 counts as + (NaN as -, as at::where); X_j kept where sign == s.
      for (int64_t i = 0; i < len; ++i) t[i] = x[i];
      for (size_t j = 1; j < k; ++j)
        for (int64_t i = 0; i < len; ++i) t[i] = t[i] + x[j * kBlock + i];
      float* dv = divisor.data();
      for (int64_t i = 0; i < len; ++i) {
        mx[i] = 0.0f;
        dv[i] = 0.0f;
      }
      for (size_t j = 0; j < k; ++j) {
        const float* xj = x + j * kBlock;
        const float w = ms[j].weight;
        for (int64_t i = 0; i < len; ++i) {
          const float v = xj[i];
          // keep when v's sign is the majority's: v > 0 with total >= 0, or v < 0 with total < 0
          // (or NaN); zeros are never kept.
          const int positive = static_cast<int>(t[i] >= 0.0f);
          const int agree = (static_cast<int>(0.0f < v) & positive) | (static_cast<int>(v < 0.0f) & (positive ^ 1));
          const float keep = oneIf(agree != 0);
          mx[i] = mx[i] + v * keep;
          dv[i] = dv[i] + keep * w;
        }
      }
      for (int64_t i = 0; i < len; ++i) {
        const float d = dv[i] + oneIf(dv[i] == 0.0f);  // 0 -> 1
        if (normalize) mx[i] = mx[i] / d;
      }
    } else {
      for (int64_t i = 0; i < len; ++i) mx[i] = x[i];
      for (size_t j = 1; j < k; ++j)
        for (int64_t i = 0; i < len; ++i) mx[i] = mx[i] + x[j * kBlock + i];
      if (normalize)
        for (int64_t i = 0; i < len; ++i) mx[i] = mx[i] / wsum;
    }
    if (lambda != 1.0)
      for (int64_t i = 0; i < len; ++i) mx[i] = mx[i] * lam;
    for (int64_t i = 0; i < len; ++i) out[begin + i] = loadF(b, begin + i) + mx[i];
  }
}
KH_SIMD_CLONES void fusedBlocksBf16(const uint16_t* b, const FusedArgs& a, int64_t firstBlock, int64_t lastBlock) {
  fusedBlocks(b, a, firstBlock, lastBlock);
}

// The merged rows into out[0, n): base b, element indices from `offset`. Works in blocks of 4096
// elements, in parallel: each model's weighted deltas first (a tight loop per model), then the
// combination, element by element in the same fp32 operation order as the ATen path. A rank cut
// whose tied elements are still being numbered (seen < quota) first counts them per block, so
// each block knows its first ordinal and the blocks need not run in order.
template <class T>
void fusedApply(const T* b, std::vector<FusedModel>& ms, float* out, int64_t n, int64_t offset, bool consensus,
                bool normalize, float wsum, double lambda) {
  constexpr int64_t kBlock = 4096;
  const size_t k = ms.size();
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  // first[j][blk]: model j's tie ordinal at the start of block blk (rank cuts only).
  std::vector<std::vector<int64_t>> first(k);
  for (size_t j = 0; j < k; ++j) {
    FusedModel& m = ms[j];
    if (m.kind != FusedModel::Rank) continue;
    auto& f = first[j];
    const int64_t start = m.cut->seen();
    if (start >= m.cut->quota()) {  // every tie from here on is kept: ordinals no longer matter
      f.assign(static_cast<size_t>(nblocks), start);
      continue;
    }
    f.assign(static_cast<size_t>(nblocks) + 1, 0);
    at::parallel_for(0, nblocks, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk)
        f[static_cast<size_t>(blk) + 1] = [&] {
          if constexpr (std::is_same_v<T, uint16_t>) return equalToThresholdBf16(m, b, blk * kBlock, std::min(n, (blk + 1) * kBlock));
          else return equalToThreshold(m, b, blk * kBlock, std::min(n, (blk + 1) * kBlock));
        }();
    });
    f[0] = start;
    for (int64_t blk = 0; blk < nblocks; ++blk) f[static_cast<size_t>(blk) + 1] += f[static_cast<size_t>(blk)];
    m.cut->seen() = f[static_cast<size_t>(nblocks)];
  }
  const FusedArgs args{&ms, &first, out, n, offset, consensus, normalize, wsum, lambda};
  at::parallel_for(0, nblocks, 1, [&](int64_t firstBlock, int64_t lastBlock) {
    if constexpr (std::is_same_v<T, uint16_t>) fusedBlocksBf16(b, args, firstBlock, lastBlock);
    else fusedBlocks(b, args, firstBlock, lastBlock);
  });
}

// One chunk's rows for the fused loops: the base and the models read (others undefined), all
// bf16 (read in place from the stored rows) or all fp32.
struct Rows {
  at::Tensor b;
  std::vector<at::Tensor> xs;
  bool bf16 = false;
  // f(base pointer): const uint16_t* (bf16 bits) or const float*.
  template <class F>
  void visit(F f) const {
    if (bf16) f(static_cast<const uint16_t*>(b.data_ptr()));
    else f(static_cast<const float*>(b.data_ptr()));
  }
};

void mergeTaskArithmeticRows(Method m, const RowGrid& g, const RowSource& src, const RawRowSource& raw,
                             const RowSink& sink, const std::vector<ModelParams>& params, const MethodParams& mp) {
  SparsePlan p = sparsePlan(m, g, params, mp);
  const size_t k = params.size();
  std::vector<double> lIn(k, 0.0), lOut(k, 0.0), scale(k, 1.0);
  auto restart = [&] {
    for (size_t i = 0; i < k; ++i) {
      p.keepFrom[i].restart();
      p.dropFrom[i].restart();
    }
  };
  // The fused CPU loop when the rows live on the CPU and every mask is cheap to compute inline.
  // Decided by the first base rows read (every pass reads the base first): the rows' device.
  bool fused = fusable(p.s) && k <= 16, decided = false;
  auto fusedModels = [&](const Rows& rows) {
    std::vector<FusedModel> ms(k);
    for (size_t i = 0; i < k; ++i) {
      FusedModel& f = ms[i];
      f.x = rows.xs[i].defined() ? rows.xs[i].data_ptr() : nullptr;
      f.sparse = p.sparse[i];
      f.rescale = p.rescale;
      f.scale = static_cast<float>(scale[i]);
      f.weight = static_cast<float>(params[i].weight);
      f.density = static_cast<float>(params[i].density);
      if (!f.sparse) continue;
      if (p.s == Sparsifier::Random) {
        f.kind = FusedModel::Random;
        f.key = maskKey(mp.seed, mp.tensorName + "#" + std::to_string(i));
      } else if (p.keepFrom[i].keepsAll()) {
        f.kind = FusedModel::All;
      } else if (p.keepFrom[i].keepsNone()) {
        f.kind = FusedModel::None;
      } else {
        f.kind = FusedModel::Rank;
        f.cut = &p.keepFrom[i];
      }
    }
    return ms;
  };
  // A chunk's base rows (their device decides the fused path the first time), and on the fused
  // path the models' rows too (every model, or only the sparsified ones). Rows come as stored
  // where `raw` gives them; when base and models are all bf16 the loops read bf16 in place,
  // otherwise everything is fp32.
  auto readRows = [&](int64_t r0, int64_t r1, bool onlySparse) {
    Rows rows;
    rows.xs.resize(k);
    auto one = [&](int input) {
      at::Tensor t;
      if (raw) t = raw(input, r0, r1);
      if (!t.defined()) t = src(input, r0, r1).contiguous();
      return t;
    };
    rows.b = one(-1);
    if (!decided) {
      fused = fused && rows.b.device().is_cpu();
      decided = true;
    }
    bool bf16 = fused && rows.b.scalar_type() == at::kBFloat16;
    if (fused) {
      for (size_t i = 0; i < k; ++i) {
        if (onlySparse && !p.sparse[i]) continue;
        rows.xs[i] = one(static_cast<int>(i));
        bf16 = bf16 && rows.xs[i].scalar_type() == at::kBFloat16;
      }
    }
    rows.bf16 = bf16;
    if (!bf16) {
      if (rows.b.scalar_type() != at::kFloat) rows.b = rows.b.to(at::kFloat);
      for (auto& x : rows.xs)
        if (x.defined() && x.scalar_type() != at::kFloat) x = x.to(at::kFloat);
    }
    return rows;
  };
  if (p.select) {
    // Big tensors on the fused path: a sample of rows places each magnitude cut's threshold in a
    // window of keys, so one pass over the chunks usually finds it instead of two.
    const int64_t numel = g.rows * g.cols;
    if (fused && p.s == Sparsifier::Magnitude && g.rows >= 64 && numel >= kWindowMinElements &&
        numel < (int64_t{1} << 32)) {
      constexpr int64_t kSampleRows = 256, kSampleCols = 512;  // 2^17 keys per model
      const int64_t nr = std::min(kSampleRows, g.rows), step = std::max<int64_t>(1, g.cols / kSampleCols);
      std::vector<std::vector<uint32_t>> sample(k);
      for (int64_t j = 0; j < nr; ++j) {
        const int64_t r = (2 * j + 1) * g.rows / (2 * nr);
        Rows rows = readRows(r, r + 1, /*onlySparse=*/true);
        if (!fused) break;
        rows.visit([&](auto bp) {
          using T = std::remove_const_t<std::remove_pointer_t<decltype(bp)>>;
          for (size_t i = 0; i < k; ++i) {
            if (!p.sparse[i] || p.keepFrom[i].trivial()) continue;
            const T* op = static_cast<const T*>(rows.xs[i].data_ptr());
            for (int64_t c = 0; c < g.cols; c += step) {
              const float a = std::fabs(loadF(op, c) - loadF(bp, c));
              uint32_t key;
              std::memcpy(&key, &a, 4);
              sample[i].push_back(key);
            }
          }
        });
      }
      uint32_t lo = 0, span = 0;
      for (size_t i = 0; i < k && fused; ++i)
        if (rankWindow(sample[i], p.keepFrom[i], lo, span)) p.keepFrom[i].setWindow(lo, span);
    }
    for (int level = 0;; ++level) {
      // The fused path goes on while a cut is unsettled (one pass with a window that held the
      // threshold, two without, three when a window missed); the ATen path takes two.
      if (level > 0) {
        bool more = !fused && level < 2;
        for (size_t i = 0; i < k && fused; ++i) more = more || (p.sparse[i] && !p.keepFrom[i].settled());
        if (!more) break;
      }
      eachChunk(g, [&](int64_t r0, int64_t r1) {
        Rows rows = readRows(r0, r1, /*onlySparse=*/true);
        if (fused) {
          rows.visit([&](auto bp) {
            using T = std::remove_const_t<std::remove_pointer_t<decltype(bp)>>;
            for (size_t i = 0; i < k; ++i) {
              if (!p.sparse[i]) continue;
              const T* op = static_cast<const T*>(rows.xs[i].data_ptr());
              const int64_t n = rows.xs[i].numel();
              if (!p.keepFrom[i].settled()) p.keepFrom[i].addDiff(op, bp, n);
              if (level == 0 && p.norms) {
                double in[kNormLanes] = {};
                float d[4096];
                for (int64_t s0 = 0; s0 < n; s0 += 4096) {
                  const int64_t len = std::min<int64_t>(4096, n - s0);
                  for (int64_t j = 0; j < len; ++j) d[j] = loadF(op, s0 + j) - loadF(bp, s0 + j);
                  absLaneSums(in, d, len);
                }
                lIn[i] += laneTotal(in);
              }
            }
          });
          return;
        }
        const at::Tensor& b = rows.b;
        for (size_t i = 0; i < k; ++i) {
          if (!p.sparse[i]) continue;
          auto a = (src(static_cast<int>(i), r0, r1) - b).abs();  // [r, cols] f32
          if (level == 0) {
            p.keepFrom[i].addHigh(a);
            p.dropFrom[i].addHigh(a);
            if (p.norms) lIn[i] += sumD(a);
          } else {
            p.keepFrom[i].addLow(a);
            p.dropFrom[i].addLow(a);
          }
        }
      });
      for (size_t i = 0; i < k; ++i) {
        if (fused) {
          if (p.sparse[i]) p.keepFrom[i].endPass();  // dropFrom: trivial on the fused path
        } else if (level == 0) {
          p.keepFrom[i].endHigh();
          p.dropFrom[i].endHigh();
        } else {
          p.keepFrom[i].endLow();
          p.dropFrom[i].endLow();
        }
      }
    }
  }
  if (p.norms) {
    restart();
    eachChunk(g, [&](int64_t r0, int64_t r1) {
      Rows rows = readRows(r0, r1, /*onlySparse=*/true);
      if (fused) {
        auto ms = fusedModels(rows);
        rows.visit([&](auto bp) {
          using T = std::remove_const_t<std::remove_pointer_t<decltype(bp)>>;
          const int64_t n = rows.b.numel(), offset = r0 * g.cols;
          // Blocks of masked deltas (weight 1, unscaled), each summed into kNormLanes fp64 lanes, the
          // blocks' lanes then added in block order: deterministic for any thread count. Blocks run
          // in parallel unless a rank cut numbers its tied elements in index order.
          constexpr int64_t kBlock = 4096;
          const int64_t nblocks = (n + kBlock - 1) / kBlock;
          for (size_t i = 0; i < k; ++i) {
            if (!p.sparse[i]) continue;
            FusedModel unit = ms[i];
            unit.rescale = false;
            unit.weight = 1.0f;
            std::vector<double> blockIn(static_cast<size_t>(nblocks) * kNormLanes, 0.0), blockOut(blockIn.size(), 0.0);
            auto blocks = [&](int64_t first, int64_t last) {
              std::vector<float> kept(kBlock);
              int64_t unusedSeen = 0;
              for (int64_t blk = first; blk < last; ++blk) {
                const int64_t s0 = blk * kBlock, s1 = std::min(n, s0 + kBlock);
                int64_t& seen = unit.cut ? unit.cut->seen() : unusedSeen;
                double* bin = blockIn.data() + blk * kNormLanes;
                double* bout = blockOut.data() + blk * kNormLanes;
                if constexpr (std::is_same_v<T, uint16_t>) normsBlockBf16(unit, bp, s0, s1, offset, kept.data(), seen, bin, bout);
                else normsBlock(unit, bp, s0, s1, offset, kept.data(), seen, bin, bout);
              }
            };
            if (unit.kind == FusedModel::Rank) blocks(0, nblocks);
            else at::parallel_for(0, nblocks, 1, blocks);
            double in[kNormLanes] = {}, out[kNormLanes] = {};
            for (int64_t blk = 0; blk < nblocks; ++blk)
              for (int l = 0; l < kNormLanes; ++l) {
                in[l] += blockIn[static_cast<size_t>(blk * kNormLanes + l)];
                out[l] += blockOut[static_cast<size_t>(blk * kNormLanes + l)];
              }
            if (!p.select) lIn[i] += laneTotal(in);
            lOut[i] += laneTotal(out);
          }
        });
        return;
      }
      const at::Tensor& b = rows.b;
      for (size_t i = 0; i < k; ++i) {
        if (!p.sparse[i]) continue;
        auto d = src(static_cast<int>(i), r0, r1) - b;
        if (!p.select) lIn[i] += sumD(d.abs());
        lOut[i] += sumD((d * chunkMask(p, i, d, r0, params, mp)).abs());
      }
    });
    // mergekit's RescaleNorm.l1: unscaled when either norm is below 1e-7.
    for (size_t i = 0; i < k; ++i)
      if (p.sparse[i] && lIn[i] >= 1e-7 && lOut[i] >= 1e-7) scale[i] = lIn[i] / lOut[i];
  }
  restart();
  double wsum = 0;
  for (const auto& q : params) wsum += q.weight;
  const bool consensus = usesSignConsensus(m);
  eachChunk(g, [&](int64_t r0, int64_t r1) {
    Rows rows = readRows(r0, r1, /*onlySparse=*/false);
    if (fused) {
      auto ms = fusedModels(rows);
      at::Tensor out = at::empty({r1 - r0, g.cols}, at::kFloat);
      rows.visit([&](auto bp) {
        fusedApply(bp, ms, out.data_ptr<float>(), out.numel(), r0 * g.cols, consensus, p.normalize,
                   static_cast<float>(wsum), mp.lambda);
      });
      sink(r0, r1, out);
      return;
    }
    const at::Tensor& b = rows.b;  // [r, cols] f32
    std::vector<at::Tensor> weighted;  // X_i = w_i * sparsify(theta_i - base)
    weighted.reserve(k);
    for (size_t i = 0; i < k; ++i) {
      auto d = src(static_cast<int>(i), r0, r1) - b;
      if (p.sparse[i]) {
        d = d * chunkMask(p, i, d, r0, params, mp);
        if (p.rescale) d = d * scale[i];
      }
      weighted.push_back(d * params[i].weight);
    }
    at::Tensor mixed;
    if (consensus) {
      // s = sign(sum X_i), >= 0 counts as +; X_i is kept where sign(X_i) == s (zeros never are).
      auto total = weighted[0].clone();
      for (size_t i = 1; i < k; ++i) total.add_(weighted[i]);
      auto majority = at::where(total >= 0, at::ones_like(total), -at::ones_like(total));
      mixed = at::zeros_like(b);
      auto divisor = at::zeros_like(b);
      for (size_t i = 0; i < k; ++i) {
        auto keep = (at::sign(weighted[i]) == majority).to(at::kFloat);
        mixed.add_(weighted[i] * keep);
        divisor.add_(keep * params[i].weight);
      }
      divisor.masked_fill_(divisor == 0, 1.0);
      if (p.normalize) mixed.div_(divisor);
    } else {
      mixed = weighted[0].clone();
      for (size_t i = 1; i < k; ++i) mixed.add_(weighted[i]);
      if (p.normalize) mixed.div_(wsum);
    }
    if (mp.lambda != 1.0) mixed.mul_(mp.lambda);
    sink(r0, r1, b + mixed);
  });
}

// Sums of products over the whole tensor (fp64): s[i][j] = sum x_i * x_j for the given rows.
struct Grams {
  std::vector<std::vector<double>> s;
  explicit Grams(size_t n) : s(n, std::vector<double>(n, 0.0)) {}
  void add(const std::vector<at::Tensor>& xs) {
    for (size_t i = 0; i < xs.size(); ++i)
      for (size_t j = i; j < xs.size(); ++j) s[i][j] += sumD(xs[i] * xs[j]);
  }
};

// mergekit's slerp: flattened, lerp when |cos| > 0.9995.
void slerpRows(const RowGrid& g, const RowSource& src, const RowSink& sink, double t) {
  Grams gr(2);
  eachChunk(g, [&](int64_t r0, int64_t r1) { gr.add({src(-1, r0, r1), src(0, r0, r1)}); });
  const double n0 = std::sqrt(gr.s[0][0]), n1 = std::sqrt(gr.s[1][1]);
  const double dot = gr.s[0][1] / ((n0 > 1e-8 ? n0 : 1.0) * (n1 > 1e-8 ? n1 : 1.0));
  double s0 = 1.0 - t, s1 = t;
  if (std::abs(dot) <= 0.9995) {
    const double theta0 = std::acos(dot);
    const double sin0 = std::sin(theta0);
    s0 = std::sin(theta0 - theta0 * t) / sin0;
    s1 = std::sin(theta0 * t) / sin0;
  }
  eachChunk(g, [&](int64_t r0, int64_t r1) { sink(r0, r1, src(-1, r0, r1) * s0 + src(0, r0, r1) * s1); });
}

// mergekit's nuslerp(t, v0, v1, dim, flatten) over fp32 v0, v1 of one shape (one chunk's vectors).
at::Tensor nuslerp(double t, at::Tensor v0, at::Tensor v1, bool rowWise, bool flatten) {
  const auto outShape = v0.sizes().vec();
  const bool transposed = !flatten && rowWise && v0.dim() > 1;
  if (flatten || v0.dim() == 0) {
    v0 = v0.reshape({-1});
    v1 = v1.reshape({-1});
  } else if (transposed) {
    v0 = v0.transpose(0, -1);
    v1 = v1.transpose(0, -1);
  }
  auto unit = [](const at::Tensor& x) { return x / x.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-7); };
  auto cosTheta = (unit(v0) * unit(v1)).sum(-1, /*keepdim=*/true);  // [..., 1]
  auto theta = at::acos(cosTheta.clamp(-1.0, 1.0));
  auto sinTheta = at::sin(theta);
  auto res = (at::sin(theta * (1.0 - t)) * v0 + at::sin(theta * t) * v1) / sinTheta;
  auto lerp = v0 * (1.0 - t) + v1 * t;
  res = at::where(sinTheta.abs() < 1e-8, lerp, res);
  if (transposed) res = res.transpose(0, -1);
  return res.contiguous().view(outShape);
}

void nuslerpRows(const RowGrid& g, at::IntArrayRef shape, bool hasBase, const RowSource& src, const RowSink& sink,
                 double t, const MethodParams& mp) {
  auto vectors = [&](int64_t r0, int64_t r1) -> std::pair<at::Tensor, at::Tensor> {
    if (!hasBase) return {src(0, r0, r1), src(1, r0, r1)};
    auto b = src(-1, r0, r1);
    return {src(0, r0, r1) - b, src(1, r0, r1) - b};
  };
  auto finish = [&](int64_t r0, int64_t r1, const at::Tensor& v) { sink(r0, r1, hasBase ? src(-1, r0, r1) + v : v); };
  if (mp.nuslerpFlatten || shape.empty()) {
    Grams gr(2);
    eachChunk(g, [&](int64_t r0, int64_t r1) {
      auto [v0, v1] = vectors(r0, r1);
      gr.add({v0, v1});
    });
    const double cos = std::clamp(
        gr.s[0][1] / (std::max(std::sqrt(gr.s[0][0]), 1e-7) * std::max(std::sqrt(gr.s[1][1]), 1e-7)), -1.0, 1.0);
    const double theta = std::acos(cos), sinTheta = std::sin(theta);
    double a = 1.0 - t, c = t;
    if (std::abs(sinTheta) >= 1e-8) {
      a = std::sin(theta * (1.0 - t)) / sinTheta;
      c = std::sin(theta * t) / sinTheta;
    }
    eachChunk(g, [&](int64_t r0, int64_t r1) {
      auto [v0, v1] = vectors(r0, r1);
      finish(r0, r1, v0 * a + v1 * c);
    });
    return;
  }
  eachChunk(g, [&](int64_t r0, int64_t r1) {
    auto [v0, v1] = vectors(r0, r1);
    at::Tensor v;
    if (mp.nuslerpRowWise && shape.size() > 1) {  // one chunk holds the whole tensor
      v = nuslerp(t, v0.reshape(shape), v1.reshape(shape), true, false).reshape(v0.sizes());
    } else {  // vectors along the last dimension, whole within a chunk of rows
      const int64_t last = shape.back();
      v = nuslerp(t, v0.reshape({-1, last}), v1.reshape({-1, last}), false, false).reshape(v0.sizes());
    }
    finish(r0, r1, v);
  });
}

// model_stock: t = N c / (1 + (N - 1) c), c the mean pairwise cosine of the task vectors.
void modelStockRows(const RowGrid& g, size_t n, const RowSource& src, const RowSink& sink) {
  Grams gr(n);
  eachChunk(g, [&](int64_t r0, int64_t r1) {
    auto b = src(-1, r0, r1);
    std::vector<at::Tensor> offsets;
    for (size_t i = 0; i < n; ++i) offsets.push_back(src(static_cast<int>(i), r0, r1) - b);
    gr.add(offsets);
  });
  double cosSum = 0;
  int64_t pairs = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      const double normProduct = std::max(std::sqrt(gr.s[i][i]) * std::sqrt(gr.s[j][j]), 1e-6);
      cosSum += std::clamp(gr.s[i][j] / normProduct, -1.0, 1.0);
      ++pairs;
    }
  const double c = cosSum / static_cast<double>(pairs);
  const double nn = static_cast<double>(n);
  const double t = (c * nn) / (c * (nn - 1.0) + 1.0);
  eachChunk(g, [&](int64_t r0, int64_t r1) {
    auto b = src(-1, r0, r1);
    auto avg = src(0, r0, r1).clone();
    for (size_t i = 1; i < n; ++i) avg.add_(src(static_cast<int>(i), r0, r1));
    avg.div_(nn);
    sink(r0, r1, avg * t + b * (1.0 - t));
  });
}

// model_stock with filter_wise (mergekit model_stock.py): t per row from the mean pairwise cosine
// of the rows' task vectors; every chunk holds whole rows, so one pass. Dots accumulate in fp64.
void modelStockRowWise(const RowGrid& g, size_t n, const RowSource& src, const RowSink& sink) {
  const double nn = static_cast<double>(n);
  eachChunk(g, [&](int64_t r0, int64_t r1) {
    auto b = src(-1, r0, r1);  // [r, cols] f32
    std::vector<at::Tensor> offsets;
    for (size_t i = 0; i < n; ++i) offsets.push_back(src(static_cast<int>(i), r0, r1) - b);
    std::vector<at::Tensor> norms;  // [r] f64
    for (const auto& o : offsets) norms.push_back((o * o).sum(1, false, at::kDouble).sqrt());
    at::Tensor cosSum = at::zeros({r1 - r0}, b.options().dtype(at::kDouble));  // [r] f64
    for (size_t i = 0; i < n; ++i)
      for (size_t j = i + 1; j < n; ++j) {
        auto dot = (offsets[i] * offsets[j]).sum(1, false, at::kDouble);
        cosSum.add_((dot / (norms[i] * norms[j]).clamp_min(1e-6)).clamp(-1.0, 1.0));
      }
    const auto c = cosSum / (nn * (nn - 1.0) / 2.0);
    const auto t = ((c * nn) / (c * (nn - 1.0) + 1.0)).to(at::kFloat).unsqueeze(1);  // [r, 1] f32
    offsets.clear();
    auto avg = src(0, r0, r1).clone();
    for (size_t i = 1; i < n; ++i) avg.add_(src(static_cast<int>(i), r0, r1));
    avg.div_(nn);
    sink(r0, r1, avg * t + b * (1.0 - t));
  });
}

void linearRows(const RowGrid& g, size_t n, const RowSource& src, const RowSink& sink,
                const std::vector<ModelParams>& params, const MethodParams& mp) {
  double wsum = 0;
  for (const auto& q : params) wsum += q.weight;
  const bool normalize = mp.normalize.value_or(true);
  eachChunk(g, [&](int64_t r0, int64_t r1) {
    auto acc = src(0, r0, r1) * params[0].weight;  // [r, cols] f32
    for (size_t i = 1; i < n; ++i) acc.add_(src(static_cast<int>(i), r0, r1), params[i].weight);
    if (normalize) acc.div_(wsum);
    sink(r0, r1, acc);
  });
}

}  // namespace

// Everything about the inputs that can be checked without reading them.
void validateMerge(Method m, bool hasBase, size_t others, at::IntArrayRef shape, const std::vector<ModelParams>& params,
                   const MethodParams& mp, const std::vector<std::string>& names) {
  if (params.size() != others)
    fail(mp, std::to_string(others) + " models but " + std::to_string(params.size()) + " parameter sets");
  if (needsBase(m) && !hasBase)
    fail(mp, std::string(methodName(m)) + " needs a base model", "set base_model in the recipe");
  checkModelParams(m, params, mp, names);
  if (m == Method::TaskArithmetic && mp.rescale.value_or(false))
    fail(mp, "rescale: true has no effect in task_arithmetic, which does not sparsify",
         "use dare_linear, breadcrumbs or della_linear, or remove rescale");
  // mergekit's filter_wise takes one t per vector along the last dimension; Kumihimo's rows are
  // [shape[0], rest], the same thing for 1-D and 2-D tensors only.
  if (m == Method::ModelStock && mp.filterWise && shape.size() > 2)
    fail(mp, "filter_wise: true on a " + std::to_string(shape.size()) + "-D tensor " + shapeString(shape) + " is not supported",
         "set filter_wise: false");
  const size_t total = others + (hasBase ? 1 : 0);
  switch (m) {
    case Method::Passthrough:
      if (others != 1)
        fail(mp, "passthrough takes exactly one model, got " + std::to_string(others),
             "a passthrough slice names a single source model");
      break;
    case Method::Slerp:
      if (others != 1) fail(mp, "slerp merges exactly two models (the base and one other), got " + std::to_string(total));
      break;
    case Method::NuSlerp:
      if (others != 2)
        fail(mp, "nuslerp merges exactly two models (plus an optional base), got " + std::to_string(others) +
                     (hasBase ? " besides the base" : ""));
      break;
    case Method::ModelStock:
      if (total < 3) fail(mp, "model_stock needs at least three models counting the base, got " + std::to_string(total));
      break;
    default:
      if (others == 0) fail(mp, std::string(methodName(m)) + " needs at least one model besides the base");
      break;
  }
  const bool normalized = m == Method::Linear ? mp.normalize.value_or(true)
                                              : (isTaskArithmetic(m) && !usesSignConsensus(m) &&
                                                 mp.normalize.value_or(defaultNormalize(m)));
  if (normalized) {
    double wsum = 0;
    for (const auto& q : params) wsum += q.weight;
    if (std::abs(wsum) < 1e-8)
      fail(mp, "the weights sum to zero and normalize is on", "set normalize: false or change the weights");
  }
}

namespace {
void validate(Method m, bool hasBase, size_t others, at::IntArrayRef shape, const std::vector<ModelParams>& params,
              const MethodParams& mp) {
  validateMerge(m, hasBase, others, shape, params, mp);
}
}  // namespace


std::optional<Method> parseMethod(std::string_view name) {
  for (const auto& mi : kMethods)
    if (name == mi.name) return mi.m;
  return std::nullopt;
}

const char* methodName(Method m) {
  for (const auto& mi : kMethods)
    if (mi.m == m) return mi.name;
  return "?";
}

const std::vector<std::string>& modelParamNames(Method m) {
  static const std::vector<std::string> weight{"weight"}, none{}, sparse{"weight", "density"},
      crumbs{"weight", "density", "gamma"}, della{"weight", "density", "epsilon"}, scale{"scale"};
  switch (sparsifierOf(m)) {
    case Sparsifier::Magnitude:
    case Sparsifier::Random: return sparse;
    case Sparsifier::MagnitudeOutliers: return crumbs;
    case Sparsifier::DellaMagprune: return della;
    case Sparsifier::None: break;
  }
  if (m == Method::TaskArithmetic) return sparse;  // mergekit takes density; validateMerge refuses density < 1
  if (m == Method::Passthrough) return scale;
  return (m == Method::Linear || m == Method::NuSlerp) ? weight : none;
}

bool needsWeight(Method m) { return m == Method::Linear || m == Method::NuSlerp || isTaskArithmetic(m); }

const std::vector<std::string>& globalParamNames(Method m) {
  // int8_mask is accepted for recipe compatibility: in mergekit it only sets the mask's dtype.
  // (task_arithmetic takes rescale like the rest of its family; validateMerge refuses rescale: true.)
  static const std::vector<std::string> linear{"normalize"}, sparse{"normalize", "lambda", "rescale", "int8_mask"},
      slerp{"t"}, nu{"nuslerp_flatten", "nuslerp_row_wise"}, stock{"filter_wise"}, none{};
  if (m == Method::Linear) return linear;
  if (isTaskArithmetic(m)) return sparse;
  if (m == Method::Slerp) return slerp;
  if (m == Method::NuSlerp) return nu;
  if (m == Method::ModelStock) return stock;
  return none;
}

bool needsBase(Method m) { return isTaskArithmetic(m) || m == Method::Slerp || m == Method::ModelStock; }

bool defaultNormalize(Method m) {
  return m == Method::Linear || m == Method::Ties || m == Method::Della;
}

bool defaultRescale(Method m) {
  return m == Method::DareTies || m == Method::DareLinear || m == Method::Della || m == Method::DellaLinear;
}

RowGrid rowGrid(Method m, const MethodParams& mp, at::IntArrayRef shape) {
  RowGrid g;
  if (shape.size() == 1) {
    g.cols = shape[0];
  } else if (shape.size() > 1) {
    g.rows = shape[0];
    g.cols = 1;
    for (size_t i = 1; i < shape.size(); ++i) g.cols *= shape[i];
  }
  const bool whole = m == Method::NuSlerp && !mp.nuslerpFlatten && mp.nuslerpRowWise && shape.size() > 1;
  g.rowsPerChunk = whole ? g.rows : std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, g.cols));
  g.rowsPerChunk = std::max<int64_t>(1, std::min(g.rowsPerChunk, g.rows));
  return g;
}

int mergePasses(Method m, const std::vector<ModelParams>& params, const MethodParams& mp, const RowGrid& g, bool onCpu) {
  switch (m) {
    case Method::Slerp: return 2;
    case Method::ModelStock: return mp.filterWise ? 1 : 2;
    case Method::NuSlerp: return mp.nuslerpFlatten ? 2 : 1;
    default: break;
  }
  if (!isTaskArithmetic(m)) return 1;
  const Sparsifier s = sparsifierOf(m);
  bool sparse = false;
  for (const auto& p : params) sparse = sparse || (s != Sparsifier::None && p.density < 1.0);
  const bool select = sparse && (s == Sparsifier::Magnitude || s == Sparsifier::MagnitudeOutliers);
  const bool norms = sparse && mp.rescale.value_or(defaultRescale(m));
  // A magnitude cut on the fused CPU path of a big tensor usually settles in one windowed pass.
  const bool windowed = onCpu && s == Sparsifier::Magnitude && g.rows >= 64 && g.rows * g.cols >= kWindowMinElements;
  return 1 + (select ? (windowed ? 1 : 2) : 0) + (norms ? 1 : 0);
}

uint64_t rankWindowBytes(Method m, const std::vector<ModelParams>& params, const RowGrid& g, bool onCpu) {
  if (!onCpu || sparsifierOf(m) != Sparsifier::Magnitude || g.rows < 64 || g.rows * g.cols < kWindowMinElements)
    return 0;
  uint64_t cuts = 0;
  for (const auto& p : params) cuts += p.density < 1.0 ? 1 : 0;
  // Per cut: the window's counts at their widest, one set per thread and their sum at the end of
  // the pass, and the 2^17-key sample that placed it.
  const uint64_t threads = static_cast<uint64_t>(std::max(1, at::get_num_threads()));
  return cuts * ((threads + 1) * (uint64_t{kWindowMaxSpan} + 1) * 4 + (uint64_t{1} << 17) * 4);
}

void mergeRows(Method m, bool hasBase, size_t others, at::IntArrayRef shape, const RowSource& source,
               const RowSink& sink, const std::vector<ModelParams>& params, const MethodParams& mp,
               const RawRowSource& raw) {
  validate(m, hasBase, others, shape, params, mp);
  const RowGrid g = rowGrid(m, mp, shape);
  if (g.rows * g.cols == 0) return;
  switch (m) {
    case Method::Passthrough: {
      const double scale = params[0].scale;  // mergekit passthrough.py: tensor * scale
      eachChunk(g, [&](int64_t r0, int64_t r1) { sink(r0, r1, scale == 1.0 ? source(0, r0, r1) : source(0, r0, r1) * scale); });
      return;
    }
    case Method::Linear: return linearRows(g, others, source, sink, params, mp);
    case Method::Slerp: return slerpRows(g, source, sink, mp.t);
    case Method::NuSlerp: {
      const double wsum = params[0].weight + params[1].weight;
      const double t = std::abs(wsum) < 1e-6 ? 0.5 : params[1].weight / wsum;
      return nuslerpRows(g, shape, hasBase, source, sink, t, mp);
    }
    case Method::ModelStock:
      return mp.filterWise ? modelStockRowWise(g, others, source, sink) : modelStockRows(g, others, source, sink);
    default: return mergeTaskArithmeticRows(m, g, source, raw, sink, params, mp);
  }
}

at::Tensor mergeTensor(Method m, const at::Tensor& base, const std::vector<at::Tensor>& others,
                       const std::vector<ModelParams>& params, const MethodParams& mp) {
  const bool hasBase = base.defined();
  // Shapes: every input matches the first one given.
  const at::Tensor& ref = hasBase ? base : (others.empty() ? base : others[0]);
  const std::string refName = hasBase ? "the base" : "model 1";
  for (size_t i = 0; i < others.size(); ++i)
    if (ref.defined() && others[i].sizes() != ref.sizes())
      fail(mp,
           "model " + std::to_string(i + 1) + " has shape " + shapeString(others[i].sizes()) + " but " + refName +
               " has " + shapeString(ref.sizes()),
           "the models must share one architecture and vocabulary size");
  validate(m, hasBase, others.size(), ref.sizes(), params, mp);
  const RowGrid g = rowGrid(m, mp, ref.sizes());
  auto rows = [&](const at::Tensor& t) { return toF32(t).reshape({g.rows, g.cols}); };
  at::Tensor b = hasBase ? rows(base) : at::Tensor();
  std::vector<at::Tensor> xs;
  for (const auto& o : others) xs.push_back(rows(o));
  at::Tensor out = at::empty({g.rows, g.cols}, ref.options().dtype(at::kFloat));
  mergeRows(
      m, hasBase, others.size(), ref.sizes(),
      [&](int input, int64_t r0, int64_t r1) {
        return (input < 0 ? b : xs[static_cast<size_t>(input)]).narrow(0, r0, r1 - r0);
      },
      [&](int64_t r0, int64_t r1, const at::Tensor& merged) { out.narrow(0, r0, r1 - r0).copy_(merged); }, params,
      mp);
  return out.view(ref.sizes());
}

at::Tensor uniformMask(uint64_t seed, const std::string& name, int64_t numel, int64_t offset) {
  KH_ASSERT(numel >= 0 && offset >= 0, "negative numel or offset");
  const uint64_t key = splitMix64(seed ^ splitMix64(fnv1a(name)));
  auto out = at::empty({numel}, at::kFloat);  // [numel] f32
  float* p = out.data_ptr<float>();
  at::parallel_for(0, numel, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t h = splitMix64(key + static_cast<uint64_t>(offset + i) * 0xd1b54a32d192ed03ull);
      p[i] = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // 24 bits: exact in fp32, < 1
    }
  });
  return out;
}

at::Tensor dellaKeepProbabilities(const at::Tensor& d, double density, double epsilon) {
  auto x = toF32(d);
  at::Tensor rows;  // [R, C] f32
  if (x.dim() == 0) rows = x.reshape({1, 1});
  else if (x.dim() == 1) rows = x.unsqueeze(0);
  else rows = x.reshape({x.size(0), -1});
  const int64_t cols = rows.size(1);
  if (cols <= 1) return at::full(x.sizes(), density, x.options());
  auto order = std::get<1>(at::sort(rows.abs(), /*stable=*/true, 1, /*descending=*/false));         // [R, C]
  auto ranks = std::get<1>(at::sort(order, /*stable=*/true, 1, /*descending=*/false)).to(at::kFloat);  // [R, C]
  auto probs = ranks * (2.0 * epsilon / static_cast<double>(cols - 1)) + (density - epsilon);
  return probs.view(x.sizes());
}

}  // namespace kh::merge
