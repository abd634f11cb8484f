// Typed model configuration for the families Kumihimo runs, parsed from config.json, and the
// family registry (one file per family, registered in families.cpp's table).
// Never guesses a size: fields a forward pass needs and that Hugging Face has no universal
// default for are required and their absence is an error naming config.json and the field.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace kh {

class Model;
struct ForwardBatch;
struct KVCache;

enum class NormKind { RMSNorm, LayerNorm };

struct RopeScaling {
  std::string type;  // "" (none), "linear", "dynamic", "llama3", "yarn", ...
  double factor = 1.0;
  double lowFreqFactor = 1.0, highFreqFactor = 4.0;  // llama3
  int64_t originalMaxPositions = 0;                  // llama3 / yarn
  nlohmann::json raw;                                // the whole object, for the forward pass
};

struct ModelConfig {
  std::string family;        // registry name: "llama", "mistral", "gemma2", "gpt2", "qwen2"
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"
  std::string modelType;     // model_type
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;
  int64_t maxPositions = 0;
  std::string activation;  // "silu", "gelu" (exact), "gelu_pytorch_tanh", "gelu_new", ...
  NormKind norm = NormKind::RMSNorm;
  double normEps = 1e-6;
  bool normAddsOne = false;       // Gemma: x * (1 + weight)
  bool scaleEmbeddings = false;   // Gemma: embeddings * sqrt(hidden)
  bool learnedPositions = false;  // GPT-2: wpe instead of RoPE
  double ropeTheta = 10000.0;
  RopeScaling ropeScaling;
  bool tieWordEmbeddings = false;
  bool qkvBias = false;   // Qwen2 (always), Llama attention_bias
  bool oProjBias = false; // Llama attention_bias
  bool mlpBias = false;   // Llama mlp_bias
  // Sliding-window attention: window size per layer (0 = full attention).
  std::vector<int64_t> layerWindow;
  double attnLogitSoftcap = 0.0;   // Gemma2: 50
  double finalLogitSoftcap = 0.0;  // Gemma2: 30
  double attnScale = 0.0;          // score scale; Gemma2: query_pre_attn_scalar^-0.5, else head_dim^-0.5
  // GPT-2 specifics.
  bool scaleAttnByInverseLayerIdx = false;
  std::vector<int> eosIds;  // config.json's eos_token_id (int or list)
  std::optional<int> bosId, padId;
  std::string torchDtype;   // "bfloat16", "float16", "float32", or ""
  nlohmann::json raw;       // the whole config.json

  int64_t slidingLayers() const;
};

// Stop ids and sampling defaults from generation_config.json (absent: from config.json).
struct GenerationConfig {
  std::vector<int> eosIds;
  std::optional<int> bosId, padId;
  nlohmann::json raw;  // the whole file, {} when there is none
  bool present = false;
};

// Shape of one tensor a family expects, by its Hugging Face name.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool optional = false;  // e.g. lm_head.weight of a tied model that was saved anyway
};

struct FamilySpec {
  std::string name;                        // "llama"
  std::vector<std::string> architectures;  // config.json architectures[0] values it takes
  std::vector<std::string> modelTypes;     // model_type values it takes
  std::string description;                 // "Llama (llm-jp-3)"
  // config.json -> typed config; `where` names the file in errors.
  ModelConfig (*parse)(const nlohmann::json& config, const std::string& where);
  // Every tensor the family's checkpoint holds, with Hugging Face names and shapes.
  std::vector<ExpectedTensor> (*layout)(const ModelConfig& config);
  // Names that may appear and are not weights (old rotary buffers, GPT-2 attention masks).
  bool (*ignorable)(const std::string& name);
  // The forward pass (core/model/runtime.h): logits [B, T, V] fp32, keys/values appended to the cache.
  at::Tensor (*forward)(const Model& model, const ForwardBatch& batch, KVCache& cache);
};

const std::vector<const FamilySpec*>& families();
const FamilySpec* findFamily(const std::string& name);  // by registry name; nullptr if none
// The family for a config.json: architectures[0] first, then model_type. kh::Error when unknown.
const FamilySpec& familyFor(const nlohmann::json& config, const std::string& where);

// Reads and parses config.json of a model folder (kh::Error when missing, invalid, or incomplete).
ModelConfig loadModelConfig(const std::string& dir);
GenerationConfig loadGenerationConfig(const std::string& dir, const ModelConfig& config);

// Shared helpers for the family files: typed field access with errors naming file and field.
namespace cfg {
int64_t requireInt(const nlohmann::json& j, const char* key, const std::string& where);
int64_t intOr(const nlohmann::json& j, const char* key, int64_t dflt, const std::string& where);
double numberOr(const nlohmann::json& j, const char* key, double dflt, const std::string& where);
bool boolOr(const nlohmann::json& j, const char* key, bool dflt, const std::string& where);
std::string stringOr(const nlohmann::json& j, const char* key, const std::string& dflt, const std::string& where);
std::vector<int> idList(const nlohmann::json& j, const char* key, const std::string& where);  // int, list or null
std::optional<int> optionalId(const nlohmann::json& j, const char* key, const std::string& where);
RopeScaling ropeScaling(const nlohmann::json& j, const std::string& where);
// Fills c.layerWindow from a `layer_types` list ("sliding_attention" / "full_attention") when the
// config has one; returns false when it has none. Needs c.numLayers.
bool layerTypes(ModelConfig& c, const nlohmann::json& j, int64_t window, const std::string& where);
// The fields every family shares: name, architecture, ids, dtype, raw.
void common(ModelConfig& c, const nlohmann::json& j, const std::string& family, const std::string& where);
}  // namespace cfg

}  // namespace kh
