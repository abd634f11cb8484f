// Internal to core/merge: a recipe resolved against its model folders, the per-tensor parameters
// and the per-tensor fp32 inputs. Shared by the streaming executor and the in-place merger so
// that both compute every tensor by the same code path (bit for bit the same results).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/io/safetensors_header.h"
#include "core/merge/recipe.h"
#include "core/model/model_folder.h"

namespace kh {
class MappedFile;
}

namespace kh::merge::detail {

// Layer index of a tensor name ("model.layers.12.", "transformer.h.3."), -1 outside the layers.
int64_t layerOf(const std::string& name);
// Tensors outside the layers that sit after them (final norm, head) take a gradient's last value.
bool isLate(const std::string& name);
bool isVocabTensor(const std::string& name);

// The recipe resolved against the model folders on disk.
struct Resolved {
  std::vector<ModelFolder> folders;  // [base?] then every listed model (unique paths)
  int base = -1;                     // index in folders, -1 = none
  std::vector<int> others;           // folders merged onto the base, recipe order
  std::vector<int> otherEntries;     // index in recipe.models per other, -1 = none (the base)
  int ref = -1;                      // index in folders of the folder that defines the output
  std::vector<std::pair<std::string, std::vector<int64_t>>> outputs;  // name, shape (the ref's)
  st::DType outDtype = st::DType::BF16;
  std::vector<std::string> notes;
  const ModelFolder& refFolder() const { return folders[static_cast<size_t>(ref)]; }
};

Resolved resolve(const Recipe& r);

ModelParams paramsFor(const Recipe& r, const RecipeModel* entry, const std::string& tensor, int64_t layer, int64_t layers);
MethodParams methodParamsFor(const Recipe& r, const std::string& tensor, int64_t layer, int64_t layers, uint64_t seed);

// Every parameter one tensor's merge depends on.
struct TensorParams {
  std::vector<ModelParams> models;  // one per other model
  MethodParams method;
};
bool operator==(const TensorParams& a, const TensorParams& b);
inline bool operator!=(const TensorParams& a, const TensorParams& b) { return !(a == b); }

// The parameters of output tensor `name` under recipe `r` (which must list the models `x` was
// resolved from, in the same order).
TensorParams tensorParams(const Recipe& r, const Resolved& x, const std::string& name, uint64_t seed);

// The fp32 inputs of one tensor on `device`: the base (undefined without one) and the others,
// vocab rows cropped or padded to `shape[0]`.
struct TensorInputs {
  at::Tensor base;
  std::vector<at::Tensor> others;
};
TensorInputs loadInputs(const Resolved& x, const std::string& name, const std::vector<int64_t>& shape, c10::Device device);

// Reads row ranges of one output tensor's inputs straight from the mapped files, as fp32 on
// `device` ([r1 - r0, cols], the tensor seen as [shape[0], rest]), vocab rows cropped or padded as
// loadInputs does. After each read it drops the mapped pages it touched, so that the process
// never holds more than the rows being merged (the files stay in the page cache).
class RowReader {
 public:
  RowReader(const Resolved& x, const std::string& name, const std::vector<int64_t>& shape, c10::Device device);
  at::Tensor rows(int input, int64_t r0, int64_t r1) const;  // input -1: the base (or ref), i: others[i]
  uint64_t elementsRead() const { return read_; }

 private:
  struct Source {
    at::Tensor view;  // [rows, cols] zero-copy over the mapping
    const MappedFile* map = nullptr;
    uint64_t fileOffset = 0, rowBytes = 0;
  };
  at::Tensor read(const Source& s, int64_t r0, int64_t r1) const;
  c10::Device device_;
  int64_t rows_ = 1, cols_ = 1;
  Source base_;
  std::vector<Source> others_;
  mutable uint64_t read_ = 0;
};

// Rows of a vocab tensor cropped or padded to `rows` (padding from `fill`, the base's rows).
at::Tensor fitRows(const at::Tensor& t, int64_t rows, const at::Tensor& fill);

}  // namespace kh::merge::detail
