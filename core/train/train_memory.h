// What a training step needs in memory, planned before anything is loaded: weights, what the
// optimiser holds per trainable parameter, activations kept for backward (all layers, or one input
// per layer plus one layer's worth with gradient checkpointing), the K/V the forward writes, and the
// logits. An estimate for Llama-style decoders (GPT-2's adapters counted by its own module names) with
// stated assumptions, never a measurement.
#pragma once

#include <cstdint>
#include <string>

#include "core/model/config.h"

namespace kh::train {

struct TrainMemoryInput {
  std::string method = "lora";  // lora | full
  int64_t loraRank = 8;
  std::string loraTargets = "q_proj|v_proj";  // regex over the layer's module names, as TrainConfig
  int64_t batch = 1, sequence = 512;
  int64_t weightBytesPerParameter = 4;  // 2 for bf16 weights
  bool gradientCheckpointing = false;
};

struct TrainMemory {
  uint64_t weights = 0;      // the model's weights at their compute dtype
  uint64_t trainable = 0;    // trainable parameters, their gradients, AdamW moments (+ fp32 masters)
  uint64_t activations = 0;  // saved for backward, K/V included
  uint64_t logits = 0;       // fp32 logits, log-softmax and their gradient
  uint64_t total() const { return weights + trainable + activations + logits; }
  std::string describe() const;  // "weights 1.9 GiB + trainable ... = ..."
};

// `parameters`: the model's weight count. Assumptions: adapters and optimiser state in fp32 (16 bytes
// per LoRA parameter); per layer and token the tensors autograd keeps in this engine's forward
// (fp32 norm inputs, projection inputs, RoPE'd q/k, the MLP's four I-wide tensors, and fp32 attention
// scores and probabilities, B * H * T^2 each); with checkpointing one hidden state per layer plus two
// layers' worth during a recompute. Allocator slack and libtorch's own buffers are not counted.
TrainMemory estimateTrainMemory(const ModelConfig& c, uint64_t parameters, const TrainMemoryInput& in);

}  // namespace kh::train
