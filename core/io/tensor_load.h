// Materialises checkpoint tensors as owned tensors of a requested dtype on a device, at close to
// page-cache speed (chunked conversion on at::get_num_threads() threads, huge-page outputs).
// Never returns a view into the file mapping, and never changes libtorch's global thread count
// (callers set at::set_num_threads; Debian's libtorch starts with 1).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <map>
#include <string>

namespace kh {

class CheckpointWeights;

// Knobs that exist so that tests/bench can measure what each one is worth; the defaults are the
// fastest measured (tests/bench/bench_load_checkpoint.cpp --ablation, 2-core x86 VM, warm cache).
struct TensorLoadOptions {
  // CPU outputs of at least 4 MiB live in their own 2 MiB-aligned anonymous mapping with
  // madvise(MADV_HUGEPAGE): 512x fewer page faults on first touch when THP is in "madvise" mode.
  // Such a tensor's storage cannot be resized (it has no allocator); everything else works.
  bool hugePages = true;
  // bf16/f16 -> f32 and same-dtype copies with our own loops, in 4 MiB chunks on
  // at::get_num_threads() threads; false (and every other dtype pair): ATen's copy_.
  bool ownKernels = true;
};

// `name` as an owned, contiguous tensor of `dtype` on `device`. Values are those of
// `w.tensor(name).to(dtype)`, bit for bit (a NaN stays a NaN). Throws kh::Error naming the tensor
// when it is absent or its stored dtype has no libtorch type. For a non-CPU device the bytes cross
// in the narrower of the stored and requested dtypes (checked on CUDA with libtorch 2.11).
at::Tensor loadTensor(const CheckpointWeights& w, const std::string& name, c10::ScalarType dtype,
                      c10::Device device = at::kCPU, const TensorLoadOptions& options = {});

// Every tensor of the checkpoint, read shard by shard in file order (sequential on disk).
std::map<std::string, at::Tensor> loadAll(const CheckpointWeights& w, c10::ScalarType dtype,
                                          c10::Device device = at::kCPU, const TensorLoadOptions& options = {});

}  // namespace kh
