// BertJapaneseTokenizer (transformers, models/bert_japanese/tokenization_bert_japanese.py) with
// word_tokenizer_type "mecab": MeCab through libmecab on the dictionary fugashi would be given
// (`-d DICDIR -r DICDIR/mecabrc`), NFKC and lowercasing through ICU. Never includes torch.
#include "core/text/bert_japanese_tokenizer.h"

#include <mecab.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace kh {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::mutex gOverrideMutex;
std::string gOverride;  // --mecab-dic

std::string readBytes(const fs::path& p, size_t limit = SIZE_MAX) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(p.string(), "cannot read file");
  std::string out;
  char buf[1 << 16];
  while (out.size() < limit && f) {
    f.read(buf, static_cast<std::streamsize>(std::min(sizeof buf, limit - out.size())));
    out.append(buf, static_cast<size_t>(f.gcount()));
  }
  return out;
}

bool isDictionary(const fs::path& d) {
  std::error_code ec;
  return fs::is_regular_file(d / "dicrc", ec) && fs::is_regular_file(d / "sys.dic", ec);
}

// ---- UTF-8 / UTF-16 through ICU ------------------------------------------------------------

std::u16string toU16(std::string_view s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t n = 0;
  u_strFromUTF8(nullptr, 0, &n, s.data(), static_cast<int32_t>(s.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) throw Error("tokenizer input", "invalid UTF-8");
  std::u16string out(static_cast<size_t>(n), u'\0');
  err = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(out.data()), n, nullptr, s.data(), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error("tokenizer input", "invalid UTF-8");
  return out;
}

std::string toU8(const std::u16string& s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t n = 0;
  u_strToUTF8(nullptr, 0, &n, reinterpret_cast<const UChar*>(s.data()), static_cast<int32_t>(s.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) throw Error("tokenizer input", "cannot encode UTF-8");
  std::string out(static_cast<size_t>(n), '\0');
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), n, nullptr, reinterpret_cast<const UChar*>(s.data()), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error("tokenizer input", "cannot encode UTF-8");
  return out;
}

// Python's unicodedata.normalize("NFKC", s). ICU 72 knows Unicode 15, Python 3.11 Unicode 14: only
// characters new in 15 could differ.
std::string nfkc(std::string_view s) {
  const std::u16string u = toU16(s);
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = unorm2_getNFKCInstance(&err);
  if (U_FAILURE(err)) throw Error("tokenizer", std::string("ICU's NFKC data is unavailable: ") + u_errorName(err));
  const auto* src = reinterpret_cast<const UChar*>(u.data());
  const int32_t need = unorm2_normalize(n, src, static_cast<int32_t>(u.size()), nullptr, 0, &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) throw Error("tokenizer", std::string("NFKC failed: ") + u_errorName(err));
  std::u16string out(static_cast<size_t>(need), u'\0');
  err = U_ZERO_ERROR;
  unorm2_normalize(n, src, static_cast<int32_t>(u.size()), reinterpret_cast<UChar*>(out.data()), need, &err);
  if (U_FAILURE(err)) throw Error("tokenizer", std::string("NFKC failed: ") + u_errorName(err));
  return toU8(out);
}

// Python's str.lower(): full case mapping (İ -> i̇), final sigma by context.
std::u16string lowerU16(const std::u16string& u) {
  UErrorCode err = U_ZERO_ERROR;
  const auto* src = reinterpret_cast<const UChar*>(u.data());
  const int32_t need = u_strToLower(nullptr, 0, src, static_cast<int32_t>(u.size()), "", &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) throw Error("tokenizer", std::string("lowercasing failed: ") + u_errorName(err));
  std::u16string out(static_cast<size_t>(need), u'\0');
  err = U_ZERO_ERROR;
  u_strToLower(reinterpret_cast<UChar*>(out.data()), need, src, static_cast<int32_t>(u.size()), "", &err);
  if (U_FAILURE(err)) throw Error("tokenizer", std::string("lowercasing failed: ") + u_errorName(err));
  return out;
}
std::string lower(std::string_view s) { return toU8(lowerU16(toU16(s))); }

// transformers' tokenize() with do_lower_case lowers the text one character at a time
// (re.sub over "(.+?)"), so without the final-sigma context, and leaves newlines alone.
std::string lowerEachCharacter(std::string_view s) {
  const std::u16string u = toU16(s);
  std::u16string out;
  for (size_t i = 0; i < u.size();) {
    const size_t len = (U16_IS_LEAD(u[i]) && i + 1 < u.size() && U16_IS_TRAIL(u[i + 1])) ? 2 : 1;
    out += lowerU16(u.substr(i, len));
    i += len;
  }
  return toU8(out);
}

// Code points with their UTF-8 byte offsets (input is valid UTF-8: Tokenizer::encode checked it).
void codePoints(std::string_view s, std::vector<char32_t>& cps, std::vector<size_t>& offs) {
  cps.clear();
  offs.clear();
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    cps.push_back(cp);
    offs.push_back(i);
    i += len;
  }
  offs.push_back(s.size());
}

// Python's str.isspace(), what str.split() splits on (whitespace_tokenize).
bool isPythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string hex64(uint64_t h) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

}  // namespace

// ---- the dictionary --------------------------------------------------------------------------

void setMecabDictionaryOverride(const std::string& dir) {
  std::lock_guard<std::mutex> lock(gOverrideMutex);
  gOverride = dir;
}

std::string findMecabDictionary(const std::string& modelDir, const std::string& name) {
  std::string explicitDir, explicitWhat;
  {
    std::lock_guard<std::mutex> lock(gOverrideMutex);
    explicitDir = gOverride;
    explicitWhat = "--mecab-dic";
  }
  if (explicitDir.empty()) {
    if (const char* env = std::getenv(kMecabDicEnv); env && *env) {
      explicitDir = env;
      explicitWhat = kMecabDicEnv;
    }
  }
  if (!explicitDir.empty()) {
    if (!isDictionary(explicitDir))
      throw Error(explicitDir, "not a MeCab dictionary folder (no dicrc and sys.dic there), named by " + explicitWhat,
                  "point " + explicitWhat + " at the folder that holds dicrc, sys.dic, matrix.bin, char.bin, unk.dic "
                  "(for unidic-lite: .../unidic_lite/dicdir)");
    return fs::absolute(explicitDir).lexically_normal().string();
  }
  const std::string need = name.empty() ? "a system dictionary (mecab_dic is null)" : "'" + name + "'";
  std::vector<std::string> looked = {std::string("$") + kMecabDicEnv + " (unset)"};
  if (!name.empty()) {
    if (name != "unidic_lite" && name != "ipadic" && name != "unidic")
      throw Error((fs::path(modelDir) / "tokenizer_config.json").string(),
                  "mecab_kwargs.mecab_dic '" + name + "' is not a dictionary transformers knows",
                  "unidic_lite, ipadic or unidic; or set " + std::string(kMecabDicEnv) + "=DIR");
    const fs::path m(modelDir);
    for (const fs::path& d : {m / name / "dicdir", m / name, m / "dicdir"}) {
      if (isDictionary(d)) return fs::absolute(d).lexically_normal().string();
      looked.push_back(d.string());
    }
    // Where pip puts packages: the dictionary is the package's dicdir (unidic_lite.DICDIR).
    std::vector<std::pair<fs::path, const char*>> roots = {{"/usr/local/lib", "dist-packages"},
                                                           {"/usr/local/lib", "site-packages"}};
    if (const char* home = std::getenv("HOME"); home && *home) roots.push_back({fs::path(home) / ".local/lib", "site-packages"});
    if (const char* venv = std::getenv("VIRTUAL_ENV"); venv && *venv) roots.push_back({fs::path(venv) / "lib", "site-packages"});
    std::vector<fs::path> candidates = {fs::path("/usr/lib/python3/dist-packages") / name / "dicdir"};
    looked.push_back(candidates[0].string());
    for (const auto& [root, leaf] : roots) {
      looked.push_back((root / "python3*" / leaf / name / "dicdir").string());
      std::error_code ec;
      std::vector<fs::path> found;
      for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().filename().string().rfind("python3", 0) == 0) found.push_back(it->path() / leaf / name / "dicdir");
      std::sort(found.begin(), found.end());
      candidates.insert(candidates.end(), found.begin(), found.end());
    }
    for (const fs::path& d : candidates)
      if (isDictionary(d)) return fs::absolute(d).lexically_normal().string();
  }
  std::string where;
  for (const std::string& l : looked) where += (where.empty() ? "" : ", ") + l;
  throw Error(modelDir, "its BertJapaneseTokenizer needs the MeCab dictionary " + need + ", not found (looked at " + where + ")",
              "install the pip package " + (name.empty() ? std::string("holding it") : name == "unidic_lite" ? "unidic-lite" : name) +
                  " or set " + kMecabDicEnv + "=DIR (kumihimo-cli: --mecab-dic DIR) to the folder holding its dicrc and sys.dic");
}

std::string mecabDictionaryFingerprint(const std::string& dicDir) {
  auto fnv = [](uint64_t h, std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
  };
  uint64_t h = 1469598103934665603ull;
  const fs::path d(dicDir);
  std::error_code ec;
  for (const char* f : {"dicrc", "char.bin", "unk.dic"})
    if (fs::is_regular_file(d / f, ec)) h = fnv(fnv(h, f), readBytes(d / f));
  for (const char* f : {"sys.dic", "matrix.bin"})
    if (fs::is_regular_file(d / f, ec)) h = fnv(h, std::string(f) + ":" + std::to_string(fs::file_size(d / f, ec)));
  h = fnv(h, readBytes(d / "sys.dic", size_t(1) << 20));
  return hex64(h);
}

// ---- MeCab -----------------------------------------------------------------------------------

struct BertJapaneseTokenizer::Mecab {
  mecab_t* tagger = nullptr;
  mutable std::mutex mu;  // a tagger parses one sentence at a time
  ~Mecab() {
    if (tagger) mecab_destroy(tagger);
  }
};

BertJapaneseTokenizer::~BertJapaneseTokenizer() = default;

bool BertJapaneseTokenizer::isBertJapaneseFolder(const std::string& dir) {
  const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(cfg, ec)) return false;
  const std::string text = readBytes(cfg);
  if (text.find("BertJapaneseTokenizer") == std::string::npos) return false;
  try {
    const json j = json::parse(text);
    return j.is_object() && j.value("tokenizer_class", std::string()) == "BertJapaneseTokenizer";
  } catch (const json::exception&) {
    return false;  // the loader names the bad file
  }
}

std::unique_ptr<BertJapaneseTokenizer> BertJapaneseTokenizer::load(const std::string& dir) {
  const fs::path root(dir);
  const std::string cfgPath = (root / "tokenizer_config.json").string();
  const std::string vocabPath = (root / "vocab.txt").string();
  json cfg;
  try {
    cfg = json::parse(readBytes(cfgPath));
  } catch (const json::exception& e) {
    throw Error(cfgPath, std::string("invalid JSON: ") + e.what());
  }
  if (!cfg.is_object()) throw Error(cfgPath, "expected a JSON object");
  std::unique_ptr<BertJapaneseTokenizer> t(new BertJapaneseTokenizer());
  try {
    auto str = [&](const json& o, const char* key, const std::string& def) -> std::string {
      if (!o.contains(key) || o[key].is_null()) return def;
      if (!o[key].is_string()) throw Error(cfgPath, std::string(key) + " must be a string");
      return o[key].get<std::string>();
    };
    auto boolean = [&](const json& o, const char* key, bool def) {
      if (!o.contains(key) || o[key].is_null()) return def;
      if (!o[key].is_boolean()) throw Error(cfgPath, std::string(key) + " must be true or false");
      return o[key].get<bool>();
    };
    // BertJapaneseTokenizer.__init__ defaults.
    const std::string word = str(cfg, "word_tokenizer_type", "basic");
    const std::string sub = str(cfg, "subword_tokenizer_type", "wordpiece");
    if (!boolean(cfg, "do_word_tokenize", true) || !boolean(cfg, "do_subword_tokenize", true))
      throw Error(cfgPath, "do_word_tokenize / do_subword_tokenize false is not supported");
    if (word != "mecab")
      throw Error(cfgPath, "word_tokenizer_type '" + word + "' is not supported",
                  "only MeCab-based BertJapaneseTokenizer folders load (ruri v1/v2, cl-tohoku BERTs); basic, sudachi and "
                  "jumanpp word splitting are not implemented");
    if (sub != "wordpiece" && sub != "character")
      throw Error(cfgPath, "subword_tokenizer_type '" + sub + "' is not supported", "wordpiece or character");
    t->characters_ = sub == "character";
    t->lowerCase_ = boolean(cfg, "do_lower_case", false);
    t->unkToken_ = "[UNK]";
    if (cfg.contains("unk_token") && cfg["unk_token"].is_object() && cfg["unk_token"].contains("content"))
      t->unkToken_ = cfg["unk_token"]["content"].get<std::string>();
    else
      t->unkToken_ = str(cfg, "unk_token", "[UNK]");
    // never_split: words MeCab gives that are not lowercased.
    if (cfg.contains("never_split") && !cfg["never_split"].is_null()) {
      if (!cfg["never_split"].is_array()) throw Error(cfgPath, "never_split must be a list of strings");
      for (const json& v : cfg["never_split"]) {
        if (!v.is_string()) throw Error(cfgPath, "never_split must be a list of strings");
        t->neverSplit_.push_back(v.get<std::string>());
      }
    }
    json mk = cfg.contains("mecab_kwargs") && !cfg["mecab_kwargs"].is_null() ? cfg["mecab_kwargs"] : json::object();
    if (!mk.is_object()) throw Error(cfgPath, "mecab_kwargs must be an object");
    for (auto it = mk.begin(); it != mk.end(); ++it)
      if (it.key() != "mecab_dic" && it.key() != "normalize_text" && it.key() != "mecab_option" &&
          it.key() != "do_lower_case" && it.key() != "never_split")
        throw Error(cfgPath, "mecab_kwargs." + it.key() + " is not a MecabTokenizer setting");
    if (mk.contains("do_lower_case") || mk.contains("never_split"))
      throw Error(cfgPath, "mecab_kwargs repeats do_lower_case / never_split (transformers refuses that too)");
    if (!str(mk, "mecab_option", "").empty())
      throw Error(cfgPath, "mecab_kwargs.mecab_option '" + str(mk, "mecab_option", "") + "' is not supported",
                  "only the dictionary's own settings (-d DICDIR -r DICDIR/mecabrc) are reproduced");
    t->normalize_ = boolean(mk, "normalize_text", true);
    // MecabTokenizer's default dictionary is ipadic; null means "MeCab's system dictionary".
    t->dicName_ = mk.contains("mecab_dic") && mk["mecab_dic"].is_null() ? "" : str(mk, "mecab_dic", "ipadic");
  } catch (const json::exception& e) {
    throw Error(cfgPath, std::string("tokenizer JSON: ") + e.what());
  }

  // load_vocab: one token per line, universal newlines, the last of duplicate lines wins.
  {
    std::error_code ec;
    if (!fs::is_regular_file(vocabPath, ec))
      throw Error(vocabPath, "missing", "a BertJapaneseTokenizer folder needs vocab.txt");
    std::string text = readBytes(vocabPath);
    std::string line;
    for (size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (c == '\n' || c == '\r') {
        if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
        t->vocab_.push_back(std::move(line));
        line.clear();
      } else {
        line += c;
      }
    }
    if (!line.empty()) t->vocab_.push_back(std::move(line));
    if (t->vocab_.empty()) throw Error(vocabPath, "empty vocabulary");
    for (size_t id = 0; id < t->vocab_.size(); ++id) t->ids_[t->vocab_[id]] = static_cast<int>(id);
    t->unkId_ = t->tokenToId(t->unkToken_);
    if (t->unkId_ < 0) throw Error(vocabPath, "unk_token '" + t->unkToken_ + "' is not in the vocabulary");
  }

  t->dicDir_ = findMecabDictionary(dir, t->dicName_);
  t->dicFingerprint_ = mecabDictionaryFingerprint(t->dicDir_);
  const std::string rc = (fs::path(t->dicDir_) / "mecabrc").string();
  std::error_code ec;
  if (!fs::is_regular_file(rc, ec))
    throw Error(rc, "missing", "fugashi opens a dictionary with -r DICDIR/mecabrc; the dictionary folder needs that file (it may be empty)");
  std::vector<std::string> args = {"mecab", "-d", t->dicDir_, "-r", rc};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  t->mecab_ = std::make_unique<Mecab>();
  t->mecab_->tagger = mecab_new(static_cast<int>(argv.size()), argv.data());
  if (!t->mecab_->tagger) {
    const char* why = mecab_strerror(nullptr);
    throw Error(t->dicDir_, std::string("MeCab cannot open this dictionary: ") + (why && *why ? why : "unknown error"));
  }
  return t;
}

int BertJapaneseTokenizer::tokenToId(std::string_view token) const {
  auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

std::string BertJapaneseTokenizer::description() const {
  return std::string("BertJapaneseTokenizer: MeCab (") + (dicName_.empty() ? "system dictionary" : dicName_) + " at " + dicDir_ +
         ") + " + (characters_ ? "characters" : "WordPiece") + ", " + std::to_string(vocab_.size()) + " tokens";
}

std::vector<std::string> BertJapaneseTokenizer::words(std::string_view textIn) const {
  std::string text(textIn);
  if (lowerCase_) text = lowerEachCharacter(text);  // PreTrainedTokenizer.tokenize
  if (normalize_) text = nfkc(text);                 // MecabTokenizer.tokenize
  // fugashi hands MeCab a C string: the text ends at the first NUL.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) text.resize(nul);
  std::vector<std::string> out;
  {
    std::lock_guard<std::mutex> lock(mecab_->mu);
    const mecab_node_t* node = mecab_sparse_tonode2(mecab_->tagger, text.data(), text.size());
    if (!node) throw Error(dicDir_, std::string("MeCab failed: ") + mecab_strerror(mecab_->tagger));
    for (node = node->next; node && node->stat != MECAB_EOS_NODE; node = node->next)
      out.emplace_back(node->surface, node->length);  // whitespace before a word is not in its surface
  }
  if (lowerCase_)
    for (std::string& w : out)
      if (std::find(neverSplit_.begin(), neverSplit_.end(), w) == neverSplit_.end()) w = lower(w);
  return out;
}

void BertJapaneseTokenizer::wordPiece(const std::string& word, std::vector<int>& out) const {
  std::vector<char32_t> cps;
  std::vector<size_t> offs;
  codePoints(word, cps, offs);
  if (cps.size() > 100) {  // max_input_chars_per_word
    out.push_back(unkId_);
    return;
  }
  const size_t before = out.size();
  for (size_t start = 0; start < cps.size();) {
    int found = -1;
    size_t end = cps.size();
    for (; end > start; --end) {
      std::string piece = word.substr(offs[start], offs[end] - offs[start]);
      if (start > 0) piece = "##" + piece;
      if ((found = tokenToId(piece)) >= 0) break;
    }
    if (found < 0) {  // one piece without a match makes the whole word [UNK]
      out.resize(before);
      out.push_back(unkId_);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

void BertJapaneseTokenizer::encode(std::string_view text, std::vector<int>& out) const {
  std::vector<char32_t> cps;
  std::vector<size_t> offs;
  for (const std::string& w : words(text)) {
    if (characters_) {  // CharacterTokenizer: NFKC again, then every character, spaces included
      const std::string n = nfkc(w);
      codePoints(n, cps, offs);
      for (size_t i = 0; i < cps.size(); ++i) {
        const int id = tokenToId(std::string_view(n).substr(offs[i], offs[i + 1] - offs[i]));
        out.push_back(id >= 0 ? id : unkId_);
      }
      continue;
    }
    // WordpieceTokenizer: whitespace_tokenize (str.split) first.
    codePoints(w, cps, offs);
    for (size_t i = 0; i < cps.size();) {
      while (i < cps.size() && isPythonSpace(cps[i])) ++i;
      size_t j = i;
      while (j < cps.size() && !isPythonSpace(cps[j])) ++j;
      if (j > i) wordPiece(w.substr(offs[i], offs[j] - offs[i]), out);
      i = j;
    }
  }
}

}  // namespace kh
