// CMA-ES for the evolutionary merge loop: the standard (mu/mu_w, lambda) algorithm of Hansen's
// "The CMA Evolution Strategy: A Tutorial" (arXiv:1604.00772), ask/tell, minimisation, with a
// state that saves to JSON and resumes bit-for-bit. Never uses torch, threads or global RNGs.
//
// What is standard and what is ours:
//  - default lambda = 4 + floor(3 ln n), mu = floor(lambda/2), positive log weights only
//    (w_i ∝ ln((lambda+1)/2) - ln i, i <= mu; no negative "active" weights), c_m = 1,
//    c_sigma, d_sigma, c_c, c_1, c_mu and chi_n with the tutorial's default formulas (Table 1),
//    the h_sigma stall rule, rank-one + rank-mu update, and B, D refreshed lazily when
//    evaluations since the last decomposition exceed lambda / (c_1 + c_mu) / n / 10.
//  - eigendecomposition: our own cyclic Jacobi (deterministic; fine for n up to a few hundred).
//  - normal draws: std::mt19937_64 + Box–Muller written here, so the stream is the same on every
//    standard library and the generator state serialises exactly.
//  - box bounds: "repair with penalty" (pycma's BoundPenalty idea, with a fixed weight): the
//    caller evaluates f at repaired(x) = clip(x, lower, upper); tell() ranks by
//    f + penaltyWeight * ||x - repaired(x)||^2 and updates the distribution with the raw x.
//  - NaN fitness ranks as worst (like +inf); it never becomes the best-so-far.
//  - ask() is a pure function of the state: calling it twice gives the same candidates, and
//    tell() must receive exactly those raw candidates (not the repaired ones).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace kh::evolve {

struct CmaesOptions {
  std::vector<double> x0;        // initial mean; its size is the dimension n
  double sigma0 = 0;             // initial step size, > 0
  int lambda = 0;                // population size; 0 = 4 + floor(3 ln n); else >= 2
  std::uint64_t seed = 1;        // seeds the std::mt19937_64 that draws every candidate
  std::vector<double> lower;     // per-coordinate box; both empty = unbounded
  std::vector<double> upper;
  double penaltyWeight = 1.0;    // bound penalty per squared unit of distance outside the box, > 0
  // Stop rules (see Cmaes::stopReason); 0 turns a rule off.
  double tolFun = 1e-11;         // f range of this generation and of recent best values below this
  double tolX = 1e-11;           // sigma * max(sqrt(C_ii), |p_c,i|) below this
  long long maxEvaluations = 0;  // evaluations at or above this
};

class Cmaes {
 public:
  explicit Cmaes(const CmaesOptions& options);

  // The lambda candidates of this generation, raw (unrepaired). Same result until tell().
  std::vector<std::vector<double>> ask() const;
  // The point to hand the objective: x clipped into the box (x itself when unbounded).
  std::vector<double> repaired(const std::vector<double>& x) const;
  // penaltyWeight * ||x - repaired(x)||^2 (0 when unbounded); tell() adds it to f.
  double penalty(const std::vector<double>& x) const;
  // xs: exactly what ask() returned; f[k]: objective at repaired(xs[k]), lower is better,
  // NaN = worst. Advances one generation.
  void tell(const std::vector<std::vector<double>>& xs, const std::vector<double>& f);

  int dimension() const { return n_; }
  int lambda() const { return lambda_; }
  int mu() const { return mu_; }
  double muEff() const { return muEff_; }
  const std::vector<double>& weights() const { return weights_; }
  int generation() const { return generation_; }
  long long evaluations() const { return evaluations_; }
  double sigma() const { return sigma_; }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& covariance() const { return C_; }  // n*n, row-major
  double axisRatio() const;                                     // max(D) / min(D)

  // Best evaluated point so far (repaired, so inside the box) and its objective value
  // (without penalty). hasBest() is false before the first tell() with a non-NaN value.
  bool hasBest() const { return hasBest_; }
  const std::vector<double>& bestX() const { return bestX_; }
  double bestF() const { return bestF_; }

  // Empty while none of the stop rules holds, else its name ("maxEvaluations", "tolFun",
  // "tolX", "conditionCov": axis ratio above 1e7, i.e. condition of C above 1e14).
  std::string stopReason() const;
  bool shouldStop() const { return !stopReason().empty(); }

  // The whole state: options, strategy parameters, mean, sigma, C, B, D, paths, counters,
  // eigen bookkeeping, best so far, stop history and the generator's state. Doubles round-trip
  // exactly through dump() and parse().
  nlohmann::json toJson() const;
  static Cmaes fromJson(const nlohmann::json& state);

 private:
  Cmaes() = default;
  void setStrategyParameters();
  void decompose();
  std::vector<std::vector<double>> sample(std::mt19937_64& rng) const;

  CmaesOptions opt_;
  int n_ = 0, lambda_ = 0, mu_ = 0;
  std::vector<double> weights_;
  double muEff_ = 0, cSigma_ = 0, dSigma_ = 0, cC_ = 0, c1_ = 0, cMu_ = 0, chiN_ = 0;

  std::vector<double> mean_;
  double sigma_ = 0;
  std::vector<double> C_, B_, D_;  // C = B diag(D^2) B^T; B columns are eigenvectors (row-major n*n)
  std::vector<double> pSigma_, pC_;
  int generation_ = 0;
  long long evaluations_ = 0;
  long long eigenEvaluations_ = 0;  // evaluations_ at the last decomposition
  std::mt19937_64 rng_;             // state before this generation's ask()

  bool hasBest_ = false;
  std::vector<double> bestX_;
  double bestF_ = 0;
  double lastRange_ = 0;             // max - min of the last generation's ranked values
  std::vector<double> bestHistory_;  // best ranked value per generation, most recent last, bounded
};

}  // namespace kh::evolve
