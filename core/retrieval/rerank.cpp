// DecoderReranker (see rerank.h): yes/no log-odds of a decoder model, batched with right padding.
#include "core/retrieval/rerank.h"

#include <ATen/ATen.h>
#include <algorithm>
#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"

namespace kh::retrieval {

std::string rerankPrompt(const std::string& query, const std::string& chunk, const std::string& yes, const std::string& no) {
  return "次の文章が質問の答えを含んでいるか判定してください。含んでいれば「" + yes + "」、含んでいなければ「" + no +
         "」とだけ答えてください。\n\n質問: " + query + "\n\n文章: " + chunk;
}

std::optional<std::pair<std::string, std::string>> parseAnswerWords(const std::string& text) {
  if (text.empty()) return std::nullopt;
  const size_t comma = text.find(',');
  const std::string yes = text.substr(0, comma), no = comma == std::string::npos ? "" : text.substr(comma + 1);
  if (comma == std::string::npos || yes.empty() || no.empty() || no.find(',') != std::string::npos || yes == no)
    throw Error("rerank answers", "'" + text + "' is not two different words separated by a comma", "e.g. はい,いいえ or Yes,No");
  return std::make_pair(yes, no);
}

namespace {

std::vector<int> renderIds(const Tokenizer& tok, ChatFormat f, const std::string& bos, const std::string& eos,
                           const std::string& user) {
  ChatRenderOptions o;
  o.addGenerationPrompt = true;
  o.bosToken = bos;
  o.eosToken = eos;
  // The rendered text already holds bos where the format wants it (as ChatSession::promptFor).
  return tok.encode(renderChat(f, {{"user", user}}, o), /*addSpecial=*/false);
}

// The one token `word` adds right after `prompt`, or -1 when it is not exactly one.
int answerToken(const std::vector<int>& prompt, const std::vector<int>& withWord) {
  if (withWord.size() != prompt.size() + 1 || !std::equal(prompt.begin(), prompt.end(), withWord.begin())) return -1;
  return withWord.back();
}

}  // namespace

DecoderReranker::DecoderReranker(const std::string& modelDir, const RerankOptions& options)
    : dir_(modelDir), options_(options) {
  namespace fs = std::filesystem;
  if (modelDir.empty()) throw Error("--rerank", "no reranker model folder given");
  if (!fs::is_directory(modelDir)) throw Error(modelDir, "reranker model folder does not exist");
  if (!fs::exists(fs::path(modelDir) / "config.json"))
    throw Error(modelDir, "not a model folder (no config.json)", "give a decoder checkpoint folder to --rerank");
  options_.batchSize = std::max(1, options_.batchSize);
  options_.maxChunkTokens = std::max(1, options_.maxChunkTokens);
  ModelFolder folder = ModelFolder::open(modelDir);
  tok_ = folder.requireTokenizer();
  const ChatFormat f = resolveChatFormat(*tok_, options_.templateOverride, modelDir);
  format_ = static_cast<int>(f);
  bos_ = tok_->bosToken();
  eos_ = tok_->eosToken();
  // Answer words must be one token each where the model would write them (after the open turn).
  std::vector<std::pair<std::string, std::string>> pairs = {{"はい", "いいえ"}, {"yes", "no"}};
  if (options_.answers) pairs = {*options_.answers};
  std::string tried;
  for (const auto& [y, n] : pairs) {
    const std::string user = rerankPrompt("質問", "文章", y, n);
    ChatRenderOptions o;
    o.addGenerationPrompt = true;
    o.bosToken = bos_;
    o.eosToken = eos_;
    const std::string text = renderChat(f, {{"user", user}}, o);
    const auto base = tok_->encode(text, false);
    const int yi = answerToken(base, tok_->encode(text + y, false));
    const int ni = answerToken(base, tok_->encode(text + n, false));
    if (yi >= 0 && ni >= 0 && yi != ni) {
      yes_ = y, no_ = n, yesId_ = yi, noId_ = ni;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + ("'" + y + "'/'" + n + "'");
  }
  if (yesId_ < 0)
    throw Error(modelDir, "cannot rerank: the answer words " + tried + " are not single tokens after its chat prompt",
                "use an instruction model whose tokenizer has them, or name single-token answers (--rerank-answers YES,NO)");
  model_ = Model::load(folder, RunOptions{options_.device, ""});
}

DecoderReranker::~DecoderReranker() = default;

std::vector<int> DecoderReranker::promptIds(const std::string& query, const std::string& chunkText) const {
  auto chunkIds = tok_->encode(chunkText, false);
  std::string chunk = chunkText;
  if (chunkIds.size() > static_cast<size_t>(options_.maxChunkTokens)) {
    chunkIds.resize(static_cast<size_t>(options_.maxChunkTokens));
    chunk = tok_->decode(chunkIds, true);
  }
  return renderIds(*tok_, static_cast<ChatFormat>(format_), bos_, eos_, rerankPrompt(query, chunk, yes_, no_));
}

std::optional<double> DecoderReranker::score(const std::string& query, const std::string& chunkText) const {
  return scoreAll(query, {chunkText}).at(0);
}

std::vector<std::optional<double>> DecoderReranker::scoreAll(const std::string& query, const std::vector<std::string>& texts,
                                                             const EmbedProgress& progress) const {
  std::vector<std::vector<int>> ids(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ids[i] = promptIds(query, texts[i]);
    if (static_cast<int64_t>(ids[i].size()) > model_->config().maxPositions)
      throw Error("rerank candidate " + std::to_string(i + 1), std::to_string(ids[i].size()) + " prompt tokens exceed the context of " +
                  std::to_string(model_->config().maxPositions) + " of " + dir_, "shorten the query");
  }
  // Similar lengths share a batch, so little of each forward is padding.
  std::vector<size_t> order(texts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ids[a].size() < ids[b].size(); });
  std::vector<std::optional<double>> out(texts.size());
  const int64_t pad = tok_->padId().value_or(0);
  const size_t bs = static_cast<size_t>(options_.batchSize);
  const int64_t rowBytesPerToken = 4 * model_->config().vocabSize;  // fp32 logits
  at::NoGradGuard noGrad;
  for (size_t s = 0, e = 0; s < order.size(); s = e) {
    if (options_.cancel && options_.cancel->load()) throw Error("rerank", "cancelled");
    // Rows ascend in length, so the batch's padded length is its last row's.
    e = s + 1;
    while (e < order.size() && e - s < bs &&
           static_cast<int64_t>(e - s + 1) * static_cast<int64_t>(ids[order[e]].size()) * rowBytesPerToken <= options_.maxLogitBytes)
      ++e;
    const int64_t B = static_cast<int64_t>(e - s), T = static_cast<int64_t>(ids[order[e - 1]].size());
    std::vector<int64_t> idv(static_cast<size_t>(B * T), pad), posv(static_cast<size_t>(B * T), -1), last(static_cast<size_t>(B));
    for (int64_t r = 0; r < B; ++r) {
      const auto& row = ids[order[s + static_cast<size_t>(r)]];
      for (size_t t = 0; t < row.size(); ++t) {
        idv[static_cast<size_t>(r * T) + t] = row[t];
        posv[static_cast<size_t>(r * T) + t] = static_cast<int64_t>(t);
      }
      last[static_cast<size_t>(r)] = static_cast<int64_t>(row.size()) - 1;
    }
    ForwardBatch b;
    b.ids = at::tensor(idv, at::kLong).view({B, T}).to(model_->device());
    b.positions = at::tensor(posv, at::kLong).view({B, T}).to(model_->device());
    KVCache cache = model_->newCache(B, T);
    const at::Tensor logits = model_->forward(b, cache);  // [B, T, V] fp32
    for (int64_t r = 0; r < B; ++r) {
      // The answer is predicted at each row's last real token, not at the padded end.
      const at::Tensor logp = at::log_softmax(logits[r][last[static_cast<size_t>(r)]], -1).to(at::kCPU);  // [V] fp32
      out[order[s + static_cast<size_t>(r)]] = logp[yesId_].item<double>() - logp[noId_].item<double>();
    }
    if (progress) progress(e, order.size());
  }
  return out;
}

}  // namespace kh::retrieval
