// ModernBERT encoder forward pass (pre-LN, fused Wqkv, rotary embeddings with a global and a local
// base, sliding-window attention on local layers, GeGLU MLP, final_norm), written from
// transformers' modeling_modernbert.py / configuration_modernbert.py (eager path).
#include "core/model/modernbert_encoder.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/model/encoder_weights.h"

namespace kh {

namespace {

using json = nlohmann::json;

int64_t needInt(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_number_integer()) throw Error(where, std::string("needs an integer \"") + key + "\"");
  return j[key].get<int64_t>();
}

// A key transformers fills with a default when absent; present, it must have the right type.
template <typename T>
T setting(const json& j, const char* key, T fallback, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key];
  bool ok;
  if constexpr (std::is_same_v<T, bool>) ok = v.is_boolean();
  else if constexpr (std::is_same_v<T, std::string>) ok = v.is_string();
  else if constexpr (std::is_integral_v<T>) ok = v.is_number_integer();
  else ok = v.is_number();
  if (!ok) throw Error(where, std::string("\"") + key + "\" has the wrong type");
  return v.get<T>();
}

// Rotary base of one layer type in rope_parameters (new-style configs), else `fallback`.
double ropeTheta(const json& j, const char* layerType, double fallback, const std::string& where) {
  if (!j.contains("rope_parameters") || j["rope_parameters"].is_null()) return fallback;
  const json& rp = j["rope_parameters"];
  if (!rp.is_object()) throw Error(where, "rope_parameters must be an object");
  if (!rp.contains(layerType) || rp[layerType].is_null()) return fallback;
  const json& p = rp[layerType];
  if (!p.is_object()) throw Error(where, std::string("rope_parameters.") + layerType + " must be an object");
  const std::string type = setting<std::string>(p, "rope_type", "default", where);
  if (type != "default")
    throw Error(where, std::string("rope_parameters.") + layerType + ".rope_type '" + type + "' is not supported",
                "only \"default\" RoPE (ruri-v3 and ModernBERT use it)");
  return setting<double>(p, "rope_theta", fallback, where);
}

at::Tensor activation(const at::Tensor& x, const std::string& name) {
  if (name == "gelu") return at::gelu(x);  // exact (erf)
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return at::gelu(x, "tanh");
  if (name == "silu") return at::silu(x);
  return at::relu(x);
}

// q * cos + rotate_half(q) * sin, rotate_half(x) = cat(-x2, x1) of the two halves of the last dim.
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t h = x.size(-1) / 2;
  at::Tensor rot = at::cat({x.narrow(-1, h, h).neg(), x.narrow(-1, 0, h)}, -1);
  return x * cos + rot * sin;
}

}  // namespace

std::shared_ptr<ModernBertEncoder> ModernBertEncoder::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string cfgPath = (fs::path(dir) / "config.json").string();
  std::ifstream f(cfgPath);
  if (!f) throw Error(cfgPath, "missing", "an encoder folder needs config.json and model.safetensors");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception&) {
    throw Error(cfgPath, "invalid JSON");
  }
  auto enc = std::shared_ptr<ModernBertEncoder>(new ModernBertEncoder());
  EncoderConfig& c = enc->c_;
  ModernBertSettings& s = enc->s_;
  c.modelType = j.value("model_type", std::string());
  if (c.modelType != "modernbert") throw Error(cfgPath, "model_type '" + c.modelType + "' is not modernbert");
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    const std::string arch = j["architectures"][0];
    if (arch != "ModernBertModel" && arch != "ModernBertForMaskedLM")
      throw Error(cfgPath, "architecture '" + arch + "' is not a ModernBERT sentence encoder",
                  "supported: ModernBertModel (ruri-v3) and ModernBertForMaskedLM (its head ignored); a "
                  "classifier or reranker is not an embedder");
  }
  c.vocabSize = needInt(j, "vocab_size", cfgPath);
  c.hiddenSize = needInt(j, "hidden_size", cfgPath);
  c.numLayers = needInt(j, "num_hidden_layers", cfgPath);
  c.numHeads = needInt(j, "num_attention_heads", cfgPath);
  c.intermediateSize = needInt(j, "intermediate_size", cfgPath);
  c.maxPositions = setting<int64_t>(j, "max_position_embeddings", 8192, cfgPath);
  c.padTokenId = setting<int64_t>(j, "pad_token_id", 50283, cfgPath);
  c.layerNormEps = setting<double>(j, "norm_eps", 1e-5, cfgPath);
  c.activation = setting<std::string>(j, "hidden_activation", "gelu", cfgPath);
  c.typeVocabSize = 0;
  if (c.activation != "gelu" && c.activation != "gelu_pytorch_tanh" && c.activation != "gelu_new" &&
      c.activation != "silu" && c.activation != "relu")
    throw Error(cfgPath, "hidden_activation '" + c.activation + "' is not supported",
                "supported: gelu, gelu_pytorch_tanh, gelu_new, silu, relu");
  for (int64_t v : {c.vocabSize, c.hiddenSize, c.numLayers, c.numHeads, c.intermediateSize, c.maxPositions})
    if (v <= 0) throw Error(cfgPath, "sizes must be positive (vocab, hidden, layers, heads, intermediate, positions)");
  if (c.hiddenSize % c.numHeads != 0)
    throw Error(cfgPath, "hidden_size " + std::to_string(c.hiddenSize) + " is not a multiple of num_attention_heads " +
                             std::to_string(c.numHeads));
  const int64_t Dh = c.hiddenSize / c.numHeads;
  if (Dh % 2 != 0) throw Error(cfgPath, "head size " + std::to_string(Dh) + " is odd", "rotary embeddings need an even head size");
  if (j.contains("head_dim") && !j["head_dim"].is_null() && setting<int64_t>(j, "head_dim", Dh, cfgPath) != Dh)
    throw Error(cfgPath, "head_dim differs from hidden_size / num_attention_heads", "ModernBERT's attention uses the latter");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(cfgPath, "rope_scaling is not supported", "ruri-v3 and ModernBERT use plain RoPE");

  s.localAttention = setting<int64_t>(j, "local_attention", 128, cfgPath);
  s.globalEvery = setting<int64_t>(j, "global_attn_every_n_layers", 3, cfgPath);
  if (s.localAttention < 0) throw Error(cfgPath, "local_attention must not be negative");
  if (s.globalEvery <= 0) throw Error(cfgPath, "global_attn_every_n_layers must be positive");
  s.globalRopeTheta = setting<double>(j, "global_rope_theta", 160000.0, cfgPath);
  // Older transformers: a null local_rope_theta means the global base on every layer.
  s.localRopeTheta = j.contains("local_rope_theta") && j["local_rope_theta"].is_null()
                         ? s.globalRopeTheta
                         : setting<double>(j, "local_rope_theta", 10000.0, cfgPath);
  s.globalRopeTheta = ropeTheta(j, "full_attention", s.globalRopeTheta, cfgPath);
  s.localRopeTheta = ropeTheta(j, "sliding_attention", s.localRopeTheta, cfgPath);
  if (!(s.globalRopeTheta > 0) || !(s.localRopeTheta > 0)) throw Error(cfgPath, "rope thetas must be positive");
  s.normBias = setting<bool>(j, "norm_bias", false, cfgPath);
  s.attentionBias = setting<bool>(j, "attention_bias", false, cfgPath);
  s.mlpBias = setting<bool>(j, "mlp_bias", false, cfgPath);
  // The window follows i % global_attn_every_n_layers in every transformers version; newer ones
  // take the rotary base from layer_types, older ones from the same rule. Where they would
  // disagree the checkpoint's meaning depends on the version, so it is refused.
  for (int64_t i = 0; i < c.numLayers; ++i) s.ropeGlobal.push_back(i % s.globalEvery == 0);
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    const json& lt = j["layer_types"];
    if (!lt.is_array() || static_cast<int64_t>(lt.size()) != c.numLayers)
      throw Error(cfgPath, "layer_types must list one type per layer (" + std::to_string(c.numLayers) + ")");
    for (int64_t i = 0; i < c.numLayers; ++i) {
      const std::string t = lt[static_cast<size_t>(i)].is_string() ? lt[static_cast<size_t>(i)].get<std::string>() : "";
      if (t != "full_attention" && t != "sliding_attention")
        throw Error(cfgPath, "layer_types[" + std::to_string(i) + "] '" + t + "' is not full_attention or sliding_attention");
      if ((t == "full_attention") != s.ropeGlobal[static_cast<size_t>(i)])
        throw Error(cfgPath, "layer_types[" + std::to_string(i) + "] '" + t + "' disagrees with global_attn_every_n_layers " +
                                 std::to_string(s.globalEvery),
                    "transformers versions treat such a layer differently");
    }
  }

  EncoderWeights w(CheckpointWeights::open(dir));
  if (w.has("model.embeddings.tok_embeddings.weight")) w.setPrefix("model.");
  auto take = [&](const std::string& name, std::vector<int64_t> shape, bool present = true) {
    return w.take(name, shape, present);
  };
  const int64_t D = c.hiddenSize, I = c.intermediateSize;
  enc->tokEmb_ = take("embeddings.tok_embeddings.weight", {c.vocabSize, D});
  enc->embNormW_ = take("embeddings.norm.weight", {D});
  enc->embNormB_ = take("embeddings.norm.bias", {D}, s.normBias);
  for (int64_t i = 0; i < c.numLayers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Layer L;
    L.attnNormW = take(p + "attn_norm.weight", {D}, i > 0);  // layer 0: Identity
    L.attnNormB = take(p + "attn_norm.bias", {D}, i > 0 && s.normBias);
    L.qkvW = take(p + "attn.Wqkv.weight", {3 * D, D});
    L.qkvB = take(p + "attn.Wqkv.bias", {3 * D}, s.attentionBias);
    L.oW = take(p + "attn.Wo.weight", {D, D});
    L.oB = take(p + "attn.Wo.bias", {D}, s.attentionBias);
    L.mlpNormW = take(p + "mlp_norm.weight", {D});
    L.mlpNormB = take(p + "mlp_norm.bias", {D}, s.normBias);
    L.wiW = take(p + "mlp.Wi.weight", {2 * I, D});
    L.wiB = take(p + "mlp.Wi.bias", {2 * I}, s.mlpBias);
    L.woW = take(p + "mlp.Wo.weight", {D, I});
    L.woB = take(p + "mlp.Wo.bias", {D}, s.mlpBias);
    enc->layers_.push_back(std::move(L));
  }
  enc->finalNormW_ = take("final_norm.weight", {D});
  enc->finalNormB_ = take("final_norm.bias", {D}, s.normBias);
  // ModernBertForMaskedLM's head (head.dense, head.norm, decoder) sits beside "model.".
  const bool masked = !w.prefix().empty();
  w.check(
      dir, "modernbert",
      [&](const std::string& n) { return masked && (n.rfind("head.", 0) == 0 || n.rfind("decoder.", 0) == 0); },
      "norm_bias, attention_bias and mlp_bias in config.json say which biases exist");
  return enc;
}

at::Tensor ModernBertEncoder::forward(const at::Tensor& ids, const at::Tensor& mask) const {
  const int64_t B = ids.size(0), T = ids.size(1), D = c_.hiddenSize, H = c_.numHeads, Dh = D / H;
  const double eps = c_.layerNormEps;
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c_.vocabSize))
    throw Error("encoder input", "token id " + std::to_string(ids.max().item<int64_t>()) + " is outside vocab_size " +
                                     std::to_string(c_.vocabSize),
                "the tokenizer and config.json disagree");
  at::Tensor x = tokEmb_.index_select(0, ids.reshape(-1)).view({B, T, D});  // x: [B, T, D] fp32
  x = at::layer_norm(x, {D}, embNormW_, embNormB_, eps);
  // Rotary tables per base, as transformers: inv_freq = 1 / theta^(2k / Dh) in fp32, angles =
  // position * inv_freq, duplicated over both halves of the head.
  const at::Tensor pos = at::arange(T, x.options());  // [T]
  auto table = [&](double theta) {
    at::Tensor inv = at::pow(theta, at::arange(0, Dh, 2, x.options()) / static_cast<double>(Dh)).reciprocal();  // [Dh/2]
    at::Tensor ang = at::outer(pos, inv);                                                                     // [T, Dh/2]
    at::Tensor emb = at::cat({ang, ang}, -1).view({1, 1, T, Dh});                                            // [1, 1, T, Dh]
    return std::make_pair(emb.cos(), emb.sin());
  };
  const auto globalRope = table(s_.globalRopeTheta), localRope = table(s_.localRopeTheta);
  // Keys a query may see: real tokens (global layers), and within |i - j| <= local_attention / 2
  // on local layers. Refused scores become the fp32 minimum, as transformers' masks do, so a
  // padding row that sees nothing stays finite.
  const at::Tensor keys = mask.to(at::kBool).view({B, 1, 1, T});                                   // [B, 1, 1, T]
  const at::Tensor dist = (pos.view({T, 1}) - pos.view({1, T})).abs();                               // [T, T]
  const at::Tensor near = dist.le(static_cast<double>(s_.localAttention / 2)).view({1, 1, T, T});  // [1, 1, T, T]
  const at::Tensor globalSee = keys.logical_not(), localSee = keys.logical_and(near).logical_not();  // true: refused
  const float lowest = std::numeric_limits<float>::lowest();
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    const bool global = static_cast<int64_t>(i) % s_.globalEvery == 0;
    const auto& rope = s_.ropeGlobal[i] ? globalRope : localRope;
    at::Tensor h = i == 0 ? x : at::layer_norm(x, {D}, L.attnNormW, L.attnNormB, eps);
    at::Tensor qkv = at::linear(h, L.qkvW, L.qkvB).view({B, T, 3, H, Dh});  // [B, T, 3, H, Dh]
    at::Tensor q = rotary(qkv.select(2, 0).transpose(1, 2), rope.first, rope.second);  // [B, H, T, Dh]
    at::Tensor k = rotary(qkv.select(2, 1).transpose(1, 2), rope.first, rope.second);
    at::Tensor v = qkv.select(2, 2).transpose(1, 2);
    at::Tensor att = at::matmul(q, k.transpose(-1, -2)).mul(scale);  // att: [B, H, T, T]
    att = att.masked_fill(global ? globalSee : localSee, lowest);
    at::Tensor ctx = at::matmul(at::softmax(att, -1), v).transpose(1, 2).reshape({B, T, D});
    x = x + at::linear(ctx, L.oW, L.oB);
    at::Tensor u = at::linear(at::layer_norm(x, {D}, L.mlpNormW, L.mlpNormB, eps), L.wiW, L.wiB);  // [B, T, 2I]
    auto parts = u.chunk(2, -1);                                                                   // input, gate
    x = x + at::linear(activation(parts[0], c_.activation) * parts[1], L.woW, L.woB);
  }
  return at::layer_norm(x, {D}, finalNormW_, finalNormB_, eps);
}

}  // namespace kh
