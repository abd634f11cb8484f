// A deterministic test embedder for the retrieval tests: each text's bytes counted into 16 bins
// (byte * 7 mod 16), L2-normalised. Texts that share bytes are close; it counts what it embedded.
#pragma once

#include <string>
#include <vector>

#include "core/retrieval/dense.h"

namespace kh::test {

class BytesEmbedder : public kh::retrieval::Embedder {
 public:
  explicit BytesEmbedder(std::string id = "hash-16") : id_(std::move(id)) {}
  std::string identity() const override { return id_; }
  int dim() const override { return 16; }
  std::vector<float> embed(const std::vector<std::string>& texts, const kh::retrieval::EmbedProgress& p = {}) const override {
    std::vector<float> v(texts.size() * 16, 0.f);
    for (size_t i = 0; i < texts.size(); ++i)
      for (unsigned char c : texts[i]) v[i * 16 + (c * 7u) % 16] += 1.f;
    kh::retrieval::normalizeRows(v, 16);
    embedded += texts.size();
    if (p) p(texts.size(), texts.size());
    return v;
  }
  mutable size_t embedded = 0;

 private:
  std::string id_;
};

}  // namespace kh::test
