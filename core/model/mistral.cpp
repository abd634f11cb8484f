// Mistral family (MistralForCausalLM: Mistral-7B and its Japanese derivatives such as
// Swallow-MS-7b): config and tensor layout. Llama's layout plus a sliding window.
#include "core/error.h"
#include "core/model/config.h"
#include "core/model/decoder_layout.h"

namespace kh {

ModelConfig parseLlamaLike(const nlohmann::json& j, const std::string& family, const std::string& w);
at::Tensor llamaStyleForward(const Model& m, const ForwardBatch& b, KVCache& cache);

static ModelConfig parseMistral(const nlohmann::json& j, const std::string& w) {
  ModelConfig c = parseLlamaLike(j, "mistral", w);
  c.qkvBias = c.oProjBias = c.mlpBias = false;  // MistralConfig has no bias switches
  // transformers' MistralConfig defaults to a 4096 window; an explicit null turns it off (v0.2+).
  int64_t window = j.contains("sliding_window") ? cfg::intOr(j, "sliding_window", 0, w) : 4096;
  c.layerWindow.assign(static_cast<size_t>(c.numLayers), window);
  return c;
}

static std::vector<ExpectedTensor> mistralLayout(const ModelConfig& c) { return layout::llamaStyle(c); }

extern const FamilySpec kMistralFamily = {
    "mistral", {"MistralForCausalLM"}, {"mistral"}, "Mistral (Mistral-7B, Swallow-MS)", parseMistral, mistralLayout,
    layout::ignorableRotaryBuffer, llamaStyleForward};

}  // namespace kh
