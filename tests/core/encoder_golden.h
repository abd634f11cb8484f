// Shared by the encoder embedder tests: the golden folders under tests/golden/encoder (written by
// tests/tools/make_encoder_golden.py and make_modernbert_golden.py), their golden.json cases, and
// the kh::Error text of a call that must fail.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/test_util.h"

namespace kh::test {

inline std::string goldenDir(const std::string& name) { return sourceDir() + "/tests/golden/encoder/" + name; }

inline nlohmann::json golden(const std::string& name) { return nlohmann::json::parse(readFile(goldenDir(name) + "/golden.json")); }

inline double maxDiff(const float* a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

// The golden case whose text is `text`.
inline const nlohmann::json& caseOf(const nlohmann::json& g, const std::string& text) {
  for (const auto& c : g["cases"])
    if (c["text"] == text) return c;
  throw std::runtime_error("no golden case " + text);
}

// The message of the kh::Error `f` throws (a test failure when it throws none).
inline std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const kh::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no kh::Error";
  return {};
}

}  // namespace kh::test
