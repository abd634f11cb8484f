// Fast materialisation of checkpoint tensors (see tensor_load.h): converts straight from the file
// mapping into fresh (huge-page) memory in 4 MiB chunks on at::get_num_threads() threads.
// Never writes to the mapping, and never computes an address the header parser did not validate.
#include "core/io/tensor_load.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "core/io/checkpoint.h"

namespace kh {

namespace {

constexpr uint64_t kHugePage = 2ull << 20;
constexpr uint64_t kHugeMinBytes = 4ull << 20;  // below this the allocator's pages are fine
constexpr int64_t kChunkBytes = 4 << 20;        // output bytes per unit of work

// An uninitialised CPU tensor; large ones in their own 2 MiB-aligned mapping advised for THP.
at::Tensor emptyOutput(at::IntArrayRef shape, c10::ScalarType dtype, uint64_t nbytes, bool hugePages) {
  const auto opts = at::TensorOptions().dtype(dtype).device(at::kCPU);
  if (!hugePages || nbytes < kHugeMinBytes) return at::empty(shape, opts);
  const uint64_t len = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
  void* raw = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return at::empty(shape, opts);  // let libtorch's allocator report the failure
  // Trim the slack so that [p, p + len) starts on a huge-page boundary.
  const uintptr_t a = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t p = (a + kHugePage - 1) & ~(kHugePage - 1);
  if (p > a) munmap(raw, p - a);
  if (a + len + kHugePage > p + len) munmap(reinterpret_cast<void*>(p + len), a + len + kHugePage - (p + len));
  madvise(reinterpret_cast<void*>(p), len, MADV_HUGEPAGE);  // advisory: without THP it is 4 KiB pages
  return at::from_blob(
      reinterpret_cast<void*>(p), shape, [len](void* q) { munmap(q, len); }, opts);
}

void bf16ToF32(const uint16_t* in, uint32_t* out, int64_t n) {
  // bf16 is the top half of an fp32: exact, NaN payloads kept. The compiler vectorises this.
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>(in[i]) << 16;
}

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void f16ToF32F16C(const uint16_t* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i]);
}
#endif

void f16ToF32(const uint16_t* in, float* out, int64_t n) {
#if defined(__x86_64__)
  static const bool hasF16C = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  if (hasF16C) return f16ToF32F16C(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(c10::Half(in[i], c10::Half::from_bits()));
}

enum class Kernel { Copy, BF16ToF32, F16ToF32 };

// One unit of work: `n` elements from `src` (stored type) into `dst`.
struct Chunk {
  const uint8_t* src;
  uint8_t* dst;
  int64_t n;
  Kernel kernel;
};

void run(const Chunk& c) {
  switch (c.kernel) {
    case Kernel::Copy: std::memcpy(c.dst, c.src, static_cast<size_t>(c.n)); break;  // n counts bytes here
    case Kernel::BF16ToF32:
      bf16ToF32(reinterpret_cast<const uint16_t*>(c.src), reinterpret_cast<uint32_t*>(c.dst), c.n);
      break;
    case Kernel::F16ToF32: f16ToF32(reinterpret_cast<const uint16_t*>(c.src), reinterpret_cast<float*>(c.dst), c.n); break;
  }
}

// Runs every chunk on at::get_num_threads() threads (the caller's included), handed out in order so
// that reads stay near-sequential. Not at::parallel_for: with Debian's OpenMP libtorch its
// `#pragma omp parallel` lives in an ATen header and runs serially in files built without -fopenmp.
void runAll(const std::vector<Chunk>& chunks) {
  const int64_t threads = std::min<int64_t>(std::max(1, at::get_num_threads()), static_cast<int64_t>(chunks.size()));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex errorMutex;
  auto work = [&] {
    try {
      for (size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < chunks.size();) run(chunks[i]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(errorMutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

// What one tensor needs: its output, and either chunks for our kernels or an ATen copy.
struct Plan {
  at::Tensor out;      // [shape] requested dtype, contiguous, uninitialised until the chunks run
  at::Tensor atenSrc;  // set when ATen converts: [shape] stored dtype (a view of the mapping)
  at::Tensor keep;     // an aligned copy of misaligned source bytes, alive until the chunks ran
};

Plan plan(const SafetensorsFile& f, const st::TensorEntry& e, c10::ScalarType dtype, const TensorLoadOptions& options,
          std::vector<Chunk>& chunks) {
  const c10::ScalarType stored = toScalarType(e.dtype, f.path() + ": tensor '" + e.name + "'");
  const int64_t numel = static_cast<int64_t>(e.numel());  // fits: the parser checked numel * size in 64 bits
  Plan p;
  p.out = emptyOutput(e.shape, dtype, static_cast<uint64_t>(numel) * c10::elementSize(dtype), options.hugePages);
  if (numel == 0) return p;
  Kernel k;
  if (options.ownKernels && stored == dtype) k = Kernel::Copy;
  else if (options.ownKernels && stored == at::kBFloat16 && dtype == at::kFloat) k = Kernel::BF16ToF32;
  else if (options.ownKernels && stored == at::kHalf && dtype == at::kFloat) k = Kernel::F16ToF32;
  else {
    p.atenSrc = f.tensor(e);  // ATen's copy_ runs on its own (OpenMP) threads
    return p;
  }
  const uint8_t* src = f.bytes(e);
  if (reinterpret_cast<uintptr_t>(src) % c10::elementSize(stored) != 0) {
    p.keep = f.tensor(e);  // SafetensorsFile copies misaligned data into aligned memory
    src = static_cast<const uint8_t*>(p.keep.data_ptr());
  }
  uint8_t* dst = static_cast<uint8_t*>(p.out.data_ptr());
  const int64_t inSize = static_cast<int64_t>(c10::elementSize(stored));
  const int64_t outSize = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t step = std::max<int64_t>(1, kChunkBytes / outSize);
  for (int64_t i = 0; i < numel; i += step) {
    const int64_t n = std::min(step, numel - i);
    chunks.push_back({src + i * inSize, dst + i * outSize, k == Kernel::Copy ? n * inSize : n, k});
  }
  return p;
}

// Materialises planned CPU tensors: ATen copies first, then every chunk of our kernels in one pool.
void execute(std::vector<Plan>& plans, const std::vector<Chunk>& chunks) {
  for (auto& p : plans)
    if (p.atenSrc.defined()) p.out.copy_(p.atenSrc);
  runAll(chunks);
  for (auto& p : plans) {
    p.atenSrc = at::Tensor();
    p.keep = at::Tensor();
  }
}

// A non-CPU device: the bytes cross in the narrower of the stored and requested dtypes.
bool convertOnCpuFirst(const st::TensorEntry& e, c10::ScalarType dtype, c10::Device device, const std::string& where) {
  return device.is_cpu() || c10::elementSize(dtype) < c10::elementSize(toScalarType(e.dtype, where));
}

}  // namespace

at::Tensor loadTensor(const CheckpointWeights& w, const std::string& name, c10::ScalarType dtype, c10::Device device,
                      const TensorLoadOptions& options) {
  const st::TensorEntry& e = w.entry(name);  // kh::Error naming the tensor when absent
  const SafetensorsFile& f = w.fileOf(name);
  if (!convertOnCpuFirst(e, dtype, device, f.path() + ": tensor '" + name + "'"))
    return f.tensor(e).to(device).to(dtype);  // a CPU view to another device always copies
  std::vector<Chunk> chunks;
  std::vector<Plan> plans{plan(f, e, dtype, options, chunks)};
  execute(plans, chunks);
  return device.is_cpu() ? plans[0].out : plans[0].out.to(device);
}

std::map<std::string, at::Tensor> loadAll(const CheckpointWeights& w, c10::ScalarType dtype, c10::Device device,
                                          const TensorLoadOptions& options) {
  std::map<std::string, at::Tensor> out;
  // Shard by shard, in data order: the reads stay sequential in every file. One shard at a time
  // bounds what is converted but not yet moved to another device.
  for (const auto& file : w.files()) {
    std::vector<Chunk> chunks;
    std::vector<Plan> plans;
    std::vector<std::string> names;
    for (const auto& e : file->tensors()) {
      if (!w.has(e.name) || &w.entry(e.name) != &e) continue;  // the index puts it elsewhere, or leaves it out
      if (!convertOnCpuFirst(e, dtype, device, file->path() + ": tensor '" + e.name + "'")) {
        out.emplace(e.name, file->tensor(e).to(device).to(dtype));
        continue;
      }
      plans.push_back(plan(*file, e, dtype, options, chunks));
      names.push_back(e.name);
    }
    execute(plans, chunks);
    for (size_t i = 0; i < plans.size(); ++i)
      out.emplace(names[i], device.is_cpu() ? plans[i].out : plans[i].out.to(device));
  }
  KH_ASSERT(out.size() == w.count(), "loadAll missed a tensor");
  return out;
}

}  // namespace kh
