// Gemma2 family (Gemma2ForCausalLM: gemma-2-2b-jpn-it, EZO-Common-9B): config and tensor layout.
// The details engines get wrong are all fields here: (1 + weight) RMSNorm, four norms per layer,
// sqrt(hidden) embedding scale, query_pre_attn_scalar, two soft-caps, alternating sliding layers.
#include "core/error.h"
#include "core/model/config.h"
#include "core/model/decoder_layout.h"

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

static std::vector<ExpectedTensor> gemma2Layout(const ModelConfig& c) {
  return layout::llamaStyle(c, layout::DecoderOptions{/*fourNorms=*/true});
}

extern const FamilySpec kGemma2Family = {
    "gemma2", {"Gemma2ForCausalLM"}, {"gemma2"}, "Gemma 2 (gemma-2-2b-jpn-it, EZO 9B)", parseGemma2, gemma2Layout,
    layout::ignorableRotaryBuffer};

}  // namespace kh
