// Tokenizer for Hugging Face folders with a SentencePiece tokenizer.model, the streaming
// detokenizer, SentencePiece training and the synthetic Japanese corpus. Must never include or
// link sentencepiece (only the dlopen'ed shim touches it) and must never include torch.
#include "core/text/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/text/bert_japanese_tokenizer.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/sp_loader.h"

namespace kh {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD
const std::string kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// ---- UTF-8 -------------------------------------------------------------------------------

enum class Utf8 { Complete, Incomplete, Invalid };

// Strict UTF-8 (shortest form, no surrogates, at most U+10FFFF), as SentencePiece decodes
// byte pieces. At s[pos]: a complete character of *len bytes, a valid but cut-off prefix, or
// bytes that can never become a character.
Utf8 utf8At(std::string_view s, size_t pos, size_t* len) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[pos + i]); };
  unsigned char c = b(0);
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c < 0x80) {
    *len = 1;
    return Utf8::Complete;
  } else if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return Utf8::Invalid;
  }
  size_t have = std::min(need, s.size() - pos);
  for (size_t i = 1; i < have; ++i) {
    unsigned char x = b(i);
    if (i == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return Utf8::Invalid;
  }
  if (have < need) return Utf8::Incomplete;
  *len = need;
  return Utf8::Complete;
}

// Offset of the first byte that does not start a valid character, or npos.
size_t firstInvalidUtf8(std::string_view s) {
  size_t pos = 0, len = 0;
  while (pos < s.size()) {
    if (utf8At(s, pos, &len) != Utf8::Complete) return pos;
    pos += len;
  }
  return std::string_view::npos;
}

void replaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
}

// ---- protobuf wire format (just enough of sentencepiece_model.proto) -----------------------

struct WireReader {
  std::string_view buf;
  size_t pos = 0;
  size_t base = 0;  // offset of buf in the file, for messages
  const std::string& path;

  [[noreturn]] void fail() const {
    throw Error(path, "not a SentencePiece model: malformed protobuf at byte " + std::to_string(base + pos),
                "tokenizer.model must be a SentencePiece ModelProto");
  }
  bool done() const { return pos >= buf.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= buf.size()) fail();
      auto c = static_cast<unsigned char>(buf[pos++]);
      v |= static_cast<uint64_t>(c & 0x7F) << shift;
      if (!(c & 0x80)) return v;
    }
    fail();
  }
  // Reads a key; sets the field number and wire type.
  void key(uint32_t* field, uint32_t* wire) {
    uint64_t k = varint();
    *field = static_cast<uint32_t>(k >> 3);
    *wire = static_cast<uint32_t>(k & 7);
    if (*field == 0) fail();
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (n > buf.size() - pos) fail();
    auto v = buf.substr(pos, n);
    pos += n;
    return v;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: if (buf.size() - pos < 8) fail(); pos += 8; break;
      case 2: bytes(); break;
      case 5: if (buf.size() - pos < 4) fail(); pos += 4; break;
      default: fail();
    }
  }
  WireReader sub(std::string_view v) const {
    return WireReader{v, 0, base + static_cast<size_t>(v.data() - buf.data()), path};
  }
};

std::string readFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot read file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json readJson(const std::string& path) {
  std::string text = readFileBytes(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path, std::string("invalid JSON: ") + e.what());
  }
}

// bos_token and friends: "text", {"content": "text", ...}, or null.
std::optional<std::string> tokenString(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

std::string formatDouble(double v) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os << std::setprecision(12) << v;
  return os.str();
}

std::string quoteFlag(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

// ---- model info ------------------------------------------------------------------------------

SentencePieceModelInfo readSentencePieceModelInfo(const std::string& bytes, const std::string& path) {
  SentencePieceModelInfo info;
  WireReader r{bytes, 0, 0, path};
  uint32_t field, wire;
  while (!r.done()) {
    r.key(&field, &wire);
    if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
      r.bytes();
      ++info.pieces;
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      WireReader t = r.sub(r.bytes());
      while (!t.done()) {
        t.key(&field, &wire);
        if (field == 3 && wire == 0) {
          switch (t.varint()) {
            case 1: info.modelType = "unigram"; break;
            case 2: info.modelType = "bpe"; break;
            case 3: info.modelType = "word"; break;
            case 4: info.modelType = "char"; break;
            default: info.modelType = "unknown"; break;
          }
        } else if (field == 35 && wire == 0) {
          info.byteFallback = t.varint() != 0;
        } else if (field == 44 && wire == 2) {
          info.unkSurface = std::string(t.bytes());
        } else {
          t.skip(wire);
        }
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      WireReader n = r.sub(r.bytes());
      while (!n.done()) {
        n.key(&field, &wire);
        if (field == 1 && wire == 2) info.normalizerName = std::string(n.bytes());
        else if (field == 3 && wire == 0) info.addDummyPrefix = n.varint() != 0;
        else if (field == 4 && wire == 0) info.removeExtraWhitespaces = n.varint() != 0;
        else n.skip(wire);
      }
    } else {
      r.skip(wire);
    }
  }
  if (info.pieces == 0)
    throw Error(path, "not a SentencePiece model: it has no pieces", "tokenizer.model must be a SentencePiece ModelProto");
  return info;
}

static std::string describe(const SentencePieceModelInfo& info) {
  std::string d = "sentencepiece " + info.modelType + ", " + std::to_string(info.pieces) + " pieces";
  if (info.byteFallback) d += ", byte fallback";
  return d;
}

// ---- Tokenizer -------------------------------------------------------------------------------

struct Tokenizer::ShimModel {
  const sp::ShimApi* api = nullptr;
  kh_sp_model* model = nullptr;
  ~ShimModel() {
    if (model) api->free(model);
  }
};

Tokenizer::~Tokenizer() = default;

TokenizerKind Tokenizer::detect(const std::string& dir, std::string* description) {
  const std::string model = (fs::path(dir) / "tokenizer.model").string();
  const std::string hfJson = (fs::path(dir) / "tokenizer.json").string();
  std::error_code ec;
  if (BertJapaneseTokenizer::isBertJapaneseFolder(dir)) {
    if (description) {
      try {
        *description = BertJapaneseTokenizer::load(dir)->description();
      } catch (const Error& e) {
        *description = std::string("BertJapaneseTokenizer (vocab.txt + MeCab), cannot load: ") + e.what();
      }
    }
    return TokenizerKind::BertJapanese;
  }
  if (fs::is_regular_file(model, ec)) {
    if (description) *description = describe(readSentencePieceModelInfo(readFileBytes(model), model));
    return TokenizerKind::SentencePiece;
  }
  if (fs::is_regular_file(hfJson, ec)) {
    if (description) {
      try {
        *description = HfTokenizerJson::load(hfJson)->description();
      } catch (const Error& e) {
        *description = std::string("Hugging Face tokenizer.json, cannot load: ") + e.what();
      }
    }
    return TokenizerKind::HfTokenizerJson;
  }
  if (description) *description = "no tokenizer.model, tokenizer.json or BertJapaneseTokenizer vocab.txt";
  return TokenizerKind::None;
}

std::shared_ptr<Tokenizer> Tokenizer::fromFolder(const std::string& dir) {
  const fs::path root(dir);
  const std::string modelPath = (root / "tokenizer.model").string();
  // transformers has no fast BertJapaneseTokenizer: the class in tokenizer_config.json decides.
  if (BertJapaneseTokenizer::isBertJapaneseFolder(dir)) return fromBertJapanese(dir);
  std::error_code ec;
  if (!fs::is_regular_file(modelPath, ec)) {
    if (fs::is_regular_file(root / "tokenizer.json", ec)) return fromHfTokenizerJson(dir);
    throw Error(modelPath, "missing: no tokenizer.model in this folder",
                "a SentencePiece model folder needs tokenizer.model");
  }

  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->modelPath_ = modelPath;
  const std::string bytes = readFileBytes(modelPath);
  t->info_ = readSentencePieceModelInfo(bytes, modelPath);

  const sp::ShimApi& api = sp::shim();
  t->sp_ = std::make_unique<ShimModel>();
  t->sp_->api = &api;
  t->sp_->model = api.load_serialized(bytes.data(), bytes.size());
  if (!t->sp_->model) throw Error(modelPath, std::string("sentencepiece cannot load it: ") + api.last_error());

  const int n = api.piece_size(t->sp_->model);
  KH_ASSERT(n == t->info_.pieces, "shim and protobuf reader disagree on the piece count");
  t->pieces_.resize(static_cast<size_t>(n));
  std::string buf;
  for (int id = 0; id < n; ++id) {
    long len = api.id_to_piece(t->sp_->model, id, nullptr, 0);
    KH_ASSERT(len >= 0, api.last_error());
    buf.resize(static_cast<size_t>(len));
    api.id_to_piece(t->sp_->model, id, buf.data(), buf.size());
    Piece& p = t->pieces_[static_cast<size_t>(id)];
    p.text = buf;
    const int f = api.piece_flags(t->sp_->model, id);
    if (f & KH_SP_CONTROL) p.kind = kControl;
    else if (f & KH_SP_UNKNOWN) p.kind = kUnknown;
    else if (f & KH_SP_BYTE) p.kind = kByte;
    else if (f & KH_SP_UNUSED) p.kind = kUnused;
    if (p.kind == kByte) {
      unsigned v = 0;
      if (buf.size() != 6 || std::sscanf(buf.c_str(), "<0x%2X>", &v) != 1)
        throw Error(modelPath, "byte piece " + std::to_string(id) + " is not <0xNN>: '" + buf + "'");
      p.byte = static_cast<uint8_t>(v);
    }
    p.special = p.kind == kControl;
  }
  auto spId = [](int v) { return v >= 0 ? std::optional<int>(v) : std::nullopt; };
  t->bosId_ = spId(api.bos_id(t->sp_->model));
  t->eosId_ = spId(api.eos_id(t->sp_->model));
  t->unkId_ = spId(api.unk_id(t->sp_->model));
  t->padId_ = spId(api.pad_id(t->sp_->model));

  std::map<int, AddedToken> added;  // by id
  Tokenizer* raw = t.get();
  t->readFolderJson(dir, n, std::move(added),
                    [raw](const std::string& s) {
                      return raw->sp_->api->piece_to_id(raw->sp_->model, s.data(), s.size());
                    },
                    false);
  return t;
}

void Tokenizer::readFolderJson(const std::string& dir, int n, std::map<int, AddedToken> added,
                               const std::function<int(const std::string&)>& modelLookup, bool hfJson) {
  Tokenizer* t = this;
  const fs::path root(dir);
  std::error_code ec;
  try {
    const std::string cfgPath = (root / "tokenizer_config.json").string();
    const std::string mapPath = (root / "special_tokens_map.json").string();
    const std::string addedPath = (root / "added_tokens.json").string();
    const std::string jinjaPath = (root / "chat_template.jinja").string();
    json cfg = fs::is_regular_file(cfgPath, ec) ? readJson(cfgPath) : json::object();
    json map = fs::is_regular_file(mapPath, ec) ? readJson(mapPath) : json::object();
    if (!cfg.is_object()) throw Error(cfgPath, "expected a JSON object");
    if (!map.is_object()) throw Error(mapPath, "expected a JSON object");

    auto addToken = [&](int id, const std::string& content, bool special, bool lstrip, bool rstrip,
                        const std::string& where) {
      // Added tokens follow the SentencePiece pieces; a far-off id would only make a huge table.
      if (id < 0 || id >= n + (1 << 20))
        throw Error(where, "added token id " + std::to_string(id) + " out of range",
                    "ids above the " + std::to_string(n) + " SentencePiece pieces plus 1048576 are refused");
      if (content.empty()) throw Error(where, "added token " + std::to_string(id) + " has empty content");
      if (firstInvalidUtf8(content) != std::string::npos)
        throw Error(where, "added token " + std::to_string(id) + " is not valid UTF-8");
      auto [it, fresh] = added.try_emplace(id, AddedToken{id, content, special, lstrip, rstrip});
      if (!fresh) it->second.special = it->second.special || special;
    };
    if (cfg.contains("added_tokens_decoder")) {
      const json& dec = cfg["added_tokens_decoder"];
      if (!dec.is_object()) throw Error(cfgPath, "added_tokens_decoder must be an object");
      for (auto it = dec.begin(); it != dec.end(); ++it) {
        int id;
        try {
          size_t used = 0;
          id = std::stoi(it.key(), &used);
          if (used != it.key().size()) throw std::invalid_argument("trailing");
        } catch (const std::exception&) {
          throw Error(cfgPath, "added_tokens_decoder key '" + it.key() + "' is not a token id");
        }
        const json& v = it.value();
        if (!v.is_object() || !v.contains("content") || !v["content"].is_string())
          throw Error(cfgPath, "added_tokens_decoder[" + it.key() + "] needs a string \"content\"");
        addToken(id, v["content"].get<std::string>(), v.value("special", false), v.value("lstrip", false),
                 v.value("rstrip", false), cfgPath);
      }
    }
    if (fs::is_regular_file(addedPath, ec)) {
      json a = readJson(addedPath);
      if (!a.is_object()) throw Error(addedPath, "expected an object of token -> id");
      for (auto it = a.begin(); it != a.end(); ++it) {
        if (!it.value().is_number_integer()) throw Error(addedPath, "id of '" + it.key() + "' is not an integer");
        addToken(it.value().get<int>(), it.key(), false, false, false, addedPath);
      }
    }

    // Lookup over SentencePiece pieces and the added tokens so far.
    auto lookup = [&](const std::string& s) -> int {
      for (const auto& [id, tok] : added)
        if (tok.content == s) return id;
      return modelLookup(s);
    };
    // Special token strings: tokenizer_config.json first, then special_tokens_map.json.
    auto specialValue = [&](const char* key, std::string* where) -> const json* {
      if (cfg.contains(key)) {
        *where = cfgPath;
        return &cfg[key];
      }
      if (map.contains(key)) {
        *where = mapPath;
        return &map[key];
      }
      return nullptr;
    };
    auto resolveSpecial = [&](const char* key, std::optional<int>& slot, bool required) {
      std::string where;
      const json* v = specialValue(key, &where);
      if (!v) return;  // keep SentencePiece's own id
      if (v->is_null()) {
        slot.reset();
        return;
      }
      auto s = tokenString(*v);
      if (!s) throw Error(where, std::string(key) + " must be a string or {\"content\": ...}");
      int id = lookup(*s);
      if (id < 0) {
        if (required) throw Error(where, std::string(key) + " '" + *s + "' is not in the vocabulary");
        slot.reset();
        return;
      }
      slot = id;
      if (!added.count(id)) addToken(id, *s, true, false, false, where);
      added.at(id).special = true;
    };
    resolveSpecial("bos_token", t->bosId_, true);
    resolveSpecial("eos_token", t->eosId_, true);
    resolveSpecial("unk_token", t->unkId_, false);
    resolveSpecial("pad_token", t->padId_, false);
    {
      std::string where;
      if (const json* v = specialValue("additional_special_tokens", &where); v && !v->is_null()) {
        if (!v->is_array()) throw Error(where, "additional_special_tokens must be a list");
        for (const json& e : *v) {
          auto s = tokenString(e);
          if (!s) throw Error(where, "additional_special_tokens entries must be strings or {\"content\": ...}");
          int id = lookup(*s);
          if (id < 0) throw Error(where, "additional special token '" + *s + "' is not in the vocabulary");
          if (!added.count(id)) addToken(id, *s, true, false, false, where);
          added.at(id).special = true;
        }
      }
    }

    const std::string tokClass = cfg.value("tokenizer_class", std::string());
    const bool t5 = tokClass.find("T5") != std::string::npos;
    if (!hfJson) {  // tokenizer.json folders add what their post-processor template says
      t->addBos_ = !t5;
      t->addEos_ = t5;
    }
    auto readBool = [&](const char* key, bool& out) {
      if (!cfg.contains(key) || cfg[key].is_null()) return;
      if (!cfg[key].is_boolean()) throw Error(cfgPath, std::string(key) + " must be true or false");
      out = cfg[key].get<bool>();
    };
    if (!hfJson) {
      readBool("add_bos_token", t->addBos_);
      readBool("add_eos_token", t->addEos_);
    }

    if (fs::is_regular_file(jinjaPath, ec)) {
      t->chatTemplate_ = readFileBytes(jinjaPath);
    } else if (cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        t->chatTemplate_ = ct.get<std::string>();
      } else if (ct.is_array()) {  // [{"name": "default", "template": "..."}, ...]
        for (const json& e : ct)
          if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template"))
            t->chatTemplate_ = e["template"].get<std::string>();
        if (t->chatTemplate_.empty() && !ct.empty() && ct[0].is_object() && ct[0].contains("template"))
          t->chatTemplate_ = ct[0]["template"].get<std::string>();
      } else {
        throw Error(cfgPath, "chat_template must be a string or a list of {name, template}");
      }
    }

    // Fold the added tokens into the id table.
    int maxId = n - 1;
    for (const auto& [id, tok] : added) maxId = std::max(maxId, id);
    t->pieces_.resize(static_cast<size_t>(maxId + 1), Piece{std::string(), kHole});
    for (const auto& [id, tok] : added) {
      Piece& p = t->pieces_[static_cast<size_t>(id)];
      p.text = tok.content;
      p.kind = kAdded;
      p.special = tok.special;
      t->addedByContent_[tok.content] = t->added_.size();
      t->addedFirstByte_[static_cast<unsigned char>(tok.content[0])] = true;
      t->addedLongest_ = std::max(t->addedLongest_, tok.content.size());
      t->added_.push_back(tok);
    }
    for (const auto* slot : {&t->bosId_, &t->eosId_, &t->padId_})
      if (*slot) t->pieces_[static_cast<size_t>(**slot)].special = true;
  } catch (const json::exception& e) {
    // A field of the wrong JSON type somewhere in the folder's tokenizer files.
    throw Error(dir, std::string("tokenizer JSON: ") + e.what());
  }
}

std::shared_ptr<Tokenizer> Tokenizer::fromHfTokenizerJson(const std::string& dir) {
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->modelPath_ = (fs::path(dir) / "tokenizer.json").string();
  t->hf_ = HfTokenizerJson::load(t->modelPath_);
  const HfTokenizerJson& hf = *t->hf_;
  const std::vector<std::string>& vocab = hf.vocab();
  t->pieces_.resize(vocab.size());
  const bool pieceBytes = hf.decodesByteTokens();
  for (size_t id = 0; id < vocab.size(); ++id) {
    Piece& p = t->pieces_[id];
    p.text = vocab[id];
    if (hf.tokenToId(vocab[id]) != static_cast<int>(id)) p.kind = kHole;  // an added token fills it below
    unsigned v = 0;
    if (pieceBytes && p.kind == kNormal && p.text.size() == 6 && std::sscanf(p.text.c_str(), "<0x%2X>", &v) == 1) {
      p.kind = kByte;
      p.byte = static_cast<uint8_t>(v);
    }
  }
  if (hf.unkId()) {
    t->unkId_ = hf.unkId();
    t->pieces_[static_cast<size_t>(*hf.unkId())].kind = kUnknown;
  }
  // The template's tokens are the bos/eos it adds (llm-jp: <s> $A); tokenizer_config.json may
  // still name others.
  if (!hf.templatePrefix().empty()) t->bosId_ = hf.templatePrefix().back();
  if (!hf.templateSuffix().empty()) t->eosId_ = hf.templateSuffix().front();
  std::map<int, AddedToken> added;
  for (const AddedToken& a : hf.addedTokens()) added[a.id] = a;
  const HfTokenizerJson* model = t->hf_.get();
  t->readFolderJson(dir, static_cast<int>(vocab.size()), std::move(added),
                    [model](const std::string& s) { return model->tokenToId(s); }, true);
  t->addBos_ = !hf.templatePrefix().empty();
  t->addEos_ = !hf.templateSuffix().empty();
  for (int id : hf.templatePrefix()) t->pieces_[static_cast<size_t>(id)].special = true;
  for (int id : hf.templateSuffix()) t->pieces_[static_cast<size_t>(id)].special = true;
  return t;
}

// vocab.txt ids; [CLS] text [SEP] (build_inputs_with_special_tokens); the special tokens are split
// out of the text before MeCab sees it (PreTrainedTokenizer.tokenize's added-token trie).
std::shared_ptr<Tokenizer> Tokenizer::fromBertJapanese(const std::string& dir) {
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  const fs::path root(dir);
  t->modelPath_ = (root / "vocab.txt").string();
  t->bj_ = BertJapaneseTokenizer::load(dir);
  const BertJapaneseTokenizer& bj = *t->bj_;
  const std::vector<std::string>& vocab = bj.vocab();
  t->pieces_.resize(vocab.size());
  for (size_t id = 0; id < vocab.size(); ++id) {
    Piece& p = t->pieces_[id];
    p.text = vocab[id];
    if (bj.tokenToId(vocab[id]) != static_cast<int>(id)) p.kind = kHole;  // a later duplicate line took the token
  }
  t->unkId_ = bj.unkId();
  t->pieces_[static_cast<size_t>(bj.unkId())].kind = kUnknown;

  const std::string cfgPath = (root / "tokenizer_config.json").string();
  const std::string mapPath = (root / "special_tokens_map.json").string();
  std::error_code ec;
  const json cfg = readJson(cfgPath);
  const json map = fs::is_regular_file(mapPath, ec) ? readJson(mapPath) : json::object();
  const json noDecoder = json::object();
  const json& decoder = cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()
                            ? cfg["added_tokens_decoder"] : noDecoder;
  // BertJapaneseTokenizer's special tokens (tokenizer_config.json, then special_tokens_map.json,
  // then the class defaults); those added_tokens_decoder lists come with its lstrip/rstrip there.
  std::map<int, AddedToken> added;
  std::optional<int> cls, sep;
  for (const auto& [key, def] : std::vector<std::pair<std::string, std::string>>{
           {"cls_token", "[CLS]"}, {"sep_token", "[SEP]"}, {"unk_token", "[UNK]"}, {"pad_token", "[PAD]"}, {"mask_token", "[MASK]"}}) {
    std::optional<std::string> text = def;
    std::string where = "BertJapaneseTokenizer's default";
    if (cfg.contains(key)) {
      text = cfg[key].is_null() ? std::nullopt : tokenString(cfg[key]);
      where = cfgPath;
    } else if (map.contains(key)) {
      text = map[key].is_null() ? std::nullopt : tokenString(map[key]);
      where = mapPath;
    }
    if (!text) {
      if (key == "cls_token" || key == "sep_token") throw Error(where, key + " is needed: every input is [CLS] text [SEP]");
      continue;
    }
    const int id = bj.tokenToId(*text);
    if (id < 0) {
      if (key == "pad_token" || key == "mask_token") continue;
      throw Error(t->modelPath_, key + " '" + *text + "' (from " + where + ") is not in the vocabulary");
    }
    if (key == "cls_token") cls = id;
    if (key == "sep_token") sep = id;
    if (!decoder.contains(std::to_string(id))) added[id] = AddedToken{id, *text, true};
  }
  t->readFolderJson(dir, static_cast<int>(vocab.size()), std::move(added),
                    [&bj](const std::string& s) { return bj.tokenToId(s); }, true);
  t->bosId_ = cls;
  t->eosId_ = sep;
  t->addBos_ = t->addEos_ = true;
  t->pieces_[static_cast<size_t>(*cls)].special = t->pieces_[static_cast<size_t>(*sep)].special = true;
  return t;
}

std::string Tokenizer::segmenterIdentity() const {
  if (!bj_) return "";
  return "mecab:" + (bj_->dictionaryName().empty() ? std::string("system") : bj_->dictionaryName()) + ":" +
         bj_->dictionaryFingerprint();
}

std::string Tokenizer::description() const {
  if (bj_) return bj_->description();
  if (hf_) return hf_->description();
  std::string d = describe(info_);
  if (!added_.empty()) d += ", " + std::to_string(added_.size()) + " added tokens";
  return d;
}

int Tokenizer::vocabSize() const { return static_cast<int>(pieces_.size()); }

const Tokenizer::Piece& Tokenizer::piece(int id) const {
  if (id < 0 || id >= vocabSize())
    throw Error("tokenizer input", "token id " + std::to_string(id) + " is out of range [0, " +
                                       std::to_string(vocabSize()) + ")");
  return pieces_[static_cast<size_t>(id)];
}

std::string Tokenizer::idToPiece(int id) const {
  const Piece& p = piece(id);
  if (p.kind == kHole)
    throw Error("tokenizer input", "token id " + std::to_string(id) + " has no piece (a gap between the "
                                   "SentencePiece pieces and the added tokens)");
  return p.text;
}

int Tokenizer::pieceToId(std::string_view piece) const {
  if (auto it = addedByContent_.find(std::string(piece)); it != addedByContent_.end()) return added_[it->second].id;
  if (hf_) return hf_->tokenToId(piece);
  if (bj_) return bj_->tokenToId(piece);
  return sp_->api->piece_to_id(sp_->model, piece.data(), piece.size());
}

std::string Tokenizer::tokenText(const std::optional<int>& id) const {
  return id ? pieces_[static_cast<size_t>(*id)].text : std::string();
}

bool Tokenizer::isSpecial(int id) const { return piece(id).special; }

void Tokenizer::encodeSentencePiece(std::string_view text, std::vector<int>& out) const {
  if (text.empty()) return;
  const sp::ShimApi& api = *sp_->api;
  std::vector<int32_t> ids(text.size() + 8);
  long n = api.encode(sp_->model, text.data(), text.size(), ids.data(), ids.size());
  if (n > static_cast<long>(ids.size())) {  // normalization made the text longer
    ids.resize(static_cast<size_t>(n));
    n = api.encode(sp_->model, text.data(), text.size(), ids.data(), ids.size());
  }
  if (n < 0) throw Error(modelPath_, std::string("sentencepiece encode failed: ") + api.last_error());
  out.insert(out.end(), ids.begin(), ids.begin() + n);
}

void Tokenizer::encodeChunk(std::string_view text, bool atTextStart, std::vector<int>& out) const {
  if (hf_) hf_->encode(text, atTextStart, out);
  else if (bj_) bj_->encode(text, out);
  else encodeSentencePiece(text, out);
}

std::vector<int> Tokenizer::encode(std::string_view text, bool addSpecial) const {
  if (size_t bad = firstInvalidUtf8(text); bad != std::string_view::npos)
    throw Error("tokenizer input", "invalid UTF-8 at byte " + std::to_string(bad));
  std::vector<int> out;
  if (addSpecial && hf_) out = hf_->templatePrefix();
  else if (addSpecial && addsBos()) out.push_back(*bosId_);

  // Split on added tokens, longest match first, and encode the text between with SentencePiece
  // (as HF's slow "legacy" tokenizers do: each stretch gets its own dummy prefix).
  size_t chunkStart = 0, pos = 0;
  bool skipSpaces = false;  // after an rstrip token
  auto isSpace = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  std::string probe;
  while (pos < text.size()) {
    if (skipSpaces) {
      if (isSpace(text[pos])) {
        chunkStart = ++pos;
        continue;
      }
      skipSpaces = false;
    }
    const AddedToken* match = nullptr;
    if (addedFirstByte_[static_cast<unsigned char>(text[pos])]) {
      for (size_t len = std::min(addedLongest_, text.size() - pos); len > 0 && !match; --len) {
        probe.assign(text.data() + pos, len);
        if (auto it = addedByContent_.find(probe); it != addedByContent_.end()) match = &added_[it->second];
      }
    }
    if (!match) {
      ++pos;
      continue;
    }
    std::string_view chunk = text.substr(chunkStart, pos - chunkStart);
    if (match->lstrip)
      while (!chunk.empty() && isSpace(chunk.back())) chunk.remove_suffix(1);
    encodeChunk(chunk, chunkStart == 0, out);
    out.push_back(match->id);
    pos += match->content.size();
    chunkStart = pos;
    skipSpaces = match->rstrip;
  }
  encodeChunk(text.substr(chunkStart), chunkStart == 0, out);
  if (addSpecial && hf_) out.insert(out.end(), hf_->templateSuffix().begin(), hf_->templateSuffix().end());
  else if (addSpecial && addsEos()) out.push_back(*eosId_);
  return out;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool skipSpecial) const {
  StreamDecoder d(*this, skipSpecial);
  std::string out;
  for (int id : ids) out += d.push(id);
  out += d.finish();
  return out;
}

std::string Tokenizer::sentencePieceDecode(const std::vector<int>& ids) const {
  if (hf_ || bj_) throw Error(modelPath_, "sentencePieceDecode on a tokenizer that is not SentencePiece", "use decode()");
  const sp::ShimApi& api = *sp_->api;
  std::vector<int32_t> in(ids.begin(), ids.end());
  long n = api.decode(sp_->model, in.data(), in.size(), nullptr, 0);
  if (n < 0) throw Error("tokenizer input", std::string("sentencepiece decode failed: ") + api.last_error());
  std::string out(static_cast<size_t>(n), '\0');
  api.decode(sp_->model, in.data(), in.size(), out.data(), out.size());
  return out;
}

// ---- StreamDecoder ---------------------------------------------------------------------------
//
// SentencePiece's Decode, one id at a time (sentencepiece_processor.cc): control pieces give
// nothing, <unk> its surface, byte pieces are gathered into characters (a byte that cannot start
// or continue a valid character gives U+FFFD, as does a cut-off tail), other pieces have "▁" ->
// " ". A leading "▁" is dropped as the dummy prefix while nothing has been written and no piece
// has dropped one yet (with remove_extra_whitespaces: while nothing has been written), when the
// model adds a dummy prefix or removes extra whitespace. Added tokens behave as control pieces
// that write their text unless skipped.

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skipSpecial) : tok_(tok), skipSpecial_(skipSpecial) {}

void StreamDecoder::flushBytes(std::string& out, bool final) {
  size_t pos = 0, len = 0;
  while (pos < bytes_.size()) {
    Utf8 st = utf8At(bytes_, pos, &len);
    if (st == Utf8::Complete) {
      out.append(bytes_, pos, len);
      pos += len;
    } else if (st == Utf8::Invalid || final) {
      out += kReplacement;
      pos += 1;
    } else {
      break;  // a character cut across byte pieces: wait for the rest
    }
  }
  bytes_.erase(0, pos);
  if (!out.empty()) written_ = true;
}

std::string StreamDecoder::push(int id) {
  if (tok_.hf_) return pushHf(id);
  if (tok_.bj_) {
    // BertJapaneseTokenizer.convert_tokens_to_string: tokens joined by spaces, " ##" removed; then
    // decode's clean_up_tokenization (no space before . , ! ? and the English clitics).
    const Tokenizer::Piece& p = tok_.piece(id);
    if (p.kind == Tokenizer::kHole || (p.special && skipSpecial_)) return std::string();
    const bool first = bosWs_;
    bosWs_ = false;
    if (!first && p.text.size() > 2 && p.text.compare(0, 2, "##") == 0) return p.text.substr(2);
    static const char* const kGlued[] = {".", "?", "!", ",", "n't", "'m", "'s", "'ve", "'re"};
    bool glue = first;
    for (const char* g : kGlued) glue = glue || p.text == g;
    return glue ? p.text : " " + p.text;
  }
  const Tokenizer::Piece& p = tok_.piece(id);
  std::string out;
  if (p.kind == Tokenizer::kByte) {
    bytes_ += static_cast<char>(p.byte);
    flushBytes(out, false);
    return out;
  }
  flushBytes(out, true);
  if (bosWsSeen_ || written_) bosWs_ = false;
  bool consumedBosWs = false;
  const bool skip = p.special && skipSpecial_;
  switch (p.kind) {
    case Tokenizer::kHole:
      break;
    case Tokenizer::kControl:
    case Tokenizer::kAdded:
      if (!skip) out += p.text;
      break;
    case Tokenizer::kUnknown:
      if (!skip) out += tok_.info_.unkSurface;
      break;
    default: {  // kNormal, kUnused
      if (skip) break;
      std::string s = p.text;
      const SentencePieceModelInfo& info = tok_.info_;
      if (bosWs_ && (info.addDummyPrefix || info.removeExtraWhitespaces) &&
          s.compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
        s.erase(0, kSpaceSymbol.size());
        consumedBosWs = !info.removeExtraWhitespaces;  // then all leading whitespace goes
      }
      replaceAll(s, kSpaceSymbol, " ");
      out += s;
    }
  }
  bosWsSeen_ = consumedBosWs;
  if (!out.empty()) written_ = true;
  return out;
}

// tokenizers' decoders, one id at a time. ByteLevel: every token's characters map back to bytes
// through GPT-2's table (a token with a character outside it gives its own UTF-8), the bytes being
// read as UTF-8 with each maximal invalid run becoming one U+FFFD (String::from_utf8_lossy).
// Pieces: <0xNN> tokens gather into characters (flushBytes), "▁" becomes " ", and the first token
// loses one leading space when the decoder strips it (Metaspace prepend, Strip(1)).
std::string StreamDecoder::pushHf(int id) {
  const Tokenizer::Piece& p = tok_.piece(id);
  const HfTokenizerJson& hf = *tok_.hf_;
  std::string out;
  if (p.kind == Tokenizer::kHole) return out;
  if (p.special && skipSpecial_) return out;
  if (hf.decodeStyle() == HfTokenizerJson::DecodeStyle::ByteLevel) {
    std::string raw;
    bool mapped = true;
    static const auto inverse = [] {
      std::unordered_map<std::string, uint8_t> m;
      for (int b = 0; b < 256; ++b) m[byteLevelSymbol(static_cast<uint8_t>(b))] = static_cast<uint8_t>(b);
      return m;
    }();
    for (size_t i = 0, len = 0; i < p.text.size() && mapped; i += len) {
      utf8At(p.text, i, &len);
      auto it = inverse.find(p.text.substr(i, len));
      if (it == inverse.end()) mapped = false;
      else raw += static_cast<char>(it->second);
    }
    bytes_ += mapped ? raw : p.text;
    flushLossy(out, false);
    return out;
  }
  const bool first = bosWs_;
  bosWs_ = false;
  if (hf.decodeStyle() == HfTokenizerJson::DecodeStyle::WordPiece) {
    // Tokens joined by spaces; a "##" continuation glues on; cleanup: no space before . , ! ? and
    // the English clitics (HF's WordPiece decoder cleanup, token by token).
    const std::string& pre = hf.wordPiecePrefix();
    if (p.text.compare(0, pre.size(), pre) == 0 && p.text.size() > pre.size()) return p.text.substr(pre.size());
    static const char* const kGlued[] = {".", "?", "!", ",", "n't", "'m", "'s", "'ve", "'re"};
    bool glue = first;
    if (hf.wordPieceCleanup())
      for (const char* g : kGlued) glue = glue || p.text == g;
    return glue ? p.text : " " + p.text;
  }
  if (p.kind == Tokenizer::kByte) {
    bytes_ += static_cast<char>(p.byte);
    flushBytes(out, false);
  } else {
    flushBytes(out, true);
    std::string s = p.text;
    replaceAll(s, kSpaceSymbol, " ");
    if (first && hf.stripFirstSpace() && !s.empty() && s[0] == ' ') s.erase(0, 1);
    out += s;
  }
  // Strip(1) after Fuse strips the joined text: a first byte token that was a space goes too.
  if (first && hf.stripFirstSpace() && !out.empty() && out[0] == ' ' && p.kind == Tokenizer::kByte) out.erase(0, 1);
  return out;
}

void StreamDecoder::flushLossy(std::string& out, bool final) {
  size_t pos = 0, len = 0;
  while (pos < bytes_.size()) {
    Utf8 st = utf8At(bytes_, pos, &len);
    if (st == Utf8::Complete) {
      out.append(bytes_, pos, len);
      pos += len;
    } else if (st == Utf8::Incomplete && !final) {
      break;
    } else {
      // The maximal prefix of a valid sequence is replaced as one (from_utf8_lossy).
      size_t k = 1;
      while (pos + k < bytes_.size()) {
        size_t l2 = 0;
        Utf8 s2 = utf8At(std::string_view(bytes_).substr(pos, k + 1), 0, &l2);
        if (s2 != Utf8::Incomplete) break;
        ++k;
      }
      out += kReplacement;
      pos += k;
    }
  }
  bytes_.erase(0, pos);
}

std::string StreamDecoder::finish() {
  if (tok_.hf_ && tok_.hf_->decodeStyle() == HfTokenizerJson::DecodeStyle::ByteLevel) {
    std::string out;
    flushLossy(out, true);
    return out;
  }
  std::string out;
  flushBytes(out, true);
  return out;
}

// ---- training --------------------------------------------------------------------------------

void trainSentencePiece(const std::vector<std::string>& sentences, const std::string& modelPrefix,
                        const SentencePieceTrainOptions& opt) {
  const std::string where = modelPrefix + ".model";
  if (sentences.empty()) throw Error(where, "no training sentences");
  if (modelPrefix.empty()) throw Error("sentencepiece training", "empty model prefix");
  for (size_t i = 0; i < sentences.size(); ++i)
    if (size_t bad = firstInvalidUtf8(sentences[i]); bad != std::string::npos)
      throw Error("training sentence " + std::to_string(i), "invalid UTF-8 at byte " + std::to_string(bad));
  auto joinSymbols = [&](const std::vector<std::string>& v, const char* what) {
    std::string s;
    for (const std::string& x : v) {
      if (x.empty() || x.find_first_of(", \t\n\"\\") != std::string::npos)
        throw Error(where, std::string(what) + " '" + x + "' is empty or holds a comma, blank, quote or backslash");
      s += (s.empty() ? "" : ",") + x;
    }
    return s;
  };
  auto b = [](bool v) { return v ? "true" : "false"; };
  // SentencePiece seeds are 32-bit and 0xFFFFFFFF means "random_device": fold the 64-bit seed.
  const uint32_t seed = static_cast<uint32_t>((opt.seed ^ (opt.seed >> 32)) % 0xFFFFFFFFull);

  std::ostringstream f;
  f << "--model_prefix=" << quoteFlag(modelPrefix) << " --vocab_size=" << opt.vocabSize
    << " --model_type=" << opt.modelType << " --byte_fallback=" << b(opt.byteFallback)
    << " --character_coverage=" << formatDouble(opt.characterCoverage) << " --unk_id=" << opt.unkId
    << " --bos_id=" << opt.bosId << " --eos_id=" << opt.eosId << " --pad_id=" << opt.padId
    << " --num_threads=" << std::max(1, opt.threads) << " --random_seed=" << seed
    << " --normalization_rule_name=" << opt.normalizationRule << " --add_dummy_prefix=" << b(opt.addDummyPrefix)
    << " --remove_extra_whitespaces=" << b(opt.removeExtraWhitespaces) << " --split_digits=" << b(opt.splitDigits)
    << " --allow_whitespace_only_pieces=" << b(opt.allowWhitespaceOnlyPieces);
  // Only when they differ from SentencePiece's defaults: a flag given is recorded in the model's
  // trainer spec, and models trained without it must stay byte-identical.
  const SentencePieceTrainOptions defaults;
  const std::pair<const char*, std::pair<const std::string*, const std::string*>> pieces[] = {
      {"unk_piece", {&opt.unkPiece, &defaults.unkPiece}}, {"bos_piece", {&opt.bosPiece, &defaults.bosPiece}},
      {"eos_piece", {&opt.eosPiece, &defaults.eosPiece}}, {"pad_piece", {&opt.padPiece, &defaults.padPiece}}};
  for (const auto& [flag, values] : pieces)
    if (*values.first != *values.second) f << " --" << flag << "=" << joinSymbols({*values.first}, flag);
  if (!opt.userDefinedSymbols.empty())
    f << " --user_defined_symbols=" << joinSymbols(opt.userDefinedSymbols, "user-defined symbol");
  if (!opt.controlSymbols.empty()) f << " --control_symbols=" << joinSymbols(opt.controlSymbols, "control symbol");

  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(sentences.size());
  lens.reserve(sentences.size());
  for (const std::string& s : sentences) {
    ptrs.push_back(s.data());
    lens.push_back(s.size());
  }
  const sp::ShimApi& api = sp::shim();
  if (api.train(f.str().c_str(), ptrs.data(), lens.data(), ptrs.size()) != 0) {
    std::string cause = api.last_error();
    std::string hint;
    if (cause.find("smaller than required_chars") != std::string::npos)
      hint = "vocabSize must hold every character the coverage keeps plus the special, user-defined and byte "
             "pieces: raise vocabSize, or lower characterCoverage (rare characters then go to byte fallback)";
    else if (cause.find("Vocabulary size too high") != std::string::npos)
      hint = "the corpus has too few distinct pieces for this vocabSize: lower vocabSize or give more text";
    throw Error(where, "sentencepiece training failed: " + cause, hint);
  }
}

// ---- synthetic Japanese corpus ---------------------------------------------------------------

namespace {

// splitmix64: tiny, fully specified, the same on every platform (unlike std distributions).
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  template <size_t N>
  const char* pick(const char* const (&a)[N]) {
    return a[below(N)];
  }
};

const char* const kFamily[] = {"佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤",
                               "吉田", "山田", "小野寺", "松本", "井上"};
const char* const kGiven[] = {"花子", "太郎", "健太", "美咲", "翔太", "さくら", "ゆい", "陽菜", "大輝", "絢音",
                              "蓮", "あおい"};
const char* const kPlace[] = {"東京", "大阪", "京都", "札幌", "福岡", "名古屋", "横浜", "神戸", "仙台", "奈良",
                              "沖縄", "北海道"};
const char* const kFood[] = {"ラーメン", "すし", "カレー", "うどん", "そば", "おにぎり", "天ぷら", "ケーキ",
                             "コーヒー", "お茶", "パン", "みそ汁"};
const char* const kThing[] = {"本", "パソコン", "データ", "モデル", "写真", "手紙", "地図", "かばん", "時計",
                              "スマートフォン", "ノート", "傘"};
const char* const kKatakana[] = {"コンピュータ", "プログラム", "ネットワーク", "アルゴリズム", "サーバー",
                                 "インターネット", "ソフトウェア", "デザイン", "テスト", "ニュース"};
const char* const kAscii[] = {"AI", "GPU", "Python", "C++", "LLM", "OK", "API", "Web", "CPU", "JSON"};
const char* const kWeather[] = {"晴れ", "雨", "くもり", "雪", "暑い日", "寒い日"};
const char* const kVerbPast[] = {"食べました", "買いました", "見ました", "読みました", "作りました", "使いました"};
const char* const kAdj[] = {"新しい", "古い", "大きい", "小さい", "おもしろい", "むずかしい", "楽しい", "高い"};
const char* const kNaAdj[] = {"きれい", "便利", "静か", "有名", "大切", "元気"};
const char* const kVerbThing[] = {"買いました", "見ました", "使いました", "忘れました", "探しています"};
const char* const kTopic[] = {"学校", "会社", "駅", "公園", "図書館", "研究室", "病院", "お店"};

std::string num(SplitMix& r, int lo, int hi) { return std::to_string(lo + static_cast<int>(r.below(hi - lo + 1))); }

}  // namespace

std::vector<std::string> makeJapaneseCorpus(uint64_t seed, int sentences) {
  SplitMix r{seed};
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(std::max(0, sentences)));
  for (int i = 0; i < sentences; ++i) {
    std::string name = std::string(r.pick(kFamily)) + (r.below(2) ? r.pick(kGiven) : "") + "さん";
    std::string s;
    switch (r.below(12)) {
      case 0: s = name + "は" + r.pick(kPlace) + "で" + r.pick(kFood) + "を" + r.pick(kVerbPast); break;
      case 1: s = num(r, 1990, 2030) + "年" + num(r, 1, 12) + "月" + num(r, 1, 28) + "日に" + r.pick(kPlace) + "へ行きます"; break;
      case 2: s = name + "は" + num(r, 1, 99) + "個の" + r.pick(kThing) + "を持っていますか"; break;
      case 3: s = std::string("今日は") + r.pick(kWeather) + "ですね"; break;
      case 4: s = std::string(r.pick(kKatakana)) + "の" + r.pick(kThing) + "について話しましょう"; break;
      case 5: s = std::string("この") + r.pick(kAscii) + "モデルは" + num(r, 1, 70) + "億パラメータです"; break;
      case 6: s = std::string(r.pick(kTopic)) + "で" + r.pick(kAdj) + r.pick(kThing) + "を" + r.pick(kVerbThing); break;
      case 7: s = name + "と" + num(r, 1, 12) + "時" + num(r, 0, 59) + "分に" + r.pick(kTopic) + "で会います"; break;
      case 8: s = std::string(r.pick(kAscii)) + "の" + r.pick(kKatakana) + "は" + r.pick(kNaAdj) + "です"; break;
      case 9: s = std::string("明日の") + r.pick(kPlace) + "は" + r.pick(kWeather) + "でしょうか"; break;
      case 10: s = name + "、" + r.pick(kFood) + "はいかがですか"; break;
      default: s = std::string("価格は") + num(r, 100, 99999) + "円で、" + r.pick(kNaAdj) + "な" + r.pick(kThing) + "です"; break;
    }
    if (r.below(4) == 0)
      s += std::string("。") + r.pick(kPlace) + "の" + r.pick(kTopic) + "も" + (r.below(2) ? r.pick(kAdj) : r.pick(kNaAdj)) + "です";
    static const char* const kEnd[] = {"。", "。", "。", "！", "？"};
    s += (s.size() >= 3 && s.compare(s.size() - 3, 3, "か") == 0) ? "？" : r.pick(kEnd);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace kh
