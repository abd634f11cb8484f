// An encoder's weights taken by name from its checkpoint folder, as fp32 copies (BERT / XLM-R and
// ModernBERT load through it): what is missing, mis-shaped or left over is collected while the
// loader takes tensors and reported in one kh::Error at the end.
#pragma once

#include <ATen/Tensor.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace kh {

class CheckpointWeights;

class EncoderWeights {
 public:
  explicit EncoderWeights(std::shared_ptr<CheckpointWeights> weights) : weights_(std::move(weights)) {}
  bool has(const std::string& name) const;  // the full name, prefix included
  void setPrefix(std::string prefix) { prefix_ = std::move(prefix); }
  const std::string& prefix() const { return prefix_; }
  // prefix + name as an fp32 copy, or undefined when it is absent or mis-shaped (noted for
  // check()). present = false: the tensor does not exist in this configuration (undefined).
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape, bool present = true);
  // kh::Error for `dir` naming the first missing, mis-shaped and unexpected tensors (those not
  // taken and not `ignored`), as "weights do not match a <architecture> encoder (...)".
  void check(const std::string& dir, const std::string& architecture, const std::function<bool(const std::string&)>& ignored,
             const std::string& hint = {}) const;

 private:
  std::shared_ptr<CheckpointWeights> weights_;
  std::string prefix_;
  std::set<std::string> used_;
  std::vector<std::string> missing_, misshaped_;
};

}  // namespace kh
