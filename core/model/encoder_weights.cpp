// See encoder_weights.h.
#include "core/model/encoder_weights.h"

#include <ATen/ATen.h>

#include <sstream>

#include "core/error.h"
#include "core/io/checkpoint.h"

namespace kh {

bool EncoderWeights::has(const std::string& name) const { return weights_->has(name); }

at::Tensor EncoderWeights::take(const std::string& name, const std::vector<int64_t>& shape, bool present) {
  if (!present) return {};
  const std::string full = prefix_ + name;
  if (!weights_->has(full)) {
    missing_.push_back(full);
    return {};
  }
  used_.insert(full);
  at::Tensor t = weights_->tensor(full);
  if (t.sizes().vec() != shape) {
    std::ostringstream m;
    m << full << ": " << t.sizes() << ", expected " << at::IntArrayRef(shape);
    misshaped_.push_back(m.str());
    return {};
  }
  return t.to(at::kFloat).clone();  // own fp32 copy: independent of the mapping
}

void EncoderWeights::check(const std::string& dir, const std::string& architecture,
                           const std::function<bool(const std::string&)>& ignored, const std::string& hint) const {
  std::vector<std::string> unexpected;
  for (const auto& n : weights_->names())
    if (!used_.count(n) && !ignored(n)) unexpected.push_back(n);
  if (missing_.empty() && misshaped_.empty() && unexpected.empty()) return;
  std::string what;
  auto list = [&](const char* label, const std::vector<std::string>& v) {
    if (v.empty()) return;
    what += std::string(what.empty() ? "" : "; ") + label + " " + std::to_string(v.size()) + ": " + v[0];
    if (v.size() > 1) what += ", " + v[1];
    if (v.size() > 2) what += ", ...";
  };
  list("missing", missing_);
  list("mis-shaped", misshaped_);
  list("unexpected", unexpected);
  throw Error(dir, "weights do not match a " + architecture + " encoder (" + what + ")", hint);
}

}  // namespace kh
