// merge_kernels_bench: ns per element of mergeTensor for the common methods on a 16M-element fp32
// tensor with two models, one thread (the in-memory cost, without I/O). Asserts nothing. Prints wall
// time and this thread's CPU time: on a busy machine the CPU time is the figure to compare.
// Usage: merge_kernels_bench [METHOD]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <string>
#include "core/merge/methods.h"
using namespace kh::merge;
int main(int argc, char** argv) {
  at::set_num_threads(1);
  auto q = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  auto base = q(at::randn({4096, 4096}) * 0.02);
  std::vector<at::Tensor> others{q(base + at::randn({4096, 4096}) * 0.01), q(base + at::randn({4096, 4096}) * 0.01)};
  MethodParams mp; mp.tensorName = "x";
  for (Method m : {Method::TaskArithmetic, Method::Ties, Method::DareTies, Method::DareLinear, Method::Linear}) {
    if (argc > 1 && std::string(argv[1]) != methodName(m)) continue;
    std::vector<ModelParams> p(2);
    for (auto& x : p) {
      x.weight = 0.5;
      if (m != Method::TaskArithmetic && m != Method::Linear) x.density = 0.5;  // they refuse a density
    }
    auto cpu = [] {
      timespec t{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
    };
    const double c0 = cpu();
    auto t0 = std::chrono::steady_clock::now();
    auto r = mergeTensor(m, base, others, p, mp);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double c = cpu() - c0;
    std::printf("%-16s %.3f s  %.2f ns/elem wall  %.2f ns/elem cpu\n", methodName(m), s, s / 16.777216e6 * 1e9,
                c / 16.777216e6 * 1e9);
  }
}
