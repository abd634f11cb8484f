// kh::loadTensor / kh::loadAll against an independent path (the zero-copy view's .to(dtype)), for
// bf16/f16/f32 stored tensors of odd sizes, special values, huge-page-sized outputs and every knob.
// Comparisons are bit for bit (NaN only has to stay NaN); no tolerance anywhere.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_load.h"
#include "tests/test_util.h"

using kh::test::TempDir;

namespace {

// Same shape and dtype, same bits where either is not NaN, NaN in the same places.
void expectSameValues(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  if (want.numel() == 0) return;
  const at::Tensor g = got.contiguous(), w = want.contiguous();
  const at::Tensor gn = at::isnan(g), wn = at::isnan(w);  // [shape] bool
  EXPECT_TRUE(at::equal(gn, wn)) << what << ": NaNs in different places";
  const auto bits = g.element_size() == 2 ? at::kShort : g.element_size() == 4 ? at::kInt : at::kLong;
  EXPECT_TRUE(at::equal(g.view(bits).masked_fill(gn, 0), w.view(bits).masked_fill(wn, 0)))
      << what << ": values differ";
}

// Values with every awkward case up front: zeros of both signs, infinities, NaN, subnormals of
// the stored type, extremes; then random normals.
at::Tensor awkward(at::IntArrayRef shape, c10::ScalarType dtype, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor t = at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);  // t: shape, dtype
  const double inf = std::numeric_limits<double>::infinity();
  const double tiny = dtype == at::kHalf ? 1e-7 : dtype == at::kBFloat16 ? 1e-39 : 1e-44;  // subnormal
  const double big = dtype == at::kHalf ? 65504.0 : 3e38;
  const std::vector<double> specials{0.0, -0.0, inf, -inf, std::nan(""), tiny, -tiny, big, -big, 1.0 / 3};
  at::Tensor flat = t.view({-1});  // [numel] dtype
  for (int64_t i = 0; i < std::min<int64_t>(flat.numel(), static_cast<int64_t>(specials.size())); ++i)
    flat[i].fill_(specials[static_cast<size_t>(i)]);
  return t;
}

struct Fixture {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::shared_ptr<kh::CheckpointWeights> w;

  Fixture() {
    tensors = {
        {"bf16.odd", awkward({37, 53}, at::kBFloat16, 1)},
        {"f16.odd", awkward({1001}, at::kHalf, 2)},
        {"f32.odd", awkward({3, 7, 11}, at::kFloat, 3)},
        // Over 4 MiB as f32: takes the huge-page output and splits across threads.
        {"bf16.big", awkward({1031, 1100}, at::kBFloat16, 4)},
        {"f16.big", awkward({1100, 1031}, at::kHalf, 5)},
        {"f32.big", awkward({1024, 1025}, at::kFloat, 6)},
        {"bf16.scalar", awkward({}, at::kBFloat16, 7)},
        {"f32.empty", at::empty({0, 4}, at::kFloat)},
    };
    std::vector<kh::TensorSpec> plan;
    for (const auto& [n, t] : tensors) plan.push_back({n, kh::fromScalarType(t.scalar_type()), t.sizes().vec()});
    kh::WriterOptions o;
    o.shardBytes = 3'000'000;  // several shards, as real checkpoints have
    kh::SafetensorsWriter writer(dir.path(), plan, o);
    for (const auto& [n, t] : tensors) writer.write(n, t);
    EXPECT_GT(writer.finish().size(), 2u);
    w = kh::CheckpointWeights::open(dir.path());
  }
};

// Runs with libtorch on 2 threads (chunk boundaries are part of what is tested), restoring after.
struct TwoThreads {
  int before = at::get_num_threads();
  TwoThreads() { at::set_num_threads(2); }
  ~TwoThreads() { at::set_num_threads(before); }
};

}  // namespace

TEST(TensorLoad, MatchesPlainConversionForEveryDtypeAndKnob) {
  TwoThreads threads;
  Fixture f;
  std::vector<std::pair<std::string, kh::TensorLoadOptions>> knobs(3);
  knobs[0].first = "defaults";
  knobs[1].first = "no huge pages";
  knobs[1].second.hugePages = false;
  knobs[2].first = "ATen kernels";
  knobs[2].second.ownKernels = false;
  for (const auto& [knob, options] : knobs) {
    for (const auto& [name, original] : f.tensors) {
      for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
        const std::string what = name + " -> " + c10::toString(dtype) + " (" + knob + ")";
        const at::Tensor view = f.w->tensor(name);  // [shape] stored dtype, aliasing the mapping
        const at::Tensor got = kh::loadTensor(*f.w, name, dtype, at::kCPU, options);
        expectSameValues(got, view.to(dtype), what);
        EXPECT_TRUE(got.is_contiguous()) << what;
        EXPECT_TRUE(got.device().is_cpu()) << what;
        if (got.numel() > 0) EXPECT_NE(got.data_ptr(), view.data_ptr()) << what << ": returned a view of the file";
      }
    }
  }
}

TEST(TensorLoad, ResultIsOwnedAndWritable) {
  TwoThreads threads;
  Fixture f;
  for (const char* name : {"f32.big", "f32.odd", "bf16.big"}) {
    const at::Tensor before = f.w->tensor(name).clone();  // [shape] stored dtype
    at::Tensor got = kh::loadTensor(*f.w, name, f.w->tensor(name).scalar_type());
    got.fill_(7);  // must not reach the mapping (or the file)
    expectSameValues(f.w->tensor(name), before, name);
    EXPECT_TRUE(at::all(got == 7).item<bool>()) << name;
  }
}

TEST(TensorLoad, LoadAllReturnsEveryName) {
  TwoThreads threads;
  Fixture f;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto all = kh::loadAll(*f.w, dtype);
    std::vector<std::string> keys;
    for (const auto& [n, t] : all) {
      keys.push_back(n);
      expectSameValues(t, f.w->tensor(n).to(dtype), n);
    }
    EXPECT_EQ(keys, f.w->names());
    EXPECT_EQ(keys.size(), f.tensors.size());
  }
}

TEST(TensorLoad, UnknownNameIsAnErrorNamingIt) {
  Fixture f;
  try {
    kh::loadTensor(*f.w, "model.no_such.weight", at::kFloat);
    FAIL() << "no error for a missing tensor";
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.no_such.weight"), std::string::npos) << e.what();
  }
}
