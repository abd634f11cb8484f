// Qwen2 family (Qwen2ForCausalLM): config and tensor layout. Llama's layout with q/k/v biases
// (always on in Qwen2) and optional sliding windows on the layers from max_window_layers on.
#include "core/error.h"
#include "core/model/config.h"
#include "core/model/decoder_layout.h"

namespace kh {

ModelConfig parseLlamaLike(const nlohmann::json& j, const std::string& family, const std::string& w);
at::Tensor llamaStyleForward(const Model& m, const ForwardBatch& b, KVCache& cache);

static ModelConfig parseQwen2(const nlohmann::json& j, const std::string& w) {
  ModelConfig c = parseLlamaLike(j, "qwen2", w);
  c.qkvBias = true;
  c.oProjBias = c.mlpBias = false;
  c.maxPositions = cfg::intOr(j, "max_position_embeddings", 32768, w);
  const bool sliding = cfg::boolOr(j, "use_sliding_window", false, w);
  const int64_t window = cfg::intOr(j, "sliding_window", 4096, w);
  const int64_t maxWindowLayers = cfg::intOr(j, "max_window_layers", 28, w);
  if (!cfg::layerTypes(c, j, window, w) && sliding)
    for (int64_t i = maxWindowLayers; i < c.numLayers; ++i) c.layerWindow[static_cast<size_t>(i)] = window;
  return c;
}

static std::vector<ExpectedTensor> qwen2Layout(const ModelConfig& c) { return layout::llamaStyle(c); }

extern const FamilySpec kQwen2Family = {
    "qwen2", {"Qwen2ForCausalLM"}, {"qwen2"}, "Qwen2", parseQwen2, qwen2Layout, layout::ignorableRotaryBuffer, llamaStyleForward};

}  // namespace kh
