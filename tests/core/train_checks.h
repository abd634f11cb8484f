// Shared by the training tests: a small prompt/completion data set, and the finite-difference
// check of a parameter's gradient (fp64 central differences along whole-tensor directions).
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

namespace kh::test {

// n lines {"prompt": "問<i>", "completion": "答<i % 3>"} (prompt/completion JSONL).
inline std::string promptCompletionData(int n) {
  std::string data;
  for (int i = 0; i < n; ++i)
    data += R"({"prompt": "問)" + std::to_string(i) + R"(", "completion": "答)" + std::to_string(i % 3) + "\"}\n";
  return data;
}

// `param`'s gradient (already computed by backward) against central differences of `loss` (fp64),
// along the gradient itself (must be |g|) and along a random direction u from `gen` (must be
// g . u): whole-tensor directions, so the change in the loss is far above rounding.
inline void expectGradientMatchesFiniteDifferences(const at::Tensor& param, const std::function<double()>& loss,
                                                   at::Generator& gen, const std::string& label) {
  const at::Tensor grad = param.grad().clone();
  ASSERT_GT(grad.abs().max().item<double>(), 0) << label;
  at::Tensor random = at::empty(grad.sizes(), at::kDouble).normal_(0, 1, gen);
  for (const at::Tensor& dir : {grad / grad.norm(), random / random.norm()}) {
    at::NoGradGuard g;
    const double h = 1e-4, want = (grad * dir).sum().item<double>();
    at::Tensor& p = const_cast<at::Tensor&>(param);
    p.add_(dir, h);
    const double up = loss();
    p.add_(dir, -2 * h);
    const double down = loss();
    p.add_(dir, h);
    EXPECT_NEAR(want, (up - down) / (2 * h), 1e-8 + 1e-5 * std::abs(want)) << label;
  }
}

}  // namespace kh::test
