// Gemma2 family (Gemma2ForCausalLM: gemma-2-2b-jpn-it, EZO-Common-9B): config and tensor layout.
// The details engines get wrong are all fields here: (1 + weight) RMSNorm, four norms per layer,
// sqrt(hidden) embedding scale, query_pre_attn_scalar, two soft-caps, alternating sliding layers.
#include <ATen/ATen.h>

#include "core/error.h"
#include "core/model/config.h"
#include "core/model/decoder_layout.h"
#include "core/model/runtime.h"

namespace kh {

ModelConfig parseLlamaLike(const nlohmann::json& j, const std::string& family, const std::string& w);

// Llama's fields, then Gemma2Config's own defaults and switches.
static ModelConfig parseGemma2(const nlohmann::json& j, const std::string& w) {
  using namespace cfg;
  ModelConfig c = parseLlamaLike(j, "gemma2", w);
  c.headDim = intOr(j, "head_dim", 256, w);  // Gemma2Config's default, not hidden / heads
  c.maxPositions = intOr(j, "max_position_embeddings", 8192, w);
  // Gemma2 reads hidden_activation; older configs only have hidden_act.
  c.activation = stringOr(j, "hidden_activation", stringOr(j, "hidden_act", "gelu_pytorch_tanh", w), w);
  c.normAddsOne = true;
  c.scaleEmbeddings = true;
  c.tieWordEmbeddings = boolOr(j, "tie_word_embeddings", true, w);
  c.mlpBias = false;
  // Copies of the config disagree (256 vs 224 for 9B): always read it, never assume head_dim.
  const double qpas = numberOr(j, "query_pre_attn_scalar", 256.0, w);
  if (qpas <= 0) throw Error(w + ": field 'query_pre_attn_scalar'", "must be positive");
  c.attnScale = 1.0 / std::sqrt(qpas);
  // null turns a soft-cap off.
  c.attnLogitSoftcap = j.contains("attn_logit_softcapping") ? numberOr(j, "attn_logit_softcapping", 0.0, w) : 50.0;
  c.finalLogitSoftcap = j.contains("final_logit_softcapping") ? numberOr(j, "final_logit_softcapping", 0.0, w) : 30.0;
  const int64_t window = intOr(j, "sliding_window", 4096, w);
  if (!layerTypes(c, j, window, w))
    for (size_t i = 0; i < c.layerWindow.size(); i += 2) c.layerWindow[i] = window;  // layer 0 slides
  layout::checkHeads(c, w);
  return c;
}

// transformers' Gemma2Model, eager attention: embeddings times sqrt(hidden) rounded to the compute
// dtype first; (1 + w) RMSNorm in fp32; post-attention and pre/post feed-forward norms; attention
// soft-cap and query_pre_attn_scalar come in through the config (ops::selfAttention); final
// logits soft-capped in the compute dtype.
static at::Tensor gemma2Forward(const Model& m, const ForwardBatch& b, KVCache& cache) {
  const ModelConfig& c = m.config();
  const double eps = c.normEps;
  at::Tensor x = at::embedding(m.weight("model.embed_tokens.weight"), b.ids);           // [B, T, D]
  x = x * at::scalar_tensor(std::sqrt(static_cast<double>(c.hiddenSize)), x.options()); // normalizer in x's dtype
  const auto rope = ops::ropeTables(c, b.positions, m.dtype());  // cos, sin: [B, T, hd]
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    x = ops::decoderLayer(m, p, x, cache, [&m, eps, p, i, rope, pos = b.positions](const at::Tensor& x, KVCache& kv) {
      at::Tensor h = ops::rmsNorm(x, m.weight(p + "input_layernorm.weight"), eps, true);
      h = ops::selfAttention(m, p, i, h, rope.first, rope.second, pos, kv);
      at::Tensor y = x + ops::rmsNorm(h, m.weight(p + "post_attention_layernorm.weight"), eps, true);
      h = ops::rmsNorm(y, m.weight(p + "pre_feedforward_layernorm.weight"), eps, true);
      h = ops::gatedMlp(m, p, h);
      return y + ops::rmsNorm(h, m.weight(p + "post_feedforward_layernorm.weight"), eps, true);
    });
  }
  x = ops::rmsNorm(x, m.weight("model.norm.weight"), eps, true);
  at::Tensor logits = ops::outputHead(m, x, "model.embed_tokens.weight");  // [B, T, V]
  if (c.finalLogitSoftcap > 0) logits = at::tanh(logits / c.finalLogitSoftcap) * c.finalLogitSoftcap;
  return logits.to(at::kFloat);
}

static std::vector<ExpectedTensor> gemma2Layout(const ModelConfig& c) {
  return layout::llamaStyle(c, layout::DecoderOptions{/*fourNorms=*/true});
}

extern const FamilySpec kGemma2Family = {
    "gemma2", {"Gemma2ForCausalLM"}, {"gemma2"}, "Gemma 2 (gemma-2-2b-jpn-it, EZO 9B)", parseGemma2, gemma2Layout,
    layout::ignorableRotaryBuffer, gemma2Forward};

}  // namespace kh
