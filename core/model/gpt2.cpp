// GPT-2 family (GPT2LMHeadModel: llm-jp-1.3b-v1.0): config and tensor layout. Conv1D weights
// are stored [in, out] (transposed relative to nn.Linear), attention q/k/v fused in c_attn,
// learned absolute positions (wpe), LayerNorm with bias, head tied to wte by default.
#include <ATen/ATen.h>

#include "core/error.h"
#include "core/model/config.h"
#include "core/model/runtime.h"

namespace kh {

static ModelConfig parseGpt2(const nlohmann::json& j, const std::string& w) {
  using namespace cfg;
  ModelConfig c;
  common(c, j, "gpt2", w);
  c.vocabSize = requireInt(j, "vocab_size", w);
  c.hiddenSize = requireInt(j, "n_embd", w);
  c.numLayers = requireInt(j, "n_layer", w);
  c.numHeads = requireInt(j, "n_head", w);
  c.numKvHeads = c.numHeads;
  if (c.hiddenSize % c.numHeads != 0)
    throw Error(w, "n_embd (" + std::to_string(c.hiddenSize) + ") is not a multiple of n_head (" + std::to_string(c.numHeads) + ")");
  c.headDim = c.hiddenSize / c.numHeads;
  c.intermediateSize = intOr(j, "n_inner", 4 * c.hiddenSize, w);  // null means 4 * n_embd
  c.maxPositions = intOr(j, "n_positions", 1024, w);
  c.activation = stringOr(j, "activation_function", "gelu_new", w);
  c.norm = NormKind::LayerNorm;
  c.normEps = numberOr(j, "layer_norm_epsilon", 1e-5, w);
  c.learnedPositions = true;
  c.tieWordEmbeddings = boolOr(j, "tie_word_embeddings", true, w);
  c.qkvBias = c.oProjBias = c.mlpBias = true;
  c.attnScale = boolOr(j, "scale_attn_weights", true, w) ? 1.0 / std::sqrt(static_cast<double>(c.headDim)) : 1.0;
  c.scaleAttnByInverseLayerIdx = boolOr(j, "scale_attn_by_inverse_layer_idx", false, w);
  c.layerWindow.assign(static_cast<size_t>(c.numLayers), 0);
  return c;
}

static std::vector<ExpectedTensor> gpt2Layout(const ModelConfig& c) {
  const int64_t D = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize;
  std::vector<ExpectedTensor> t;
  t.push_back({"transformer.wte.weight", {V, D}});
  t.push_back({"transformer.wpe.weight", {c.maxPositions, D}});
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    t.push_back({p + "ln_1.weight", {D}});
    t.push_back({p + "ln_1.bias", {D}});
    t.push_back({p + "attn.c_attn.weight", {D, 3 * D}});  // Conv1D: [in, out]
    t.push_back({p + "attn.c_attn.bias", {3 * D}});
    t.push_back({p + "attn.c_proj.weight", {D, D}});
    t.push_back({p + "attn.c_proj.bias", {D}});
    t.push_back({p + "ln_2.weight", {D}});
    t.push_back({p + "ln_2.bias", {D}});
    t.push_back({p + "mlp.c_fc.weight", {D, I}});
    t.push_back({p + "mlp.c_fc.bias", {I}});
    t.push_back({p + "mlp.c_proj.weight", {I, D}});
    t.push_back({p + "mlp.c_proj.bias", {D}});
  }
  t.push_back({"transformer.ln_f.weight", {D}});
  t.push_back({"transformer.ln_f.bias", {D}});
  t.push_back({"lm_head.weight", {V, D}, /*optional=*/c.tieWordEmbeddings});
  return t;
}

// x @ W + b for a Conv1D ([in, out] weight), plus its LoRA adapter (PEFT's fan_in_fan_out).
static at::Tensor conv1d(const Model& m, const std::string& name, const at::Tensor& x) {
  const at::Tensor& w = m.weight(name + ".weight");  // [in, out]
  return ops::withAdapter(m, name, x, at::matmul(x, w) + m.weight(name + ".bias"));
}

// transformers' GPT2Model, eager: learned positions, pre-LayerNorm blocks, fused q/k/v.
static at::Tensor gpt2Forward(const Model& m, const ForwardBatch& b, KVCache& cache) {
  const ModelConfig& c = m.config();
  const int64_t B = b.ids.size(0), T = b.ids.size(1), H = c.numHeads, hd = c.headDim, D = c.hiddenSize;
  at::Tensor x = at::embedding(m.weight("transformer.wte.weight"), b.ids) +
                 at::embedding(m.weight("transformer.wpe.weight"), b.positions.clamp_min(0));  // [B, T, D]
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    x = ops::decoderLayer(m, p, x, cache, [&m, &c, p, i, B, T, H, hd, D, pos = b.positions](const at::Tensor& xin, KVCache& cache) {
      at::Tensor x = xin;  // [B, T, D]
      at::Tensor h = ops::layerNorm(x, m.weight(p + "ln_1.weight"), m.weight(p + "ln_1.bias"), c.normEps);
      at::Tensor qkv = conv1d(m, p + "attn.c_attn", h);                      // [B, T, 3D]
      auto parts = qkv.split(D, -1);
      at::Tensor q = parts[0].view({B, T, H, hd}).transpose(1, 2);         // [B, H, T, hd]
      at::Tensor k = parts[1].view({B, T, H, hd}).transpose(1, 2);
      at::Tensor v = parts[2].view({B, T, H, hd}).transpose(1, 2);
      ops::cacheAppend(cache, i, k, v, pos);
      const int64_t keys = cache.length + T;
      at::Tensor mask = ops::attentionMask(cache, keys, pos, 0);
      double scale = c.attnScale;
      if (c.scaleAttnByInverseLayerIdx) scale /= static_cast<double>(i + 1);
      at::Tensor a = ops::attention(q, cache.k[static_cast<size_t>(i)].narrow(2, 0, keys),
                                    cache.v[static_cast<size_t>(i)].narrow(2, 0, keys), mask, scale, 0.0);  // [B, T, D]
      x = x + conv1d(m, p + "attn.c_proj", a);
      h = ops::layerNorm(x, m.weight(p + "ln_2.weight"), m.weight(p + "ln_2.bias"), c.normEps);
      return x + conv1d(m, p + "mlp.c_proj", ops::activation(conv1d(m, p + "mlp.c_fc", h), c.activation));
    });
  }
  x = ops::layerNorm(x, m.weight("transformer.ln_f.weight"), m.weight("transformer.ln_f.bias"), c.normEps);
  // [B, T, V] fp32 (fp64 for an fp64 model: gradient checks need the precision end to end)
  return ops::outputHead(m, x, "transformer.wte.weight").to(m.dtype() == at::kDouble ? at::kDouble : at::kFloat);
}

// Old GPT-2 checkpoints carry the causal-mask buffers; they are not weights.
static bool gpt2Ignorable(const std::string& n) {
  auto ends = [&](const char* s) {
    std::string suf(s);
    return n.size() >= suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
  };
  return ends(".attn.bias") || ends(".attn.masked_bias");
}

extern const FamilySpec kGpt2Family = {
    "gpt2", {"GPT2LMHeadModel"}, {"gpt2"}, "GPT-2 (llm-jp-1.3b-v1.0)", parseGpt2, gpt2Layout, gpt2Ignorable, gpt2Forward};

}  // namespace kh
