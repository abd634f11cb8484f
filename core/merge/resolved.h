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

#include <nlohmann/json.hpp>

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

// One input of an output tensor: a tensor of one folder, under its own name (a slice reads layer
// 5 of a model into output layer 2).
struct Input {
  int folder = -1;     // index in Resolved::folders; -1 = none
  std::string tensor;  // its name in that folder
  int entry = -1;      // its recipe entry: index in recipe.models, or in the slice's sources; -1 = none
};

// Where one output tensor's inputs come from, and where its gradients are evaluated.
struct Sources {
  Input base;                 // folder -1: the method runs without a base
  std::vector<Input> others;  // merged onto the base, recipe (or slice source) order
  int slice = -1;             // index in recipe.slices; -1 = a 'models:' recipe
  double t = 0;               // gradient position in [0, 1]
  bool hasBase() const { return base.folder >= 0; }
};

// The recipe resolved against the model folders on disk.
struct Resolved {
  std::vector<ModelFolder> folders;  // every model the recipe names (unique paths)
  int ref = -1;                      // index in folders of the folder that defines the output (config, layout)
  std::vector<std::pair<std::string, std::vector<int64_t>>> outputs;  // name, shape
  std::vector<Sources> sources;      // per output, parallel to `outputs`
  st::DType outDtype = st::DType::BF16;
  nlohmann::json config;             // the output's config.json (layer count and layer_types rewritten for slices)
  int tokenizer = -1;                // index in folders of the folder whose tokenizer files are copied
  std::vector<std::string> notes;
  const ModelFolder& refFolder() const { return folders[static_cast<size_t>(ref)]; }
  const ModelFolder& folder(const Input& in) const { return folders[static_cast<size_t>(in.folder)]; }
  size_t inputs(size_t output) const { return sources[output].others.size() + (sources[output].hasBase() ? 1u : 0u); }
};

Resolved resolve(const Recipe& r);

// Parameter lookup as mergekit's ConfigReader does it: a model's (or slice source's) own
// parameters, then the slice's, then the recipe's top level, then the default; a level whose
// filter list matches nothing for this tensor is passed over. `model` and `slice` may be null.
// resolve() also checks every tensor's parameters (validateMerge, slerp's required t, a weight
// for every model once the recipe gives any), so that the plan refuses what the merge would.
ModelParams paramsFor(const Recipe& r, const std::map<std::string, ParamValue>* model, const Slice* slice,
                      const std::string& tensor, double t);
MethodParams methodParamsFor(const Recipe& r, const Slice* slice, const std::string& tensor, double t, uint64_t seed);

// Every parameter one tensor's merge depends on.
struct TensorParams {
  std::vector<ModelParams> models;  // one per other model
  MethodParams method;
};
bool operator==(const TensorParams& a, const TensorParams& b);
inline bool operator!=(const TensorParams& a, const TensorParams& b) { return !(a == b); }

// The parameters of output tensor `output` (index in x.outputs) under recipe `r` (which must
// list the models and slices `x` was resolved from, in the same order).
TensorParams tensorParams(const Recipe& r, const Resolved& x, size_t output, uint64_t seed);

// The fp32 inputs of one tensor on `device`: the base (undefined without one) and the others,
// vocab rows cropped or padded to `shape[0]`.
struct TensorInputs {
  at::Tensor base;
  std::vector<at::Tensor> others;
};
TensorInputs loadInputs(const Resolved& x, size_t output, c10::Device device);

// Reads row ranges of one output tensor's inputs (each under its own name) straight from the mapped files, as fp32 on
// `device` ([r1 - r0, cols], the tensor seen as [shape[0], rest]), vocab rows cropped or padded as
// loadInputs does. After each read it drops the mapped pages it touched, so that the process
// never holds more than the rows being merged (the files stay in the page cache).
class RowReader {
 public:
  RowReader(const Resolved& x, size_t output, c10::Device device);
  at::Tensor rows(int input, int64_t r0, int64_t r1) const;  // input -1: the base (or ref), i: others[i]
  // The rows as stored, zero-copy over the mapping (mergeRows' RawRowSource): undefined off the
  // CPU or where padded rows are needed. The pages are released when the same input's next rows
  // are asked for, or when the reader goes.
  at::Tensor rawRows(int input, int64_t r0, int64_t r1) const;
  uint64_t elementsRead() const { return read_; }
  // Where every input's stored bytes for this tensor lie in their mappings (for read-ahead).
  struct ByteRange {
    const MappedFile* map;
    uint64_t offset, length;
  };
  std::vector<ByteRange> byteRanges() const;
  ~RowReader();
  RowReader(const RowReader&) = delete;
  RowReader& operator=(const RowReader&) = delete;

 private:
  struct Source {
    at::Tensor view;  // [rows, cols] zero-copy over the mapping
    const MappedFile* map = nullptr;
    uint64_t fileOffset = 0, rowBytes = 0;
    mutable int64_t heldFrom = 0, heldTo = 0;  // rows handed out by rawRows, not yet released
  };
  void releaseHeld(const Source& s) const;
  at::Tensor read(const Source& s, int64_t r0, int64_t r1) const;
  c10::Device device_;
  int64_t rows_ = 1, cols_ = 1;
  Source base_, pad_;  // pad_: where rows past a shorter vocabulary come from (the ref's)
  std::vector<Source> others_;
  mutable uint64_t read_ = 0;
};

// Rows of a vocab tensor cropped or padded to `rows` (padding from `fill`, the base's rows).
at::Tensor fitRows(const at::Tensor& t, int64_t rows, const at::Tensor& fill);

}  // namespace kh::merge::detail
