// A model resident on a device, ready to run: weights by Hugging Face name in the compute dtype,
// a KV cache, and the forward pass of its family (registered in the family table). Positions
// and key masks are explicit, so batches with left padding and sliding windows need no special
// cases. Never copies a weight that can be used where it lies (CPU, stored dtype: mmap views).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/model/model_folder.h"

namespace kh {

struct RunOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:1"
  std::string dtype;           // "" (policy below), "fp32", "bf16", "fp16"
};

// Keys and values of every layer, for batch B and up to `capacity` positions.
struct KVCache {
  std::vector<at::Tensor> k, v;  // per layer: [B, KVH, capacity, hd], compute dtype
  at::Tensor keyPos;             // [B, capacity] int64: position of each cached key, -1 = empty/padding
  int64_t length = 0;            // slots used
  int64_t capacity = 0;
};

// One forward call: T new tokens for each of B rows.
struct ForwardBatch {
  at::Tensor ids;        // [B, T] int64
  at::Tensor positions;  // [B, T] int64; -1 marks a padding token (never attended to)
};

// A low-rank update of one linear layer applied at run time (LoRA, core/train/lora.h):
// y = x W^T + b + scale * (dropout(x) A^T) B^T. Models without adapters run exactly as before.
struct LinearAdapter {
  at::Tensor A;          // [r, in], the model's dtype and device
  at::Tensor B;          // [out, r]
  double scale = 1.0;    // alpha / r (rsLoRA: alpha / sqrt(r))
  double dropout = 0.0;  // on the adapter's input, only while Model::training is set
};

class Model {
 public:
  // Loads weights to the device. Dtype policy: CPU computes in bf16 or fp32 (fp16 checkpoints are
  // upcast to fp32: libtorch 1.13 has no CPU fp16 matmul); CUDA keeps the stored dtype. Refuses a
  // folder whose weights do not match its config (names the tensor, expected and found shape).
  static std::shared_ptr<Model> load(const ModelFolder& folder, const RunOptions& options = {});
  // A model of `folder`'s config and family with the given weights (every required tensor of the
  // layout, each of the layout's shape, `dtype`, on `device`): e.g. a merge built in memory.
  static std::shared_ptr<Model> fromWeights(const ModelFolder& folder, std::unordered_map<std::string, at::Tensor> weights,
                                            c10::Device device, c10::ScalarType dtype);
  // The compute dtype load() picks for weights stored in `stored` (requested: RunOptions::dtype).
  static c10::ScalarType computeDtype(c10::ScalarType stored, c10::Device device, const std::string& requested);

  const ModelConfig& config() const { return config_; }
  const FamilySpec& family() const { return *family_; }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }
  const at::Tensor& weight(const std::string& name) const;
  bool hasWeight(const std::string& name) const { return weights_.count(name) != 0; }
  // Replaces an existing weight; kh::Error unless `value` has its shape, dtype and device.
  void setWeight(const std::string& name, at::Tensor value);

  // LoRA adapters by module name ("model.layers.0.self_attn.q_proj"; kh::Error for a module the
  // model has no weight for or shapes that do not fit it).
  void setAdapter(const std::string& module, LinearAdapter adapter);
  const LinearAdapter* adapter(const std::string& module) const {
    if (adapters_.empty()) return nullptr;
    auto it = adapters_.find(module);
    return it == adapters_.end() ? nullptr : &it->second;
  }
  void clearAdapters() { adapters_.clear(); }
  // Whether the family stores its 2-D layer weights [in, out] (GPT-2's Conv1D) instead of [out, in].
  // Adapters are [r, in] / [out, r] either way (PEFT's lora_A / lora_B).
  bool weightsAreInOut() const;
  // Weight names in layout order (what a trainer may adapt or fine-tune).
  std::vector<std::string> weightNames() const;
  bool training = false;  // adapter dropout on (the forward is otherwise the same)
  // Gradient checkpointing: while autograd records, each decoder layer keeps only its input and
  // runs its forward again in backward (ops::decoderLayer). Results are the same, memory is lower.
  bool gradientCheckpointing = false;
  // The tensors requiring grad that a decoder layer's output depends on: its weights and its
  // adapters' A/B under `prefix` ("model.layers.3."), in a fixed order.
  std::vector<at::Tensor> trainableUnder(const std::string& prefix) const;

  KVCache newCache(int64_t batch, int64_t capacity) const;
  // Runs the batch, appends its keys/values to `cache`, returns logits [B, T, V] in fp32 (fp64 for
  // an fp64 model of the Llama-style families, built with fromWeights for gradient checks).
  at::Tensor forward(const ForwardBatch& batch, KVCache& cache) const;
  // As forward, but returns the final hidden states (after the last norm, before the output head)
  // [B, T, D] fp32 and skips the vocabulary projection; logits from forward() are unchanged.
  at::Tensor forwardHidden(const ForwardBatch& batch, KVCache& cache) const;
  // Convenience: one unpadded sequence, fresh cache; logits [T, V] fp32.
  at::Tensor logits(const std::vector<int64_t>& ids) const;

 private:
  ModelConfig config_;
  const FamilySpec* family_ = nullptr;
  c10::Device device_ = c10::kCPU;
  c10::ScalarType dtype_ = c10::kFloat;
  std::unordered_map<std::string, at::Tensor> weights_;
  std::unordered_map<std::string, LinearAdapter> adapters_;
};

c10::Device parseDevice(const std::string& text);  // kh::Error for a device that does not exist

// Building blocks shared by the family files (core/model/<family>.cpp). Shapes in comments.
namespace ops {
// x: [..., D]; Llama: w * norm(x) in x's dtype; Gemma: norm(x) * (1 + w) computed in fp32.
at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, bool addOne);
at::Tensor layerNorm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps);
at::Tensor activation(const at::Tensor& x, const std::string& name);  // silu, gelu, gelu_pytorch_tanh, gelu_new
// cos/sin tables for positions [B, T] (padding -1 treated as 0): [B, T, hd] in `dtype`.
std::pair<at::Tensor, at::Tensor> ropeTables(const ModelConfig& c, const at::Tensor& positions, c10::ScalarType dtype);
at::Tensor applyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);  // x: [B, H, T, hd]
// Appends k, v ([B, KVH, T, hd]) to layer `layer` of the cache (positions [B, T]); the caller
// advances cache.length once per forward after the last layer.
void cacheAppend(KVCache& cache, int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& positions);
// Causal, sliding-window and padding mask for queries at `qPos` [B, T] against the cache's keys:
// [B, 1, T, S] bool, true = may attend.
at::Tensor attentionMask(const KVCache& cache, int64_t keys, const at::Tensor& qPos, int64_t window);
// softmax(softcap(q k^T * scale) + mask) v with GQA; q: [B, H, T, hd], k/v: [B, KVH, S, hd].
// Scores and softmax in fp32 (as transformers' eager attention). Returns [B, T, H * hd].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale, double softcap);
// y + the LoRA update of module `name` for input x (y unchanged when it has no adapter):
// scale * B(A(dropout(x))) in the adapter's dtype, dropout only while m.training.
at::Tensor withAdapter(const Model& m, const std::string& name, const at::Tensor& x, at::Tensor y);
// x @ W^T + b for "<name>.weight" (and "<name>.bias" when the model has it), plus its adapter.
at::Tensor linear(const Model& m, const std::string& name, const at::Tensor& x);
// The Llama-style attention block of layer `layer` (prefix "model.layers.N."): q/k/v projections,
// RoPE, cache append, masked attention (window and soft-cap from the config), o_proj. h: [B, T, D].
at::Tensor selfAttention(const Model& m, const std::string& prefix, int64_t layer, const at::Tensor& h,
                         const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions, KVCache& cache);
// down(act(gate(h)) * up(h)). h: [B, T, D]
at::Tensor gatedMlp(const Model& m, const std::string& prefix, const at::Tensor& h);
// One decoder layer: x [B, T, D] -> x [B, T, D] through `body`, which appends its keys/values to the
// cache it is given. `body` must capture by value everything it reads besides x and the cache (it may
// run again in backward). With m.gradientCheckpointing, grad mode on and something under `prefix`
// (or x) requiring grad, only x is kept: the layer runs without recording, and backward runs it again
// with the RNG state it first saw (same dropout masks) and differentiates that. Else body(x, cache).
using LayerBody = std::function<at::Tensor(const at::Tensor& x, KVCache& cache)>;
at::Tensor decoderLayer(const Model& m, const std::string& prefix, const at::Tensor& x, KVCache& cache, LayerBody body);
// Output projection: lm_head, or the input embedding when tied. x: [B, T, D] -> [B, T, V] (model dtype).
at::Tensor outputHead(const Model& m, const at::Tensor& x, const std::string& embeddingName);
}  // namespace ops

}  // namespace kh
