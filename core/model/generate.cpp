// Generation loop and samplers (see generate.h). Processor order follows transformers:
// repetition penalty, temperature, top-k, top-p, min-p, then a draw from a seeded generator.
#include "core/model/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <memory>
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

namespace {
// One row of generateBatch: the same per-token steps as generate()'s loop.
struct BatchRow {
  int64_t prompt = 0, maxNew = 0;
  std::vector<int> history;
  std::unique_ptr<StreamDecoder> decoder;
  std::string pending;
  at::Generator gen;
  GenerationResult r;
  bool done = false;
};
}  // namespace

std::vector<GenerationResult> generateBatch(const Model& model, const Tokenizer& tok, const std::vector<std::vector<int>>& prompts,
                                            const std::vector<int>& stopIds, const SamplingOptions& o,
                                            const std::atomic<bool>* cancel) {
  validateSampling(o);
  const int64_t B = static_cast<int64_t>(prompts.size());
  if (B == 0) return {};
  const int64_t ctx = model.config().maxPositions;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::vector<BatchRow> rows(static_cast<size_t>(B));
  int64_t Pmax = 0, steps = 0;
  for (int64_t i = 0; i < B; ++i) {
    const auto& p = prompts[static_cast<size_t>(i)];
    const std::string where = "prompt " + std::to_string(i);
    if (p.empty()) throw Error(where, "is empty", "give some text to continue");
    const int64_t P = static_cast<int64_t>(p.size());
    if (P >= ctx)
      throw Error(where, std::to_string(P) + " tokens do not fit the model's context of " + std::to_string(ctx), "shorten the prompt");
    BatchRow& row = rows[static_cast<size_t>(i)];
    row.prompt = P;
    row.maxNew = std::min<int64_t>(o.maxNewTokens, ctx - P);
    row.history.assign(p.begin(), p.end());
    row.decoder = std::make_unique<StreamDecoder>(tok);
    row.gen = at::detail::createCPUGenerator(o.seed);
    row.r.promptTokens = P;
    row.r.reason = StopReason::Length;
    Pmax = std::max(Pmax, P);
    steps = std::max(steps, row.maxNew);
  }
  KVCache cache = model.newCache(B, Pmax + steps);
  auto opts = at::TensorOptions().dtype(at::kLong);
  std::vector<int64_t> ids(static_cast<size_t>(B * Pmax), 0), pos(static_cast<size_t>(B * Pmax), -1);
  for (int64_t i = 0; i < B; ++i) {
    const auto& p = prompts[static_cast<size_t>(i)];
    const int64_t pad = Pmax - static_cast<int64_t>(p.size());
    for (size_t t = 0; t < p.size(); ++t) {
      ids[static_cast<size_t>(i * Pmax + pad) + t] = p[t];
      pos[static_cast<size_t>(i * Pmax + pad) + t] = static_cast<int64_t>(t);
    }
  }
  ForwardBatch b;
  b.ids = at::tensor(ids, opts).view({B, Pmax}).to(model.device());
  b.positions = at::tensor(pos, opts).view({B, Pmax}).to(model.device());
  at::Tensor logits = model.forward(b, cache).select(1, Pmax - 1).to(at::kCPU);  // [B, V] fp32
  const double prefillMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

  std::vector<int64_t> nextIds(static_cast<size_t>(B), 0), nextPos(static_cast<size_t>(B), -1);
  for (int64_t step = 0; step < steps; ++step) {
    const bool cancelled = cancel && cancel->load();
    bool anyActive = false;
    for (int64_t i = 0; i < B; ++i) {
      BatchRow& row = rows[static_cast<size_t>(i)];
      nextIds[static_cast<size_t>(i)] = 0;
      nextPos[static_cast<size_t>(i)] = -1;
      if (row.done) continue;
      if (cancelled) {
        row.r.reason = StopReason::Cancelled;
        row.done = true;
        continue;
      }
      const int64_t next = sampleNext(logits[i], row.history, o, row.gen);
      if (step == 0) row.r.timeToFirstTokenMs = prefillMs;
      row.r.ids.push_back(static_cast<int>(next));
      row.history.push_back(static_cast<int>(next));
      if (std::find(stopIds.begin(), stopIds.end(), next) != stopIds.end()) {
        row.r.reason = StopReason::Eos;
        row.done = true;
        continue;
      }
      row.pending += row.decoder->push(static_cast<int>(next));
      bool hit = false;
      for (const auto& s : o.stopStrings) {
        size_t at = row.pending.find(s);
        if (at != std::string::npos) {
          row.pending.resize(at);
          hit = true;
        }
      }
      if (hit) {
        row.r.reason = StopReason::StopString;
        row.done = true;
        continue;
      }
      const size_t hold = heldForStop(row.pending, o.stopStrings);
      row.r.text += row.pending.substr(0, row.pending.size() - hold);
      row.pending.erase(0, row.pending.size() - hold);
      if (step + 1 == row.maxNew) {
        row.done = true;
        continue;
      }
      nextIds[static_cast<size_t>(i)] = next;
      nextPos[static_cast<size_t>(i)] = row.prompt + step;
      anyActive = true;
    }
    if (!anyActive) break;
    b.ids = at::tensor(nextIds, opts).view({B, 1}).to(model.device());
    b.positions = at::tensor(nextPos, opts).view({B, 1}).to(model.device());
    logits = model.forward(b, cache).select(1, 0).to(at::kCPU);  // [B, V]
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count() - prefillMs / 1000;
  std::vector<GenerationResult> out;
  out.reserve(rows.size());
  for (auto& row : rows) {
    if (row.r.reason == StopReason::Length || row.r.reason == StopReason::Cancelled) row.pending += row.decoder->finish();
    row.r.text += row.pending;
    if (row.r.ids.size() > 1 && seconds > 0) row.r.tokensPerSecond = static_cast<double>(row.r.ids.size() - 1) / seconds;
    out.push_back(std::move(row.r));
  }
  return out;
}

}  // namespace kh
