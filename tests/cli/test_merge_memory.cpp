// The merge's memory plan against what the merge measures of itself (the growth of the process's
// peak RSS, printed by `kumihimo-cli merge`), on models whose tensors span several chunks, with
// shapes other than those the plan's constants were measured on. The issue asks for 20%.
#include <cstdio>
#include <gtest/gtest.h>

#include <regex>

#include "core/model/tiny.h"
#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;

namespace {

double mib(const std::string& number, const std::string& unit) {
  const double v = std::stod(number);
  if (unit == "GiB") return v * 1024;
  if (unit == "KiB") return v / 1024;
  if (unit == "B") return v / (1024.0 * 1024.0);
  return v;
}

}  // namespace

TEST(MergePlan, MeasuredPeakIsWithin20PercentOfThePlan) {
  TempDir dir;
  // m0-m3 bf16 (read in place by the fused loops), h0-h3 fp16 (converted), f0-f3 fp32.
  const std::pair<const char*, kh::st::DType> sets[] = {
      {"m", kh::st::DType::BF16}, {"h", kh::st::DType::F16}, {"f", kh::st::DType::F32}};
  for (const auto& [prefix, dtype] : sets)
  for (int i = 0; i < 4; ++i) {
    kh::TinyOptions o;
    o.family = "llama";
    o.layers = 1;
    o.hidden = 768;
    o.heads = 6;
    o.kvHeads = 6;
    o.intermediate = 3072;  // MLP weights of 2.4 M elements: three chunks each
    o.seed = static_cast<uint64_t>(10 + i);
    o.dtype = dtype;
    o.withTokenizer = false;
    kh::makeTinyCheckpoint(dir.file(prefix + std::to_string(i)), o);
  }
  struct Case {
    const char* method;
    int models;
    const char* params;
    const char* prefix = "m";
  };
  const Case cases[] = {{"ties", 3, "{weight: 0.4, density: 0.5}"},
                        {"dare_ties", 2, "{weight: 0.5, density: 0.3}"},
                        {"task_arithmetic", 3, "{weight: 0.3}"},
                        {"slerp", 1, ""},
                        {"ties", 3, "{weight: 0.4, density: 0.5}", "h"},
                        {"dare_ties", 2, "{weight: 0.5, density: 0.3}", "f"},
                        // The other methods, each with its own buffers in the plan (executor.cpp).
                        {"linear", 3, "{weight: 0.3}"},
                        {"dare_linear", 2, "{weight: 0.5, density: 0.3}"},
                        {"breadcrumbs", 2, "{weight: 0.5, density: 0.8, gamma: 0.01}"},
                        {"breadcrumbs_ties", 2, "{weight: 0.5, density: 0.8, gamma: 0.01}"},
                        {"della", 2, "{weight: 0.5, density: 0.5, epsilon: 0.1}"},
                        {"della_linear", 2, "{weight: 0.5, density: 0.5, epsilon: 0.1}"},
                        {"model_stock", 3, ""},
                        {"nuslerp", 2, "{weight: 0.5}"}};
  const std::regex line(R"(peak RAM ([0-9.]+) (B|KiB|MiB|GiB) measured, ([0-9.]+) (B|KiB|MiB|GiB) planned)");
  for (const auto& c : cases) {
    const std::string name = std::string(c.method) + "-" + c.prefix;
    SCOPED_TRACE(name);
    std::string yaml = std::string("merge_method: ") + c.method + "\nbase_model: " + dir.file(c.prefix + std::string("0")) +
                       "\nmodels:\n";
    for (int k = 1; k <= c.models; ++k) {
      yaml += "  - model: " + dir.file(c.prefix + std::to_string(k)) + "\n";
      if (*c.params) yaml += std::string("    parameters: ") + c.params + "\n";
    }
    if (std::string(c.method) == "slerp") yaml += "parameters:\n  t: 0.3\n";
    if (std::string(c.method) == "linear") yaml += "parameters:\n  weight: 0.1\n";  // the base's (mergekit weighs it too)
    yaml += "dtype: bfloat16\n";
    const std::string recipe = dir.file(name + ".yaml");
    kh::test::writeFile(recipe, yaml);
    auto r = runCli({"merge", recipe, "-o", dir.file("out-" + name)});
    ASSERT_EQ(r.exitCode, 0) << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, line)) << r.out;
    const double measured = mib(m[1], m[2]), planned = mib(m[3], m[4]);
    std::printf("%s: measured %.2f MiB, planned %.2f MiB\n", name.c_str(), measured, planned);
    EXPECT_NEAR(measured / planned, 1.0, 0.2) << "measured " << measured << " MiB, planned " << planned << " MiB";
  }
}
