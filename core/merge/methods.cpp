// The merge methods: mergekit's per-tensor formulas in fp32 on the inputs' device (see
// methods.h for the decisions). Must never touch files or global RNG state; every random mask
// comes from uniformMask(seed, name, numel).
#include "core/merge/methods.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
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

// masked scaled so that its L1 norm equals d's (mergekit's RescaleNorm.l1); unscaled when
// either norm is below 1e-7.
at::Tensor rescaleL1(const at::Tensor& d, const at::Tensor& masked) {
  const double before = d.abs().sum().item<double>();
  const double after = masked.abs().sum().item<double>();
  if (before < 1e-7 || after < 1e-7) return masked;
  return masked * (before / after);
}

// d: any shape, fp32. Keeps the int(density n) largest |d|.
at::Tensor magnitudeMask(const at::Tensor& d, double density) {
  const int64_t n = d.numel();
  const int64_t k = static_cast<int64_t>(density * static_cast<double>(n));
  auto mask = at::zeros({n}, d.options());  // [n] f32
  if (k > 0) {
    auto idx = std::get<1>(at::topk(d.abs().reshape({-1}), k, 0, /*largest=*/true, /*sorted=*/false));  // [k]
    mask.index_fill_(0, idx, 1.0);
  }
  return mask.view(d.sizes());
}

// d: any shape, fp32. Breadcrumbs: drops the n_top largest and the n_bot smallest |d|.
at::Tensor outlierMask(const at::Tensor& d, double density, double gamma) {
  const int64_t n = d.numel();
  const int64_t keep = static_cast<int64_t>(density * static_cast<double>(n));
  int64_t nTop = static_cast<int64_t>(gamma * static_cast<double>(n));
  int64_t nBot = n - keep - nTop;
  if (nBot < 0) {
    nTop += nBot;
    nBot = 0;
  }
  auto order = std::get<1>(at::sort(d.abs().reshape({-1}), /*stable=*/true, 0, /*descending=*/false));  // [n]
  auto mask = at::zeros({n}, d.options());
  if (n - nTop > nBot) mask.index_fill_(0, order.slice(0, nBot, n - nTop), 1.0);
  return mask.view(d.sizes());
}

at::Tensor randomMask(const at::Tensor& d, const at::Tensor& keepProb, const MethodParams& mp, size_t model) {
  auto u = uniformMask(mp.seed, mp.tensorName + "#" + std::to_string(model), d.numel())
               .to(d.device())
               .view(d.sizes());  // d's shape, f32
  return (u < keepProb).to(at::kFloat);
}

// The sparsified task vector of model i (fp32, d's shape).
at::Tensor sparsify(Sparsifier s, const at::Tensor& d, const ModelParams& p, bool rescale, const MethodParams& mp,
                    size_t model) {
  if (s == Sparsifier::None || p.density >= 1.0) return d;
  at::Tensor mask;
  switch (s) {
    case Sparsifier::Magnitude: mask = magnitudeMask(d, p.density); break;
    case Sparsifier::MagnitudeOutliers: mask = outlierMask(d, p.density, p.gamma); break;
    case Sparsifier::Random: mask = randomMask(d, at::full({}, p.density, d.options()), mp, model); break;
    case Sparsifier::DellaMagprune:
      mask = randomMask(d, dellaKeepProbabilities(d, p.density, p.epsilon), mp, model);
      break;
    case Sparsifier::None: break;
  }
  auto masked = d * mask;
  return rescale ? rescaleL1(d, masked) : masked;
}

void checkModelParams(Method m, const std::vector<ModelParams>& params, const MethodParams& mp) {
  const Sparsifier s = sparsifierOf(m);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const std::string who = "model " + std::to_string(i + 1);
    if (!std::isfinite(p.weight)) fail(mp, who + ": weight is not a finite number");
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

at::Tensor mergeTaskArithmetic(Method m, const at::Tensor& base, const std::vector<at::Tensor>& others,
                               const std::vector<ModelParams>& params, const MethodParams& mp) {
  const bool normalize = mp.normalize.value_or(defaultNormalize(m));
  const bool rescale = mp.rescale.value_or(defaultRescale(m));
  const Sparsifier s = sparsifierOf(m);
  auto b = toF32(base);  // [...] f32
  std::vector<at::Tensor> weighted;  // X_i = w_i * sparsify(theta_i - base): [...] f32 each
  weighted.reserve(others.size());
  for (size_t i = 0; i < others.size(); ++i) {
    auto d = toF32(others[i]) - b;
    weighted.push_back(sparsify(s, d, params[i], rescale, mp, i) * params[i].weight);
  }
  at::Tensor mixed, divisor;
  if (usesSignConsensus(m)) {
    // s = sign(sum X_i), >= 0 counts as +; X_i is kept where sign(X_i) == s (zeros never are).
    auto total = weighted[0].clone();
    for (size_t i = 1; i < weighted.size(); ++i) total.add_(weighted[i]);
    auto majority = at::where(total >= 0, at::ones_like(total), -at::ones_like(total));  // [...] f32
    mixed = at::zeros_like(b);
    divisor = at::zeros_like(b);
    for (size_t i = 0; i < weighted.size(); ++i) {
      auto keep = (at::sign(weighted[i]) == majority).to(at::kFloat);
      mixed.add_(weighted[i] * keep);
      divisor.add_(keep * params[i].weight);
    }
    divisor.masked_fill_(divisor == 0, 1.0);
    if (normalize) mixed.div_(divisor);
  } else {
    mixed = weighted[0].clone();
    double wsum = params[0].weight;
    for (size_t i = 1; i < weighted.size(); ++i) {
      mixed.add_(weighted[i]);
      wsum += params[i].weight;
    }
    if (normalize) {
      if (std::abs(wsum) < 1e-8)
        fail(mp, "the weights sum to zero and normalize is on", "set normalize: false or change the weights");
      mixed.div_(wsum);
    }
  }
  if (mp.lambda != 1.0) mixed.mul_(mp.lambda);
  return b + mixed;
}

at::Tensor mergeLinear(const std::vector<at::Tensor>& others, const std::vector<ModelParams>& params,
                       const MethodParams& mp) {
  auto acc = toF32(others[0]) * params[0].weight;  // [...] f32
  double wsum = params[0].weight;
  for (size_t i = 1; i < others.size(); ++i) {
    acc.add_(toF32(others[i]), params[i].weight);
    wsum += params[i].weight;
  }
  if (mp.normalize.value_or(true)) {
    if (std::abs(wsum) < 1e-8)
      fail(mp, "the weights sum to zero and normalize is on", "set normalize: false or change the weights");
    acc.div_(wsum);
  }
  return acc;
}

// mergekit's slerp: flattened, lerp when |cos| > 0.9995.
at::Tensor mergeSlerp(const at::Tensor& base, const at::Tensor& other, double t) {
  auto v0 = toF32(base);   // [...] f32
  auto v1 = toF32(other);  // [...] f32
  const double n0 = v0.norm().item<double>(), n1 = v1.norm().item<double>();
  const double dot = (v0 * v1).sum().item<double>() / ((n0 > 1e-8 ? n0 : 1.0) * (n1 > 1e-8 ? n1 : 1.0));
  if (std::abs(dot) > 0.9995) return v0 * (1.0 - t) + v1 * t;
  const double theta0 = std::acos(dot);
  const double sin0 = std::sin(theta0);
  const double s0 = std::sin(theta0 - theta0 * t) / sin0;
  const double s1 = std::sin(theta0 * t) / sin0;
  return v0 * s0 + v1 * s1;
}

// mergekit's nuslerp(t, v0, v1, dim, flatten) over fp32 v0, v1 of one shape.
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

at::Tensor mergeModelStock(const at::Tensor& base, const std::vector<at::Tensor>& others) {
  auto b = toF32(base);  // [...] f32
  std::vector<at::Tensor> offsets;  // [n] f32 each
  auto avg = at::zeros_like(b);
  for (const auto& o : others) {
    auto x = toF32(o);
    avg.add_(x);
    offsets.push_back((x - b).reshape({-1}));
  }
  avg.div_(static_cast<double>(others.size()));
  auto cosSum = at::zeros({}, b.options());
  int64_t pairs = 0;
  for (size_t i = 0; i < offsets.size(); ++i)
    for (size_t j = i + 1; j < offsets.size(); ++j) {
      auto normProduct = (offsets[i].norm() * offsets[j].norm()).clamp_min(1e-6);
      cosSum.add_(((offsets[i] * offsets[j]).sum() / normProduct).clamp(-1.0, 1.0));
      ++pairs;
    }
  auto c = cosSum / static_cast<double>(pairs);  // [] f32
  const double n = static_cast<double>(others.size());
  auto t = (c * n) / (c * (n - 1.0) + 1.0);
  return avg * t + b * (1.0 - t);
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
      crumbs{"weight", "density", "gamma"}, della{"weight", "density", "epsilon"};
  switch (sparsifierOf(m)) {
    case Sparsifier::Magnitude:
    case Sparsifier::Random: return sparse;
    case Sparsifier::MagnitudeOutliers: return crumbs;
    case Sparsifier::DellaMagprune: return della;
    case Sparsifier::None: break;
  }
  return (m == Method::Linear || m == Method::TaskArithmetic || m == Method::NuSlerp) ? weight : none;
}

const std::vector<std::string>& globalParamNames(Method m) {
  // int8_mask is accepted for recipe compatibility: in mergekit it only sets the mask's dtype.
  static const std::vector<std::string> linear{"normalize"}, ta{"normalize", "lambda", "int8_mask"},
      sparse{"normalize", "lambda", "rescale", "int8_mask"}, slerp{"t"}, nu{"nuslerp_flatten", "nuslerp_row_wise"},
      none{};
  if (m == Method::Linear) return linear;
  if (m == Method::TaskArithmetic) return ta;
  if (isTaskArithmetic(m)) return sparse;
  if (m == Method::Slerp) return slerp;
  if (m == Method::NuSlerp) return nu;
  return none;
}

bool needsBase(Method m) { return isTaskArithmetic(m) || m == Method::Slerp || m == Method::ModelStock; }

bool defaultNormalize(Method m) {
  return m == Method::Linear || m == Method::Ties || m == Method::Della;
}

bool defaultRescale(Method m) {
  return m == Method::DareTies || m == Method::DareLinear || m == Method::Della || m == Method::DellaLinear;
}

at::Tensor mergeTensor(Method m, const at::Tensor& base, const std::vector<at::Tensor>& others,
                       const std::vector<ModelParams>& params, const MethodParams& mp) {
  if (params.size() != others.size())
    fail(mp, std::to_string(others.size()) + " models but " + std::to_string(params.size()) + " parameter sets");
  const bool hasBase = base.defined();
  if (needsBase(m) && !hasBase)
    fail(mp, std::string(methodName(m)) + " needs a base model", "set base_model in the recipe");
  // Shapes: every input matches the first one given.
  {
    const at::Tensor& ref = hasBase ? base : (others.empty() ? base : others[0]);
    const std::string refName = hasBase ? "the base" : "model 1";
    for (size_t i = 0; i < others.size(); ++i)
      if (ref.defined() && others[i].sizes() != ref.sizes())
        fail(mp,
             "model " + std::to_string(i + 1) + " has shape " + shapeString(others[i].sizes()) + " but " + refName +
                 " has " + shapeString(ref.sizes()),
             "the models must share one architecture and vocabulary size");
  }
  checkModelParams(m, params, mp);
  const size_t total = others.size() + (hasBase ? 1 : 0);
  switch (m) {
    case Method::Passthrough:
      if (others.size() != 1)
        fail(mp, "passthrough takes exactly one model, got " + std::to_string(others.size()),
             "a passthrough slice names a single source model");
      return toF32(others[0]);
    case Method::Linear:
      if (others.empty()) fail(mp, "linear needs at least one model");
      return mergeLinear(others, params, mp);
    case Method::Slerp:
      if (others.size() != 1)
        fail(mp, "slerp merges exactly two models (the base and one other), got " + std::to_string(total));
      return mergeSlerp(base, others[0], mp.t);
    case Method::NuSlerp: {
      if (others.size() != 2)
        fail(mp, "nuslerp merges exactly two models (plus an optional base), got " + std::to_string(others.size()) +
                     (hasBase ? " besides the base" : ""));
      const double wsum = params[0].weight + params[1].weight;
      const double t = std::abs(wsum) < 1e-6 ? 0.5 : params[1].weight / wsum;
      if (!hasBase) return nuslerp(t, toF32(others[0]), toF32(others[1]), mp.nuslerpRowWise, mp.nuslerpFlatten);
      auto b = toF32(base);
      return b + nuslerp(t, toF32(others[0]) - b, toF32(others[1]) - b, mp.nuslerpRowWise, mp.nuslerpFlatten);
    }
    case Method::ModelStock:
      if (total < 3)
        fail(mp, "model_stock needs at least three models counting the base, got " + std::to_string(total));
      return mergeModelStock(base, others);
    default:
      if (others.empty()) fail(mp, std::string(methodName(m)) + " needs at least one model besides the base");
      return mergeTaskArithmetic(m, base, others, params, mp);
  }
}

at::Tensor uniformMask(uint64_t seed, const std::string& name, int64_t numel) {
  KH_ASSERT(numel >= 0, "negative numel");
  const uint64_t key = splitMix64(seed ^ splitMix64(fnv1a(name)));
  auto out = at::empty({numel}, at::kFloat);  // [numel] f32
  float* p = out.data_ptr<float>();
  at::parallel_for(0, numel, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t h = splitMix64(key + static_cast<uint64_t>(i) * 0xd1b54a32d192ed03ull);
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
