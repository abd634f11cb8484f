// BERT and XLM-RoBERTa encoders (the architecture of multilingual-e5 and ruri v1/v2): config.json,
// weights by their Hugging Face names (optionally under "bert." / "roberta."), and the
// bidirectional forward pass to the final hidden states, in fp32. Inference only: never a
// decoder, no cache, no heads (pooler and MLM head weights are ignored). Also the TextEncoder
// interface every encoder family implements and loadTextEncoder(), which picks the family by
// config.json's model_type (ModernBERT / ruri-v3: core/model/modernbert_encoder.h).
#pragma once

#include <ATen/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kh {

struct EncoderConfig {
  std::string modelType;  // "bert", "xlm-roberta" or "modernbert"
  int64_t vocabSize = 0, hiddenSize = 0, numLayers = 0, numHeads = 0, intermediateSize = 0;
  int64_t maxPositions = 0, typeVocabSize = 0;
  int64_t padTokenId = 0;
  double layerNormEps = 1e-12;
  std::string activation = "gelu";
};

// A bidirectional text encoder: token ids in, last hidden states out (fp32).
class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  virtual const EncoderConfig& config() const = 0;
  // ids: [B, T] int64, mask: [B, T] (1 = token, 0 = padding; padding on the right).
  // Returns the final hidden states [B, T, D] fp32; rows at padding are unspecified.
  virtual at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask) const = 0;
};

// Reads <dir>/config.json's model_type: "bert" / "xlm-roberta" -> BertEncoder, "modernbert" ->
// ModernBertEncoder; kh::Error naming config.json for anything else.
std::shared_ptr<TextEncoder> loadTextEncoder(const std::string& dir);

class BertEncoder : public TextEncoder {
 public:
  // Reads <dir>/config.json (model_type "bert" or "xlm-roberta", position_embedding_type
  // "absolute") and its safetensors weights; kh::Error naming the file and the missing,
  // mis-shaped or unexpected tensors, or the unsupported setting.
  static std::shared_ptr<BertEncoder> load(const std::string& dir);
  const EncoderConfig& config() const override { return c_; }
  // ids: [B, T] int64, mask: [B, T] (1 = token, 0 = padding; padding on the right).
  // Returns the last layer's hidden states [B, T, D] fp32. Positions: 0.. for BERT; for XLM-R,
  // padding_idx + 1 + (index among real tokens), padding rows at padding_idx (as transformers).
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask) const override;
  // Every weight by its Hugging Face name (no "bert." prefix), sharing storage with the model:
  // a tool that trains the encoder sets requires_grad on them and saves them under these names.
  std::vector<std::pair<std::string, at::Tensor>> namedWeights() const;

 private:
  struct Layer {
    at::Tensor qW, qB, kW, kB, vW, vB, oW, oB, ln1W, ln1B, iW, iB, o2W, o2B, ln2W, ln2B;
  };
  EncoderConfig c_;
  at::Tensor wordEmb_, posEmb_, typeEmb_, embLnW_, embLnB_;
  std::vector<Layer> layers_;
};

}  // namespace kh
