// Encoder sentence embeddings (mean pooling + L2) and embedder specs for stores and the CLI.
#include "core/retrieval/encoder_embedder.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "core/error.h"
#include "core/model/bert_encoder.h"
#include "core/text/bert_japanese_tokenizer.h"
#include "core/text/tokenizer.h"

namespace fs = std::filesystem;

namespace kh::retrieval {

namespace {

std::string readText(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string folderName(const std::string& dir) {
  std::string name = fs::path(dir).filename().string();
  if (name.empty()) name = fs::path(dir).parent_path().filename().string();
  return name;
}

}  // namespace

EmbedPrefixes prefixesFor(const std::string& styleIn, const std::string& modelDir) {
  std::string style = styleIn;
  if (style == "auto") {
    std::string name = folderName(modelDir);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (name.find("e5") != std::string::npos) style = "e5";
    else if (name.find("ruri-v3") != std::string::npos || name.find("ruri_v3") != std::string::npos) style = "ruri-v3";
    else if (name.find("ruri") != std::string::npos) style = "ruri";
    else style = "none";
  }
  if (style == "e5") return {style, "query: ", "passage: "};
  if (style == "ruri") return {style, "\xE3\x82\xAF\xE3\x82\xA8\xE3\x83\xAA: ", "\xE6\x96\x87\xE7\xAB\xA0: "};  // クエリ: / 文章:
  if (style == "ruri-v3")  // 検索クエリ: / 検索文書:
    return {style, "\xE6\xA4\x9C\xE7\xB4\xA2\xE3\x82\xAF\xE3\x82\xA8\xE3\x83\xAA: ", "\xE6\xA4\x9C\xE7\xB4\xA2\xE6\x96\x87\xE6\x9B\xB8: "};
  if (style == "none") return {style, "", ""};
  throw Error("--prefix", "unknown prefix style '" + styleIn + "'", "e5, ruri, ruri-v3, none or auto");
}

EncoderEmbedder::EncoderEmbedder(const std::string& modelDir, const std::string& prefixStyle, int batchSize, int maxTokens)
    : dir_(modelDir), batchSize_(std::max(1, batchSize)), maxTokens_(std::max(2, maxTokens)) {
  prefixes_ = prefixesFor(prefixStyle, modelDir);
  const fs::path tj = fs::path(modelDir) / "tokenizer.json";
  // ruri v1/v2 (and other cl-tohoku-style BERTs) ship vocab.txt for BertJapaneseTokenizer (MeCab).
  const bool mecabWords = BertJapaneseTokenizer::isBertJapaneseFolder(modelDir);
  if (!mecabWords && !fs::is_regular_file(tj))
    throw Error(tj.string(), "missing",
                fs::exists(fs::path(modelDir) / "vocab.txt")
                    ? "this encoder ships vocab.txt, but its tokenizer_config.json does not name BertJapaneseTokenizer "
                      "(MeCab words + WordPiece, the one vocab.txt tokenizer implemented here); a tokenizer.json is needed"
                    : "an encoder folder needs tokenizer.json");
  model_ = loadTextEncoder(modelDir);
  tokenizer_ = Tokenizer::fromFolder(modelDir);
  dim_ = static_cast<int>(model_->config().hiddenSize);
  // XLM-R positions start at padding_idx + 1.
  const int64_t usable = model_->config().maxPositions - (model_->config().modelType == "xlm-roberta" ? model_->config().padTokenId + 1 : 0);
  maxTokens_ = static_cast<int>(std::min<int64_t>(maxTokens_, usable));
  const std::vector<std::string> files = mecabWords ? std::vector<std::string>{"config.json", "tokenizer_config.json", "vocab.txt"}
                                                    : std::vector<std::string>{"config.json", "tokenizer.json"};
  identity_ = "encoder-mean:" + modelFingerprint(modelDir, files) + ":" + prefixes_.style;
  legacyIdentity_ = "encoder-mean:" + modelFingerprint(modelDir, files, false) + ":" + prefixes_.style;
  // The MeCab dictionary lives outside the folder: another one splits words differently.
  if (const std::string seg = tokenizer_->segmenterIdentity(); !seg.empty()) {
    identity_ += ":" + seg;
    legacyIdentity_ += ":" + seg;
  }
}

EncoderEmbedder::~EncoderEmbedder() = default;

std::string EncoderEmbedder::spec() const {
  return "encoder[" + prefixes_.style + "]:" + fs::absolute(dir_).lexically_normal().string();
}

std::vector<int64_t> EncoderEmbedder::tokenIds(const std::string& text) const {
  const auto t = tokenizer_->encode(text, true);
  std::vector<int64_t> ids(t.begin(), t.end());
  if (ids.size() > static_cast<size_t>(maxTokens_)) {  // keep the closing special token
    const bool closes = tokenizer_->addsEos();
    const int64_t last = ids.back();
    ids.resize(static_cast<size_t>(maxTokens_));
    if (closes) ids.back() = last;
  }
  return ids;
}

std::vector<float> EncoderEmbedder::embed(const std::vector<std::string>& texts, const EmbedProgress& progress) const {
  std::vector<std::string> prefixed;
  prefixed.reserve(texts.size());
  for (const auto& t : texts) prefixed.push_back(prefixes_.passage + t);
  return embedRaw(prefixed, progress);
}

std::vector<float> EncoderEmbedder::embedQuery(const std::string& query) const { return embedRaw({prefixes_.query + query}); }

std::vector<float> EncoderEmbedder::embedRaw(const std::vector<std::string>& texts, const EmbedProgress& progress) const {
  std::vector<std::vector<int64_t>> ids(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) ids[i] = tokenIds(texts[i]);
  // Length-sorted batches waste little on padding.
  std::vector<size_t> order(texts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ids[a].size() < ids[b].size(); });
  std::vector<float> out(texts.size() * static_cast<size_t>(dim_), 0.f);
  const int64_t pad = model_->config().padTokenId;
  at::NoGradGuard noGrad;
  for (size_t s = 0; s < order.size(); s += static_cast<size_t>(batchSize_)) {
    const size_t e = std::min(order.size(), s + static_cast<size_t>(batchSize_));
    const int64_t B = static_cast<int64_t>(e - s), T = std::max<int64_t>(1, static_cast<int64_t>(ids[order[e - 1]].size()));
    std::vector<int64_t> idv(static_cast<size_t>(B * T), pad), maskv(static_cast<size_t>(B * T), 0);
    for (int64_t r = 0; r < B; ++r) {
      const auto& row = ids[order[s + static_cast<size_t>(r)]];
      for (size_t t = 0; t < row.size(); ++t) {
        idv[static_cast<size_t>(r * T) + t] = row[t];
        maskv[static_cast<size_t>(r * T) + t] = 1;
      }
    }
    at::Tensor idt = at::tensor(idv, at::kLong).view({B, T});                  // [B, T]
    at::Tensor mask = at::tensor(maskv, at::kLong).view({B, T});               // [B, T]
    at::Tensor h = model_->forward(idt, mask);                                 // [B, T, D] fp32
    at::Tensor m = mask.to(at::kFloat).unsqueeze(-1);                          // [B, T, 1]
    at::Tensor mean = (h * m).sum(1) / m.sum(1).clamp_min(1.0);                // [B, D]
    mean = (mean / mean.norm(2, -1, true).clamp_min(1e-12)).contiguous().cpu();  // unit rows
    const float* p = mean.data_ptr<float>();
    for (int64_t r = 0; r < B; ++r)
      std::copy(p + r * dim_, p + (r + 1) * dim_,
                out.begin() + static_cast<std::ptrdiff_t>(order[s + static_cast<size_t>(r)] * static_cast<size_t>(dim_)));
    if (progress) progress(e, order.size());
  }
  return out;
}

std::string embedderFolder(const std::string& spec) {
  if (spec.rfind("decoder:", 0) == 0) return spec.substr(8);
  if (spec.rfind("encoder:", 0) == 0) return spec.substr(8);
  if (spec.rfind("encoder[", 0) == 0) {
    const size_t close = spec.find("]:");
    if (close != std::string::npos) return spec.substr(close + 2);
  }
  return spec;
}

std::unique_ptr<Embedder> chooseEmbedder(const std::string& spec, const std::string& prefixStyle, const std::string& recorded) {
  if (!spec.empty()) return openEmbedder(spec, prefixStyle);
  if (recorded.empty() || !std::filesystem::exists(embedderFolder(recorded))) return nullptr;
  return openEmbedder(recorded, "auto");
}

std::unique_ptr<Embedder> openEmbedder(const std::string& spec, const std::string& prefixStyle) {
  std::string style = prefixStyle;
  if (spec.rfind("encoder[", 0) == 0) {
    const size_t close = spec.find("]:");
    if (close == std::string::npos) throw Error(spec, "malformed embedder spec", "encoder[STYLE]:DIR");
    if (prefixStyle == "auto") style = spec.substr(8, close - 8);
  }
  const std::string dir = embedderFolder(spec);
  if (!fs::is_directory(dir)) throw Error(dir, "embedder model folder not found");
  bool encoder = spec.rfind("encoder", 0) == 0;
  if (spec.rfind("decoder:", 0) != 0 && !encoder) {
    try {
      const auto j = nlohmann::json::parse(readText(fs::path(dir) / "config.json"));
      const std::string mt = j.value("model_type", std::string());
      encoder = mt == "bert" || mt == "xlm-roberta" || mt == "modernbert";
    } catch (const nlohmann::json::exception&) {
      // the loaders below name the bad config
    }
  }
  if (encoder) return std::make_unique<EncoderEmbedder>(dir, style);
  return std::make_unique<DecoderEmbedder>(dir);
}

}  // namespace kh::retrieval
