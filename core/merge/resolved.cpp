// A recipe resolved against its model folders, per-tensor parameters and inputs (see resolved.h).
#include "core/merge/resolved.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_load.h"
#include "core/text/tokenizer.h"

namespace kh::merge::detail {

namespace {

st::DType dtypeFromName(const std::string& n, const std::string& where) {
  if (n == "bfloat16") return st::DType::BF16;
  if (n == "float16") return st::DType::F16;
  if (n == "float32") return st::DType::F32;
  throw Error(where, "dtype '" + n + "' is not one of bfloat16, float16, float32");
}

}  // namespace

namespace {
// Where the layer index sits in a tensor name ("model.layers.12.", "transformer.h.3."): [first, end)
// of its digits, or first == end when the name is outside the layers.
std::pair<size_t, size_t> layerDigits(const std::string& name) {
  for (const char* key : {"layers.", ".h."}) {
    size_t p = name.find(key);
    if (p == std::string::npos) continue;
    p += std::strlen(key);
    size_t e = p;
    while (e < name.size() && std::isdigit(static_cast<unsigned char>(name[e]))) ++e;
    if (e > p && e < name.size() && name[e] == '.') return {p, e};
  }
  return {0, 0};
}
}  // namespace

// Layer index of a tensor name ("model.layers.12.", "transformer.h.3."), -1 outside the layers.
int64_t layerOf(const std::string& name) {
  const auto [p, e] = layerDigits(name);
  return e > p ? std::stoll(name.substr(p, e - p)) : -1;
}

// Tensors outside the layers that sit after them (final norm, head) take a gradient's last value.
bool isLate(const std::string& name) { return name.find("norm") != std::string::npos || name.find("lm_head") != std::string::npos || name.find("ln_f") != std::string::npos; }

bool isVocabTensor(const std::string& name) {
  return name == "model.embed_tokens.weight" || name == "lm_head.weight" || name == "transformer.wte.weight";
}

namespace {

namespace fs = std::filesystem;

// `name` with its layer index replaced by `layer` (the same two forms layerOf() reads).
std::string withLayer(const std::string& name, int64_t layer) {
  const auto [p, e] = layerDigits(name);
  KH_ASSERT(e > p, "withLayer on a tensor outside the layers: " + name);
  return name.substr(0, p) + std::to_string(layer) + name.substr(e);
}

bool samePath(const std::string& a, const std::string& b) {
  return a == b || fs::path(a).lexically_normal() == fs::path(b).lexically_normal();
}

// Opens each model folder once; `where` names the recipe entry in errors.
struct FolderSet {
  Resolved& x;
  std::map<std::string, int> index;
  int open(const std::string& path, const std::string& where) {
    const std::string key = fs::path(path).lexically_normal().string();
    auto it = index.find(key);
    if (it != index.end()) return it->second;
    std::error_code ec;
    if (!fs::is_directory(path, ec)) throw Error(where, "model folder '" + path + "' does not exist");
    x.folders.push_back(ModelFolder::open(path));
    return index[key] = static_cast<int>(x.folders.size()) - 1;
  }
};

// The gradient position of a tensor of a 'models:' recipe: its layer over the model's layers;
// outside the layers, 0 for the embeddings and 1 for what follows the layers. mergekit turns a
// 'models:' recipe into one slice over every layer (plan.py normalize_config), and plan_slice
// evaluates a one-layer slice at t = 1: so does a one-layer model here.
double modelsT(const std::string& name, int64_t layers) {
  const int64_t layer = layerOf(name);
  if (layer < 0) return isLate(name) ? 1.0 : 0.0;
  return layers > 1 ? static_cast<double>(layer) / static_cast<double>(layers - 1) : 1.0;
}

// Output tensor shapes must equal every input's; vocab tensors may differ in rows (cropped or
// padded to the output's).
void checkShapes(Resolved& x, const std::string& outName, const std::vector<int64_t>& shape, const Sources& s) {
  std::vector<Input> all = s.others;
  if (s.hasBase()) all.insert(all.begin(), s.base);
  for (const auto& in : all) {
    const ModelFolder& f = x.folder(in);
    if (!f.weights->has(in.tensor))
      throw Error(f.dir, "has no tensor '" + in.tensor + "', which the merge needs for '" + outName + "'");
    const auto& have = f.weights->entry(in.tensor).shape;
    if (have == shape) continue;
    const bool vocabOnly = isVocabTensor(outName) && have.size() == 2 && shape.size() == 2 && have[1] == shape[1];
    if (!vocabOnly) {
      std::ostringstream o;
      o << "tensor '" << in.tensor << "' has shape " << c10::IntArrayRef(have) << " but the output's '" << outName
        << "' has " << c10::IntArrayRef(shape) << " (from " << x.refFolder().dir << ")";
      throw Error(f.dir, o.str());
    }
    const std::string note = f.dir + ": " + in.tensor + " has " + std::to_string(have[0]) + " rows, cropped/padded to " +
                             std::to_string(shape[0]) + " (padding rows take " + x.refFolder().dir + "'s values)";
    if (std::find(x.notes.begin(), x.notes.end(), note) == x.notes.end()) x.notes.push_back(note);
  }
}

void checkArchitectures(const Resolved& x) {
  const ModelFolder& ref = x.refFolder();
  for (const auto& f : x.folders) {
    if (f.config.architecture != ref.config.architecture)
      throw Error(f.dir, "architecture " + f.config.architecture + " differs from " + ref.dir + "'s " + ref.config.architecture,
                  "merge models of one architecture");
    f.requireExactLayout();
  }
}

void resolveModels(const Recipe& r, Resolved& x) {
  FolderSet fset{x, {}};
  int base = -1;
  std::vector<Input> others;
  if (!r.baseModel.empty()) base = fset.open(r.baseModel, r.path + ": base_model");
  int baseEntry = -1;  // the base's entry in the models list, if it has one
  for (const auto& m : r.models) {
    const int i = fset.open(m.model, r.path + ":" + std::to_string(m.line));
    if (i == base) {  // mergekit lets the base appear in the list
      if (baseEntry < 0) baseEntry = static_cast<int>(&m - r.models.data());
      continue;
    }
    others.push_back({i, "", static_cast<int>(&m - r.models.data())});
  }
  if (r.method == Method::Linear && base >= 0) {
    // linear with a base_model: mergekit (plan.py normalize_config) adds the base to the inputs,
    // and linear.py weighs every input, so the base takes part like any model, with its own
    // entry's parameters when the models list names it.
    others.insert(others.begin(), Input{base, "", baseEntry});
  }
  if (r.method == Method::Passthrough && others.size() != 1)
    throw Error(r.path, "passthrough takes exactly one model, got " + std::to_string(others.size()));
  if (others.empty()) throw Error(r.path, "lists only the base model: nothing to merge onto it", "add the models to merge");
  x.ref = base >= 0 ? base : others.front().folder;
  checkArchitectures(x);
  const ModelFolder& ref = x.refFolder();
  for (const auto& e : ref.family->layout(ref.config)) {
    if (!ref.weights->has(e.name)) continue;
    Sources s;
    if (base >= 0) s.base = {base, e.name, -1};
    for (auto o : others) {
      o.tensor = e.name;
      s.others.push_back(o);
    }
    s.t = modelsT(e.name, ref.config.numLayers);
    const auto shape = ref.weights->entry(e.name).shape;
    checkShapes(x, e.name, shape, s);
    // Every folder must hold every tensor (also one the method does not read, e.g. a slerp base).
    for (const auto& f : x.folders)
      if (!f.weights->has(e.name)) throw Error(f.dir, "has no tensor '" + e.name + "', which " + ref.dir + " has");
    x.outputs.push_back({e.name, shape});
    x.sources.push_back(std::move(s));
  }
  x.config = ref.config.raw;
}

// mergekit's slices (MergePlanner._plan / plan_slice): the output's layers are the slices' layers
// in order, renumbered from 0; each is the merge method over the slice's sources' corresponding
// layers, with gradients evaluated at t = index within the slice / (slice layers - 1) (t = 1 for a
// one-layer slice, as mergekit). Tensors outside the layers are merged like mergekit too: the
// embeddings over the first slice's sources (t = 0), the final norm and lm_head over the last
// slice's (t = 1), each with that slice's base and parameters. So a passthrough frankenmerge of
// A's first layers and B's last takes the embeddings from A and the norm and head from B. (The
// config, tokenizer and vocab size come from the recipe's base_model, else the first slice's
// first source: mergekit's out_model_config.)
void resolveSlices(const Recipe& r, Resolved& x) {
  FolderSet fset{x, {}};
  auto sliceWhere = [&](size_t si) { return r.path + ": slice " + std::to_string(si + 1); };
  for (size_t si = 0; si < r.slices.size(); ++si)
    if (r.slices[si].sources.empty())
      throw Error(sliceWhere(si), "has no sources", "give every slice at least one source (model and layer_range)");
  x.ref = !r.baseModel.empty() ? fset.open(r.baseModel, r.path + ": base_model")
                               : fset.open(r.slices[0].sources[0].model, sliceWhere(0) + " source 1");

  struct SliceInputs {
    std::vector<int> folder;     // per source
    int base = -1;               // source index of the base, -1 = none
    std::vector<int> others;     // source indices merged onto it
    int64_t layers = 0, first = 0;  // its length, its first output layer
  };
  std::vector<SliceInputs> plan(r.slices.size());
  int64_t total = 0;
  for (size_t si = 0; si < r.slices.size(); ++si) {
    const Slice& sl = r.slices[si];
    const std::string sw = sliceWhere(si);
    SliceInputs& p = plan[si];
    if (r.method == Method::Passthrough && sl.sources.size() > 1)
      throw Error(sw, "passthrough takes one source per slice, got " + std::to_string(sl.sources.size()),
                  "stack the layer ranges as separate slices, or choose a merge method");
    for (size_t k = 0; k < sl.sources.size(); ++k) {
      const SliceSource& src = sl.sources[k];
      const int f = fset.open(src.model, sw + " source " + std::to_string(k + 1));
      p.folder.push_back(f);
      const int64_t n = x.folders[static_cast<size_t>(f)].config.numLayers;
      if (src.layerEnd > n)
        throw Error(sw, "layer_range [" + std::to_string(src.layerBegin) + ", " + std::to_string(src.layerEnd) + ") of " +
                            src.model + " is outside its " + std::to_string(n) + " layers",
                    "layer_range is [begin, end) with end <= " + std::to_string(n));
      const SliceSource& s0 = sl.sources[0];
      if (src.layerEnd - src.layerBegin != s0.layerEnd - s0.layerBegin)
        throw Error(sw, "its sources span different numbers of layers: " + s0.model + " [" + std::to_string(s0.layerBegin) +
                            ", " + std::to_string(s0.layerEnd) + ") has " + std::to_string(s0.layerEnd - s0.layerBegin) +
                            ", " + src.model + " [" + std::to_string(src.layerBegin) + ", " + std::to_string(src.layerEnd) +
                            ") has " + std::to_string(src.layerEnd - src.layerBegin),
                    "every source of a slice must span the same number of layers");
    }
    // The base (the slice's, else the recipe's) is one of the sources, as in mergekit, which reads
    // its layers from that source's layer_range.
    const std::string& bm = !sl.baseModel.empty() ? sl.baseModel : r.baseModel;
    if (r.method != Method::Passthrough && !bm.empty())
      for (size_t k = 0; k < sl.sources.size() && p.base < 0; ++k)
        if (samePath(sl.sources[k].model, bm)) p.base = static_cast<int>(k);
    if (p.base < 0 && needsBase(r.method))
      throw Error(sw, bm.empty() ? std::string(methodName(r.method)) + " needs a base_model (in the recipe or the slice)"
                                 : "its base model " + bm + " is not one of its sources",
                  "list the base model as a source of every slice, with the layer_range to use");
    const bool baseTakesPart = r.method == Method::Linear;  // as in a 'models:' recipe
    for (size_t k = 0; k < sl.sources.size(); ++k)
      if (static_cast<int>(k) != p.base || baseTakesPart) p.others.push_back(static_cast<int>(k));
    if (p.others.empty())
      throw Error(sw, "has only its base model as a source: nothing to merge onto it", "add the models to merge as sources");
    p.layers = sl.sources[0].layerEnd - sl.sources[0].layerBegin;
    p.first = total;
    total += p.layers;
  }
  checkArchitectures(x);
  const ModelFolder& ref = x.refFolder();

  // The output config: the ref's with the new layer count.
  nlohmann::json cfg = ref.config.raw;
  bool counted = false;
  for (const char* key : {"num_hidden_layers", "n_layer"})
    if (cfg.contains(key)) {
      cfg[key] = total;
      counted = true;
    }
  if (!counted) throw Error(ref.dir + "/config.json", "has neither num_hidden_layers nor n_layer; cannot set the merged layer count");
  const std::string cfgWhere = "merged config.json";
  ModelConfig oc = ref.family->parse(cfg, cfgWhere);

  // Output layer -> (slice, index within it).
  std::vector<std::pair<size_t, int64_t>> layerMap;
  for (size_t si = 0; si < plan.size(); ++si)
    for (int64_t i = 0; i < plan[si].layers; ++i) layerMap.push_back({si, i});
  auto sourcesOf = [&](size_t si, const std::string& outName, int64_t idx) {
    const SliceInputs& p = plan[si];
    const Slice& sl = r.slices[si];
    auto input = [&](int k) {
      const SliceSource& src = sl.sources[static_cast<size_t>(k)];
      return Input{p.folder[static_cast<size_t>(k)], idx < 0 ? outName : withLayer(outName, src.layerBegin + idx), k};
    };
    Sources s;
    s.slice = static_cast<int>(si);
    if (p.base >= 0) s.base = input(p.base);
    for (int k : p.others) s.others.push_back(input(k));
    return s;
  };

  // Attention windows per output layer: each keeps its source layer's (sliding or full).
  std::vector<int64_t> want(static_cast<size_t>(total), 0);
  bool moved = false;
  for (int64_t L = 0; L < total; ++L) {
    const auto [si, idx] = layerMap[static_cast<size_t>(L)];
    const Slice& sl = r.slices[si];
    auto windowOf = [&](size_t k) {
      const auto& w = x.folders[static_cast<size_t>(plan[si].folder[k])].config.layerWindow;
      const int64_t layer = sl.sources[k].layerBegin + idx;
      return w.empty() ? int64_t{0} : w[static_cast<size_t>(layer)];
    };
    want[static_cast<size_t>(L)] = windowOf(0);
    if (sl.sources[0].layerBegin + idx != L) moved = true;
    for (size_t k = 1; k < sl.sources.size(); ++k)
      if (windowOf(k) != windowOf(0))
        throw Error(sliceWhere(si), "layer " + std::to_string(sl.sources[0].layerBegin + idx) + " of " + sl.sources[0].model +
                                        " has attention window " + std::to_string(windowOf(0)) + " but layer " +
                                        std::to_string(sl.sources[k].layerBegin + idx) + " of " + sl.sources[k].model +
                                        " has " + std::to_string(windowOf(k)) + " (0 = full attention)",
                    "merge layers of the same attention kind: shift the layer_range by one");
  }
  auto windows = [&](const ModelConfig& c) {
    return c.layerWindow.empty() ? std::vector<int64_t>(static_cast<size_t>(total), 0) : c.layerWindow;
  };
  if (windows(oc) != want) {
    // Gemma2 alternates sliding and full layers by index (Qwen2 slides from max_window_layers on):
    // stacked layers that moved would change kind. layer_types keeps each layer's own.
    nlohmann::json types = nlohmann::json::array();
    for (int64_t w : want) types.push_back(w > 0 ? "sliding_attention" : "full_attention");
    cfg["layer_types"] = types;
    oc = ref.family->parse(cfg, cfgWhere);
    if (windows(oc) != want)
      throw Error(cfgWhere, "the stacked layers' attention windows cannot be expressed in a " + ref.config.family +
                                " config (its layers would change between sliding and full attention, or window size)",
                  "choose layer ranges that keep each layer's attention kind at its position");
    x.notes.push_back("config.json: wrote layer_types so that every stacked layer keeps its own sliding/full attention "
                      "(transformers versions that ignore layer_types would alternate by index instead)");
  }
  if (moved && oc.scaleAttnByInverseLayerIdx)
    x.notes.push_back("config.json: scale_attn_by_inverse_layer_idx is on, so layers that moved scale their attention by "
                      "their new index");
  x.config = cfg;

  for (size_t si = 0; si < plan.size(); ++si) {
    std::ostringstream o;
    o << "slice " << si + 1 << ": output layers " << plan[si].first << "-" << plan[si].first + plan[si].layers - 1 << " from";
    for (const auto& src : r.slices[si].sources) o << " " << src.model << " [" << src.layerBegin << ", " << src.layerEnd << ")";
    x.notes.push_back(o.str());
  }
  x.notes.push_back("slices: " + std::to_string(total) + " output layers; embeddings merged over slice 1's sources, final norm and "
                    "lm_head over slice " + std::to_string(plan.size()) + "'s (as mergekit)");

  for (const auto& e : ref.family->layout(oc)) {
    const int64_t L = layerOf(e.name);
    Sources s;
    std::vector<int64_t> shape = e.shape;
    if (L >= 0) {
      const auto [si, idx] = layerMap.at(static_cast<size_t>(L));
      s = sourcesOf(si, e.name, idx);
      s.t = plan[si].layers > 1 ? static_cast<double>(idx) / static_cast<double>(plan[si].layers - 1) : 1.0;
    } else {
      const bool late = isLate(e.name);
      s = sourcesOf(late ? plan.size() - 1 : 0, e.name, -1);
      s.t = late ? 1.0 : 0.0;
      if (ref.weights->has(e.name)) shape = ref.weights->entry(e.name).shape;
    }
    const Input& primary = s.hasBase() ? s.base : s.others.front();
    if (!x.folder(primary).weights->has(primary.tensor)) {
      if (e.optional) continue;  // e.g. a tied lm_head the checkpoint does not store
      throw Error(x.folder(primary).dir, "has no tensor '" + primary.tensor + "', which the merge needs for '" + e.name + "'");
    }
    checkShapes(x, e.name, shape, s);
    x.outputs.push_back({e.name, shape});
    x.sources.push_back(std::move(s));
  }
}

// Which folder's tokenizer the output gets. union: only when every model's tokenizer is the same
// vocabulary (then the union is that vocabulary); otherwise a clear refusal.
// How two folders' vocabularies differ ("" when they are the same: sizes, every piece, bos/eos/pad).
std::string vocabularyDifference(const ModelFolder& a, const ModelFolder& b) {
  auto describe = [](const ModelFolder& f) { return f.tokenizer ? f.tokenizer->description() : "no tokenizer (" + f.tokenizerError + ")"; };
  if (!a.tokenizer || !b.tokenizer) return a.tokenizer || b.tokenizer ? describe(a) + " vs " + describe(b) : std::string();
  if (a.tokenizer->vocabSize() != b.tokenizer->vocabSize())
    return std::to_string(a.tokenizer->vocabSize()) + " vs " + std::to_string(b.tokenizer->vocabSize()) + " tokens";
  for (int id = 0; id < a.tokenizer->vocabSize(); ++id)
    if (a.tokenizer->idToPiece(id) != b.tokenizer->idToPiece(id))
      return "token " + std::to_string(id) + " is '" + a.tokenizer->idToPiece(id) + "' vs '" + b.tokenizer->idToPiece(id) + "'";
  if (a.tokenizer->bosId() != b.tokenizer->bosId() || a.tokenizer->eosId() != b.tokenizer->eosId() ||
      a.tokenizer->padId() != b.tokenizer->padId())
    return "their bos/eos/pad ids differ";
  return {};
}

// Which folder's tokenizer the output gets. The merged embedding rows are the base's, by token id,
// so the tokenizer must be the base's vocabulary: union only when every model's tokenizer is that
// vocabulary, a model path only when its tokenizer is; mergekit remaps rows by token there
// (tokenizer_permute.py), which is refused here rather than writing a model whose tokenizer does not
// match its embeddings.
void resolveTokenizer(const Recipe& r, Resolved& x) {
  x.tokenizer = x.ref;
  const std::string& ts = r.tokenizerSource;
  if (ts.empty() || ts == "base") return;
  const ModelFolder& a = x.refFolder();
  if (ts == "union") {
    for (const auto& b : x.folders) {
      if (&b == &a) continue;
      const std::string diff = vocabularyDifference(a, b);
      if (!diff.empty())
        throw Error(r.path, "tokenizer_source: union: the tokenizers of " + a.dir + " and " + b.dir + " differ (" + diff +
                                "); kumihimo builds a union only of identical vocabularies",
                    "use tokenizer_source: base (or a model path)");
    }
    x.notes.push_back("tokenizer_source: union: every model has the same vocabulary, so the union is " + a.dir +
                      "'s tokenizer (copied as with base)");
    return;
  }
  for (size_t i = 0; i < x.folders.size(); ++i)
    if (samePath(x.folders[i].dir, ts)) x.tokenizer = static_cast<int>(i);
  if (x.tokenizer == x.ref && !samePath(x.refFolder().dir, ts))
    throw Error(r.path, "tokenizer_source '" + ts + "' is not one of the recipe's models", "use base, union or a model path the recipe merges");
  if (x.tokenizer != x.ref) {
    const std::string diff = vocabularyDifference(a, x.folders[static_cast<size_t>(x.tokenizer)]);
    if (!diff.empty())
      throw Error(r.path, "tokenizer_source '" + ts + "': its vocabulary differs from " + a.dir + "'s (" + diff +
                              "), whose embedding rows the merge keeps; remapping rows by token is not supported",
                  "use tokenizer_source: base, or a model with the base's vocabulary");
  }
}

}  // namespace

namespace {

// mergekit's ConfigReader.parameter: the first level that has the key AND yields a value for this
// tensor (a filter list that matches nothing yields none, and the lookup goes on).
std::optional<double> lookup(const Recipe& r, const std::map<std::string, ParamValue>* model, const Slice* slice,
                             const char* key, const std::string& tensor, double t) {
  for (const auto* level : {model, slice ? &slice->parameters : nullptr, &r.parameters}) {
    if (!level) continue;
    auto it = level->find(key);
    if (it == level->end()) continue;
    if (auto v = it->second.valueAt(tensor, t)) return v;
  }
  return std::nullopt;
}

bool mentions(const Recipe& r, const char* key) {
  auto in = [&](const std::map<std::string, ParamValue>& p) { return p.count(key) > 0; };
  if (in(r.parameters)) return true;
  for (const auto& m : r.models)
    if (in(m.parameters)) return true;
  for (const auto& sl : r.slices) {
    if (in(sl.parameters)) return true;
    for (const auto& src : sl.sources)
      if (in(src.parameters)) return true;
  }
  return false;
}

// Every tensor's parameters checked before anything is read, so that `merge --plan` refuses
// what the merge would refuse: "<recipe>: tensor '<name>': <cause naming the parameter>".
// Required parameters as mergekit's plan_tensor (required=True): slerp's t for every tensor, and
// a weight for every model once the recipe gives any weight (a recipe with no weight at all
// weighs every model 1, where mergekit refuses it).
void validateParameters(const Recipe& r, const Resolved& x) {
  const bool weighted = needsWeight(r.method) && mentions(r, "weight");
  for (size_t i = 0; i < x.outputs.size(); ++i) {
    const auto& [name, shape] = x.outputs[i];
    const Sources& s = x.sources[i];
    const Slice* slice = s.slice >= 0 ? &r.slices.at(static_cast<size_t>(s.slice)) : nullptr;
    const std::string where = r.path + ": tensor '" + name + "'";
    std::vector<std::string> names;
    for (const auto& in : s.others) names.push_back(x.folder(in).dir);
    if (r.method == Method::Slerp && !lookup(r, nullptr, slice, "t", name, s.t))
      throw Error(where, "slerp needs the parameter 't' and none is given for this tensor",
                  "set t at the top level (or for the slice), with an entry without a filter as the default");
    if (weighted)
      for (size_t k = 0; k < s.others.size(); ++k) {
        const Input& in = s.others[k];
        const std::map<std::string, ParamValue>* own = nullptr;
        if (in.entry >= 0)
          own = slice ? &slice->sources.at(static_cast<size_t>(in.entry)).parameters
                      : &r.models.at(static_cast<size_t>(in.entry)).parameters;
        if (!lookup(r, own, slice, "weight", in.tensor, s.t))
          throw Error(where, names[k] + " has no 'weight' for this tensor" +
                                 (s.hasBase() && in.folder == s.base.folder
                                      ? std::string(" (linear merges the base_model like any other model, as mergekit does)")
                                      : std::string()),
                      "give it a weight (an entry without a filter is the default), or a top-level weight");
      }
    const TensorParams p = tensorParams(r, x, i, 0);
    try {
      validateMerge(r.method, s.hasBase(), s.others.size(), shape, p.models, p.method, names);
    } catch (const Error& e) {
      throw Error(where, e.cause(), e.hint());
    }
  }
}

}  // namespace

Resolved resolve(const Recipe& r) {
  Resolved x;
  if (r.slices.empty()) resolveModels(r, x);
  else resolveSlices(r, x);
  if (x.outputs.empty()) throw Error(r.path, "the merge has no tensors to write");
  const std::string od = !r.outDtype.empty() ? r.outDtype : r.dtype;
  if (!od.empty()) {
    x.outDtype = dtypeFromName(od, r.path);
  } else {
    const Sources& s = x.sources.front();
    const Input& primary = s.hasBase() ? s.base : s.others.front();
    x.outDtype = x.folder(primary).weights->entry(primary.tensor).dtype;
  }
  resolveTokenizer(r, x);
  validateParameters(r, x);
  return x;
}


ModelParams paramsFor(const Recipe& r, const std::map<std::string, ParamValue>* model, const Slice* slice,
                      const std::string& tensor, double t) {
  ModelParams mp;
  auto get = [&](const char* key, double& out) {
    if (auto v = lookup(r, model, slice, key, tensor, t)) out = *v;
  };
  get("weight", mp.weight);
  get("density", mp.density);
  get("gamma", mp.gamma);
  get("epsilon", mp.epsilon);
  get("scale", mp.scale);
  return mp;
}

MethodParams methodParamsFor(const Recipe& r, const Slice* slice, const std::string& tensor, double t, uint64_t seed) {
  MethodParams m;
  auto val = [&](const char* key) { return lookup(r, nullptr, slice, key, tensor, t); };
  if (auto v = val("normalize")) m.normalize = *v != 0.0;
  if (auto v = val("rescale")) m.rescale = *v != 0.0;
  if (auto v = val("lambda")) m.lambda = *v;
  if (auto v = val("t")) m.t = *v;
  if (auto v = val("nuslerp_flatten")) m.nuslerpFlatten = *v != 0.0;
  if (auto v = val("nuslerp_row_wise")) m.nuslerpRowWise = *v != 0.0;
  if (auto v = val("filter_wise")) m.filterWise = *v != 0.0;
  m.seed = seed;
  m.tensorName = tensor;
  return m;
}

// Rows of a vocab tensor cropped or padded to `rows` (padding from `fill`, the base's rows).
at::Tensor fitRows(const at::Tensor& t, int64_t rows, const at::Tensor& fill) {
  if (t.size(0) == rows) return t;
  if (t.size(0) > rows) return t.narrow(0, 0, rows);
  return at::cat({t, fill.narrow(0, t.size(0), rows - t.size(0))}, 0);
}

bool operator==(const TensorParams& a, const TensorParams& b) {
  if (a.models.size() != b.models.size()) return false;
  for (size_t i = 0; i < a.models.size(); ++i) {
    const auto& p = a.models[i];
    const auto& q = b.models[i];
    if (p.weight != q.weight || p.density != q.density || p.gamma != q.gamma || p.epsilon != q.epsilon || p.scale != q.scale)
      return false;
  }
  const auto& m = a.method;
  const auto& n = b.method;
  return m.normalize == n.normalize && m.rescale == n.rescale && m.lambda == n.lambda && m.t == n.t &&
         m.nuslerpFlatten == n.nuslerpFlatten && m.nuslerpRowWise == n.nuslerpRowWise && m.filterWise == n.filterWise &&
         m.seed == n.seed &&
         m.tensorName == n.tensorName;
}

TensorParams tensorParams(const Recipe& r, const Resolved& x, size_t output, uint64_t seed) {
  const Sources& s = x.sources.at(output);
  const Slice* slice = s.slice >= 0 ? &r.slices.at(static_cast<size_t>(s.slice)) : nullptr;
  TensorParams p;
  for (const auto& in : s.others) {
    const std::map<std::string, ParamValue>* own = nullptr;
    if (in.entry >= 0)
      own = slice ? &slice->sources.at(static_cast<size_t>(in.entry)).parameters : &r.models.at(static_cast<size_t>(in.entry)).parameters;
    // Per-model parameters see the input's tensor name, global ones the output's (as mergekit).
    p.models.push_back(paramsFor(r, own, slice, in.tensor, s.t));
  }
  p.method = methodParamsFor(r, slice, x.outputs.at(output).first, s.t, seed);
  return p;
}

namespace {
// Where rows past a shorter vocabulary come from: the ref's tensor (it sets the output's rows).
Input padInput(const Resolved& x, size_t output) {
  const std::string& name = x.outputs[output].first;
  if (x.refFolder().weights->has(name)) return Input{x.ref, name, -1};
  const Sources& s = x.sources[output];
  return s.hasBase() ? s.base : s.others.front();
}
}  // namespace

TensorInputs loadInputs(const Resolved& x, size_t output, c10::Device device) {
  const auto& [name, shape] = x.outputs.at(output);
  const Sources& s = x.sources[output];
  TensorInputs in;
  at::Tensor pad;
  auto load = [&](const Input& i) {
    at::Tensor t = loadTensor(*x.folder(i).weights, i.tensor, at::kFloat, device);
    if (!isVocabTensor(name) || t.size(0) == shape[0]) return t;
    if (!pad.defined()) {
      const Input p = padInput(x, output);
      pad = loadTensor(*x.folder(p).weights, p.tensor, at::kFloat, device);
    }
    return fitRows(t, shape[0], pad);
  };
  if (s.hasBase()) in.base = load(s.base);
  for (const auto& o : s.others) in.others.push_back(load(o));
  return in;
}

RowReader::RowReader(const Resolved& x, size_t output, c10::Device device) : device_(device) {
  const auto& [name, shape] = x.outputs.at(output);
  const Sources& src = x.sources[output];
  if (shape.size() == 1) {
    cols_ = shape[0];
  } else if (shape.size() > 1) {
    rows_ = shape[0];
    for (size_t i = 1; i < shape.size(); ++i) cols_ *= shape[i];
  }
  auto open = [&](const Input& in) {
    Source s;
    const auto& w = *x.folder(in).weights;
    const SafetensorsFile& file = w.fileOf(in.tensor);
    const auto& e = w.entry(in.tensor);
    const int64_t rows = shape.size() > 1 ? e.shape[0] : 1;  // vocab tensors may differ in rows
    s.view = file.tensor(e).reshape({rows, cols_});
    s.map = file.mapping().get();
    s.fileOffset = static_cast<uint64_t>(file.bytes(e) - s.map->data());
    s.rowBytes = static_cast<uint64_t>(cols_) * st::dtypeSize(e.dtype);
    return s;
  };
  if (src.hasBase()) base_ = open(src.base);
  for (const auto& o : src.others) others_.push_back(open(o));
  if (isVocabTensor(name)) pad_ = open(padInput(x, output));
}

at::Tensor RowReader::read(const Source& s, int64_t r0, int64_t r1) const {
  at::Tensor t = s.view.narrow(0, r0, r1 - r0).to(device_, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  s.map->release(s.fileOffset + static_cast<uint64_t>(r0) * s.rowBytes, static_cast<uint64_t>(r1 - r0) * s.rowBytes);
  read_ += static_cast<uint64_t>((r1 - r0) * cols_);
  return t;
}

std::vector<RowReader::ByteRange> RowReader::byteRanges() const {
  std::vector<ByteRange> r;
  auto add = [&](const Source& s) {
    if (s.map) r.push_back({s.map, s.fileOffset, static_cast<uint64_t>(s.view.size(0)) * s.rowBytes});
  };
  add(base_);
  for (const auto& s : others_) add(s);
  add(pad_);
  return r;
}

void RowReader::releaseHeld(const Source& s) const {
  if (s.map && s.heldTo > s.heldFrom)
    s.map->release(s.fileOffset + static_cast<uint64_t>(s.heldFrom) * s.rowBytes,
                   static_cast<uint64_t>(s.heldTo - s.heldFrom) * s.rowBytes);
  s.heldFrom = s.heldTo = 0;
}

RowReader::~RowReader() {
  releaseHeld(base_);
  releaseHeld(pad_);
  for (const auto& s : others_) releaseHeld(s);
}

at::Tensor RowReader::rawRows(int input, int64_t r0, int64_t r1) const {
  if (!device_.is_cpu()) return {};
  KH_ASSERT(input >= 0 || base_.map);
  const Source& s = input < 0 ? base_ : others_.at(static_cast<size_t>(input));
  if (r1 > s.view.size(0)) return {};
  releaseHeld(s);
  s.heldFrom = r0;
  s.heldTo = r1;
  read_ += static_cast<uint64_t>((r1 - r0) * cols_);
  return s.view.narrow(0, r0, r1 - r0);
}

at::Tensor RowReader::rows(int input, int64_t r0, int64_t r1) const {
  KH_ASSERT(input >= 0 || base_.map);
  const Source& s = input < 0 ? base_ : others_.at(static_cast<size_t>(input));
  const int64_t have = s.view.size(0);
  if (r1 <= have) return read(s, r0, r1);
  // Rows past this model's vocabulary take the ref's (the base's) values (mergekit pads to the base).
  KH_ASSERT(pad_.map && pad_.view.size(0) >= r1);
  at::Tensor pad = read(pad_, std::max(r0, have), r1);
  if (r0 >= have) return pad;
  return at::cat({read(s, r0, have), pad}, 0);
}

}  // namespace kh::merge::detail
