// merge_kernels_bench: ns per element of mergeTensor for the common methods on a 16M-element fp32
// tensor with two models, one thread (the in-memory cost, without I/O). Asserts nothing.
// Usage: merge_kernels_bench [METHOD]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <chrono>
#include <cstdio>
#include <string>
#include "core/merge/methods.h"
using namespace kh::merge;
int main(int argc, char** argv) {
  at::set_num_threads(1);
  auto q = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  auto base = q(at::randn({4096, 4096}) * 0.02);
  std::vector<at::Tensor> others{q(base + at::randn({4096, 4096}) * 0.01), q(base + at::randn({4096, 4096}) * 0.01)};
  std::vector<ModelParams> p(2);
  for (auto& x : p) { x.weight = 0.5; x.density = 0.5; }
  MethodParams mp; mp.tensorName = "x";
  for (Method m : {Method::TaskArithmetic, Method::Ties, Method::DareTies, Method::DareLinear, Method::Linear}) {
    if (argc > 1 && std::string(argv[1]) != methodName(m)) continue;
    auto t0 = std::chrono::steady_clock::now();
    auto r = mergeTensor(m, base, others, p, mp);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-16s %.3f s  %.2f ns/elem\n", methodName(m), s, s / 16.777216e6 * 1e9);
  }
}
