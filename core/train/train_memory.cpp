// Training memory plan (see train_memory.h): arithmetic only, no tensors.
#include "core/train/train_memory.h"

#include <regex>
#include <vector>

#include "core/error.h"
#include "core/model/memory.h"

namespace kh::train {

std::string TrainMemory::describe() const {
  return "weights " + formatBytes(weights) + " + trainable/optimiser " + formatBytes(trainable) + " + activations " +
         formatBytes(activations) + " + logits " + formatBytes(logits) + " = " + formatBytes(total());
}

TrainMemory estimateTrainMemory(const ModelConfig& c, uint64_t parameters, const TrainMemoryInput& in) {
  const uint64_t D = static_cast<uint64_t>(c.hiddenSize), I = static_cast<uint64_t>(c.intermediateSize);
  const uint64_t Q = static_cast<uint64_t>(c.numHeads * c.headDim), KV = static_cast<uint64_t>(c.numKvHeads * c.headDim);
  const uint64_t H = static_cast<uint64_t>(c.numHeads), L = static_cast<uint64_t>(c.numLayers);
  const uint64_t B = static_cast<uint64_t>(in.batch), T = static_cast<uint64_t>(in.sequence), N = B * T;
  const uint64_t w = static_cast<uint64_t>(in.weightBytesPerParameter);
  TrainMemory m;
  m.weights = parameters * w;
  if (in.method == "lora") {
    std::regex re;
    try {
      re = std::regex(in.loraTargets);
    } catch (const std::regex_error& e) {
      throw Error("lora.target_modules", "'" + in.loraTargets + "' is not a valid pattern: " + e.what());
    }
    struct Module { const char* name; uint64_t in, out; };
    const std::vector<Module> llama = {{"self_attn.q_proj", D, Q}, {"self_attn.k_proj", D, KV}, {"self_attn.v_proj", D, KV},
                                       {"self_attn.o_proj", Q, D}, {"mlp.gate_proj", D, I},     {"mlp.up_proj", D, I},
                                       {"mlp.down_proj", I, D}};
    const std::vector<Module> gpt2 = {{"attn.c_attn", D, 3 * D}, {"attn.c_proj", D, D}, {"mlp.c_fc", D, I}, {"mlp.c_proj", I, D}};
    const bool isGpt2 = c.family == "gpt2";
    uint64_t perLayer = 0, adaptedInputs = 0;
    for (const auto& mod : isGpt2 ? gpt2 : llama)
      if (std::regex_search(std::string(isGpt2 ? "transformer.h.0." : "model.layers.0.") + mod.name, re)) {
        perLayer += static_cast<uint64_t>(in.loraRank) * (mod.in + mod.out);
        adaptedInputs += mod.in;
      }
    m.trainable = perLayer * L * 16;  // fp32 parameter, gradient, two AdamW moments
    // The adapters' fp32 copies of their inputs (bf16 models) and the rank-wide intermediates.
    m.activations += L * N * (adaptedInputs * (w < 4 ? 4 : 0) + 7 * static_cast<uint64_t>(in.loraRank) * 4);
  } else {
    m.trainable = parameters * (w + w + 8 + (w < 4 ? 4 : 0));  // weight's gradient, moments, fp32 master
  }
  // One layer's kept tensors, as this engine's forward records them.
  const uint64_t norms = 2 * 3 * N * D * 4;                        // fp32 input, rsqrt product, normed
  const uint64_t proj = N * D * w * 2 + N * Q * w;                 // q/k/v input, MLP input, o_proj input
  const uint64_t rope = 2 * N * (Q + KV) * w;                      // q, k and their rotations
  const uint64_t attn = B * H * T * T * (4 + 4 + w) + B * T * T;   // scores, probabilities (fp32, cast), mask
  const uint64_t mlp = 4 * N * I * w;                              // gate, act(gate), up, product
  const uint64_t layer = norms + proj + rope + attn + mlp;
  const uint64_t kv = 2 * N * KV * w;                              // the K/V every layer writes
  if (in.gradientCheckpointing)
    m.activations += L * (N * D * w + kv) + 2 * layer;  // inputs kept; a recompute and its backward
  else
    m.activations += L * (layer + kv);
  m.logits = N * static_cast<uint64_t>(c.vocabSize) * (12 + (w < 4 ? w : 0));  // head output, fp32 logits, log-softmax, grad
  return m;
}

}  // namespace kh::train
