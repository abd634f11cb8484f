// CMA-ES (Hansen's tutorial, arXiv:1604.00772): sampling, the update of mean, paths, C and sigma,
// a Jacobi eigensolver and the JSON state. Must stay deterministic: no unordered containers, no
// std::normal_distribution, no threads.
#include "core/evolve/cmaes.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "core/error.h"

namespace kh::evolve {

namespace {

const char* kWhere = "CMA-ES";

bool finite(double v) { return std::isfinite(v); }

// Uniform in (0, 1]: 53 random bits, never 0 (so log() below is finite).
double uniform01(std::mt19937_64& rng) { return (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53; }

// Fills out with standard normal draws, two per pair of uniforms (Box–Muller; an odd count
// drops the last sine). Consumes exactly 2 * ceil(size / 2) words of the generator.
void normals(std::mt19937_64& rng, std::vector<double>& out) {
  const double twoPi = 6.283185307179586476925286766559;
  for (std::size_t i = 0; i < out.size(); i += 2) {
    double r = std::sqrt(-2.0 * std::log(uniform01(rng)));
    double t = twoPi * uniform01(rng);
    out[i] = r * std::cos(t);
    if (i + 1 < out.size()) out[i + 1] = r * std::sin(t);
  }
}

// Cyclic Jacobi for a symmetric n*n row-major matrix a (destroyed). eval: eigenvalues,
// evec: row-major with eigenvectors in columns, sorted by ascending eigenvalue.
void jacobiEigen(int n, std::vector<double> a, std::vector<double>& eval, std::vector<double>& evec) {
  auto A = [&](int i, int j) -> double& { return a[static_cast<std::size_t>(i) * n + j]; };
  std::vector<double> v(static_cast<std::size_t>(n) * n, 0.0), d(n), b(n), z(n, 0.0);
  for (int i = 0; i < n; ++i) {
    v[static_cast<std::size_t>(i) * n + i] = 1.0;
    d[i] = b[i] = A(i, i);
  }
  auto rotate = [](double& x, double& y, double s, double tau) {
    double g = x, h = y;
    x = g - s * (h + g * tau);
    y = h + s * (g - h * tau);
  };
  for (int sweep = 1; sweep <= 100; ++sweep) {
    double off = 0;
    for (int p = 0; p < n - 1; ++p)
      for (int q = p + 1; q < n; ++q) off += std::fabs(A(p, q));
    if (off == 0.0) break;
    KH_ASSERT(sweep < 100, "Jacobi eigensolver did not converge");
    double thresh = sweep < 4 ? 0.2 * off / (static_cast<double>(n) * n) : 0.0;
    for (int p = 0; p < n - 1; ++p) {
      for (int q = p + 1; q < n; ++q) {
        double g = 100.0 * std::fabs(A(p, q));
        if (sweep > 4 && std::fabs(d[p]) + g == std::fabs(d[p]) && std::fabs(d[q]) + g == std::fabs(d[q])) {
          A(p, q) = 0.0;
        } else if (std::fabs(A(p, q)) > thresh) {
          double h = d[q] - d[p], t;
          if (std::fabs(h) + g == std::fabs(h)) {
            t = A(p, q) / h;
          } else {
            double theta = 0.5 * h / A(p, q);
            t = 1.0 / (std::fabs(theta) + std::sqrt(1.0 + theta * theta));
            if (theta < 0) t = -t;
          }
          double c = 1.0 / std::sqrt(1 + t * t), s = t * c, tau = s / (1.0 + c);
          h = t * A(p, q);
          z[p] -= h;
          z[q] += h;
          d[p] -= h;
          d[q] += h;
          A(p, q) = 0.0;
          for (int j = 0; j < p; ++j) rotate(A(j, p), A(j, q), s, tau);
          for (int j = p + 1; j < q; ++j) rotate(A(p, j), A(j, q), s, tau);
          for (int j = q + 1; j < n; ++j) rotate(A(p, j), A(q, j), s, tau);
          for (int j = 0; j < n; ++j)
            rotate(v[static_cast<std::size_t>(j) * n + p], v[static_cast<std::size_t>(j) * n + q], s, tau);
        }
      }
    }
    for (int p = 0; p < n; ++p) {
      b[p] += z[p];
      d[p] = b[p];
      z[p] = 0.0;
    }
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return d[i] < d[j]; });
  eval.assign(n, 0.0);
  evec.assign(static_cast<std::size_t>(n) * n, 0.0);
  for (int k = 0; k < n; ++k) {
    eval[k] = d[order[k]];
    for (int i = 0; i < n; ++i) evec[static_cast<std::size_t>(i) * n + k] = v[static_cast<std::size_t>(i) * n + order[k]];
  }
}

// JSON helpers: every missing or mistyped key in a saved state is an error naming the key.
const nlohmann::json& field(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) throw Error(kWhere, "saved state is not a JSON object");
  auto it = j.find(key);
  if (it == j.end()) throw Error(kWhere, std::string("saved state has no '") + key + "'");
  return *it;
}

template <class T>
T get(const nlohmann::json& j, const char* key) {
  try {
    return field(j, key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(kWhere, std::string("saved state: '") + key + "' has the wrong type (" + e.what() + ")");
  }
}

std::vector<double> getVector(const nlohmann::json& j, const char* key, std::size_t size) {
  auto v = get<std::vector<double>>(j, key);
  if (v.size() != size)
    throw Error(kWhere, std::string("saved state: '") + key + "' has " + std::to_string(v.size()) +
                            " values, expected " + std::to_string(size));
  return v;
}

// Ranked values can be infinite (an objective returning inf, all-NaN generations), which JSON
// cannot hold: those travel as the strings "inf", "-inf", "nan".
nlohmann::json encode(double v) {
  if (finite(v)) return v;
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

double decode(const nlohmann::json& v, const char* key) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  throw Error(kWhere, std::string("saved state: '") + key + "' holds " + v.dump() + ", not a number");
}

}  // namespace

Cmaes::Cmaes(const CmaesOptions& o) : opt_(o) {
  if (o.x0.empty()) throw Error(kWhere, "x0 is empty", "give the initial mean, one value per coordinate");
  for (std::size_t i = 0; i < o.x0.size(); ++i)
    if (!finite(o.x0[i])) throw Error(kWhere, "x0[" + std::to_string(i) + "] is not finite");
  if (!(o.sigma0 > 0) || !finite(o.sigma0))
    throw Error(kWhere, "sigma0 must be a finite value > 0, got " + std::to_string(o.sigma0),
                "about a quarter of the search range is a good start");
  if (o.lambda != 0 && o.lambda < 2)
    throw Error(kWhere, "lambda must be >= 2 (or 0 for the default), got " + std::to_string(o.lambda));
  n_ = static_cast<int>(o.x0.size());
  if (o.lower.empty() != o.upper.empty())
    throw Error(kWhere, "only one of lower and upper bounds is given", "give both, or neither");
  if (!o.lower.empty()) {
    if (o.lower.size() != o.x0.size() || o.upper.size() != o.x0.size())
      throw Error(kWhere, "bounds have " + std::to_string(o.lower.size()) + " lower and " +
                              std::to_string(o.upper.size()) + " upper values for " + std::to_string(n_) +
                              " coordinates");
    for (int i = 0; i < n_; ++i) {
      std::string at = "[" + std::to_string(i) + "]";
      if (std::isnan(o.lower[i]) || std::isnan(o.upper[i])) throw Error(kWhere, "bound" + at + " is NaN");
      if (!(o.lower[i] < o.upper[i]))
        throw Error(kWhere, "lower" + at + " = " + std::to_string(o.lower[i]) + " is not below upper" + at +
                                " = " + std::to_string(o.upper[i]));
      if (o.x0[i] < o.lower[i] || o.x0[i] > o.upper[i])
        throw Error(kWhere, "x0" + at + " = " + std::to_string(o.x0[i]) + " is outside [" +
                                std::to_string(o.lower[i]) + ", " + std::to_string(o.upper[i]) + "]");
    }
    if (!(o.penaltyWeight > 0) || !finite(o.penaltyWeight))
      throw Error(kWhere, "penaltyWeight must be a finite value > 0 when bounds are given");
  }
  if (o.tolFun < 0 || o.tolX < 0 || o.maxEvaluations < 0)
    throw Error(kWhere, "tolFun, tolX and maxEvaluations must be >= 0 (0 turns the rule off)");

  setStrategyParameters();
  mean_ = o.x0;
  sigma_ = o.sigma0;
  const std::size_t nn = static_cast<std::size_t>(n_) * n_;
  C_.assign(nn, 0.0);
  B_.assign(nn, 0.0);
  for (int i = 0; i < n_; ++i) C_[static_cast<std::size_t>(i) * n_ + i] = B_[static_cast<std::size_t>(i) * n_ + i] = 1.0;
  D_.assign(n_, 1.0);
  pSigma_.assign(n_, 0.0);
  pC_.assign(n_, 0.0);
  rng_.seed(o.seed);
}

// Table 1 of the tutorial, with positive weights only.
void Cmaes::setStrategyParameters() {
  const double n = n_;
  lambda_ = opt_.lambda > 0 ? opt_.lambda : 4 + static_cast<int>(std::floor(3.0 * std::log(n)));
  mu_ = lambda_ / 2;
  weights_.assign(mu_, 0.0);
  double sum = 0;
  for (int i = 0; i < mu_; ++i) sum += weights_[i] = std::log((lambda_ + 1) / 2.0) - std::log(i + 1.0);
  double sumSq = 0;
  for (double& w : weights_) {
    w /= sum;
    sumSq += w * w;
  }
  muEff_ = 1.0 / sumSq;
  cSigma_ = (muEff_ + 2) / (n + muEff_ + 5);
  dSigma_ = 1 + 2 * std::max(0.0, std::sqrt((muEff_ - 1) / (n + 1)) - 1) + cSigma_;
  cC_ = (4 + muEff_ / n) / (n + 4 + 2 * muEff_ / n);
  c1_ = 2 / ((n + 1.3) * (n + 1.3) + muEff_);
  cMu_ = std::min(1 - c1_, 2 * (muEff_ - 2 + 1 / muEff_) / ((n + 2) * (n + 2) + muEff_));
  chiN_ = std::sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n));
}

std::vector<std::vector<double>> Cmaes::sample(std::mt19937_64& rng) const {
  std::vector<std::vector<double>> xs(lambda_, std::vector<double>(n_));
  std::vector<double> z(n_);
  for (auto& x : xs) {
    normals(rng, z);  // z ~ N(0, I)
    for (int i = 0; i < n_; ++i) {
      double y = 0;  // y = B D z ~ N(0, C)
      for (int k = 0; k < n_; ++k) y += B_[static_cast<std::size_t>(i) * n_ + k] * D_[k] * z[k];
      x[i] = mean_[i] + sigma_ * y;
    }
  }
  return xs;
}

std::vector<std::vector<double>> Cmaes::ask() const {
  std::mt19937_64 rng = rng_;
  return sample(rng);
}

std::vector<double> Cmaes::repaired(const std::vector<double>& x) const {
  if (static_cast<int>(x.size()) != n_)
    throw Error(kWhere, "point has " + std::to_string(x.size()) + " coordinates, expected " + std::to_string(n_));
  if (opt_.lower.empty()) return x;
  std::vector<double> r(x);
  for (int i = 0; i < n_; ++i) r[i] = std::min(std::max(r[i], opt_.lower[i]), opt_.upper[i]);
  return r;
}

double Cmaes::penalty(const std::vector<double>& x) const {
  if (opt_.lower.empty()) {
    repaired(x);  // size check
    return 0.0;
  }
  std::vector<double> r = repaired(x);
  double s = 0;
  for (int i = 0; i < n_; ++i) s += (x[i] - r[i]) * (x[i] - r[i]);
  return opt_.penaltyWeight * s;
}

void Cmaes::tell(const std::vector<std::vector<double>>& xs, const std::vector<double>& f) {
  if (static_cast<int>(xs.size()) != lambda_ || static_cast<int>(f.size()) != lambda_)
    throw Error(kWhere, "tell() got " + std::to_string(xs.size()) + " candidates and " + std::to_string(f.size()) +
                            " values, expected lambda = " + std::to_string(lambda_) + " of each");
  std::mt19937_64 rng = rng_;
  const auto asked = sample(rng);
  for (int k = 0; k < lambda_; ++k)
    if (xs[k] != asked[k])
      throw Error(kWhere, "tell(): candidate " + std::to_string(k) + " is not the one ask() gave",
                  "pass the raw candidates from ask() in their order, not repaired(x)");

  // Rank by f + bound penalty; NaN ranks as worst. Ties keep ask() order.
  std::vector<double> ranked(lambda_);
  for (int k = 0; k < lambda_; ++k) {
    double v = std::isnan(f[k]) ? std::numeric_limits<double>::infinity() : f[k];
    ranked[k] = v + penalty(xs[k]);
  }
  std::vector<int> order(lambda_);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ranked[a] < ranked[b]; });

  for (int k = 0; k < lambda_; ++k) {
    if (std::isnan(f[k])) continue;
    if (!hasBest_ || f[k] < bestF_) {
      hasBest_ = true;
      bestF_ = f[k];
      bestX_ = repaired(xs[k]);
    }
  }

  evaluations_ += lambda_;
  ++generation_;

  // Mean: m' = m + sigma * y_w with y_w = sum_i w_i y_{i:lambda}, y = (x - m) / sigma.
  const std::vector<double> old = mean_;
  std::vector<double> yw(n_, 0.0);
  std::vector<std::vector<double>> y(mu_, std::vector<double>(n_));
  for (int i = 0; i < mu_; ++i)
    for (int j = 0; j < n_; ++j) {
      y[i][j] = (xs[order[i]][j] - old[j]) / sigma_;
      yw[j] += weights_[i] * y[i][j];
    }
  for (int j = 0; j < n_; ++j) mean_[j] = old[j] + sigma_ * yw[j];

  // p_sigma <- (1 - c_s) p_sigma + sqrt(c_s (2 - c_s) mu_eff) C^{-1/2} y_w, C^{-1/2} = B D^-1 B^T.
  std::vector<double> t(n_, 0.0);  // B^T y_w / D
  for (int k = 0; k < n_; ++k) {
    for (int i = 0; i < n_; ++i) t[k] += B_[static_cast<std::size_t>(i) * n_ + k] * yw[i];
    t[k] /= D_[k];
  }
  const double cs = std::sqrt(cSigma_ * (2 - cSigma_) * muEff_);
  double psNorm2 = 0;
  for (int i = 0; i < n_; ++i) {
    double v = 0;
    for (int k = 0; k < n_; ++k) v += B_[static_cast<std::size_t>(i) * n_ + k] * t[k];
    pSigma_[i] = (1 - cSigma_) * pSigma_[i] + cs * v;
    psNorm2 += pSigma_[i] * pSigma_[i];
  }
  const double psNorm = std::sqrt(psNorm2);

  // h_sigma: stall the rank-one path while ||p_sigma|| is large (sigma is growing fast).
  const double hThreshold = (1.4 + 2.0 / (n_ + 1)) * chiN_;
  const bool hSigma = psNorm / std::sqrt(1 - std::pow(1 - cSigma_, 2.0 * generation_)) < hThreshold;

  const double cc = std::sqrt(cC_ * (2 - cC_) * muEff_);
  for (int i = 0; i < n_; ++i) pC_[i] = (1 - cC_) * pC_[i] + (hSigma ? cc * yw[i] : 0.0);

  // C <- (1 - c1 - cmu sum w) C + c1 (p_c p_c^T + delta(h) C) + cmu sum_i w_i y_i y_i^T (sum w = 1).
  const double delta = hSigma ? 0.0 : cC_ * (2 - cC_);
  const double keep = 1 - c1_ - cMu_ + c1_ * delta;
  for (int a = 0; a < n_; ++a)
    for (int b = 0; b <= a; ++b) {
      double rankMu = 0;
      for (int i = 0; i < mu_; ++i) rankMu += weights_[i] * y[i][a] * y[i][b];
      double v = keep * C_[static_cast<std::size_t>(a) * n_ + b] + c1_ * pC_[a] * pC_[b] + cMu_ * rankMu;
      C_[static_cast<std::size_t>(a) * n_ + b] = C_[static_cast<std::size_t>(b) * n_ + a] = v;
    }

  // Cumulative step-size adaptation.
  sigma_ *= std::exp(cSigma_ / dSigma_ * (psNorm / chiN_ - 1));

  if (evaluations_ - eigenEvaluations_ > lambda_ / (c1_ + cMu_) / n_ / 10) decompose();

  rng_ = rng;

  // Stop bookkeeping (pycma's tolfun: range of this generation and of the recent best values).
  double lo = ranked[order.front()], hi = ranked[order.back()];
  lastRange_ = hi - lo;
  bestHistory_.push_back(lo);
  const std::size_t keepHist = 10 + static_cast<std::size_t>(std::ceil(30.0 * n_ / lambda_));
  if (bestHistory_.size() > keepHist) bestHistory_.erase(bestHistory_.begin(), bestHistory_.end() - keepHist);
}

void Cmaes::decompose() {
  eigenEvaluations_ = evaluations_;
  std::vector<double> eval;
  jacobiEigen(n_, C_, eval, B_);
  for (int k = 0; k < n_; ++k) {
    if (!(eval[k] > 0) || !finite(eval[k]))
      throw Error(kWhere, "covariance matrix lost positive definiteness at generation " + std::to_string(generation_) +
                              " (eigenvalue " + std::to_string(eval[k]) + ")",
                  "the objective may be returning values that do not depend on x; check stopReason()");
    D_[k] = std::sqrt(eval[k]);
  }
}

double Cmaes::axisRatio() const {
  auto [lo, hi] = std::minmax_element(D_.begin(), D_.end());
  return *hi / *lo;
}

std::string Cmaes::stopReason() const {
  if (opt_.maxEvaluations > 0 && evaluations_ >= opt_.maxEvaluations) return "maxEvaluations";
  if (generation_ == 0) return {};
  if (opt_.tolFun > 0 && lastRange_ < opt_.tolFun) {
    const std::size_t need = 10 + static_cast<std::size_t>(std::ceil(30.0 * n_ / lambda_));
    if (bestHistory_.size() >= std::min<std::size_t>(need, static_cast<std::size_t>(generation_))) {
      auto [lo, hi] = std::minmax_element(bestHistory_.begin(), bestHistory_.end());
      if (bestHistory_.size() >= need && *hi - *lo < opt_.tolFun) return "tolFun";
    }
  }
  if (opt_.tolX > 0) {
    bool small = true;
    for (int i = 0; i < n_ && small; ++i)
      small = sigma_ * std::max(std::sqrt(C_[static_cast<std::size_t>(i) * n_ + i]), std::fabs(pC_[i])) < opt_.tolX;
    if (small) return "tolX";
  }
  if (axisRatio() > 1e7) return "conditionCov";
  return {};
}

nlohmann::json Cmaes::toJson() const {
  std::ostringstream rng;
  rng << rng_;
  nlohmann::json options = {{"x0", opt_.x0},
                            {"sigma0", opt_.sigma0},
                            {"lambda", opt_.lambda},
                            {"seed", opt_.seed},
                            {"lower", opt_.lower},
                            {"upper", opt_.upper},
                            {"penaltyWeight", opt_.penaltyWeight},
                            {"tolFun", opt_.tolFun},
                            {"tolX", opt_.tolX},
                            {"maxEvaluations", opt_.maxEvaluations}};
  nlohmann::json j = {{"format", "kumihimo-cmaes-1"},
                      {"options", options},
                      {"mean", mean_},
                      {"sigma", sigma_},
                      {"C", C_},
                      {"B", B_},
                      {"D", D_},
                      {"pSigma", pSigma_},
                      {"pC", pC_},
                      {"generation", generation_},
                      {"evaluations", evaluations_},
                      {"eigenEvaluations", eigenEvaluations_},
                      {"rng", rng.str()},
                      {"lastRange", encode(lastRange_)},
                      {"bestHistory", nlohmann::json::array()}};
  for (double v : bestHistory_) j["bestHistory"].push_back(encode(v));
  if (hasBest_) j["best"] = {{"x", bestX_}, {"f", encode(bestF_)}};
  else j["best"] = nullptr;
  return j;
}

Cmaes Cmaes::fromJson(const nlohmann::json& s) {
  if (get<std::string>(s, "format") != "kumihimo-cmaes-1")
    throw Error(kWhere, "saved state has format '" + get<std::string>(s, "format") + "', expected 'kumihimo-cmaes-1'");
  const nlohmann::json& o = field(s, "options");
  CmaesOptions opt;
  opt.x0 = get<std::vector<double>>(o, "x0");
  opt.sigma0 = get<double>(o, "sigma0");
  opt.lambda = get<int>(o, "lambda");
  opt.seed = get<std::uint64_t>(o, "seed");
  opt.lower = get<std::vector<double>>(o, "lower");
  opt.upper = get<std::vector<double>>(o, "upper");
  opt.penaltyWeight = get<double>(o, "penaltyWeight");
  opt.tolFun = get<double>(o, "tolFun");
  opt.tolX = get<double>(o, "tolX");
  opt.maxEvaluations = get<long long>(o, "maxEvaluations");
  Cmaes c(opt);  // validates the options and sets the strategy parameters

  const std::size_t n = c.n_, nn = n * n;
  c.mean_ = getVector(s, "mean", n);
  c.sigma_ = get<double>(s, "sigma");
  c.C_ = getVector(s, "C", nn);
  c.B_ = getVector(s, "B", nn);
  c.D_ = getVector(s, "D", n);
  c.pSigma_ = getVector(s, "pSigma", n);
  c.pC_ = getVector(s, "pC", n);
  c.generation_ = get<int>(s, "generation");
  c.evaluations_ = get<long long>(s, "evaluations");
  c.eigenEvaluations_ = get<long long>(s, "eigenEvaluations");
  std::istringstream rng(get<std::string>(s, "rng"));
  rng >> c.rng_;
  if (rng.fail()) throw Error(kWhere, "saved state: 'rng' is not a std::mt19937_64 state");
  c.lastRange_ = decode(field(s, "lastRange"), "lastRange");
  c.bestHistory_.clear();
  const nlohmann::json& history = field(s, "bestHistory");
  if (!history.is_array()) throw Error(kWhere, "saved state: 'bestHistory' is not an array");
  for (const auto& v : history) c.bestHistory_.push_back(decode(v, "bestHistory"));
  const nlohmann::json& best = field(s, "best");
  c.hasBest_ = !best.is_null();
  if (c.hasBest_) {
    c.bestX_ = getVector(best, "x", n);
    c.bestF_ = decode(field(best, "f"), "best.f");
  }
  if (!(c.sigma_ > 0) || !finite(c.sigma_)) throw Error(kWhere, "saved state: 'sigma' must be finite and > 0");
  for (double d : c.D_)
    if (!(d > 0) || !finite(d)) throw Error(kWhere, "saved state: 'D' must hold finite values > 0");
  return c;
}

}  // namespace kh::evolve
