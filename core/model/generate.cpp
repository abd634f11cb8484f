// Generation loop and samplers (see generate.h). Processor order follows transformers:
// repetition penalty, temperature, top-k, top-p, min-p, then a draw from a seeded generator.
#include "core/model/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <set>

#include "core/error.h"

namespace kh {

void validateSampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw Error("--temperature", "must be 0 (greedy) or positive, got " + std::to_string(o.temperature));
  if (!(o.topP > 0 && o.topP <= 1)) throw Error("--top-p", "must be in (0, 1], got " + std::to_string(o.topP));
  if (!(o.minP >= 0 && o.minP < 1)) throw Error("--min-p", "must be in [0, 1), got " + std::to_string(o.minP));
  if (o.topK < 0) throw Error("--top-k", "must be 0 (off) or positive, got " + std::to_string(o.topK));
  if (!(o.repetitionPenalty > 0) || !std::isfinite(o.repetitionPenalty))
    throw Error("--repetition-penalty", "must be positive, got " + std::to_string(o.repetitionPenalty));
  if (o.maxNewTokens < 1) throw Error("--max-new-tokens", "must be at least 1");
  for (const auto& s : o.stopStrings)
    if (s.empty()) throw Error("--stop", "a stop string cannot be empty");
}

const char* stopReasonName(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::StopString: return "stop string";
    case StopReason::Length: return "length";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

int64_t sampleNext(const at::Tensor& logitsIn, const std::vector<int>& history, const SamplingOptions& o, at::Generator& gen) {
  at::Tensor logits = logitsIn.to(at::kFloat).clone();  // [V]
  if (o.repetitionPenalty != 1.0 && !history.empty()) {
    const std::set<int64_t> seen(history.begin(), history.end());
    at::Tensor idx = at::tensor(std::vector<int64_t>(seen.begin(), seen.end()), at::kLong);
    at::Tensor s = logits.index_select(0, idx);
    s = at::where(s < 0, s * o.repetitionPenalty, s / o.repetitionPenalty);
    logits.index_copy_(0, idx, s);
  }
  if (o.temperature == 0) return logits.argmax().item<int64_t>();
  logits = logits / o.temperature;
  const float lowest = -std::numeric_limits<float>::infinity();
  if (o.topK > 0 && o.topK < logits.size(0)) {
    const float kth = std::get<0>(logits.topk(o.topK)).min().item<float>();
    logits = logits.masked_fill(logits < kth, lowest);
  }
  if (o.topP < 1.0) {
    // Keep the smallest set of most likely tokens whose mass reaches top_p (always at least one).
    auto [sorted, order] = logits.sort(/*dim=*/-1, /*descending=*/false);
    at::Tensor cum = sorted.softmax(-1).cumsum(-1);
    at::Tensor drop = cum <= (1 - o.topP);
    drop[-1] = false;
    logits = logits.scatter(0, order, sorted.masked_fill(drop, lowest));
  }
  if (o.minP > 0) {
    at::Tensor p = logits.softmax(-1);
    logits = logits.masked_fill(p < o.minP * p.max(), lowest);
  }
  at::Tensor probs = logits.softmax(-1);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

namespace {
// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t heldForStop(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}
}  // namespace

GenerationResult generate(const Model& model, const Tokenizer& tok, const std::vector<int>& promptIds,
                          const std::vector<int>& stopIds, const SamplingOptions& o,
                          const std::function<void(const std::string&)>& onText, const std::atomic<bool>* cancel) {
  validateSampling(o);
  if (promptIds.empty()) throw Error("prompt", "is empty", "give some text to continue");
  const int64_t P = static_cast<int64_t>(promptIds.size());
  const int64_t ctx = model.config().maxPositions;
  if (P >= ctx)
    throw Error("prompt", std::to_string(P) + " tokens do not fit the model's context of " + std::to_string(ctx),
                "shorten the prompt");
  const int64_t maxNew = std::min<int64_t>(o.maxNewTokens, ctx - P);

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  GenerationResult r;
  r.promptTokens = P;
  auto gen = at::detail::createCPUGenerator(o.seed);
  KVCache cache = model.newCache(1, P + maxNew);
  auto opts = at::TensorOptions().dtype(at::kLong).device(model.device());
  ForwardBatch b;
  b.ids = at::tensor(std::vector<int64_t>(promptIds.begin(), promptIds.end()), at::kLong).view({1, P}).to(model.device());
  b.positions = at::arange(P, opts).view({1, P});
  at::Tensor logits = model.forward(b, cache)[0][-1].to(at::kCPU);  // [V]

  std::vector<int> history(promptIds.begin(), promptIds.end());
  StreamDecoder decoder(tok);
  std::string pending;  // final text not yet handed out (may start a stop string)
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (onText) onText(s);
  };
  auto tFirst = t0;
  r.reason = StopReason::Length;
  for (int64_t step = 0; step < maxNew; ++step) {
    if (cancel && cancel->load()) {
      r.reason = StopReason::Cancelled;
      break;
    }
    const int64_t next = sampleNext(logits, history, o, gen);
    if (step == 0) {
      tFirst = Clock::now();
      r.timeToFirstTokenMs = std::chrono::duration<double, std::milli>(tFirst - t0).count();
    }
    r.ids.push_back(static_cast<int>(next));
    history.push_back(static_cast<int>(next));
    if (std::find(stopIds.begin(), stopIds.end(), next) != stopIds.end()) {
      r.reason = StopReason::Eos;
      break;
    }
    pending += decoder.push(static_cast<int>(next));
    bool hit = false;
    for (const auto& s : o.stopStrings) {
      size_t at = pending.find(s);
      if (at != std::string::npos) {
        pending.resize(at);
        hit = true;
      }
    }
    if (hit) {
      r.reason = StopReason::StopString;
      break;
    }
    const size_t hold = heldForStop(pending, o.stopStrings);
    emit(pending.substr(0, pending.size() - hold));
    pending.erase(0, pending.size() - hold);
    if (step + 1 == maxNew) break;
    b.ids = at::full({1, 1}, next, opts);
    b.positions = at::full({1, 1}, P + step, opts);
    logits = model.forward(b, cache)[0][-1].to(at::kCPU);
  }
  if (r.reason == StopReason::Length || r.reason == StopReason::Cancelled) pending += decoder.finish();
  emit(pending);
  const double decodeSeconds = std::chrono::duration<double>(Clock::now() - tFirst).count();
  if (r.ids.size() > 1 && decodeSeconds > 0) r.tokensPerSecond = static_cast<double>(r.ids.size() - 1) / decodeSeconds;
  return r;
}

}  // namespace kh
