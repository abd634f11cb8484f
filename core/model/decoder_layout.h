// The tensor layout shared by the Llama-style families (Llama, Mistral, Qwen2, Gemma2):
// Hugging Face names and shapes, [out, in] linear weights. Used by the family files only.
#pragma once

#include <string>
#include <vector>

#include "core/model/config.h"

namespace kh::layout {

struct DecoderOptions {
  bool fourNorms = false;  // Gemma2: pre/post attention and pre/post feed-forward norms
};

inline std::vector<ExpectedTensor> llamaStyle(const ModelConfig& c, DecoderOptions o = {}) {
  const int64_t D = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize;
  const int64_t Q = c.numHeads * c.headDim, KV = c.numKvHeads * c.headDim;
  std::vector<ExpectedTensor> t;
  t.push_back({"model.embed_tokens.weight", {V, D}});
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", {D}});
    t.push_back({p + "self_attn.q_proj.weight", {Q, D}});
    if (c.qkvBias) t.push_back({p + "self_attn.q_proj.bias", {Q}});
    t.push_back({p + "self_attn.k_proj.weight", {KV, D}});
    if (c.qkvBias) t.push_back({p + "self_attn.k_proj.bias", {KV}});
    t.push_back({p + "self_attn.v_proj.weight", {KV, D}});
    if (c.qkvBias) t.push_back({p + "self_attn.v_proj.bias", {KV}});
    t.push_back({p + "self_attn.o_proj.weight", {D, Q}});
    if (c.oProjBias) t.push_back({p + "self_attn.o_proj.bias", {D}});
    t.push_back({p + "post_attention_layernorm.weight", {D}});
    if (o.fourNorms) {
      t.push_back({p + "pre_feedforward_layernorm.weight", {D}});
      t.push_back({p + "post_feedforward_layernorm.weight", {D}});
    }
    t.push_back({p + "mlp.gate_proj.weight", {I, D}});
    if (c.mlpBias) t.push_back({p + "mlp.gate_proj.bias", {I}});
    t.push_back({p + "mlp.up_proj.weight", {I, D}});
    if (c.mlpBias) t.push_back({p + "mlp.up_proj.bias", {I}});
    t.push_back({p + "mlp.down_proj.weight", {D, I}});
    if (c.mlpBias) t.push_back({p + "mlp.down_proj.bias", {D}});
  }
  t.push_back({"model.norm.weight", {D}});
  t.push_back({"lm_head.weight", {V, D}, /*optional=*/c.tieWordEmbeddings});
  return t;
}

// Old Llama-style checkpoints saved the rotary frequencies as a buffer; it is not a weight.
inline bool ignorableRotaryBuffer(const std::string& n) {
  static const std::string kSuffix = ".rotary_emb.inv_freq";
  return n.size() > kSuffix.size() && n.compare(n.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
}

// Checks shared by the Llama-style parsers.
void checkHeads(const ModelConfig& c, const std::string& where);

}  // namespace kh::layout
