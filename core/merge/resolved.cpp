// A recipe resolved against its model folders, per-tensor parameters and inputs (see resolved.h).
#include "core/merge/resolved.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cstring>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_load.h"

namespace kh::merge::detail {

namespace {

st::DType dtypeFromName(const std::string& n, const std::string& where) {
  if (n == "bfloat16") return st::DType::BF16;
  if (n == "float16") return st::DType::F16;
  if (n == "float32") return st::DType::F32;
  throw Error(where, "dtype '" + n + "' is not one of bfloat16, float16, float32");
}

}  // namespace

// Layer index of a tensor name ("model.layers.12.", "transformer.h.3."), -1 outside the layers.
int64_t layerOf(const std::string& name) {
  for (const char* key : {"layers.", ".h."}) {
    size_t p = name.find(key);
    if (p == std::string::npos) continue;
    p += std::strlen(key);
    size_t e = p;
    while (e < name.size() && std::isdigit(static_cast<unsigned char>(name[e]))) ++e;
    if (e > p && e < name.size() && name[e] == '.') return std::stoll(name.substr(p, e - p));
  }
  return -1;
}

// Tensors outside the layers that sit after them (final norm, head) take a gradient's last value.
bool isLate(const std::string& name) { return name.find("norm") != std::string::npos || name.find("lm_head") != std::string::npos || name.find("ln_f") != std::string::npos; }

bool isVocabTensor(const std::string& name) {
  return name == "model.embed_tokens.weight" || name == "lm_head.weight" || name == "transformer.wte.weight";
}

Resolved resolve(const Recipe& r) {
  if (!r.slices.empty())
    throw Error(r.path, "slices are not supported by this executor yet", "merge with 'models:' for now");
  Resolved x;
  std::map<std::string, int> index;
  auto open = [&](const std::string& path) {
    auto it = index.find(path);
    if (it != index.end()) return it->second;
    x.folders.push_back(ModelFolder::open(path));
    index[path] = static_cast<int>(x.folders.size()) - 1;
    return index[path];
  };
  if (!r.baseModel.empty()) x.base = open(r.baseModel);
  for (const auto& m : r.models) {
    const int i = open(m.model);
    if (i == x.base) continue;  // mergekit lets the base appear in the list; its entry adds nothing
    x.others.push_back(i);
    x.otherEntries.push_back(static_cast<int>(&m - r.models.data()));
  }
  if (!needsBase(r.method) && x.base >= 0 && r.method != Method::Slerp && r.method != Method::NuSlerp &&
      r.method != Method::ModelStock && r.method != Method::Passthrough) {
    // linear / passthrough with a base_model: the base takes part like any model.
    x.others.insert(x.others.begin(), x.base);
    x.otherEntries.insert(x.otherEntries.begin(), -1);
  }
  x.ref = x.base >= 0 ? x.base : x.others.front();
  const ModelFolder* ref = &x.refFolder();
  for (const auto& f : x.folders) {
    if (f.config.architecture != ref->config.architecture)
      throw Error(f.dir, "architecture " + f.config.architecture + " differs from " + ref->dir + "'s " +
                             ref->config.architecture, "merge models of one architecture");
    f.requireExactLayout();
  }
  for (const auto& e : ref->family->layout(ref->config)) {
    if (!ref->weights->has(e.name)) continue;
    x.outputs.push_back({e.name, ref->weights->entry(e.name).shape});
    for (const auto& f : x.folders) {
      if (!f.weights->has(e.name))
        throw Error(f.dir, "has no tensor '" + e.name + "', which " + ref->dir + " has");
      const auto& shape = f.weights->entry(e.name).shape;
      if (shape == x.outputs.back().second) continue;
      const bool vocabOnly = isVocabTensor(e.name) && shape.size() == 2 && shape[1] == x.outputs.back().second[1];
      if (!vocabOnly) {
        std::ostringstream o;
        o << "tensor '" << e.name << "' has shape " << c10::IntArrayRef(shape) << " but " << ref->dir << " has "
          << c10::IntArrayRef(x.outputs.back().second);
        throw Error(f.dir, o.str());
      }
      x.notes.push_back(f.dir + ": " + e.name + " has " + std::to_string(shape[0]) + " rows, cropped/padded to the base's " +
                        std::to_string(x.outputs.back().second[0]) + " (padding rows take the base's values)");
    }
  }
  const std::string od = !r.outDtype.empty() ? r.outDtype : r.dtype;
  if (!od.empty()) {
    x.outDtype = dtypeFromName(od, r.path);
  } else {
    const auto& first = ref->weights->entry(x.outputs.front().first);
    x.outDtype = first.dtype;
  }
  if (r.method == Method::Passthrough && x.others.size() != 1)
    throw Error(r.path, "passthrough takes exactly one model, got " + std::to_string(x.others.size()));
  return x;
}

ModelParams paramsFor(const Recipe& r, const RecipeModel* entry, const std::string& tensor, int64_t layer, int64_t layers) {
  ModelParams mp;
  const bool late = isLate(tensor);
  auto get = [&](const char* key, double& out) {
    const std::string where = r.path + ": parameter '" + key + "'";
    if (entry) {
      auto it = entry->parameters.find(key);
      if (it != entry->parameters.end()) {
        out = it->second.resolve(tensor, layer, layers, late, where);
        return;
      }
    }
    auto g = r.parameters.find(key);
    if (g != r.parameters.end()) out = g->second.resolve(tensor, layer, layers, late, where);
  };
  get("weight", mp.weight);
  get("density", mp.density);
  get("gamma", mp.gamma);
  get("epsilon", mp.epsilon);
  return mp;
}

MethodParams methodParamsFor(const Recipe& r, const std::string& tensor, int64_t layer, int64_t layers, uint64_t seed) {
  MethodParams m;
  const bool late = isLate(tensor);
  auto val = [&](const char* key) -> std::optional<double> {
    auto g = r.parameters.find(key);
    if (g == r.parameters.end()) return std::nullopt;
    return g->second.resolve(tensor, layer, layers, late, r.path + ": parameter '" + key + "'");
  };
  if (auto v = val("normalize")) m.normalize = *v != 0.0;
  if (auto v = val("rescale")) m.rescale = *v != 0.0;
  if (auto v = val("lambda")) m.lambda = *v;
  if (auto v = val("t")) m.t = *v;
  if (auto v = val("nuslerp_flatten")) m.nuslerpFlatten = *v != 0.0;
  if (auto v = val("nuslerp_row_wise")) m.nuslerpRowWise = *v != 0.0;
  m.seed = seed;
  m.tensorName = tensor;
  return m;
}

// Rows of a vocab tensor cropped or padded to `rows` (padding from `fill`, the base's rows).
at::Tensor fitRows(const at::Tensor& t, int64_t rows, const at::Tensor& fill) {
  if (t.size(0) == rows) return t;
  if (t.size(0) > rows) return t.narrow(0, 0, rows);
  return at::cat({t, fill.narrow(0, t.size(0), rows - t.size(0))}, 0);
}

bool operator==(const TensorParams& a, const TensorParams& b) {
  if (a.models.size() != b.models.size()) return false;
  for (size_t i = 0; i < a.models.size(); ++i) {
    const auto& p = a.models[i];
    const auto& q = b.models[i];
    if (p.weight != q.weight || p.density != q.density || p.gamma != q.gamma || p.epsilon != q.epsilon) return false;
  }
  const auto& m = a.method;
  const auto& n = b.method;
  return m.normalize == n.normalize && m.rescale == n.rescale && m.lambda == n.lambda && m.t == n.t &&
         m.nuslerpFlatten == n.nuslerpFlatten && m.nuslerpRowWise == n.nuslerpRowWise && m.seed == n.seed &&
         m.tensorName == n.tensorName;
}

TensorParams tensorParams(const Recipe& r, const Resolved& x, const std::string& name, uint64_t seed) {
  const int64_t layer = layerOf(name);
  const int64_t layers = x.refFolder().config.numLayers;
  TensorParams p;
  for (size_t k = 0; k < x.others.size(); ++k) {
    const int e = x.otherEntries[k];
    p.models.push_back(paramsFor(r, e >= 0 ? &r.models.at(static_cast<size_t>(e)) : nullptr, name, layer, layers));
  }
  p.method = methodParamsFor(r, name, layer, layers, seed);
  return p;
}

TensorInputs loadInputs(const Resolved& x, const std::string& name, const std::vector<int64_t>& shape, c10::Device device) {
  TensorInputs in;
  if (x.base >= 0) in.base = loadTensor(*x.folders[static_cast<size_t>(x.base)].weights, name, at::kFloat, device);
  at::Tensor refRows = in.base.defined() ? in.base : loadTensor(*x.refFolder().weights, name, at::kFloat, device);
  for (size_t k = 0; k < x.others.size(); ++k) {
    at::Tensor t = loadTensor(*x.folders[static_cast<size_t>(x.others[k])].weights, name, at::kFloat, device);
    if (isVocabTensor(name)) t = fitRows(t, shape[0], refRows);
    in.others.push_back(t);
  }
  return in;
}

RowReader::RowReader(const Resolved& x, const std::string& name, const std::vector<int64_t>& shape, c10::Device device)
    : device_(device) {
  if (shape.size() == 1) {
    cols_ = shape[0];
  } else if (shape.size() > 1) {
    rows_ = shape[0];
    for (size_t i = 1; i < shape.size(); ++i) cols_ *= shape[i];
  }
  auto open = [&](const ModelFolder& f) {
    Source s;
    const auto& w = *f.weights;
    const SafetensorsFile& file = w.fileOf(name);
    const auto& e = w.entry(name);
    const int64_t rows = shape.size() > 1 ? e.shape[0] : 1;  // vocab tensors may differ in rows
    s.view = file.tensor(e).reshape({rows, cols_});
    s.map = file.mapping().get();
    s.fileOffset = static_cast<uint64_t>(file.bytes(e) - s.map->data());
    s.rowBytes = static_cast<uint64_t>(cols_) * st::dtypeSize(e.dtype);
    return s;
  };
  base_ = open(x.base >= 0 ? x.folders[static_cast<size_t>(x.base)] : x.refFolder());
  for (int o : x.others) others_.push_back(open(x.folders[static_cast<size_t>(o)]));
}

at::Tensor RowReader::read(const Source& s, int64_t r0, int64_t r1) const {
  at::Tensor t = s.view.narrow(0, r0, r1 - r0).to(device_, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  s.map->release(s.fileOffset + static_cast<uint64_t>(r0) * s.rowBytes, static_cast<uint64_t>(r1 - r0) * s.rowBytes);
  read_ += static_cast<uint64_t>((r1 - r0) * cols_);
  return t;
}

at::Tensor RowReader::rows(int input, int64_t r0, int64_t r1) const {
  const Source& s = input < 0 ? base_ : others_.at(static_cast<size_t>(input));
  const int64_t have = s.view.size(0);
  if (r1 <= have) return read(s, r0, r1);
  // Rows past this model's vocabulary take the base's values (mergekit pads to the base).
  at::Tensor pad = read(base_, std::max(r0, have), r1);
  if (r0 >= have) return pad;
  return at::cat({read(s, r0, have), pad}, 0);
}

}  // namespace kh::merge::detail
