// ModernBERT encoder (the architecture of ruri-v3, built on sbintuitions/modernbert-ja): config.json,
// weights by their Hugging Face names (ModernBertModel, or ModernBertForMaskedLM under "model."
// with its head ignored) and the forward pass to final_norm's output, in fp32, as transformers'
// modeling_modernbert.py computes it. Inference only: never a decoder, no cache, no heads.
#pragma once

#include <ATen/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "core/model/bert_encoder.h"

namespace kh {

// The ModernBERT settings beyond EncoderConfig (transformers' ModernBertConfig defaults apply to
// keys a config.json leaves out).
struct ModernBertSettings {
  int64_t localAttention = 128;     // sliding window: keys with |i - j| <= localAttention / 2
  int64_t globalEvery = 3;          // layer i is global when i % globalEvery == 0
  double globalRopeTheta = 160000;  // rotary base on global layers
  double localRopeTheta = 10000;    // rotary base on local (sliding-window) layers
  bool normBias = false, attentionBias = false, mlpBias = false;
  std::vector<bool> ropeGlobal;  // per layer: which rotary base it uses (layer_types, else i % globalEvery)
};

class ModernBertEncoder : public TextEncoder {
 public:
  // Reads <dir>/config.json (model_type "modernbert"; old keys global_rope_theta /
  // local_rope_theta or new ones layer_types / rope_parameters with rope_type "default") and its
  // safetensors weights; kh::Error naming the file and the missing, mis-shaped or unexpected
  // tensors, or the unsupported setting (rope scaling, an activation, a classifier head, ...).
  static std::shared_ptr<ModernBertEncoder> load(const std::string& dir);
  const EncoderConfig& config() const override { return c_; }
  const ModernBertSettings& settings() const { return s_; }
  // ids: [B, T] int64, mask: [B, T] (1 = token, 0 = padding on the right). Positions count from 0
  // in every row, so a padded batch gives each sequence what it gets alone (transformers' eager
  // and unpadded flash-attention paths agree on this). Returns final_norm's output [B, T, D] fp32.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask) const override;

 private:
  struct Layer {
    at::Tensor attnNormW, attnNormB, qkvW, qkvB, oW, oB, mlpNormW, mlpNormB, wiW, wiB, woW, woB;  // undefined: absent
  };
  EncoderConfig c_;
  ModernBertSettings s_;
  at::Tensor tokEmb_, embNormW_, embNormB_, finalNormW_, finalNormB_;
  std::vector<Layer> layers_;
};

}  // namespace kh
