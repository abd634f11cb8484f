// Llama family (LlamaForCausalLM: llm-jp-3, Llama 2/3, Swallow): config and tensor layout.
// Its forward pass is shared by the Llama-style families; no other family's details here.
#include <ATen/ATen.h>

#include "core/error.h"
#include "core/model/config.h"
#include "core/model/decoder_layout.h"
#include "core/model/runtime.h"

namespace kh {

namespace layout {
void checkHeads(const ModelConfig& c, const std::string& where) {
  if (c.numKvHeads <= 0 || c.numHeads % c.numKvHeads != 0)
    throw Error(where, "num_attention_heads (" + std::to_string(c.numHeads) + ") is not a multiple of num_key_value_heads (" +
                           std::to_string(c.numKvHeads) + ")");
  if (c.headDim <= 0) throw Error(where, "head_dim must be positive");
}
}  // namespace layout

// Fields and defaults of transformers' LlamaConfig; Mistral and Qwen2 start from here.
ModelConfig parseLlamaLike(const nlohmann::json& j, const std::string& family, const std::string& w) {
  using namespace cfg;
  ModelConfig c;
  common(c, j, family, w);
  c.vocabSize = requireInt(j, "vocab_size", w);
  c.hiddenSize = requireInt(j, "hidden_size", w);
  c.intermediateSize = requireInt(j, "intermediate_size", w);
  c.numLayers = requireInt(j, "num_hidden_layers", w);
  c.numHeads = requireInt(j, "num_attention_heads", w);
  c.numKvHeads = intOr(j, "num_key_value_heads", c.numHeads, w);
  c.headDim = intOr(j, "head_dim", c.hiddenSize / c.numHeads, w);
  c.maxPositions = intOr(j, "max_position_embeddings", 2048, w);
  c.activation = stringOr(j, "hidden_act", "silu", w);
  c.normEps = numberOr(j, "rms_norm_eps", 1e-6, w);
  c.ropeTheta = numberOr(j, "rope_theta", 10000.0, w);
  c.ropeScaling = ropeScaling(j, w);
  c.tieWordEmbeddings = boolOr(j, "tie_word_embeddings", false, w);
  c.qkvBias = c.oProjBias = boolOr(j, "attention_bias", false, w);
  c.mlpBias = boolOr(j, "mlp_bias", false, w);
  c.layerWindow.assign(static_cast<size_t>(c.numLayers), 0);
  c.attnScale = 1.0 / std::sqrt(static_cast<double>(c.headDim));
  layout::checkHeads(c, w);
  return c;
}

// Forward pass of the Llama-style decoder (Llama, Mistral and Qwen2 use it; their differences are
// config switches: biases, sliding windows, rope scaling). transformers' LlamaModel, eager.
at::Tensor llamaStyleForward(const Model& m, const ForwardBatch& b, KVCache& cache) {
  const ModelConfig& c = m.config();
  at::Tensor x = at::embedding(m.weight("model.embed_tokens.weight"), b.ids);  // [B, T, D]
  const auto rope = ops::ropeTables(c, b.positions, m.dtype());                // cos, sin: [B, T, hd]
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    x = ops::decoderLayer(m, p, x, cache, [&m, &c, p, i, rope, pos = b.positions](const at::Tensor& x, KVCache& kv) {
      at::Tensor h = ops::rmsNorm(x, m.weight(p + "input_layernorm.weight"), c.normEps, false);
      at::Tensor y = x + ops::selfAttention(m, p, i, h, rope.first, rope.second, pos, kv);
      h = ops::rmsNorm(y, m.weight(p + "post_attention_layernorm.weight"), c.normEps, false);
      return y + ops::gatedMlp(m, p, h);
    });
  }
  x = ops::rmsNorm(x, m.weight("model.norm.weight"), c.normEps, false);
  // [B, T, V] fp32 (fp64 for an fp64 model: gradient checks need the precision end to end)
  return ops::outputHead(m, x, "model.embed_tokens.weight").to(m.dtype() == at::kDouble ? at::kDouble : at::kFloat);
}

static ModelConfig parseLlama(const nlohmann::json& j, const std::string& w) { return parseLlamaLike(j, "llama", w); }
static std::vector<ExpectedTensor> llamaLayout(const ModelConfig& c) { return layout::llamaStyle(c); }

extern const FamilySpec kLlamaFamily = {
    "llama", {"LlamaForCausalLM"}, {"llama"}, "Llama (llm-jp-3, Llama 2/3)", parseLlama, llamaLayout,
    layout::ignorableRotaryBuffer, llamaStyleForward};

}  // namespace kh
