// Evaluator (see evaluator.h): prompts prepared once, generation through generateBatch, multiple
// choice through scoreContinuations, and the run-folder writer.
#include "core/eval/evaluator.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "core/model/generate.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/scoring.h"
#include "core/text/tokenizer.h"

namespace kh::eval {

namespace fs = std::filesystem;

PromptFormat PromptFormat::forModel(const ModelFolder& folder, const Tokenizer& tok, const std::string& templateOverride,
                                    bool needChat) {
  PromptFormat f;
  f.render.bosToken = tok.bosToken();
  f.render.eosToken = tok.eosToken();
  f.render.addGenerationPrompt = true;
  for (const auto& s : folder.stopTokens) f.stopIds.push_back(s.id);
  if (needChat || !templateOverride.empty()) {
    f.chat = resolveChatFormat(tok, templateOverride, folder.dir);
    const int id = tok.pieceToId(endOfTurnText(*f.chat, f.render));
    if (id >= 0 && std::find(f.stopIds.begin(), f.stopIds.end(), id) == f.stopIds.end()) f.stopIds.push_back(id);
  }
  return f;
}

Evaluator::Evaluator(const Suite& suite, std::shared_ptr<const Tokenizer> tokenizer, PromptFormat format, EvalOptions options)
    : suite_(std::make_shared<const Suite>(suite)), tok_(std::move(tokenizer)), format_(std::move(format)), options_(std::move(options)) {
  KH_ASSERT(tok_ != nullptr, "Evaluator needs a tokenizer");
  validateSplit(options_.split);
  if (options_.batchSize < 1) throw Error("--batch-size", "must be at least 1");
  if (options_.limit < 0) throw Error("--limit", "must be 0 (all) or positive");
  for (const auto& t : suite_->tasks) {
    if (t.chat && !format_.chat)
      throw Error(suite_->path, "task '" + t.name + "' is a chat task but the model has no chat format", "pass --template NAME");
    PreparedTask pt{&t, {}};
    for (const auto& it : t.items) {
      if (!splitSelected(it.split, options_.split)) continue;
      if (options_.limit > 0 && static_cast<int64_t>(pt.items.size()) >= options_.limit) break;
      PreparedItem p{&it, {}, {}, {}};
      try {
        if (t.chat) {
          std::vector<ChatMessage> m;
          if (!t.system.empty()) m.push_back({"system", t.system});
          for (const auto& ex : t.examples) {
            m.push_back({"user", ex.prompt});
            m.push_back({"assistant", ex.target});
          }
          if (it.messages.empty()) m.push_back({"user", it.prompt});
          else m.insert(m.end(), it.messages.begin(), it.messages.end());
          p.promptText = renderChat(*format_.chat, m, format_.render);
          // The rendered text holds bos where the format wants it: no special tokens again.
          p.promptIds = tok_->encode(p.promptText, /*addSpecial=*/false);
        } else {
          for (const auto& ex : t.examples) p.promptText += ex.prompt + ex.target + t.fewShotSeparator;
          p.promptText += it.prompt;
          p.promptIds = tok_->encode(p.promptText, /*addSpecial=*/true);
        }
      } catch (const Error& e) {
        throw Error(it.where, e.what());
      }
      if (p.promptIds.empty()) throw Error(it.where, "the prompt tokenises to nothing");
      if (t.needsChoices())
        for (const auto& c : it.choices) p.choiceIds.push_back(tok_->encode(c, /*addSpecial=*/false));
      pt.items.push_back(std::move(p));
    }
    tasks_.push_back(std::move(pt));
  }
  if (itemCount() == 0) throw Error(suite_->path, "no items in split '" + options_.split + "'");
}

size_t Evaluator::itemCount() const {
  size_t n = 0;
  for (const auto& t : tasks_) n += t.items.size();
  return n;
}

int64_t Evaluator::longestSequence() const {
  int64_t n = 0;
  for (const auto& t : tasks_)
    for (const auto& it : t.items) {
      int64_t extra = t.task->maxNewTokens;
      for (const auto& c : it.choiceIds) extra = std::max<int64_t>(extra, static_cast<int64_t>(c.size()));
      n = std::max<int64_t>(n, static_cast<int64_t>(it.promptIds.size()) + extra);
    }
  return n;
}

SuiteResult Evaluator::run(const Model& model, const std::function<void(const EvalProgress&)>& onProgress,
                           const std::atomic<bool>* cancel) const {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t ctx = model.config().maxPositions;
  SuiteResult res;
  res.suite = suite_->name;
  res.split = options_.split;
  EvalProgress progress;
  progress.total = itemCount();
  auto checkCancel = [&] {
    if (cancel && cancel->load()) throw Cancelled();
  };
  for (const auto& pt : tasks_) {
    const TaskSpec& t = *pt.task;
    progress.task = t.name;
    const size_t n = pt.items.size();
    std::vector<ItemRecord> recs(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& p = pt.items[i];
      recs[i].task = t.name;
      recs[i].id = p.item->id;
      recs[i].split = p.item->split;
      recs[i].prompt = p.promptText;
      recs[i].promptTokens = static_cast<int64_t>(p.promptIds.size());
      if (static_cast<int64_t>(p.promptIds.size()) >= ctx)
        throw Error(p.item->where, std::to_string(p.promptIds.size()) + " prompt tokens do not fit the model's context of " +
                                       std::to_string(ctx));
      for (const auto& c : p.choiceIds)
        if (static_cast<int64_t>(p.promptIds.size() + c.size()) > ctx)
          throw Error(p.item->where, "prompt and a choice exceed the model's context of " + std::to_string(ctx));
    }
    // Multiple choice: every (prompt, choice) pair, batchSize pairs per forward.
    std::vector<std::vector<double>> loglik(n);
    if (t.needsChoices()) {
      const size_t step = static_cast<size_t>(std::max<int64_t>(1, options_.batchSize));
      for (size_t start = 0; start < n; start += step) {
        checkCancel();
        const size_t end = std::min(n, start + step);
        std::vector<std::vector<int>> ctxs, conts;
        for (size_t i = start; i < end; ++i)
          for (const auto& c : pt.items[i].choiceIds) {
            ctxs.push_back(pt.items[i].promptIds);
            conts.push_back(c);
          }
        auto scores = scoreContinuations(model, ctxs, conts, options_.batchSize);
        size_t k = 0;
        for (size_t i = start; i < end; ++i)
          for (size_t c = 0; c < pt.items[i].choiceIds.size(); ++c) loglik[i].push_back(scores[k++].logLikelihood);
        if (!t.needsGeneration() && onProgress) {
          progress.done += end - start;
          onProgress(progress);
        }
      }
    }
    // Generation: rows of similar length together (less padding), batchSize rows at a time.
    if (t.needsGeneration()) {
      std::vector<size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return pt.items[a].promptIds.size() < pt.items[b].promptIds.size(); });
      SamplingOptions so;
      so.temperature = 0;
      so.maxNewTokens = t.maxNewTokens;
      so.stopStrings = t.stopStrings;
      const size_t step = static_cast<size_t>(std::max<int64_t>(1, options_.batchSize));
      for (size_t start = 0; start < n; start += step) {
        checkCancel();
        const size_t end = std::min(n, start + step);
        std::vector<std::vector<int>> prompts;
        for (size_t k = start; k < end; ++k) prompts.push_back(pt.items[order[k]].promptIds);
        auto outs = generateBatch(model, *tok_, prompts, format_.stopIds, so, cancel);
        for (size_t k = start; k < end; ++k) {
          const auto& g = outs[k - start];
          if (g.reason == StopReason::Cancelled) throw Cancelled();
          ItemRecord& r = recs[order[k]];
          r.output = g.text;
          r.stopReason = stopReasonName(g.reason);
          r.newTokens = static_cast<int64_t>(g.ids.size());
        }
        if (onProgress) {
          progress.done += end - start;
          onProgress(progress);
        }
      }
    }
    // Scores, and the task's means.
    TaskResult tr;
    tr.task = t.name;
    tr.weight = t.weight;
    tr.fitnessMetric = t.fitnessMetric;
    for (const auto& m : t.metrics) tr.metrics.push_back({m.name(), 0, 0, 0});
    for (size_t i = 0; i < n; ++i) {
      const TaskItem& it = *pt.items[i].item;
      ItemRecord& r = recs[i];
      r.choiceLoglik = loglik[i];
      for (size_t mi = 0; mi < t.metrics.size(); ++mi) {
        const MetricSpec& m = t.metrics[mi];
        double s = 0;
        if (m.multipleChoice()) {
          size_t best = 0;
          double bestScore = -std::numeric_limits<double>::infinity();
          for (size_t c = 0; c < it.choices.size(); ++c) {
            double v = loglik[i][c];
            if (m.kind == MetricKind::McLoglikNorm) v /= static_cast<double>(it.choices[c].size());
            if (v > bestScore) {
              bestScore = v;
              best = c;
            }
          }
          s = std::find(it.references.begin(), it.references.end(), it.choices[best]) != it.references.end() ? 1.0 : 0.0;
          if (!t.needsGeneration() && mi == 0) {
            r.output = it.choices[best];
            r.stopReason = "loglik";
          }
        } else {
          s = scoreOutput(m, r.output, it.references);
        }
        r.scores.emplace_back(m.name(), s);
        tr.metrics[mi].sum += s;
        tr.metrics[mi].count += 1;
      }
    }
    for (auto& m : tr.metrics) m.mean = m.count ? m.sum / static_cast<double>(m.count) : 0.0;
    res.tasks.push_back(std::move(tr));
    for (auto& r : recs) res.items.push_back(std::move(r));
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

double SuiteResult::fitness() const {
  double f = 0;
  for (const auto& t : tasks)
    if (!t.metrics.empty()) f += t.weight * t.metrics[t.fitnessMetric].mean;
  return f;
}

nlohmann::ordered_json SuiteResult::summaryJson() const {
  nlohmann::ordered_json j;
  j["suite"] = suite;
  j["split"] = split;
  j["fitness"] = fitness();
  j["seconds"] = seconds;
  j["items"] = items.size();
  j["tasks"] = nlohmann::ordered_json::array();
  for (const auto& t : tasks) {
    nlohmann::ordered_json tj;
    tj["task"] = t.task;
    tj["weight"] = t.weight;
    tj["fitness_metric"] = t.metrics.empty() ? "" : t.metrics[t.fitnessMetric].metric;
    tj["metrics"] = nlohmann::ordered_json::array();
    for (const auto& m : t.metrics) tj["metrics"].push_back({{"metric", m.metric}, {"mean", m.mean}, {"count", m.count}});
    j["tasks"].push_back(std::move(tj));
  }
  return j;
}

nlohmann::ordered_json SuiteResult::itemJson(const ItemRecord& r) const {
  nlohmann::ordered_json j;
  j["task"] = r.task;
  j["id"] = r.id;
  j["split"] = r.split;
  j["prompt"] = r.prompt;
  j["output"] = r.output;
  nlohmann::ordered_json s = nlohmann::ordered_json::object();
  for (const auto& [k, v] : r.scores) s[k] = v;
  j["scores"] = s;
  j["stop_reason"] = r.stopReason;
  j["prompt_tokens"] = r.promptTokens;
  j["new_tokens"] = r.newTokens;
  if (!r.choiceLoglik.empty()) j["choice_loglik"] = r.choiceLoglik;
  return j;
}

namespace {
void writeAtomically(const fs::path& path, const std::string& bytes) {
  const fs::path partial = path.string() + ".partial";
  {
    std::ofstream f(partial, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(partial.string(), "cannot write");
    f << bytes;
    f.flush();
    if (!f) throw Error(partial.string(), "write failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(partial, path, ec);
  if (ec) throw Error(path.string(), "cannot rename " + partial.filename().string() + " into place (" + ec.message() + ")");
}
}  // namespace

void writeEvalRun(const std::string& runDir, const SuiteResult& result, const nlohmann::ordered_json& config) {
  std::error_code ec;
  fs::create_directories(runDir, ec);
  if (ec) throw Error(runDir, "cannot create the run folder (" + ec.message() + ")");
  const auto replace = nlohmann::ordered_json::error_handler_t::replace;
  std::string items;
  for (const auto& r : result.items) items += result.itemJson(r).dump(-1, ' ', false, replace) + "\n";
  writeAtomically(fs::path(runDir) / "items.jsonl", items);
  nlohmann::ordered_json summary = result.summaryJson();
  summary["config"] = config;
  writeAtomically(fs::path(runDir) / "results.json", summary.dump(2, ' ', false, replace) + "\n");
}

}  // namespace kh::eval
