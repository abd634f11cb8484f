// The merge methods (mergekit semantics): one pure function per tensor that turns the base and
// the other models' tensors into the merged tensor, in fp32 on the inputs' device. Must never
// read files, keep state between calls, or draw randomness from anything but the explicit seed.
//
// Decisions (see methods.cpp for the exact formulas):
// - Rescale (dare_*, della*, and any method given rescale: true) keeps the L1 norm of each
//   sparsified task vector: kept = d * mask * (|d|_1 / |d * mask|_1), left unscaled when either
//   norm is below 1e-7. This is current mergekit (rescaled_masked_tensor, RescaleNorm.l1); older
//   versions divided by the density, and so does the DELLA paper's 1/p.
// - Random masks come from uniformMask(seed, "<tensorName>#<model index>", numel): identical on
//   every device and thread count; each model gets its own stream.
// - breadcrumbs: sort |d| ascending; n_top = int(gamma n), keep = int(density n),
//   n_bot = n - keep - n_top (when negative, n_top shrinks by that much and n_bot = 0); keep the
//   ranks [n_bot, n - n_top). mergekit writes indices[n_bot:-n_top], which keeps nothing when
//   n_top == 0; we keep what it means to keep.
// - della: per row (1-D tensors are one row; N-D tensors are [shape0, rest]) rank |d| ascending,
//   p = density - epsilon + 2 epsilon * rank / (cols - 1) (p = density for a one-column row), keep
//   with probability p, then the L1 rescale above. Requires 0 < density - eps, density + eps <= 1.
// - nuslerp: t = w_1 / (w_0 + w_1) (0.5 when the sum is ~0); with a base, slerp the task vectors
//   and add the base. Flattened by default; row_wise slerps along dim 0 (mergekit's dim=0, i.e.
//   the columns of a 2-D weight); vectors with |sin theta| < 1e-8 are lerped.
// - Chunks: every method runs over row chunks of at most kChunkElements (a tensor is seen as
//   [shape[0], rest]; 1-D as one row). Whole-tensor statistics (top-k thresholds, L1 norms for the
//   rescale, slerp's and nuslerp's angles, model_stock's cosines) are gathered in extra passes
//   over the chunks first, accumulated in fp64. So the peak memory is a few chunks, whatever the
//   tensor's size. The chunks depend on the shape alone, so every caller gets the same bits.
// - Magnitude ranks (ties' top-k, breadcrumbs' cut-offs) order |d| ascending with ties broken by
//   element index (a stable sort): top-k keeps, among equal magnitudes at the threshold, the
//   later elements. The thresholds are found exactly by a two-level radix histogram of the fp32
//   bits of |d| (16 high bits, then 16 low bits within the boundary bin).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kh::merge {

enum class Method {
  Linear,
  TaskArithmetic,
  Ties,
  DareTies,
  DareLinear,
  Breadcrumbs,
  BreadcrumbsTies,
  Della,
  DellaLinear,
  Slerp,
  NuSlerp,
  ModelStock,
  Passthrough
};

// mergekit's names: "linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
// "breadcrumbs_ties", "della", "della_linear", "slerp", "nuslerp", "model_stock", "passthrough".
std::optional<Method> parseMethod(std::string_view mergekitName);
const char* methodName(Method m);

// Per-model parameters, already resolved for this tensor (filters and layer gradients applied).
struct ModelParams {
  double weight = 1.0;
  double density = 1.0;
  double gamma = 0.01;    // breadcrumbs: fraction of the largest |d| dropped
  double epsilon = 0.15;  // della: half-width of the keep-probability band
  double scale = 1.0;     // passthrough: the tensor times this (mergekit's per-model 'scale')
};

struct MethodParams {
  std::optional<bool> normalize, rescale;  // unset: the method's default
  double lambda = 1.0;                     // scales the merged task vector
  double t = 0.5;                          // slerp: 0 gives the base, 1 the other model
  bool nuslerpFlatten = true;
  bool nuslerpRowWise = false;
  bool filterWise = false;                 // model_stock: one t per row (mergekit's filter_wise), not per tensor
  uint64_t seed = 0;
  std::string tensorName;  // names errors and keys the random masks
};

// The parameter keys each method accepts, per model and global (recipe validation: an unknown
// key is an error). They are mergekit's tensor_parameters() and parameters() of each method
// (mergekit/merge_methods/*.py): linear weight / normalize; the task-arithmetic family weight,
// density (+ gamma for breadcrumbs*, epsilon for della*) / normalize, rescale, lambda, int8_mask;
// slerp - / t; nuslerp weight / nuslerp_flatten, nuslerp_row_wise; model_stock - / filter_wise;
// passthrough scale / -.
const std::vector<std::string>& modelParamNames(Method m);
const std::vector<std::string>& globalParamNames(Method m);
// Whether mergekit requires a per-model 'weight' (tensor_parameters() with required=True).
bool needsWeight(Method m);
// Whether the method needs a base model: task-vector methods, slerp and model_stock. nuslerp takes
// one optionally; linear and passthrough ignore it.
bool needsBase(Method m);
bool defaultNormalize(Method m);
bool defaultRescale(Method m);

// Merges one tensor. base: undefined where the method takes none; others: the non-base models'
// tensors in recipe order, all of one shape; params: one per other model. Returns fp32 on the
// inputs' device. Throws kh::Error("merge <tensorName>", ...) for bad input: disagreeing shapes,
// weights summing to zero with normalize, density outside (0, 1], a wrong number of models.
at::Tensor mergeTensor(Method m, const at::Tensor& base, const std::vector<at::Tensor>& others,
                       const std::vector<ModelParams>& params, const MethodParams& mp);

// The checks mergeTensor and mergeRows make before reading any input, for a tensor of `shape`
// (recipe validation runs them for every tensor before a merge or a plan). `modelNames`, when
// given (one per other model), name the models in errors instead of "model <i>".
// kh::Error("merge <tensorName>", cause naming the parameter) on the first problem.
void validateMerge(Method m, bool hasBase, size_t others, at::IntArrayRef shape, const std::vector<ModelParams>& params,
                   const MethodParams& mp, const std::vector<std::string>& modelNames = {});

// How a merge walks one tensor: viewed as rows x cols, in chunks of rowsPerChunk rows.
constexpr int64_t kChunkElements = int64_t{1} << 20;
struct RowGrid {
  int64_t rows = 1, cols = 1, rowsPerChunk = 1;
  int64_t chunks() const { return rows == 0 ? 0 : (rows + rowsPerChunk - 1) / rowsPerChunk; }
  int64_t chunkElements() const { return rowsPerChunk * cols; }
};
// Depends on the shape alone, except for nuslerp row_wise, whose vectors span every row (one chunk).
RowGrid rowGrid(Method m, const MethodParams& mp, at::IntArrayRef shape);
// How many times mergeRows usually reads each input's rows (statistics passes plus the final
// one), for a tensor of grid `g` on the CPU or not; progress and ETA only.
int mergePasses(Method m, const std::vector<ModelParams>& params, const MethodParams& mp, const RowGrid& g, bool onCpu);
// The most memory the sampled rank windows of one tensor hold (magnitude cuts on the CPU).
uint64_t rankWindowBytes(Method m, const std::vector<ModelParams>& params, const RowGrid& g, bool onCpu);

// input -1 is the base, i >= 0 the i-th other model. Returns fp32 [r1 - r0, cols] on the merge
// device; may be a view (it is never written to).
using RowSource = std::function<at::Tensor(int input, int64_t r0, int64_t r1)>;
// Optional: input rows as stored (CPU, contiguous: bf16, fp16 or fp32), a view valid while the
// merge runs, or an undefined tensor where it cannot give them (another device, padded rows).
// The fused CPU loops read bf16 rows in place instead of converting each chunk to fp32 first.
using RawRowSource = std::function<at::Tensor(int input, int64_t r0, int64_t r1)>;
// Receives the merged rows [r0, r1) as fp32 [r1 - r0, cols], in order.
using RowSink = std::function<void(int64_t r0, int64_t r1, const at::Tensor& merged)>;

// The streaming form of mergeTensor: same checks, same results, bounded memory. `shape` is the
// tensor's shape; every input has it.
void mergeRows(Method m, bool hasBase, size_t others, at::IntArrayRef shape, const RowSource& source,
               const RowSink& sink, const std::vector<ModelParams>& params, const MethodParams& mp,
               const RawRowSource& raw = {});

// Counter-based uniforms in [0, 1): element i is a SplitMix64 hash of (seed, fnv1a(name), i),
// top 24 bits, so the same (seed, name) gives the same bits anywhere. Returns fp32 [numel] on CPU.
// `offset` numbers the first element (a chunk of a larger tensor draws the same bits as the whole).
at::Tensor uniformMask(uint64_t seed, const std::string& name, int64_t numel, int64_t offset = 0);

// DELLA's keep probabilities for a task vector d (any shape; see the header comment): fp32, d's
// shape and device. Exposed for tests.
at::Tensor dellaKeepProbabilities(const at::Tensor& d, double density, double epsilon);

}  // namespace kh::merge
