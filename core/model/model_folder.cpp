// Opening a model folder and checking its weights against the family layout (model_folder.h).
#include "core/model/model_folder.h"

#include <ATen/core/TensorBody.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/text/tokenizer.h"

namespace kh {

static std::string shapeStr(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

std::string LayoutReport::summary() const {
  std::ostringstream o;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    if (o.tellp() > 0) o << "; ";
    o << v.size() << " " << what << " (";
    for (size_t i = 0; i < std::min<size_t>(3, v.size()); ++i) o << (i ? ", " : "") << v[i];
    if (v.size() > 3) o << ", ...";
    o << ")";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("mis-shaped", misshaped);
  return ok() ? "layout matches" : o.str();
}

LayoutReport checkLayout(const FamilySpec& family, const ModelConfig& config, const CheckpointWeights& weights) {
  LayoutReport r;
  std::set<std::string> expectedNames;
  for (const auto& e : family.layout(config)) {
    expectedNames.insert(e.name);
    if (!weights.has(e.name)) {
      if (!e.optional) r.missing.push_back(e.name);
      continue;
    }
    const auto& have = weights.entry(e.name).shape;
    if (have != e.shape) r.misshaped.push_back(e.name + ": " + shapeStr(have) + ", expected " + shapeStr(e.shape));
    else ++r.matched;
  }
  for (const auto& n : weights.names()) {
    if (expectedNames.count(n)) continue;
    (family.ignorable && family.ignorable(n) ? r.ignored : r.unexpected).push_back(n);
  }
  return r;
}

// End-of-turn tokens of the chat formats Kumihimo knows; generation must stop on them even when
// generation_config.json lists only eos (Gemma's <end_of_turn> 107 vs <eos> 1).
static const char* const kEndOfTurnTokens[] = {"<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>"};

ModelFolder ModelFolder::open(const std::string& dirIn) {
  ModelFolder m;
  m.dir = dirIn;
  while (m.dir.size() > 1 && m.dir.back() == '/') m.dir.pop_back();
  std::error_code ec;
  if (!std::filesystem::is_directory(m.dir, ec)) throw Error(m.dir, "not a folder");
  m.config = loadModelConfig(m.dir);
  m.family = findFamily(m.config.family);
  KH_ASSERT(m.family != nullptr);
  m.generation = loadGenerationConfig(m.dir, m.config);
  m.weights = CheckpointWeights::open(m.dir);
  m.layout = checkLayout(*m.family, m.config, *m.weights);

  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt", "vocab.txt"})
    if (std::filesystem::is_regular_file(m.dir + "/" + f, ec)) m.tokenizerFiles.push_back(f);

  // A tokenizer that cannot be loaded does not stop inspect or merge; commands that need it ask
  // requireTokenizer(), which repeats the reason.
  if (Tokenizer::detect(m.dir) != TokenizerKind::None) {
    try {
      m.tokenizer = Tokenizer::fromFolder(m.dir);
    } catch (const Error& e) {
      m.tokenizerError = e.what();
    }
  } else {
    m.tokenizerError = m.dir + ": no tokenizer (tokenizer.model or tokenizer.json)";
  }
  const std::shared_ptr<Tokenizer>& tok = m.tokenizer;
  auto add = [&](int id, const std::string& source) {
    for (const auto& s : m.stopTokens)
      if (s.id == id) return;
    std::string text;
    if (tok && id >= 0 && id < tok->vocabSize()) text = tok->idToPiece(id);
    m.stopTokens.push_back({id, text, source});
  };
  for (int id : m.generation.eosIds) add(id, m.generation.present ? "generation_config.json" : "config.json");
  for (int id : m.config.eosIds) add(id, "config.json");
  if (tok) {
    if (auto e = tok->eosId()) add(*e, "tokenizer eos_token");
    for (const char* t : kEndOfTurnTokens) {
      int id = tok->pieceToId(t);
      if (id >= 0) add(id, "chat template end of turn");
    }
  }
  return m;
}

std::shared_ptr<Tokenizer> ModelFolder::requireTokenizer() const {
  if (!tokenizer) throw Error(dir, "cannot load the tokenizer: " + tokenizerError);
  return tokenizer;
}

void ModelFolder::requireExactLayout() const {
  if (!layout.ok())
    throw Error(dir, "weights do not match the " + config.architecture + " layout: " + layout.summary());
}

}  // namespace kh
