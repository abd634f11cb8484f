// The merge methods against the plain Python reference (tests/tools/merge_reference.py writes
// tests/golden/merge/*.safetensors), the statistics of the random sparsifiers, and the errors a
// user sees for bad recipes. Must never regenerate the golden files itself.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/merge/methods.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace kh::merge;

namespace {

const std::string kName = "model.layers.3.mlp.up_proj.weight";

MethodParams named(const std::string& name = kName) {
  MethodParams mp;
  mp.tensorName = name;
  return mp;
}

double maxAbsDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Runs one golden case; returns the merged tensor and the expected one.
// inputDtype: the inputs are cast to it; widen: and then back to fp32 before merging.
std::pair<at::Tensor, at::Tensor> runGolden(const std::string& path, at::ScalarType inputDtype = at::kFloat,
                                            bool widen = false) {
  auto load = [&](const at::Tensor& t) {
    auto x = t.to(inputDtype);
    return widen ? x.to(at::kFloat) : x;
  };
  auto f = kh::SafetensorsFile::open(path);
  auto params = nlohmann::json::parse(f->header().metadata.at("params"));
  auto method = parseMethod(params.at("method").get<std::string>());
  EXPECT_TRUE(method.has_value()) << path;
  at::Tensor base;
  if (f->find("base")) base = load(f->tensor("base"));
  std::vector<at::Tensor> others;
  for (int i = 0; f->find("model." + std::to_string(i)); ++i)
    others.push_back(load(f->tensor("model." + std::to_string(i))));
  std::vector<ModelParams> mps(others.size());
  auto list = [&](const char* key, auto setter) {
    if (!params.contains(key)) return;
    for (size_t i = 0; i < mps.size(); ++i) setter(mps[i], params[key][i].get<double>());
  };
  list("weights", [](ModelParams& p, double v) { p.weight = v; });
  list("densities", [](ModelParams& p, double v) { p.density = v; });
  list("gammas", [](ModelParams& p, double v) { p.gamma = v; });
  MethodParams mp = named(fs::path(path).stem().string());
  if (params.contains("normalize")) mp.normalize = params["normalize"].get<bool>();
  if (params.contains("lambda")) mp.lambda = params["lambda"].get<double>();
  if (params.contains("t")) mp.t = params["t"].get<double>();
  if (params.contains("nuslerp_flatten")) mp.nuslerpFlatten = params["nuslerp_flatten"].get<bool>();
  if (params.contains("nuslerp_row_wise")) mp.nuslerpRowWise = params["nuslerp_row_wise"].get<bool>();
  return {mergeTensor(*method, base, others, mps, mp), f->tensor("expected")};
}

template <class F>
void expectMergeError(F&& f, const std::string& cause) {
  try {
    f();
    FAIL() << "accepted input that should fail with: " << cause;
  } catch (const kh::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("merge " + kName), std::string::npos) << m;
    EXPECT_NE(m.find(cause), std::string::npos) << m;
  }
}

}  // namespace

TEST(MergeMethodGolden, EveryDeterministicMethodMatchesTheReference) {
  const fs::path dir = fs::path(kh::test::sourceDir()) / "tests/golden/merge";
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 15u) << "run /usr/bin/python3 tests/tools/merge_reference.py";
  std::vector<std::string> methodsSeen;
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    auto [got, want] = runGolden(path);
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5)) << "max |diff| " << maxAbsDiff(got, want);
    methodsSeen.push_back(fs::path(path).stem().string());
  }
  for (const char* m : {"linear", "task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties", "slerp", "slerp_t0",
                        "slerp_parallel", "nuslerp", "nuslerp_row_wise", "model_stock", "passthrough"})
    EXPECT_NE(std::find(methodsSeen.begin(), methodsSeen.end(), m), methodsSeen.end()) << m;
}

TEST(MergeMethodGolden, HalfPrecisionInputsAreComputedInFp32) {
  // bf16/fp16 inputs give exactly what their fp32 widening gives: the cast comes before any math.
  const fs::path dir = fs::path(kh::test::sourceDir()) / "tests/golden/merge";
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (const char* c : {"ties", "breadcrumbs_ties", "slerp", "nuslerp_row_wise", "model_stock", "linear"}) {
      SCOPED_TRACE(c);
      const std::string path = (dir / (std::string(c) + ".safetensors")).string();
      auto half = runGolden(path, dtype).first;
      auto widened = runGolden(path, dtype, /*widen=*/true).first;
      EXPECT_EQ(half.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::equal(half, widened));
    }
}

TEST(MergeMethodGolden, SlerpAtZeroIsExactlyTheBase) {
  auto base = at::randn({4, 8});
  auto other = at::randn({4, 8});
  MethodParams mp = named();
  mp.t = 0.0;
  auto out = mergeTensor(Method::Slerp, base, {other}, {ModelParams{}}, mp);
  EXPECT_LT(maxAbsDiff(out, base), 1e-6);
}

TEST(MergeMethodNames, RoundTripAndUnknown) {
  for (const char* n : {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                        "breadcrumbs_ties", "della", "della_linear", "slerp", "nuslerp", "model_stock", "passthrough"}) {
    auto m = parseMethod(n);
    ASSERT_TRUE(m.has_value()) << n;
    EXPECT_STREQ(methodName(*m), n);
  }
  EXPECT_FALSE(parseMethod("TIES").has_value());
  EXPECT_FALSE(parseMethod("karcher").has_value());
  auto has = [](const std::vector<std::string>& v, const char* k) { return std::find(v.begin(), v.end(), k) != v.end(); };
  EXPECT_TRUE(has(modelParamNames(Method::Ties), "density"));
  EXPECT_FALSE(has(modelParamNames(Method::Ties), "gamma"));
  EXPECT_TRUE(has(modelParamNames(Method::Breadcrumbs), "gamma"));
  EXPECT_TRUE(has(modelParamNames(Method::Della), "epsilon"));
  EXPECT_TRUE(has(globalParamNames(Method::DareTies), "rescale"));
  EXPECT_TRUE(has(globalParamNames(Method::Slerp), "t"));
  EXPECT_TRUE(has(globalParamNames(Method::NuSlerp), "nuslerp_row_wise"));
  EXPECT_TRUE(needsBase(Method::Ties));
  EXPECT_FALSE(needsBase(Method::Linear));
}

TEST(MergeMethodRandom, UniformMaskIsKeyedBySeedAndName) {
  auto a = uniformMask(7, "x.weight", 1000);
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(a, uniformMask(7, "x.weight", 1000)));
  EXPECT_FALSE(at::equal(a, uniformMask(7, "y.weight", 1000)));
  EXPECT_FALSE(at::equal(a, uniformMask(8, "x.weight", 1000)));
  EXPECT_TRUE(at::equal(a.slice(0, 0, 10), uniformMask(7, "x.weight", 10)));  // by index, not by length
  EXPECT_GE(a.min().item<float>(), 0.0f);
  EXPECT_LT(a.max().item<float>(), 1.0f);
  EXPECT_NEAR(a.mean().item<double>(), 0.5, 0.05);
}

TEST(MergeMethodRandom, SameSeedAndNameGiveIdenticalBitsOtherNamesDiffer) {
  auto base = at::randn({64, 128});
  std::vector<at::Tensor> others{base + at::randn({64, 128}), base + at::randn({64, 128})};
  std::vector<ModelParams> p(2);
  p[0].density = 0.4;
  p[1].density = 0.6;
  for (Method m : {Method::DareTies, Method::DareLinear, Method::Della, Method::DellaLinear}) {
    SCOPED_TRACE(methodName(m));
    MethodParams mp = named();
    mp.seed = 42;
    auto a = mergeTensor(m, base, others, p, mp);
    auto b = mergeTensor(m, base, others, p, mp);
    EXPECT_TRUE(at::equal(a, b));
    auto c = mergeTensor(m, base, others, p, named("model.layers.4.mlp.up_proj.weight"));
    EXPECT_FALSE(at::equal(a, c));
  }
}

TEST(MergeMethodRandom, DareKeepsDensityFractionAndPreservesL1) {
  const int64_t n = 100000;
  auto base = at::randn({n});
  auto delta = at::randn({n});
  for (double density : {0.1, 0.3, 0.9}) {
    SCOPED_TRACE(density);
    ModelParams p;
    p.density = density;
    MethodParams mp = named();
    mp.seed = 3;
    mp.rescale = false;
    auto kept = mergeTensor(Method::DareLinear, base, {base + delta}, {p}, mp) - base;
    const double frac = (kept != 0).sum().item<double>() / static_cast<double>(n);
    EXPECT_LT(std::abs(frac - density), 3.0 * std::sqrt(density * (1 - density) / n)) << frac;
    mp.rescale.reset();  // dare_linear rescales by default
    auto rescaled = mergeTensor(Method::DareLinear, at::zeros({n}), {delta}, {p}, mp);
    const double l1 = delta.abs().sum().item<double>();
    EXPECT_NEAR(rescaled.abs().sum().item<double>() / l1, 1.0, 1e-4);
    EXPECT_EQ((rescaled != 0).sum().item<int64_t>(), (kept != 0).sum().item<int64_t>());
  }
}

TEST(MergeMethodRandom, DareTiesUsesOneMaskPerModel) {
  const int64_t n = 100000;
  auto delta = at::randn({n}).abs() + 0.1;  // same sign everywhere: consensus keeps all survivors
  ModelParams p;
  p.density = 0.5;
  MethodParams mp = named();
  mp.rescale = false;
  auto out = mergeTensor(Method::DareTies, at::zeros({n}), {delta, delta}, {p, p}, mp);
  // Two independent masks: an element survives in 0, 1 or 2 models with probabilities 1/4, 1/2, 1/4.
  const double both = (out > delta * 1.5).sum().item<double>() / n;
  EXPECT_NEAR(both, 0.25, 3.0 * std::sqrt(0.25 * 0.75 / n));
}

TEST(MergeMethodRandom, DellaProbabilitiesLieInTheBandAndFollowMagnitude) {
  auto d = at::randn({50, 2000});
  const double density = 0.4, eps = 0.15;
  auto p = dellaKeepProbabilities(d, density, eps);
  ASSERT_EQ(p.sizes(), d.sizes());
  EXPECT_GE(p.min().item<double>(), density - eps - 1e-6);
  EXPECT_LE(p.max().item<double>(), density + eps + 1e-6);
  EXPECT_NEAR(p.min().item<double>(), density - eps, 1e-6);
  EXPECT_NEAR(p.max().item<double>(), density + eps, 1e-6);
  EXPECT_NEAR(p.mean().item<double>(), density, 1e-4);
  // Per row: the largest |d| has the largest probability.
  auto argmaxD = d.abs().argmax(1);
  auto argmaxP = p.argmax(1);
  EXPECT_TRUE(at::equal(argmaxD, argmaxP));
  // 1-D tensors are one row.
  auto p1 = dellaKeepProbabilities(at::randn({1000}), density, eps);
  EXPECT_NEAR(p1.max().item<double>(), density + eps, 1e-6);
}

TEST(MergeMethodRandom, DellaKeepsDensityOnAverageAndPreservesL1) {
  const int64_t rows = 50, cols = 2000, n = rows * cols;
  auto delta = at::randn({rows, cols});
  ModelParams p;
  p.density = 0.3;
  p.epsilon = 0.1;
  MethodParams mp = named();
  mp.seed = 11;
  auto out = mergeTensor(Method::DellaLinear, at::zeros({rows, cols}), {delta}, {p}, mp);
  const double frac = (out != 0).sum().item<double>() / n;
  EXPECT_LT(std::abs(frac - 0.3), 3.0 * std::sqrt(0.3 * 0.7 / n)) << frac;
  EXPECT_NEAR(out.abs().sum().item<double>() / delta.abs().sum().item<double>(), 1.0, 1e-4);
  // Larger magnitudes survive more often (p from 0.2 to 0.4 across the ranks).
  auto big = delta.abs() > delta.abs().median();
  const double keptBig = ((out != 0) & big).sum().item<double>() / big.sum().item<double>();
  const double keptSmall = ((out != 0) & ~big).sum().item<double>() / (~big).sum().item<double>();
  EXPECT_GT(keptBig - keptSmall, 0.08);
  // della (with consensus, normalize) on one model reproduces della_linear with weight 1.
  auto withTies = mergeTensor(Method::Della, at::zeros({rows, cols}), {delta}, {p}, mp);
  EXPECT_TRUE(at::allclose(withTies, out));
}

TEST(MergeMethodErrors, BadInputsNameTheTensor) {
  auto base = at::randn({8, 16});
  auto a = at::randn({8, 16}), b = at::randn({8, 16}), c = at::randn({8, 16});
  ModelParams p;
  expectMergeError([&] { mergeTensor(Method::Ties, base, {a, at::randn({8, 15})}, {p, p}, named()); },
                   "[8, 15]");
  expectMergeError([&] { mergeTensor(Method::Ties, base, {a, at::randn({8, 15})}, {p, p}, named()); },
                   "[8, 16]");
  ModelParams plus, minus;
  minus.weight = -1.0;
  expectMergeError([&] { mergeTensor(Method::Linear, {}, {a, b}, {plus, minus}, named()); }, "sum to zero");
  MethodParams norm = named();
  norm.normalize = true;
  expectMergeError([&] { mergeTensor(Method::TaskArithmetic, base, {a, b}, {plus, minus}, norm); }, "sum to zero");
  for (double bad : {0.0, -0.1, 1.5}) {
    ModelParams d;
    d.density = bad;
    expectMergeError([&] { mergeTensor(Method::Ties, base, {a}, {d}, named()); }, "outside (0, 1]");
    expectMergeError([&] { mergeTensor(Method::DareTies, base, {a}, {d}, named()); }, "outside (0, 1]");
  }
  ModelParams wide;
  wide.density = 0.1;
  wide.epsilon = 0.15;
  expectMergeError([&] { mergeTensor(Method::Della, base, {a}, {wide}, named()); }, "epsilon");
  expectMergeError([&] { mergeTensor(Method::Slerp, base, {a, b}, {p, p}, named()); }, "exactly two");
  expectMergeError([&] { mergeTensor(Method::Slerp, {}, {a, b}, {p, p}, named()); }, "base");
  expectMergeError([&] { mergeTensor(Method::NuSlerp, base, {a}, {p}, named()); }, "exactly two");
  expectMergeError([&] { mergeTensor(Method::NuSlerp, {}, {a, b, c}, {p, p, p}, named()); }, "exactly two");
  expectMergeError([&] { mergeTensor(Method::ModelStock, base, {a}, {p}, named()); }, "at least three");
  expectMergeError([&] { mergeTensor(Method::Passthrough, {}, {a, b}, {p, p}, named()); }, "exactly one");
  expectMergeError([&] { mergeTensor(Method::TaskArithmetic, {}, {a}, {p}, named()); }, "base");
  expectMergeError([&] { mergeTensor(Method::Linear, {}, {a, b}, {p}, named()); }, "parameter sets");
}

// Chunked merging against the whole-tensor formulas written out plainly here (a brute-force twin):
// a [1100, 2000] tensor is three chunks of rows, and bf16-rounded inputs make many task-vector
// magnitudes exactly equal, so the top-k threshold cuts through runs of ties (broken by index).
namespace {

at::Tensor stableRanks(const at::Tensor& a) {  // ascending, ties by index: rank of every element
  auto order = std::get<1>(at::sort(a.reshape({-1}), /*stable=*/true, 0, /*descending=*/false));
  auto ranks = at::empty_like(order);
  ranks.index_put_({order}, at::arange(order.numel(), order.options()));
  return ranks.view(a.sizes());
}

}  // namespace

namespace {

at::Tensor bf16Rounded(const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); }

// A bf16-rounded base [rows, cols] and two models near it (so many task-vector magnitudes are
// exactly equal), with weights 0.7 / 0.4 and densities 0.3 / 0.6.
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<ModelParams>> bf16TaskVectors(int64_t rows, int64_t cols) {
  auto base = bf16Rounded(at::randn({rows, cols}) * 0.02);
  std::vector<at::Tensor> others{bf16Rounded(base + at::randn({rows, cols}) * 0.01),
                                 bf16Rounded(base + at::randn({rows, cols}) * 0.01)};
  std::vector<ModelParams> p(2);
  p[0].weight = 0.7;
  p[0].density = 0.3;
  p[1].weight = 0.4;
  p[1].density = 0.6;
  return {base, others, p};
}

// ties over the whole tensor written out plainly (top-k by stable rank, sign consensus, normalize).
at::Tensor tiesTwin(const at::Tensor& base, const std::vector<at::Tensor>& others, const std::vector<ModelParams>& p) {
  const int64_t n = base.numel();
  std::vector<at::Tensor> x;
  for (size_t i = 0; i < others.size(); ++i) {
    auto d = others[i] - base;
    const int64_t k = static_cast<int64_t>(p[i].density * static_cast<double>(n));
    x.push_back(d * (stableRanks(d.abs()) >= n - k).to(at::kFloat) * p[i].weight);
  }
  auto sign = at::where(x[0] + x[1] >= 0, at::ones_like(base), -at::ones_like(base));
  auto k0 = (at::sign(x[0]) == sign).to(at::kFloat), k1 = (at::sign(x[1]) == sign).to(at::kFloat);
  auto div = k0 * p[0].weight + k1 * p[1].weight;
  div.masked_fill_(div == 0, 1.0);
  return base + (x[0] * k0 + x[1] * k1) / div;
}

// Streams a ties merge through mergeRows; returns the result and how many elements of the models'
// rows were read (every pass reads them all).
std::pair<at::Tensor, int64_t> streamedTies(const at::Tensor& base, const std::vector<at::Tensor>& others,
                                            const std::vector<ModelParams>& p) {
  int64_t modelReads = 0;
  at::Tensor out = at::empty_like(base);
  mergeRows(
      Method::Ties, true, others.size(), base.sizes(),
      [&](int input, int64_t r0, int64_t r1) {
        const at::Tensor& t = input < 0 ? base : others[static_cast<size_t>(input)];
        if (input >= 0) modelReads += (r1 - r0) * t.size(1);
        return t.slice(0, r0, r1);
      },
      [&](int64_t r0, int64_t r1, const at::Tensor& m) { out.slice(0, r0, r1).copy_(m); }, p, named());
  return {out, modelReads};
}

}  // namespace

// Big tensors find their top-k threshold in one pass over a window of keys placed by a sample of
// rows, instead of two histogram passes; the result must stay the exact stable top-k, also when
// the sample misleads (then the merge takes the histogram passes).
TEST(MergeMethodChunks, SampledRankWindowKeepsTheExactTopK) {
  const int64_t rows = 2100, cols = 2000, n = rows * cols;  // above the 2^22 elements that take a window
  auto [base, others, p] = bf16TaskVectors(rows, cols);
  {
    auto [got, reads] = streamedTies(base, others, p);
    EXPECT_LT(maxAbsDiff(got, tiesTwin(base, others, p)), 1e-6);
    // The window pass and the merge: two passes over each model (plus the sampled rows), not three.
    EXPECT_LE(reads, 2 * 2 * n + 2 * 256 * cols);
  }
  {
    // Rows the sample reads ((2j + 1) * rows / 512) get tiny task vectors, every other row a large
    // one: the window lands far below the real threshold. Same exact result, through more passes.
    std::vector<at::Tensor> skewed;
    for (const auto& o : others) skewed.push_back(bf16Rounded(base + (o - base) * 8.0));
    for (int64_t j = 0; j < 256; ++j) {
      const int64_t r = (2 * j + 1) * rows / 512;
      for (auto& s : skewed) s[r].copy_(bf16Rounded(base[r] + (s[r] - base[r]) / 64.0));
    }
    auto [got, reads] = streamedTies(base, skewed, p);
    EXPECT_LT(maxAbsDiff(got, tiesTwin(base, skewed, p)), 1e-6);
    EXPECT_GE(reads, 2 * 3 * n) << "the misleading sample should have cost the histogram passes";
  }
}

TEST(MergeMethodChunks, MultiChunkTensorsMatchWholeTensorFormulas) {
  const int64_t rows = 1100, cols = 2000, n = rows * cols;
  ASSERT_GT(n, 2 * kChunkElements);
  auto [base, others, p] = bf16TaskVectors(rows, cols);
  MethodParams mp = named();
  mp.seed = 5;
  std::vector<at::Tensor> d{others[0] - base, others[1] - base};
  {  // ties: top-k by magnitude over the whole tensor, sign consensus, normalize.
    auto expected = tiesTwin(base, others, p);
    auto got = mergeTensor(Method::Ties, base, others, p, mp);
    EXPECT_LT(maxAbsDiff(got, expected), 1e-6);
    auto cut = std::get<0>(d[0].abs().reshape({-1}).kthvalue(n - static_cast<int64_t>(0.3 * n) + 1));
    const double tiesAtCut = (d[0].abs() == cut).sum().item<double>();
    EXPECT_GT(tiesAtCut, 10) << "the test needs equal magnitudes at the threshold";
  }
  {  // dare_linear: whole-tensor masks, L1 rescale over the whole tensor.
    at::Tensor expected = base.clone();
    for (int i = 0; i < 2; ++i) {
      auto u = uniformMask(mp.seed, mp.tensorName + "#" + std::to_string(i), n).view({rows, cols});
      auto masked = d[i] * (u < p[i].density).to(at::kFloat);
      const double scale = d[i].abs().sum().item<double>() / masked.abs().sum().item<double>();
      expected += masked * scale * p[i].weight;
    }
    EXPECT_LT(maxAbsDiff(mergeTensor(Method::DareLinear, base, others, p, mp), expected), 1e-5);
  }
  {  // breadcrumbs: keep the ascending ranks [n_bot, n - n_top).
    at::Tensor expected = base.clone();
    for (int i = 0; i < 2; ++i) {
      const int64_t keep = static_cast<int64_t>(p[i].density * n), top = static_cast<int64_t>(p[i].gamma * n);
      auto r = stableRanks(d[i].abs());
      auto mask = ((r >= n - keep - top) & (r < n - top)).to(at::kFloat);
      expected += d[i] * mask * p[i].weight;
    }
    EXPECT_LT(maxAbsDiff(mergeTensor(Method::Breadcrumbs, base, others, p, mp), expected), 1e-6);
  }
  {  // slerp: one angle for the whole flattened tensor.
    mp.t = 0.3;
    auto v0 = base.to(at::kDouble), v1 = others[0].to(at::kDouble);
    const double cos = (v0 * v1).sum().item<double>() / (v0.norm().item<double>() * v1.norm().item<double>());
    const double th = std::acos(cos);
    auto expected = (v0 * (std::sin((1 - mp.t) * th) / std::sin(th)) + v1 * (std::sin(mp.t * th) / std::sin(th))).to(at::kFloat);
    EXPECT_LT(maxAbsDiff(mergeTensor(Method::Slerp, base, {others[0]}, {ModelParams{}}, mp), expected), 1e-6);
  }
}

// mergekit passthrough.py: the tensor times its per-model scale; scale 1 copies it bit for bit.
TEST(MergeMethodParameters, PassthroughScalesTheTensor) {
  auto a = at::randn({6, 10});
  ModelParams p;
  EXPECT_TRUE(at::equal(mergeTensor(Method::Passthrough, {}, {a}, {p}, named()), a));
  p.scale = 0.5;
  EXPECT_LT(maxAbsDiff(mergeTensor(Method::Passthrough, {}, {a}, {p}, named()), a * 0.5), 1e-7);
  p.scale = 0.0;
  EXPECT_EQ(mergeTensor(Method::Passthrough, {}, {a}, {p}, named()).abs().max().item<double>(), 0.0);
}

// mergekit model_stock.py with filter_wise: one t per row from the mean pairwise cosine of that
// row's task vectors. The reference is written out element by element in double precision.
TEST(MergeMethodParameters, ModelStockFilterWiseTakesOneRatioPerRow) {
  const int64_t R = 5, C = 7;
  auto base = at::randn({R, C}, at::kDouble);
  std::vector<at::Tensor> xs = {base + at::randn({R, C}, at::kDouble) * 0.3, base + at::randn({R, C}, at::kDouble) * 0.3,
                                base + at::randn({R, C}, at::kDouble) * 0.3};
  auto want = at::empty({R, C}, at::kDouble);
  const double n = 3;
  for (int64_t r = 0; r < R; ++r) {
    auto d = [&](int i, int64_t c) { return xs[i][r][c].item<double>() - base[r][c].item<double>(); };
    double cos = 0;
    for (int i = 0; i < 3; ++i)
      for (int j = i + 1; j < 3; ++j) {
        double dot = 0, ni = 0, nj = 0;
        for (int64_t c = 0; c < C; ++c) {
          dot += d(i, c) * d(j, c);
          ni += d(i, c) * d(i, c);
          nj += d(j, c) * d(j, c);
        }
        cos += std::clamp(dot / std::max(std::sqrt(ni) * std::sqrt(nj), 1e-6), -1.0, 1.0) / 3.0;
      }
    const double t = n * cos / (1 + (n - 1) * cos);
    for (int64_t c = 0; c < C; ++c) {
      const double avg = (xs[0][r][c].item<double>() + xs[1][r][c].item<double>() + xs[2][r][c].item<double>()) / n;
      want[r][c] = t * avg + (1 - t) * base[r][c].item<double>();
    }
  }
  std::vector<at::Tensor> f32;
  for (const auto& x : xs) f32.push_back(x.to(at::kFloat));
  MethodParams mp = named();
  mp.filterWise = true;
  ModelParams p;
  auto got = mergeTensor(Method::ModelStock, base.to(at::kFloat), f32, {p, p, p}, mp);
  EXPECT_LT(maxAbsDiff(got.to(at::kDouble), want), 1e-5);
  // A 1-D tensor is one row: the same as the whole-tensor ratio.
  auto b1 = base[0].to(at::kFloat);
  std::vector<at::Tensor> one = {f32[0][0], f32[1][0], f32[2][0]};
  EXPECT_LT(maxAbsDiff(mergeTensor(Method::ModelStock, b1, one, {p, p, p}, mp),
                       mergeTensor(Method::ModelStock, b1, one, {p, p, p}, named())),
            1e-5);
  // mergekit takes the vectors along the last dimension; for N-D tensors that is not Kumihimo's rows.
  expectMergeError(
      [&] {
        mergeTensor(Method::ModelStock, at::zeros({2, 3, 4}), {at::ones({2, 3, 4}), at::ones({2, 3, 4}), at::ones({2, 3, 4})},
                    {p, p, p}, mp);
      },
      "filter_wise");
}

// mergekit's task_arithmetic takes density and rescale but never sparsifies: refused, not ignored.
TEST(MergeMethodParameters, TaskArithmeticRefusesSparsificationItWouldIgnore) {
  auto base = at::randn({4, 4}), a = at::randn({4, 4});
  ModelParams d;
  d.density = 0.5;
  expectMergeError([&] { mergeTensor(Method::TaskArithmetic, base, {a}, {d}, named()); }, "density 0.500000 has no effect");
  MethodParams rescale = named();
  rescale.rescale = true;
  expectMergeError([&] { mergeTensor(Method::TaskArithmetic, base, {a}, {ModelParams{}}, rescale); }, "rescale");
  // density 1 means the same in both: accepted, and the plain task-arithmetic formula.
  ModelParams full;
  full.density = 1.0;
  full.weight = 0.5;
  EXPECT_LT(maxAbsDiff(mergeTensor(Method::TaskArithmetic, base, {a}, {full}, named()), base + 0.5 * (a - base)), 1e-6);
  // validateMerge names the model when told its name.
  try {
    validateMerge(Method::Ties, true, 1, {4, 4}, {ModelParams{1.0, 1.5}}, named(), {"/models/a"});
    FAIL() << "density 1.5 accepted";
  } catch (const kh::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/models/a: density 1.500000 is outside (0, 1]"), std::string::npos) << e.what();
  }
}
