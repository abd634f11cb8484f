// BERT / XLM-RoBERTa encoder forward pass (post-LN, GELU, bidirectional attention with a padding
// mask), written from the transformers BertModel / XLMRobertaModel definitions.
#include "core/model/bert_encoder.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/model/encoder_weights.h"
#include "core/model/modernbert_encoder.h"

namespace kh {

namespace {

int64_t needInt(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_number_integer()) throw Error(where, std::string("needs an integer \"") + key + "\"");
  return j[key].get<int64_t>();
}

}  // namespace

std::shared_ptr<TextEncoder> loadTextEncoder(const std::string& dir) {
  const std::string cfgPath = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream f(cfgPath);
  if (!f) throw Error(cfgPath, "missing", "an encoder folder needs config.json and model.safetensors");
  std::string modelType;
  try {
    modelType = nlohmann::json::parse(f).value("model_type", std::string());
  } catch (const nlohmann::json::exception&) {
    throw Error(cfgPath, "invalid JSON (or a model_type that is not a string)");
  }
  if (modelType == "modernbert") return ModernBertEncoder::load(dir);
  if (modelType == "bert" || modelType == "xlm-roberta") return BertEncoder::load(dir);
  throw Error(cfgPath, "model_type '" + modelType + "' is not a supported encoder",
              "supported: bert, xlm-roberta (multilingual-e5, ruri v1/v2), modernbert (ruri-v3)");
}

std::shared_ptr<BertEncoder> BertEncoder::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string cfgPath = (fs::path(dir) / "config.json").string();
  std::ifstream f(cfgPath);
  if (!f) throw Error(cfgPath, "missing", "an encoder folder needs config.json and model.safetensors");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception&) {
    throw Error(cfgPath, "invalid JSON");
  }
  auto enc = std::shared_ptr<BertEncoder>(new BertEncoder());
  EncoderConfig& c = enc->c_;
  c.modelType = j.value("model_type", std::string());
  if (c.modelType != "bert" && c.modelType != "xlm-roberta")
    throw Error(cfgPath, "model_type '" + c.modelType + "' is not a supported encoder",
                c.modelType == "modernbert" ? "ModernBERT (ruri-v3) is loaded by ModernBertEncoder (loadTextEncoder)"
                                            : "supported: bert, xlm-roberta (multilingual-e5, ruri v1/v2)");
  c.vocabSize = needInt(j, "vocab_size", cfgPath);
  c.hiddenSize = needInt(j, "hidden_size", cfgPath);
  c.numLayers = needInt(j, "num_hidden_layers", cfgPath);
  c.numHeads = needInt(j, "num_attention_heads", cfgPath);
  c.intermediateSize = needInt(j, "intermediate_size", cfgPath);
  c.maxPositions = needInt(j, "max_position_embeddings", cfgPath);
  c.typeVocabSize = j.value("type_vocab_size", int64_t(2));
  c.padTokenId = j.contains("pad_token_id") && j["pad_token_id"].is_number_integer() ? j["pad_token_id"].get<int64_t>() : 0;
  c.layerNormEps = j.value("layer_norm_eps", 1e-12);
  c.activation = j.value("hidden_act", std::string("gelu"));
  if (c.activation != "gelu" && c.activation != "gelu_new" && c.activation != "gelu_pytorch_tanh" && c.activation != "relu")
    throw Error(cfgPath, "hidden_act '" + c.activation + "' is not supported", "supported: gelu, gelu_new, gelu_pytorch_tanh, relu");
  const std::string posType = j.value("position_embedding_type", std::string("absolute"));
  if (posType != "absolute") throw Error(cfgPath, "position_embedding_type '" + posType + "' is not supported", "only absolute");
  if (c.hiddenSize % c.numHeads != 0)
    throw Error(cfgPath, "hidden_size " + std::to_string(c.hiddenSize) + " is not a multiple of num_attention_heads " +
                             std::to_string(c.numHeads));

  EncoderWeights w(CheckpointWeights::open(dir));
  for (const char* p : {"", "bert.", "roberta.", "model."})
    if (w.has(std::string(p) + "embeddings.word_embeddings.weight")) w.setPrefix(p);
  auto take = [&](const std::string& name, std::vector<int64_t> shape) { return w.take(name, shape); };
  const int64_t D = c.hiddenSize, I = c.intermediateSize;
  enc->wordEmb_ = take("embeddings.word_embeddings.weight", {c.vocabSize, D});
  enc->posEmb_ = take("embeddings.position_embeddings.weight", {c.maxPositions, D});
  enc->typeEmb_ = take("embeddings.token_type_embeddings.weight", {c.typeVocabSize, D});
  enc->embLnW_ = take("embeddings.LayerNorm.weight", {D});
  enc->embLnB_ = take("embeddings.LayerNorm.bias", {D});
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    Layer L;
    L.qW = take(p + "attention.self.query.weight", {D, D});
    L.qB = take(p + "attention.self.query.bias", {D});
    L.kW = take(p + "attention.self.key.weight", {D, D});
    L.kB = take(p + "attention.self.key.bias", {D});
    L.vW = take(p + "attention.self.value.weight", {D, D});
    L.vB = take(p + "attention.self.value.bias", {D});
    L.oW = take(p + "attention.output.dense.weight", {D, D});
    L.oB = take(p + "attention.output.dense.bias", {D});
    L.ln1W = take(p + "attention.output.LayerNorm.weight", {D});
    L.ln1B = take(p + "attention.output.LayerNorm.bias", {D});
    L.iW = take(p + "intermediate.dense.weight", {I, D});
    L.iB = take(p + "intermediate.dense.bias", {I});
    L.o2W = take(p + "output.dense.weight", {D, I});
    L.o2B = take(p + "output.dense.bias", {D});
    L.ln2W = take(p + "output.LayerNorm.weight", {D});
    L.ln2B = take(p + "output.LayerNorm.bias", {D});
    enc->layers_.push_back(std::move(L));
  }
  const std::string& prefix = w.prefix();
  w.check(dir, c.modelType, [&](const std::string& n) {
    const std::string local = n.compare(0, prefix.size(), prefix) == 0 ? n.substr(prefix.size()) : n;
    return local == "embeddings.position_ids" || local.rfind("pooler.", 0) == 0 || n.rfind("cls.", 0) == 0 ||
           n.rfind("lm_head.", 0) == 0;
  });
  return enc;
}

at::Tensor BertEncoder::forward(const at::Tensor& ids, const at::Tensor& mask) const {
  const int64_t B = ids.size(0), T = ids.size(1), D = c_.hiddenSize, H = c_.numHeads, Dh = D / H;
  at::Tensor pos;
  if (c_.modelType == "xlm-roberta") {
    at::Tensor real = ids.ne(c_.padTokenId).to(at::kLong);  // [B, T]
    pos = real.cumsum(1) * real + c_.padTokenId;           // padding_idx + 1 + index of real tokens
  } else {
    pos = at::arange(T, ids.options()).unsqueeze(0).expand({B, T});
  }
  if (pos.max().item<int64_t>() >= c_.maxPositions)
    throw Error("encoder input", std::to_string(T) + " tokens exceed max_position_embeddings " + std::to_string(c_.maxPositions));
  at::Tensor x = wordEmb_.index_select(0, ids.reshape(-1)).view({B, T, D}) +  // x: [B, T, D] fp32
                 posEmb_.index_select(0, pos.reshape(-1)).view({B, T, D}) + typeEmb_[0];
  x = at::layer_norm(x, {D}, embLnW_, embLnB_, c_.layerNormEps);
  // Additive mask over keys: 0 for tokens, the fp32 minimum for padding (as transformers).
  at::Tensor bias = (1.0 - mask.to(at::kFloat)).mul(std::numeric_limits<float>::lowest()).view({B, 1, 1, T});
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  for (const Layer& L : layers_) {
    auto heads = [&](const at::Tensor& w, const at::Tensor& b) {  // [B, H, T, Dh]
      return at::linear(x, w, b).view({B, T, H, Dh}).transpose(1, 2);
    };
    at::Tensor q = heads(L.qW, L.qB), k = heads(L.kW, L.kB), v = heads(L.vW, L.vB);
    at::Tensor att = at::matmul(q, k.transpose(-1, -2)).mul(scale) + bias;  // att: [B, H, T, T]
    at::Tensor ctx = at::matmul(at::softmax(att, -1), v).transpose(1, 2).reshape({B, T, D});
    x = at::layer_norm(at::linear(ctx, L.oW, L.oB) + x, {D}, L.ln1W, L.ln1B, c_.layerNormEps);
    at::Tensor h = at::linear(x, L.iW, L.iB);  // h: [B, T, I]
    h = c_.activation == "gelu" ? at::gelu(h) : c_.activation == "relu" ? at::relu(h) : at::gelu(h, "tanh");
    x = at::layer_norm(at::linear(h, L.o2W, L.o2B) + x, {D}, L.ln2W, L.ln2B, c_.layerNormEps);
  }
  return x;
}

std::vector<std::pair<std::string, at::Tensor>> BertEncoder::namedWeights() const {
  std::vector<std::pair<std::string, at::Tensor>> w = {{"embeddings.word_embeddings.weight", wordEmb_},
                                                       {"embeddings.position_embeddings.weight", posEmb_},
                                                       {"embeddings.token_type_embeddings.weight", typeEmb_},
                                                       {"embeddings.LayerNorm.weight", embLnW_},
                                                       {"embeddings.LayerNorm.bias", embLnB_}};
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    const Layer& L = layers_[i];
    const std::pair<const char*, const at::Tensor*> named[] = {
        {"attention.self.query.weight", &L.qW},       {"attention.self.query.bias", &L.qB},
        {"attention.self.key.weight", &L.kW},         {"attention.self.key.bias", &L.kB},
        {"attention.self.value.weight", &L.vW},       {"attention.self.value.bias", &L.vB},
        {"attention.output.dense.weight", &L.oW},     {"attention.output.dense.bias", &L.oB},
        {"attention.output.LayerNorm.weight", &L.ln1W}, {"attention.output.LayerNorm.bias", &L.ln1B},
        {"intermediate.dense.weight", &L.iW},         {"intermediate.dense.bias", &L.iB},
        {"output.dense.weight", &L.o2W},              {"output.dense.bias", &L.o2B},
        {"output.LayerNorm.weight", &L.ln2W},         {"output.LayerNorm.bias", &L.ln2B}};
    for (const auto& [name, t] : named) w.emplace_back(p + name, *t);
  }
  return w;
}

}  // namespace kh
