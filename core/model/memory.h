// What running a model needs, planned before anything is loaded: weights at the compute dtype,
// KV cache for a context, activations for a prefill chunk, and a fixed device overhead.
// An estimate with stated assumptions, never a measurement; the inference issue checks it.
#pragma once

#include <cstdint>
#include <string>

#include "core/io/safetensors_header.h"
#include "core/model/config.h"

namespace kh {

enum class DeviceKind { CPU, CUDA };

struct RunMemory {
  DeviceKind device = DeviceKind::CPU;
  st::DType weightDtype = st::DType::BF16;  // dtype the weights are held in on that device
  int64_t contextTokens = 0;
  int64_t prefillChunk = 0;
  uint64_t weights = 0, kvCache = 0, activations = 0, overhead = 0;
  uint64_t total() const { return weights + kvCache + activations + overhead; }
};

// The dtype weights are computed in on a device when kept "as stored": on CPU, F16 is upcast to
// F32 (libtorch 1.13 has no CPU fp16 matmul); on CUDA the stored dtype is used.
st::DType computeDtype(st::DType stored, DeviceKind device);

// `parameters`: weight count; `holdAs`: dtype on the device (after computeDtype or a chosen one).
// KV cache: batch 1, `context` tokens, K and V per layer at holdAs, sliding layers capped at their
// window. Activations: hidden states, MLP, attention scores and logits of a `chunk`-token prefill
// in fp32. Overhead: 0 on CPU, 512 MiB on CUDA (context and allocator slack).
RunMemory estimateRunMemory(const ModelConfig& c, uint64_t parameters, st::DType holdAs, DeviceKind device,
                            int64_t context = 4096, int64_t chunk = 512);

std::string formatBytes(uint64_t bytes);  // "1.23 GiB", binary units

// This process's resident memory, from /proc/self/status (0 where that is unavailable): now, and
// the peak since the process started or since resetPeakRss(). A job measures its own peak as
// peakRss() - (the RSS when it started) after resetting the peak.
uint64_t currentRss();
uint64_t peakRss();
void resetPeakRss();  // best effort (Linux: /proc/self/clear_refs "5")

}  // namespace kh
