// Run-memory estimate (see memory.h for the assumptions).
#include "core/model/memory.h"

#include <cstdlib>
#include <fstream>

#include <algorithm>
#include <cstdio>

namespace kh {

st::DType computeDtype(st::DType stored, DeviceKind device) {
  if (device == DeviceKind::CPU && stored == st::DType::F16) return st::DType::F32;
  return stored;
}

RunMemory estimateRunMemory(const ModelConfig& c, uint64_t parameters, st::DType holdAs, DeviceKind device,
                            int64_t context, int64_t chunk) {
  RunMemory m;
  m.device = device;
  m.weightDtype = holdAs;
  m.contextTokens = std::min<int64_t>(context, c.maxPositions > 0 ? c.maxPositions : context);
  m.prefillChunk = std::min<int64_t>(chunk, m.contextTokens);
  const uint64_t b = st::dtypeSize(holdAs);
  m.weights = parameters * b;
  for (int64_t i = 0; i < c.numLayers; ++i) {
    int64_t w = i < static_cast<int64_t>(c.layerWindow.size()) ? c.layerWindow[static_cast<size_t>(i)] : 0;
    int64_t t = w > 0 ? std::min<int64_t>(w, m.contextTokens) : m.contextTokens;
    m.kvCache += 2ull * static_cast<uint64_t>(c.numKvHeads * c.headDim * t) * b;
  }
  const uint64_t T = static_cast<uint64_t>(m.prefillChunk), f32 = 4;
  const uint64_t hidden = T * static_cast<uint64_t>(4 * c.hiddenSize + 3 * c.intermediateSize) * f32;
  const uint64_t scores = T * static_cast<uint64_t>(c.numHeads * m.contextTokens) * f32;
  const uint64_t logits = T * static_cast<uint64_t>(c.vocabSize) * f32;
  m.activations = hidden + scores + logits;
  m.overhead = device == DeviceKind::CUDA ? 512ull << 20 : 0;
  return m;
}

std::string formatBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

namespace {
uint64_t statusField(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.rfind(k, 0) == 0) return std::strtoull(line.c_str() + k.size(), nullptr, 10) * 1024;  // "VmRSS:  123 kB"
  return 0;
}
}  // namespace

uint64_t currentRss() { return statusField("VmRSS"); }
uint64_t peakRss() { return statusField("VmHWM"); }
void resetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace kh
