// Batched continuation scoring (see scoring.h). Rows are left-padded (positions -1 on padding),
// run in one forward pass, and read back with log_softmax in fp32.
#include "core/model/scoring.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace kh {

std::vector<ContinuationScore> scoreContinuations(const Model& model, const std::vector<std::vector<int>>& contexts,
                                                  const std::vector<std::vector<int>>& continuations, int64_t batchSize) {
  if (contexts.size() != continuations.size())
    throw Error("scoring", std::to_string(contexts.size()) + " contexts but " + std::to_string(continuations.size()) + " continuations");
  const size_t n = contexts.size();
  for (size_t i = 0; i < n; ++i) {
    const std::string where = "scoring pair " + std::to_string(i);
    if (contexts[i].empty()) throw Error(where, "empty context (a model needs at least one token to condition on)");
    if (continuations[i].empty()) throw Error(where, "empty continuation");
    const int64_t len = static_cast<int64_t>(contexts[i].size() + continuations[i].size());
    if (len > model.config().maxPositions)
      throw Error(where, std::to_string(len) + " tokens exceed the model's context of " + std::to_string(model.config().maxPositions));
  }
  std::vector<ContinuationScore> out(n);
  auto opts = at::TensorOptions().dtype(at::kLong);
  for (size_t start = 0; start < n; start += static_cast<size_t>(std::max<int64_t>(1, batchSize))) {
    const size_t end = std::min(n, start + static_cast<size_t>(std::max<int64_t>(1, batchSize)));
    const int64_t B = static_cast<int64_t>(end - start);
    int64_t T = 0;
    for (size_t i = start; i < end; ++i) T = std::max<int64_t>(T, static_cast<int64_t>(contexts[i].size() + continuations[i].size()));
    std::vector<int64_t> ids(static_cast<size_t>(B * T), 0), pos(static_cast<size_t>(B * T), -1);
    for (size_t i = start; i < end; ++i) {
      std::vector<int> seq(contexts[i]);
      seq.insert(seq.end(), continuations[i].begin(), continuations[i].end());
      const int64_t pad = T - static_cast<int64_t>(seq.size()), row = static_cast<int64_t>(i - start);
      for (size_t t = 0; t < seq.size(); ++t) {
        ids[static_cast<size_t>(row * T + pad) + t] = seq[t];
        pos[static_cast<size_t>(row * T + pad) + t] = static_cast<int64_t>(t);
      }
    }
    KVCache cache = model.newCache(B, T);
    ForwardBatch b;
    b.ids = at::tensor(ids, opts).view({B, T}).to(model.device());
    b.positions = at::tensor(pos, opts).view({B, T}).to(model.device());
    at::Tensor logp = at::log_softmax(model.forward(b, cache), -1).to(at::kCPU);  // [B, T, V] fp32
    for (size_t i = start; i < end; ++i) {
      const int64_t row = static_cast<int64_t>(i - start);
      const int64_t C = static_cast<int64_t>(continuations[i].size());
      ContinuationScore s;
      s.tokens = C;
      s.greedy = true;
      for (int64_t k = 0; k < C; ++k) {
        // The token at row position T - C + k is predicted by the logits one position earlier.
        at::Tensor lp = logp[row][T - C + k - 1];
        const int tok = continuations[i][static_cast<size_t>(k)];
        s.logLikelihood += lp[tok].item<double>();
        s.greedy = s.greedy && lp.argmax().item<int64_t>() == tok;
      }
      out[i] = s;
    }
  }
  return out;
}

}  // namespace kh
