// Building and formatting the inspect report (see inspect.h).
#include "core/model/inspect.h"

#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>

#include "core/model/memory.h"
#include "core/text/tokenizer.h"

namespace kh {

using nlohmann::ordered_json;

static std::string humanCount(uint64_t n) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(2);
  if (n >= 1000000000ull) o << n / 1e9 << " B";
  else if (n >= 1000000ull) o << n / 1e6 << " M";
  else if (n >= 1000ull) o << n / 1e3 << " K";
  else o << n;
  return o.str();
}

ordered_json inspectModel(const ModelFolder& m, const InspectOptions& opt) {
  const ModelConfig& c = m.config;
  ordered_json r;
  r["path"] = std::filesystem::absolute(m.dir).lexically_normal().string();
  r["family"] = c.family;
  r["family_description"] = m.family->description;
  r["architecture"] = c.architecture;
  r["model_type"] = c.modelType;
  r["parameters"] = m.weights->parameterCount();

  std::map<std::string, uint64_t> dtypeCount, dtypeParams;
  for (const auto& n : m.weights->names()) {
    const auto& e = m.weights->entry(n);
    dtypeCount[st::dtypeName(e.dtype)] += 1;
    dtypeParams[st::dtypeName(e.dtype)] += e.numel();
  }
  ordered_json dts = ordered_json::object();
  for (const auto& [k, v] : dtypeCount) dts[k] = {{"tensors", v}, {"parameters", dtypeParams[k]}};
  r["dtypes"] = dts;
  r["config_dtype"] = c.torchDtype;
  r["size_on_disk"] = m.weights->bytesOnDisk();
  ordered_json files = ordered_json::array();
  for (const auto& f : m.weights->files()) files.push_back(std::filesystem::path(f->path()).filename().string());
  r["weight_files"] = files;
  r["tensor_count"] = m.weights->count();

  r["layers"] = c.numLayers;
  r["hidden_size"] = c.hiddenSize;
  r["intermediate_size"] = c.intermediateSize;
  r["attention_heads"] = c.numHeads;
  r["kv_heads"] = c.numKvHeads;
  r["head_dim"] = c.headDim;
  r["vocab_size"] = c.vocabSize;
  r["max_positions"] = c.maxPositions;
  r["position_encoding"] = c.learnedPositions ? "learned" : "rope";
  if (!c.learnedPositions) r["rope_theta"] = c.ropeTheta;
  if (!c.ropeScaling.type.empty()) r["rope_scaling"] = c.ropeScaling.raw;
  r["activation"] = c.activation;
  r["norm"] = c.norm == NormKind::RMSNorm ? (c.normAddsOne ? "rmsnorm(1+w)" : "rmsnorm") : "layernorm";
  r["norm_eps"] = c.normEps;
  r["tied_embeddings"] = c.tieWordEmbeddings;
  ordered_json sliding = ordered_json::array();
  for (size_t i = 0; i < c.layerWindow.size(); ++i)
    if (c.layerWindow[i] > 0) sliding.push_back({{"layer", i}, {"window", c.layerWindow[i]}});
  r["sliding_window_layers"] = sliding;
  if (c.attnLogitSoftcap > 0) r["attn_logit_softcap"] = c.attnLogitSoftcap;
  if (c.finalLogitSoftcap > 0) r["final_logit_softcap"] = c.finalLogitSoftcap;
  r["attention_scale"] = c.attnScale;

  // Tokenizer.
  ordered_json tj;
  std::string desc;
  TokenizerKind kind = Tokenizer::detect(m.dir, &desc);
  tj["kind"] = kind == TokenizerKind::SentencePiece ? "sentencepiece"
               : kind == TokenizerKind::HfTokenizerJson ? "tokenizer.json"
               : kind == TokenizerKind::BertJapanese    ? "bert-japanese (vocab.txt + MeCab)"
                                                        : "none";
  tj["description"] = desc;
  tj["files"] = m.tokenizerFiles;
  if (!m.tokenizer && kind != TokenizerKind::None) tj["error"] = m.tokenizerError;
  if (m.tokenizer) {
    const auto& tok = m.tokenizer;
    tj["description"] = tok->description();
    tj["vocab_size"] = tok->vocabSize();
    ordered_json special = ordered_json::object();
    auto put = [&](const char* k, const std::optional<int>& id, const std::string& text) {
      if (id) special[k] = {{"id", *id}, {"token", text}};
    };
    put("bos", tok->bosId(), tok->bosToken());
    put("eos", tok->eosId(), tok->eosToken());
    put("pad", tok->padId(), tok->padToken());
    put("unk", tok->unkId(), tok->unkToken());
    tj["special"] = special;
    ordered_json added = ordered_json::array();
    for (const auto& a : tok->addedTokens()) added.push_back({{"id", a.id}, {"token", a.content}, {"special", a.special}});
    tj["added_tokens"] = added;
    tj["adds_bos"] = tok->addsBos();
    tj["adds_eos"] = tok->addsEos();
    tj["has_chat_template"] = !tok->chatTemplate().empty();
  }
  r["tokenizer"] = tj;

  ordered_json stops = ordered_json::array();
  for (const auto& s : m.stopTokens) stops.push_back({{"id", s.id}, {"token", s.token}, {"source", s.source}});
  r["stop_ids"] = stops;

  ordered_json lay;
  lay["ok"] = m.layout.ok();
  lay["matched"] = m.layout.matched;
  lay["missing"] = m.layout.missing;
  lay["unexpected"] = m.layout.unexpected;
  lay["misshaped"] = m.layout.misshaped;
  lay["ignored"] = m.layout.ignored;
  r["layout"] = lay;

  // Memory: the weights' stored dtype is the most common one by parameter count.
  st::DType stored = st::DType::BF16;
  uint64_t best = 0;
  for (const auto& [k, v] : dtypeParams)
    if (v > best) {
      best = v;
      stored = *st::parseDType(k);
    }
  ordered_json mem = ordered_json::array();
  const uint64_t params = m.weights->parameterCount();
  struct Row {
    DeviceKind dev;
    st::DType hold;
    const char* label;
  };
  const Row rows[] = {{DeviceKind::CPU, computeDtype(stored, DeviceKind::CPU), "stored"},
                      {DeviceKind::CPU, st::DType::BF16, "bf16"},
                      {DeviceKind::CUDA, computeDtype(stored, DeviceKind::CUDA), "stored"},
                      {DeviceKind::CUDA, st::DType::BF16, "bf16"}};
  for (const auto& row : rows) {
    RunMemory e = estimateRunMemory(c, params, row.hold, row.dev, opt.contextTokens);
    mem.push_back({{"device", row.dev == DeviceKind::CPU ? "cpu" : "cuda"}, {"as", row.label},
                   {"dtype", st::dtypeName(row.hold)}, {"context_tokens", e.contextTokens},
                   {"weights", e.weights}, {"kv_cache", e.kvCache}, {"activations", e.activations},
                   {"overhead", e.overhead}, {"total", e.total()}});
  }
  r["memory"] = mem;

  if (opt.tensors) {
    ordered_json ts = ordered_json::array();
    for (const auto& n : m.weights->names()) {
      const auto& e = m.weights->entry(n);
      ts.push_back({{"name", n}, {"dtype", st::dtypeName(e.dtype)}, {"shape", e.shape},
                    {"file", std::filesystem::path(m.weights->fileOf(n).path()).filename().string()}});
    }
    r["tensors"] = ts;
  }
  return r;
}

std::string formatInspectReport(const ordered_json& r) {
  std::ostringstream o;
  auto line = [&](const char* label, const std::string& value) { o << std::left << std::setw(15) << label << value << "\n"; };
  line("Model", r["path"].get<std::string>());
  line("Architecture", r["architecture"].get<std::string>() + " (" + r["family_description"].get<std::string>() + ")");
  const uint64_t params = r["parameters"];
  line("Parameters", humanCount(params) + " (" + std::to_string(params) + ")");
  std::string dt;
  for (auto it = r["dtypes"].begin(); it != r["dtypes"].end(); ++it)
    dt += (dt.empty() ? "" : ", ") + it.key() + " x" + std::to_string(it.value()["tensors"].get<uint64_t>());
  if (!r["config_dtype"].get<std::string>().empty()) dt += "  (config says " + r["config_dtype"].get<std::string>() + ")";
  line("Dtypes", dt);
  line("Size on disk", formatBytes(r["size_on_disk"]) + " in " + std::to_string(r["weight_files"].size()) + " file(s), " +
                           std::to_string(r["tensor_count"].get<uint64_t>()) + " tensors");
  std::string layers = std::to_string(r["layers"].get<int64_t>());
  if (!r["sliding_window_layers"].empty()) {
    layers += " (sliding window " + std::to_string(r["sliding_window_layers"][0]["window"].get<int64_t>()) + " on " +
              std::to_string(r["sliding_window_layers"].size()) + " layers, first " +
              std::to_string(r["sliding_window_layers"][0]["layer"].get<int64_t>()) + ")";
  }
  line("Layers", layers);
  line("Hidden size", std::to_string(r["hidden_size"].get<int64_t>()) + ", intermediate " +
                          std::to_string(r["intermediate_size"].get<int64_t>()) + ", " + r["activation"].get<std::string>() +
                          ", " + r["norm"].get<std::string>());
  line("Heads", std::to_string(r["attention_heads"].get<int64_t>()) + " query, " + std::to_string(r["kv_heads"].get<int64_t>()) +
                    " key/value, head dim " + std::to_string(r["head_dim"].get<int64_t>()));
  line("Vocab", std::to_string(r["vocab_size"].get<int64_t>()));
  std::ostringstream pos;
  pos << r["max_positions"].get<int64_t>() << ", " << r["position_encoding"].get<std::string>();
  if (r.contains("rope_theta")) pos << " (theta " << r["rope_theta"].get<double>() << ")";
  line("Positions", pos.str());
  line("Embeddings", r["tied_embeddings"].get<bool>() ? "tied (output head shares the input embedding)" : "untied (separate lm_head)");
  const auto& t = r["tokenizer"];
  std::string tokLine = t["description"].get<std::string>();
  if (tokLine.empty()) tokLine = t["kind"].get<std::string>();
  if (t.contains("error")) tokLine += "  (cannot load: " + t["error"].get<std::string>() + ")";
  line("Tokenizer", tokLine);
  if (t.contains("special")) {
    std::string sp;
    for (auto it = t["special"].begin(); it != t["special"].end(); ++it)
      sp += (sp.empty() ? "" : ", ") + it.key() + " " + it.value()["token"].get<std::string>() + " (" +
            std::to_string(it.value()["id"].get<int>()) + ")";
    line("Special tokens", sp.empty() ? "(none)" : sp);
    std::string added;
    for (const auto& a : t["added_tokens"]) added += (added.empty() ? "" : ", ") + a["token"].get<std::string>();
    if (!added.empty()) line("Added tokens", added);
  }
  std::string stops;
  for (const auto& s : r["stop_ids"])
    stops += (stops.empty() ? "" : ", ") + std::to_string(s["id"].get<int>()) +
             (s["token"].get<std::string>().empty() ? "" : " " + s["token"].get<std::string>()) + " [" +
             s["source"].get<std::string>() + "]";
  line("Stop ids", stops.empty() ? "(none: generation would only stop at the length limit)" : stops);
  const auto& lay = r["layout"];
  if (lay["ok"].get<bool>()) {
    line("Layout", "matches the " + r["architecture"].get<std::string>() + " layout (" +
                       std::to_string(lay["matched"].get<size_t>()) + " tensors)");
  } else {
    line("Layout", "DOES NOT MATCH the " + r["architecture"].get<std::string>() + " layout");
    for (const auto& n : lay["missing"]) o << "  missing     " << n.get<std::string>() << "\n";
    for (const auto& n : lay["unexpected"]) o << "  unexpected  " << n.get<std::string>() << "\n";
    for (const auto& n : lay["misshaped"]) o << "  mis-shaped  " << n.get<std::string>() << "\n";
  }
  const auto& mem = r["memory"];
  o << "Memory to run (batch 1, " << mem[0]["context_tokens"].get<int64_t>() << "-token context):\n";
  o << "  device  dtype    weights      KV cache     activations  total\n";
  for (const auto& row : mem) {
    o << "  " << std::left << std::setw(8) << row["device"].get<std::string>() << std::setw(9)
      << row["dtype"].get<std::string>() << std::setw(13) << formatBytes(row["weights"]) << std::setw(13)
      << formatBytes(row["kv_cache"]) << std::setw(13) << formatBytes(row["activations"])
      << formatBytes(row["total"]) << (row["as"] == "stored" ? "  (as stored)" : "") << "\n";
  }
  if (r.contains("tensors")) {
    o << "Tensors:\n";
    for (const auto& ten : r["tensors"]) {
      std::string shape = "[";
      for (size_t i = 0; i < ten["shape"].size(); ++i) shape += (i ? ", " : "") + std::to_string(ten["shape"][i].get<int64_t>());
      shape += "]";
      o << "  " << std::left << std::setw(56) << ten["name"].get<std::string>() << std::setw(6) << ten["dtype"].get<std::string>()
        << std::setw(18) << shape << ten["file"].get<std::string>() << "\n";
    }
  }
  return o.str();
}

}  // namespace kh
