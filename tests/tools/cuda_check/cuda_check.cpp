// CUDA check of the forward pass: every tiny model's logits on the GPU (fp32 and bf16) against the
// transformers goldens, and cached decode against the full pass on the GPU. Prints one line per
// check and exits non-zero when any fails. Loads no tokenizer (the GPU machines have no
// SentencePiece), so it builds the ModelFolder by hand.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>

#include "core/io/safetensors.h"
#include "core/model/runtime.h"

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  namespace fs = std::filesystem;
  int failures = 0;
  std::printf("cuda available: %d, devices: %d\n", (int)at::hasCUDA(), (int)at::getNumGPUs());
  for (const auto& de : fs::directory_iterator(argv[1])) {
    const std::string name = de.path().filename().string(), dir = de.path().string();
    const std::string golden = std::string(argv[2]) + "/" + name + ".safetensors";
    if (!fs::exists(golden)) continue;
    kh::ModelFolder f;
    f.dir = dir;
    f.config = kh::loadModelConfig(dir);
    f.family = kh::findFamily(f.config.family);
    f.weights = kh::CheckpointWeights::open(dir);
    f.layout = kh::checkLayout(*f.family, f.config, *f.weights);
    auto g = kh::SafetensorsFile::open(golden);
    at::Tensor ids = g->tensor("ids");
    std::vector<int64_t> idv(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    for (const char* dtype : {"fp32", "bf16"}) {
      kh::RunOptions ro;
      ro.device = "cuda";
      ro.dtype = dtype;
      auto m = kh::Model::load(f, ro);
      at::Tensor ours = m->logits(idv).cpu();
      at::Tensor ref = g->tensor(std::string("logits_") + dtype);
      at::Tensor scale = std::get<0>(ref.abs().max(-1, true)).clamp_min(1.0);
      double rel = ((ours - ref).abs() / scale).max().item<double>();
      double tol = std::string(dtype) == "fp32" ? 1e-3 : 6e-2;  // TF32 may be on for fp32 matmuls
      bool ok = rel < tol;
      failures += !ok;
      std::printf("%-12s cuda %-4s relative max diff vs transformers %.3g  %s\n", name.c_str(), dtype, rel, ok ? "ok" : "FAIL");
      // Cached decode on the GPU equals the full pass.
      auto cache = m->newCache(1, static_cast<int64_t>(idv.size()));
      auto opts = at::TensorOptions().dtype(at::kLong).device(m->device());
      std::vector<at::Tensor> parts;
      for (size_t t = 0; t < idv.size(); ++t) {
        kh::ForwardBatch b;
        b.ids = at::full({1, 1}, idv[t], opts);
        b.positions = at::full({1, 1}, static_cast<int64_t>(t), opts);
        parts.push_back(m->forward(b, cache)[0].cpu());
      }
      double d = ((at::cat(parts, 0) - ours).abs() / scale).max().item<double>();
      bool ok2 = d < (std::string(dtype) == "fp32" ? 1e-3 : 6e-2);
      failures += !ok2;
      std::printf("%-12s cuda %-4s cached decode vs full pass %.3g  %s\n", name.c_str(), dtype, d, ok2 ? "ok" : "FAIL");
    }
  }
  std::printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
