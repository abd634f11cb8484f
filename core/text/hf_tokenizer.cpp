// Hugging Face tokenizer.json: parsing, the hand-coded pre-tokenizer regexes, byte-level BPE and
// Unigram (Viterbi) as in the `tokenizers` library (tokenizers/src/models/{bpe,unigram}). Must
// never include torch; configurations it does not implement are refused, never approximated.
#include "core/text/hf_tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <queue>
#include <nlohmann/json.hpp>
#include <sstream>

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include "core/error.h"

namespace kh {

using nlohmann::json;

namespace {

struct CodeRange {
  uint32_t lo, hi;
};
#include "core/text/unicode_classes.inc"

template <size_t N>
bool inRanges(const CodeRange (&r)[N], uint32_t cp) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid].lo) hi = mid;
    else if (cp > r[mid].hi) lo = mid + 1;
    else return true;
  }
  return false;
}

// Decodes valid UTF-8 (the caller checked it) into code points and their byte offsets.
void decodeUtf8(std::string_view s, std::vector<uint32_t>& cps, std::vector<size_t>& offs) {
  cps.clear();
  offs.clear();
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    cps.push_back(cp);
    offs.push_back(i);
    i += n;
  }
  offs.push_back(s.size());
}

std::string encodeUtf8(uint32_t cp) {
  std::string o;
  if (cp < 0x80) {
    o += static_cast<char>(cp);
  } else if (cp < 0x800) {
    o += static_cast<char>(0xC0 | (cp >> 6));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    o += static_cast<char>(0xE0 | (cp >> 12));
    o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    o += static_cast<char>(0xF0 | (cp >> 18));
    o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return o;
}

struct ByteTable {
  std::string symbol[256];
  std::unordered_map<std::string, uint8_t> byteOf;
  ByteTable() {
    // bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the rest get 256 + n.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      symbol[b] = encodeUtf8(keep ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++));
      byteOf[symbol[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteTable& byteTable() {
  static const ByteTable t;
  return t;
}

// A member of a JSON object, or null when absent (const operator[] must not see a missing key).
const json& fld(const json& o, const std::string& key) {
  static const json null;
  if (!o.is_object()) return null;
  auto it = o.find(key);
  return it == o.end() ? null : *it;
}

const std::string kMetaspace = "\xE2\x96\x81";  // "▁"

std::string base64Decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '+') v = 62;
    else if (ch == '/') v = 63;
    else if (ch == '=') break;
    else continue;  // whitespace
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

const char* const kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* const kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

std::string replaceAllCopy(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

bool isUnicodeLetter(uint32_t cp) { return inRanges(kLetterRanges, cp); }
bool isUnicodeNumber(uint32_t cp) { return inRanges(kNumberRanges, cp); }
bool isUnicodeSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

const std::string& byteLevelSymbol(uint8_t b) { return byteTable().symbol[b]; }
bool isUnicodePunctuation(uint32_t cp) { return inRanges(kPunctuationRanges, cp); }
// Code points that (may) extend the grapheme before them or join the next (Grapheme_Cluster_Break
// Extend, SpacingMark, ZWJ, Prepend, Regional_Indicator, Hangul L/V/T), over-approximated from
// general categories M* plus the listed extras: refusing more than needed is safe.
static bool joinsGrapheme(uint32_t cp) {
  static const CodeRange extra[] = {{0x0600, 0x0605}, {0x06DD, 0x06DD}, {0x070F, 0x070F}, {0x0890, 0x0891},
                                    {0x08E2, 0x08E2}, {0x0D4E, 0x0D4E}, {0x1100, 0x11FF}, {0x200C, 0x200D},
                                    {0xA960, 0xA97F}, {0xD7B0, 0xD7FF}, {0xFF9E, 0xFF9F}, {0x110BD, 0x110BD},
                                    {0x110CD, 0x110CD}, {0x111C2, 0x111C3}, {0x1193F, 0x1193F}, {0x11941, 0x11941},
                                    {0x11A3A, 0x11A3A}, {0x11A84, 0x11A89}, {0x11D46, 0x11D46}, {0x1F1E6, 0x1F1FF},
                                    {0x1F3FB, 0x1F3FF}, {0xE0000, 0xE0FFF}};
  return inRanges(kMarkRanges, cp) || inRanges(extra, cp);
}
bool isUnicodeOther(uint32_t cp) { return inRanges(kOtherRanges, cp); }
bool isCjkIdeograph(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// ---- pre-tokenizer regexes, by hand ------------------------------------------------------------
//
// Each alternative is tried in order at the current position, as a backtracking regex engine
// does; the first that matches gives the piece.

std::vector<std::string_view> splitPreTokens(std::string_view text, PreTokenizerPattern pattern) {
  std::vector<uint32_t> c;
  std::vector<size_t> off;
  decodeUtf8(text, c, off);
  const size_t n = c.size();
  auto L = [&](size_t i) { return i < n && isUnicodeLetter(c[i]); };
  auto N = [&](size_t i) { return i < n && isUnicodeNumber(c[i]); };
  auto S = [&](size_t i) { return i < n && isUnicodeSpace(c[i]); };
  auto other = [&](size_t i) { return i < n && !isUnicodeSpace(c[i]) && !isUnicodeLetter(c[i]) && !isUnicodeNumber(c[i]); };
  auto nl = [&](size_t i) { return i < n && (c[i] == '\r' || c[i] == '\n'); };
  const bool gpt2 = pattern == PreTokenizerPattern::Gpt2;

  // 's|'t|'re|'ve|'m|'ll|'d (case-insensitive for Qwen2/Llama3): length in code points or 0.
  auto contraction = [&](size_t i) -> size_t {
    if (c[i] != '\'' || i + 1 >= n) return 0;
    auto lower = [&](size_t k) -> uint32_t {
      if (k >= n) return 0;
      uint32_t x = c[k];
      if (!gpt2 && x >= 'A' && x <= 'Z') x += 32;
      return x;
    };
    uint32_t a = lower(i + 1), b = lower(i + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
  };
  // \s+(?!\S) then \s+ at i (c[i] is whitespace): the run minus its last character when a
  // non-space follows and the run is longer than one, else the whole run.
  auto spaces = [&](size_t i) -> size_t {
    size_t k = i;
    while (S(k)) ++k;
    if (k < n && k - i >= 2) return k - 1;
    return k;
  };

  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < n) {
    size_t j = 0;  // end of the piece
    if (size_t len = contraction(i)) {
      j = i + len;
    } else if (gpt2) {
      size_t k = (c[i] == ' ') ? i + 1 : i;  // optional leading space
      if (L(k)) {
        while (L(k)) ++k;
        j = k;
      } else if (N(k)) {
        while (N(k)) ++k;
        j = k;
      } else if (other(k)) {
        while (other(k)) ++k;
        j = k;
      } else {
        j = spaces(i);
      }
    } else {
      if (L(i)) {  // [^\r\n\p{L}\p{N}]?\p{L}+ without the optional character
        j = i;
        while (L(j)) ++j;
      } else if (!nl(i) && !N(i) && L(i + 1)) {  // ... with it
        j = i + 1;
        while (L(j)) ++j;
      } else if (N(i)) {  // \p{N} or \p{N}{1,3}
        j = i + 1;
        if (pattern == PreTokenizerPattern::Llama3)
          while (j < i + 3 && N(j)) ++j;
      } else if (other(i) || (c[i] == ' ' && other(i + 1))) {  //  ?[^\s\p{L}\p{N}]+[\r\n]*
        j = (c[i] == ' ') ? i + 1 : i;
        while (other(j)) ++j;
        while (nl(j)) ++j;
      } else {  // c[i] is whitespace
        size_t k = i;
        size_t lastNl = n;
        while (S(k)) {
          if (nl(k)) lastNl = k;
          ++k;
        }
        if (lastNl != n) j = lastNl + 1;  // \s*[\r\n]+
        else j = spaces(i);
      }
    }
    if (j <= i) j = i + 1;  // cannot happen; keeps the loop finite
    out.push_back(text.substr(off[i], off[j] - off[i]));
    i = j;
  }
  return out;
}

// ---- loading ---------------------------------------------------------------------------------

std::unique_ptr<HfTokenizerJson> HfTokenizerJson::load(const std::string& path) {
  std::unique_ptr<HfTokenizerJson> t(new HfTokenizerJson());
  t->path_ = path;
  auto fail = [&](const std::string& cause, const std::string& hint = {}) -> Error { return Error(path, cause, hint); };
  std::ifstream f(path, std::ios::binary);
  if (!f) throw fail("cannot read file");
  std::ostringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw fail(std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("model") || !fld(j, "model").is_object())
    throw fail("no \"model\" object", "a Hugging Face tokenizer.json has model, normalizer, pre_tokenizer, decoder");
  try {
    // ---- model ----
    const json& m = fld(j, "model");
    const std::string type = m.value("type", std::string());
    t->byteFallback_ = m.contains("byte_fallback") && fld(m, "byte_fallback").is_boolean() && fld(m, "byte_fallback").get<bool>();
    auto setToken = [&](const std::string& tok, int id) {
      if (id < 0 || id > (1 << 24)) throw fail("model vocab id " + std::to_string(id) + " out of range");
      if (static_cast<size_t>(id) >= t->vocab_.size()) t->vocab_.resize(static_cast<size_t>(id) + 1);
      t->vocab_[static_cast<size_t>(id)] = tok;
      t->ids_[tok] = id;
      t->longestPiece_ = std::max(t->longestPiece_, tok.size());
    };
    if (type == "BPE") {
      t->type_ = ModelType::Bpe;
      if (!fld(m, "vocab").is_object()) throw fail("model.vocab must be an object of token -> id for BPE");
      for (auto it = fld(m, "vocab").begin(); it != fld(m, "vocab").end(); ++it) setToken(it.key(), it.value().get<int>());
      if (m.contains("dropout") && !fld(m, "dropout").is_null() && fld(m, "dropout").get<double>() != 0.0)
        throw fail("BPE dropout is not supported", "set model.dropout to null for inference");
      for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
          throw fail(std::string("BPE ") + k + " is not supported");
      t->ignoreMerges_ = m.value("ignore_merges", false);
      t->fuseUnk_ = m.value("fuse_unk", false);
      if (m.contains("unk_token") && fld(m, "unk_token").is_string()) {
        auto it = t->ids_.find(fld(m, "unk_token").get<std::string>());
        if (it != t->ids_.end()) t->unkId_ = it->second;
      }
      const json& merges = m.value("merges", json::array());
      if (!merges.is_array()) throw fail("model.merges must be a list");
      int rank = 0;
      for (const json& e : merges) {
        std::string a, b;
        if (e.is_string()) {
          const std::string s = e.get<std::string>();
          size_t sp = s.find(' ');
          if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
            throw fail("malformed merge " + std::to_string(rank) + " '" + s + "'", "merges are \"left right\" strings");
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
          a = e[0].get<std::string>();
          b = e[1].get<std::string>();
        } else {
          throw fail("malformed merge " + std::to_string(rank) + ": " + e.dump(), "merges are \"left right\" or [left, right]");
        }
        if (!t->ids_.count(a) || !t->ids_.count(b) || !t->ids_.count(a + b))
          throw fail("merge " + std::to_string(rank) + " '" + a + " " + b + "' uses a token missing from the vocab");
        t->merges_.emplace(pairKey(t->ids_.at(a), t->ids_.at(b)), std::make_pair(rank, t->ids_.at(a + b)));
        ++rank;
      }
    } else if (type == "Unigram") {
      t->type_ = ModelType::Unigram;
      if (!fld(m, "vocab").is_array()) throw fail("model.vocab must be a list of [piece, score] for Unigram");
      int id = 0;
      t->minScore_ = std::numeric_limits<double>::infinity();
      for (const json& e : fld(m, "vocab")) {
        if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
          throw fail("Unigram vocab entry " + std::to_string(id) + " is not [piece, score]");
        setToken(e[0].get<std::string>(), id);
        t->scores_.push_back(e[1].get<double>());
        t->minScore_ = std::min(t->minScore_, t->scores_.back());
        ++id;
      }
      if (m.contains("unk_id") && fld(m, "unk_id").is_number_integer()) {
        int u = fld(m, "unk_id").get<int>();
        if (u < 0 || u >= id) throw fail("Unigram unk_id " + std::to_string(u) + " is outside the vocab");
        t->unkId_ = u;
      }
      t->fuseUnk_ = true;
    } else if (type == "WordPiece") {
      t->type_ = ModelType::WordPiece;
      if (!fld(m, "vocab").is_object()) throw fail("model.vocab must be an object of token -> id for WordPiece");
      for (auto it = fld(m, "vocab").begin(); it != fld(m, "vocab").end(); ++it) setToken(it.key(), it.value().get<int>());
      if (m.contains("continuing_subword_prefix") && !fld(m, "continuing_subword_prefix").is_string())
        throw fail("WordPiece continuing_subword_prefix must be a string");
      t->wpPrefix_ = m.value("continuing_subword_prefix", std::string("##"));
      t->wpMaxChars_ = m.value("max_input_chars_per_word", size_t(100));
      if (!m.contains("unk_token") || !fld(m, "unk_token").is_string()) throw fail("WordPiece model needs a string unk_token");
      const std::string unk = fld(m, "unk_token").get<std::string>();
      auto it = t->ids_.find(unk);
      if (it == t->ids_.end()) throw fail("WordPiece unk_token '" + unk + "' is not in the vocab");
      t->unkId_ = it->second;
    } else {
      throw fail("model type '" + type + "' is not supported", "supported: BPE (byte-level or byte fallback), Unigram, WordPiece");
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      auto it = t->ids_.find(name);
      if (it != t->ids_.end()) t->byteIds_[static_cast<size_t>(b)] = it->second;
    }

    // ---- normalizer ----
    std::vector<const json*> norms;
    if (j.contains("normalizer") && !fld(j, "normalizer").is_null()) {
      const json& nz = fld(j, "normalizer");
      if (nz.value("type", std::string()) == "Sequence") {
        for (const json& e : fld(nz, "normalizers")) norms.push_back(&e);
      } else {
        norms.push_back(&nz);
      }
    }
    for (const json* e : norms) {
      const std::string nt = e->value("type", std::string());
      if (nt == "Prepend") {
        t->normalizer_.push_back({NormStep::Prepend, fld(*e, "prepend").get<std::string>(), ""});
      } else if (nt == "Replace") {
        const json& p = fld(*e, "pattern");
        if (p.is_object() && p.contains("Regex") && fld(p, "Regex") == " {2,}") {  // SentencePiece converters
          t->normalizer_.push_back({NormStep::SpaceRuns, "", fld(*e, "content").get<std::string>()});
          continue;
        }
        if (!p.is_object() || !p.contains("String"))
          throw fail("normalizer Replace with a regex pattern is not supported", "only {\"String\": ...} patterns and Regex \" {2,}\"");
        t->normalizer_.push_back({NormStep::Replace, fld(p, "String").get<std::string>(), fld(*e, "content").get<std::string>()});
      } else if (nt == "NFC") {
        t->normalizer_.push_back({NormStep::NfcCheck, "", ""});
      } else if (nt == "BertNormalizer") {
        t->bertCleanText_ = e->value("clean_text", true);
        t->bertChineseChars_ = e->value("handle_chinese_chars", true);
        t->bertLowercase_ = e->value("lowercase", true);
        // strip_accents null follows lowercase (as in transformers' BertTokenizer).
        t->bertStripAccents_ = e->contains("strip_accents") && !fld(*e, "strip_accents").is_null()
                                   ? fld(*e, "strip_accents").get<bool>()
                                   : t->bertLowercase_;
        t->normalizer_.push_back({NormStep::Bert, "", ""});
      } else if (nt == "Precompiled") {
        const std::string blob = base64Decode(fld(*e, "precompiled_charsmap").get<std::string>());
        if (blob.size() < 4) throw fail("Precompiled charsmap shorter than its 4-byte header");
        const uint32_t trieBytes = static_cast<uint32_t>(static_cast<unsigned char>(blob[0])) |
                                   static_cast<uint32_t>(static_cast<unsigned char>(blob[1])) << 8 |
                                   static_cast<uint32_t>(static_cast<unsigned char>(blob[2])) << 16 |
                                   static_cast<uint32_t>(static_cast<unsigned char>(blob[3])) << 24;
        if (trieBytes % 4 != 0 || trieBytes == 0 || 4 + static_cast<size_t>(trieBytes) > blob.size())
          throw fail("Precompiled charsmap trie size " + std::to_string(trieBytes) + " does not fit its " +
                     std::to_string(blob.size()) + " bytes");
        t->charsmapTrie_.resize(trieBytes / 4);
        std::memcpy(t->charsmapTrie_.data(), blob.data() + 4, trieBytes);  // little-endian host (x86, ARM)
        t->charsmapNormalized_ = blob.substr(4 + trieBytes);
        t->normalizer_.push_back({NormStep::Precompiled, "", ""});
      } else if (nt == "Strip") {
        std::string sides = std::string(e->value("strip_left", false) ? "l" : "") + (e->value("strip_right", false) ? "r" : "");
        t->normalizer_.push_back({NormStep::Strip, sides, ""});
      } else {
        throw fail("normalizer '" + nt + "' is not supported",
                   "supported: null, Prepend, Replace (string), NFC (on text it leaves unchanged) and a Sequence of "
                   "them; NFD/NFKC/NFKD/Lowercase/BertNormalizer are not");
      }
    }

    // ---- pre-tokenizer ----
    auto readMetaspace = [&](const json& e) {
      t->pre_ = Pre::Metaspace;
      t->replacement_ = e.value("replacement", kMetaspace);
      std::string scheme = "always";
      if (e.contains("prepend_scheme")) scheme = fld(e, "prepend_scheme").get<std::string>();
      else if (e.contains("add_prefix_space")) scheme = fld(e, "add_prefix_space").get<bool>() ? "always" : "never";
      if (scheme == "always") t->prepend_ = Prepend::Always;
      else if (scheme == "first") t->prepend_ = Prepend::First;
      else if (scheme == "never") t->prepend_ = Prepend::Never;
      else throw fail("Metaspace prepend_scheme '" + scheme + "' is unknown");
      t->metaspaceSplit_ = e.value("split", true);
    };
    if (j.contains("pre_tokenizer") && !fld(j, "pre_tokenizer").is_null()) {
      const json& p = fld(j, "pre_tokenizer");
      const std::string pt = p.value("type", std::string());
      auto patternOf = [&](const json& split) {
        const json& pat = fld(split, "pattern");
        if (!pat.is_object() || !pat.contains("Regex"))
          throw fail("Split pre-tokenizer without a Regex pattern is not supported");
        const std::string r = fld(pat, "Regex").get<std::string>();
        if (split.value("behavior", std::string()) != "Isolated" || split.value("invert", false))
          throw fail("Split pre-tokenizer: only behavior Isolated, invert false is supported");
        if (r == kQwen2Regex) return PreTokenizerPattern::Qwen2;
        if (r == kLlama3Regex) return PreTokenizerPattern::Llama3;
        if (r == kGpt2Regex) return PreTokenizerPattern::Gpt2;
        throw fail("Split pre-tokenizer regex is not one we implement: " + r,
                   "known: the GPT-2, Qwen2 and Llama-3 patterns");
      };
      if (pt == "ByteLevel") {
        t->pre_ = Pre::ByteLevel;
        t->byteLevel_ = true;
        t->addPrefixSpace_ = p.value("add_prefix_space", false);
        if (!p.value("use_regex", true)) t->pre_ = Pre::None;
        t->pattern_ = PreTokenizerPattern::Gpt2;
        t->preName_ = t->pre_ == Pre::ByteLevel ? "ByteLevel (GPT-2 regex)" : "ByteLevel (no regex)";
      } else if (pt == "Sequence" && fld(p, "pretokenizers").is_array() && fld(p, "pretokenizers").size() == 2 &&
                 fld(p, "pretokenizers")[0].value("type", std::string()) == "Split" &&
                 fld(p, "pretokenizers")[1].value("type", std::string()) == "ByteLevel" &&
                 !fld(p, "pretokenizers")[1].value("use_regex", true)) {
        t->pre_ = Pre::Split;
        t->pattern_ = patternOf(fld(p, "pretokenizers")[0]);
        t->byteLevel_ = true;
        t->addPrefixSpace_ = fld(p, "pretokenizers")[1].value("add_prefix_space", false);
        t->preName_ = t->pattern_ == PreTokenizerPattern::Qwen2    ? "Split (Qwen2 regex) + ByteLevel"
                      : t->pattern_ == PreTokenizerPattern::Llama3 ? "Split (Llama-3 regex) + ByteLevel"
                                                                   : "Split (GPT-2 regex) + ByteLevel";
      } else if (pt == "Metaspace") {
        readMetaspace(p);
        t->preName_ = "Metaspace";
      } else if (pt == "BertPreTokenizer") {
        t->pre_ = Pre::Bert;
        t->preName_ = "BertPreTokenizer";
      } else {
        throw fail("pre_tokenizer '" + pt + "' (" + p.dump().substr(0, 200) + ") is not supported",
                   "supported: ByteLevel, Sequence[Split(regex), ByteLevel(use_regex false)], Metaspace, null");
      }
    }
    if (t->byteLevel_ && t->type_ != ModelType::Bpe) throw fail("ByteLevel pre-tokenizer with a non-BPE model");
    if ((t->type_ == ModelType::WordPiece) != (t->pre_ == Pre::Bert))
      throw fail("WordPiece goes with BertPreTokenizer here; this tokenizer pairs " + t->preName_ + " with model " + type,
                 "supported: BERT-style WordPiece tokenizer.json files");

    // ---- decoder ----
    bool decByteLevel = false, decPieces = false, decWordPiece = false;
    if (j.contains("decoder") && !fld(j, "decoder").is_null()) {
      const json& d = fld(j, "decoder");
      std::vector<const json*> steps;
      if (d.value("type", std::string()) == "Sequence") {
        for (const json& e : fld(d, "decoders")) steps.push_back(&e);
      } else {
        steps.push_back(&d);
      }
      std::vector<std::string> names;
      for (const json* e : steps) {
        const std::string dt = e->value("type", std::string());
        names.push_back(dt);
        if (dt == "ByteLevel") {
          decByteLevel = true;
        } else if (dt == "Metaspace") {
          decPieces = true;
          if (e->value("replacement", kMetaspace) != t->replacement_ && t->pre_ == Pre::Metaspace)
            throw fail("Metaspace decoder and pre-tokenizer disagree on the replacement");
          std::string scheme = e->contains("prepend_scheme") ? fld(*e, "prepend_scheme").get<std::string>()
                               : (e->contains("add_prefix_space") && !fld(*e, "add_prefix_space").get<bool>()) ? "never"
                                                                                                          : "always";
          t->stripFirstSpace_ = scheme != "never";
        } else if (dt == "Replace") {
          const json& p = fld(*e, "pattern");
          if (!p.is_object() || p.value("String", std::string()) != kMetaspace || fld(*e, "content") != " ")
            throw fail("decoder Replace other than \"▁\" -> \" \" is not supported");
          decPieces = true;
        } else if (dt == "WordPiece") {
          decWordPiece = true;
          if (e->value("prefix", std::string("##")) != t->wpPrefix_)
            throw fail("WordPiece decoder prefix differs from the model's continuing_subword_prefix");
          t->wpCleanup_ = e->value("cleanup", true);
        } else if (dt == "ByteFallback" || dt == "Fuse") {
          decPieces = true;
          if (dt == "ByteFallback") t->decodeBytes_ = true;
        } else if (dt == "Strip") {
          // Strip works per token: only after Fuse is that the whole text.
          if (std::find(names.begin(), names.end(), "Fuse") == names.end())
            throw fail("decoder Strip without a Fuse before it is not supported");
          if (fld(*e, "content") != " " || e->value("start", 0) != 1 || e->value("stop", 0) != 0)
            throw fail("decoder Strip other than (\" \", start 1, stop 0) is not supported");
          t->stripFirstSpace_ = true;
          decPieces = true;
        } else {
          throw fail("decoder '" + dt + "' is not supported",
                     "supported: ByteLevel, Metaspace, Replace(▁→space), ByteFallback, Fuse, Strip(1 space)");
        }
      }
      for (const std::string& nm : names) t->decoderName_ += (t->decoderName_.empty() ? "" : "+") + nm;
    }
    if (decByteLevel && decPieces) throw fail("decoder mixes ByteLevel with piece decoders; not supported");
    if (decWordPiece && (decByteLevel || decPieces)) throw fail("decoder mixes WordPiece with other decoders; not supported");
    if (decWordPiece) t->decodeStyle_ = DecodeStyle::WordPiece;
    else if (decByteLevel) t->decodeStyle_ = DecodeStyle::ByteLevel;
    else if (decPieces) t->decodeStyle_ = DecodeStyle::Pieces;
    else throw fail("no decoder (tokens would be joined with spaces); not supported", "expected ByteLevel or Metaspace");
    if (t->byteLevel_ != decByteLevel) throw fail("ByteLevel pre-tokenizer and decoder must come together");

    // ---- added tokens ----
    if (j.contains("added_tokens") && !fld(j, "added_tokens").is_null()) {
      for (const json& a : fld(j, "added_tokens")) {
        if (!a.is_object() || !fld(a, "id").is_number_integer() || !fld(a, "content").is_string())
          throw fail("added_tokens entry needs an integer id and a string content: " + a.dump());
        if (a.value("single_word", false))
          throw fail("added token '" + fld(a, "content").get<std::string>() + "' has single_word true; not supported");
        AddedToken at{fld(a, "id").get<int>(), fld(a, "content").get<std::string>(), a.value("special", false),
                      a.value("lstrip", false), a.value("rstrip", false)};
        if (at.content.empty()) throw fail("added token " + std::to_string(at.id) + " has empty content");
        if (at.id < 0 || at.id > (1 << 24)) throw fail("added token id " + std::to_string(at.id) + " out of range");
        if (static_cast<size_t>(at.id) >= t->vocab_.size()) t->vocab_.resize(static_cast<size_t>(at.id) + 1);
        t->vocab_[static_cast<size_t>(at.id)] = at.content;
        t->added_.push_back(at);
      }
    }

    // ---- post-processor ----
    if (j.contains("post_processor") && !fld(j, "post_processor").is_null()) {
      const json& pp = fld(j, "post_processor");
      std::vector<const json*> procs;
      if (pp.value("type", std::string()) == "Sequence") {
        for (const json& e : fld(pp, "processors")) procs.push_back(&e);
      } else {
        procs.push_back(&pp);
      }
      for (const json* e : procs) {
        const std::string ptype = e->value("type", std::string());
        if (ptype == "ByteLevel") continue;  // only adjusts offsets
        if (ptype == "BertProcessing" || ptype == "RobertaProcessing") {  // cls $A sep
          for (const char* k : {"cls", "sep"})
            if (!e->contains(k) || !(*e)[k].is_array() || (*e)[k].size() != 2 || !(*e)[k][1].is_number_integer())
              throw fail("post_processor " + ptype + " needs \"" + k + "\" as [token, id]");
          t->prefix_.push_back(fld(*e, "cls")[1].get<int>());
          t->suffix_.push_back(fld(*e, "sep")[1].get<int>());
          continue;
        }
        if (ptype != "TemplateProcessing")
          throw fail("post_processor '" + ptype + "' is not supported",
                     "supported: TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel");
        bool seenA = false;
        for (const json& item : fld(*e, "single")) {
          if (item.contains("Sequence")) {
            seenA = true;
            continue;
          }
          if (!item.contains("SpecialToken")) throw fail("TemplateProcessing item not understood: " + item.dump());
          const std::string name = fld(fld(item, "SpecialToken"), "id").get<std::string>();
          const json& st = fld(*e, "special_tokens");
          if (!st.contains(name)) throw fail("TemplateProcessing special token '" + name + "' is not in special_tokens");
          for (const json& id : fld(fld(st, name), "ids")) (seenA ? t->suffix_ : t->prefix_).push_back(id.get<int>());
        }
      }
    }
  } catch (const json::exception& e) {
    throw fail(std::string("unexpected JSON shape: ") + e.what());
  }
  for (int id : t->prefix_)
    if (id < 0 || static_cast<size_t>(id) >= t->vocab_.size()) throw fail("template token id " + std::to_string(id) + " out of range");
  for (int id : t->suffix_)
    if (id < 0 || static_cast<size_t>(id) >= t->vocab_.size()) throw fail("template token id " + std::to_string(id) + " out of range");
  return t;
}

int HfTokenizerJson::tokenToId(std::string_view token) const {
  auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

std::string HfTokenizerJson::description() const {
  std::string d = std::string("Hugging Face tokenizer.json ") + (type_ == ModelType::Bpe ? "BPE" : type_ == ModelType::Unigram ? "Unigram" : "WordPiece") + ", " +
                  std::to_string(ids_.size()) + " tokens";
  if (byteLevel_) d += ", byte-level";
  if (byteFallback_) d += ", byte fallback";
  if (!preName_.empty()) d += ", pre-tokenizer " + preName_;
  return d;
}

// ---- encoding --------------------------------------------------------------------------------

void HfTokenizerJson::pushUnknown(std::string_view chars, std::vector<int>& out, size_t fuseFrom) const {
  if (byteFallback_) {
    bool all = true;
    for (char ch : chars) all = all && byteIds_[static_cast<unsigned char>(ch)] >= 0;
    if (all) {
      for (char ch : chars) out.push_back(byteIds_[static_cast<unsigned char>(ch)]);
      return;
    }
  }
  if (!unkId_)
    throw Error(path_, "text '" + std::string(chars) + "' has no token and the model has no unk token");
  if (fuseUnk_ && out.size() > fuseFrom && out.back() == *unkId_) return;  // within one word only
  out.push_back(*unkId_);
}

void HfTokenizerJson::encodeWord(const std::string& word, std::vector<int>& out) const {
  if (word.empty()) return;
  if (ignoreMerges_) {
    if (auto it = ids_.find(word); it != ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols as in tokenizers' Word: one per character, an unknown character becoming its
  // <0xNN> byte tokens (byte fallback) or unk (consecutive ones fused when fuse_unk).
  std::vector<int> sym;
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;
  decodeUtf8(word, cps, offs);
  for (size_t i = 0; i < cps.size(); ++i) {
    std::string_view ch(word.data() + offs[i], offs[i + 1] - offs[i]);
    if (auto it = ids_.find(std::string(ch)); it != ids_.end()) sym.push_back(it->second);
    else pushUnknown(ch, sym, 0);
  }
  // Merge the lowest-ranked adjacent pair, leftmost on ties, until none applies: a heap of
  // candidate pairs over a linked list of symbols (O(n log n), as tokenizers' merge_all).
  struct Cand {
    int rank;
    size_t pos;
    int left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const size_t n = sym.size();
  std::vector<size_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = i - 1;  // wraps to SIZE_MAX for the first
    next[i] = i + 1;  // n for the last
  }
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](size_t a) {
    if (a >= n || next[a] >= n) return;
    auto it = merges_.find(pairKey(sym[a], sym[next[a]]));
    if (it != merges_.end()) heap.push({it->second.first, a, sym[a], sym[next[a]]});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    const size_t b = next[c.pos];
    if (!alive[c.pos] || b >= n || sym[c.pos] != c.left || sym[b] != c.right) continue;  // stale
    sym[c.pos] = merges_.at(pairKey(c.left, c.right)).second;
    alive[b] = false;
    next[c.pos] = next[b];
    if (next[b] < n) prev[next[b]] = c.pos;
    if (prev[c.pos] < n) consider(prev[c.pos]);
    consider(c.pos);
  }
  for (size_t i = 0; i < n; ++i)
    if (alive[i]) out.push_back(sym[i]);
}

void HfTokenizerJson::encodeUnigram(const std::string& text, std::vector<int>& out) const {
  if (text.empty()) return;
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;
  decodeUtf8(text, cps, offs);
  const size_t n = cps.size();
  const double unkScore = minScore_ - 10.0;  // tokenizers' kUnkPenalty
  // best[k]: best score of a segmentation of the first k characters; -1 token id marks unknown.
  std::vector<double> best(n + 1, -std::numeric_limits<double>::infinity());
  std::vector<size_t> from(n + 1, 0);
  std::vector<int> tok(n + 1, -1);
  best[0] = 0;
  std::string piece;
  for (size_t i = 0; i < n; ++i) {
    if (best[i] == -std::numeric_limits<double>::infinity()) continue;
    bool single = false;
    for (size_t k = i + 1; k <= n && offs[k] - offs[i] <= longestPiece_; ++k) {
      piece.assign(text, offs[i], offs[k] - offs[i]);
      auto it = ids_.find(piece);
      if (it == ids_.end() || static_cast<size_t>(it->second) >= scores_.size()) continue;
      if (k == i + 1) single = true;
      double s = best[i] + scores_[static_cast<size_t>(it->second)];
      if (s > best[k]) {
        best[k] = s;
        from[k] = i;
        tok[k] = it->second;
      }
    }
    if (!single) {
      double s = best[i] + unkScore;
      if (s > best[i + 1]) {
        best[i + 1] = s;
        from[i + 1] = i;
        tok[i + 1] = -1;
      }
    }
  }
  std::vector<std::pair<size_t, int>> path;  // (start char, token or -1)
  for (size_t k = n; k > 0; k = from[k]) path.emplace_back(from[k], tok[k]);
  std::reverse(path.begin(), path.end());
  // Runs of unknown characters are fused, then byte fallback or unk.
  for (size_t p = 0; p < path.size();) {
    if (path[p].second >= 0) {
      out.push_back(path[p].second);
      ++p;
      continue;
    }
    size_t q = p;
    while (q < path.size() && path[q].second < 0) ++q;
    size_t endChar = q < path.size() ? path[q].first : n;
    std::string_view run(text.data() + offs[path[p].first], offs[endChar] - offs[path[p].first]);
    if (byteFallback_) {
      pushUnknown(run, out, out.size());
    } else {
      if (!unkId_) throw Error(path_, "text '" + std::string(run) + "' has no token and the model has no unk_id");
      out.push_back(*unkId_);
    }
    p = q;
  }
}

bool HfTokenizerJson::charsmapLookup(std::string_view key, std::string_view& out) const {
  // darts-clone units: has_leaf bit 8, value the low 31 bits, label the low byte (plus bit 31),
  // offset (unit >> 10) << ((unit & (1 << 9)) >> 6).
  const auto& a = charsmapTrie_;
  auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
  size_t pos = offset(a[0]);
  for (unsigned char c : key) {
    if (c == 0) return false;
    pos ^= c;
    if (pos >= a.size()) return false;
    const uint32_t u = a[pos];
    if ((u & ((1u << 31) | 0xFFu)) != c) return false;
    pos ^= offset(u);
    if (pos >= a.size()) return false;
    if ((u >> 8) & 1u) {  // the first (shortest) key that is a prefix: what HF takes
      const size_t v = a[pos] & ((1u << 31) - 1);
      if (v >= charsmapNormalized_.size()) throw Error(path_, "Precompiled charsmap value out of range");
      const size_t end = charsmapNormalized_.find('\0', v);
      out = std::string_view(charsmapNormalized_).substr(v, (end == std::string::npos ? charsmapNormalized_.size() : end) - v);
      return true;
    }
  }
  return false;
}

std::string HfTokenizerJson::applyCharsmap(const std::string& s) const {
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;
  decodeUtf8(s, cps, offs);
  std::string o;
  std::string_view rep;
  for (size_t i = 0; i < cps.size(); ++i) {
    const std::string_view ch(s.data() + offs[i], offs[i + 1] - offs[i]);
    if (cps[i] == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') {  // CR LF: one grapheme
      if (charsmapLookup(std::string_view(s.data() + offs[i], 2), rep)) {
        o += rep;
      } else {
        for (std::string_view c : {std::string_view("\r"), std::string_view("\n")}) o += charsmapLookup(c, rep) ? rep : c;
      }
      ++i;
      continue;
    }
    if (cps[i] >= 0x80 && joinsGrapheme(cps[i])) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "U+%04X", cps[i]);
      throw Error("tokenizer input", std::string("character ") + hex + " at byte " + std::to_string(offs[i]) +
                      " joins a multi-code-point grapheme, which the Precompiled normalizer maps as a whole (not implemented)",
                  path_ + " has a Precompiled charsmap; give text without combining marks, ZWJ, halfwidth voiced marks or jamo");
    }
    o += charsmapLookup(ch, rep) ? rep : ch;
  }
  return o;
}

std::string HfTokenizerJson::bertNormalize(const std::string& s) const {
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;
  decodeUtf8(s, cps, offs);
  std::string o;
  auto refuse = [&](size_t i, const std::string& why) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "U+%04X", cps[i]);
    return Error("tokenizer input", std::string("character ") + hex + " at byte " + std::to_string(offs[i]) + ": " + why,
                 path_ + " has BertNormalizer with lowercase/strip_accents");
  };
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    if (bertCleanText_) {
      if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && isUnicodeOther(c))) continue;
      if (c == '\t' || c == '\n' || c == '\r' || isUnicodeSpace(c)) c = ' ';
    }
    if (c >= 0x80 && bertStripAccents_) throw refuse(i, "stripping accents (NFD) of non-ASCII text is not implemented");
    if (bertLowercase_) {
      if (c >= 'A' && c <= 'Z') {
        c = c - 'A' + 'a';
      } else if (c >= 0x80 && u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CHANGES_WHEN_LOWERCASED)) {
        // Hugging Face lowercases char by char with Rust's char::to_lowercase: the full
        // (SpecialCasing) mapping without context, which ICU gives for a lone code point.
        UChar src[2], dst[8];
        int32_t n = 0;
        U16_APPEND_UNSAFE(src, n, static_cast<UChar32>(c));
        UErrorCode err = U_ZERO_ERROR;
        const int32_t m = u_strToLower(dst, 8, src, n, "", &err);
        if (U_FAILURE(err)) throw refuse(i, std::string("ICU could not lowercase it: ") + u_errorName(err));
        for (int32_t k = 0; k < m;) {
          UChar32 lc;
          U16_NEXT(dst, k, m, lc);
          o += encodeUtf8(static_cast<uint32_t>(lc));
        }
        continue;  // a cased letter is never a CJK ideograph
      }
    }
    const bool cjk = bertChineseChars_ && isCjkIdeograph(c);
    if (cjk) o += ' ';
    o += encodeUtf8(c);
    if (cjk) o += ' ';
  }
  return o;
}

void HfTokenizerJson::encodeWordPiece(const std::string& word, std::vector<int>& out) const {
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;
  decodeUtf8(word, cps, offs);
  if (cps.size() > wpMaxChars_) {
    out.push_back(*unkId_);
    return;
  }
  std::vector<int> pieces;
  for (size_t start = 0; start < cps.size();) {
    int found = -1;
    size_t end = cps.size();
    for (; end > start; --end) {
      std::string sub = word.substr(offs[start], offs[end] - offs[start]);
      if (start > 0) sub = wpPrefix_ + sub;
      auto it = ids_.find(sub);
      if (it != ids_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {  // any piece without a match makes the whole word unknown
      out.push_back(*unkId_);
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

void HfTokenizerJson::encode(std::string_view text, bool atTextStart, std::vector<int>& out) const {
  if (text.empty()) return;
  std::string s(text);
  for (const NormStep& st : normalizer_) {
    if (st.kind == NormStep::Prepend) {
      if (!s.empty()) s = st.a + s;
    } else if (st.kind == NormStep::Replace) {
      s = replaceAllCopy(std::move(s), st.a, st.b);
    } else if (st.kind == NormStep::Bert) {
      s = bertNormalize(s);
    } else if (st.kind == NormStep::Precompiled) {
      s = applyCharsmap(s);
    } else if (st.kind == NormStep::SpaceRuns) {
      std::string o;
      for (size_t i = 0; i < s.size();) {
        size_t j = i;
        while (j < s.size() && s[j] == ' ') ++j;
        if (j - i >= 2) o += st.b, i = j;
        else o += s[i++];
      }
      s = std::move(o);
    } else if (st.kind == NormStep::Strip) {
      std::vector<uint32_t> cps;
      std::vector<size_t> offs;
      decodeUtf8(s, cps, offs);
      size_t b = 0, e = cps.size();
      if (st.a.find('l') != std::string::npos)
        while (b < e && isUnicodeSpace(cps[b])) ++b;
      if (st.a.find('r') != std::string::npos)
        while (e > b && isUnicodeSpace(cps[e - 1])) --e;
      s = s.substr(offs[b], offs[e] - offs[b]);
    } else {
      std::vector<uint32_t> cps;
      std::vector<size_t> offs;
      decodeUtf8(s, cps, offs);
      for (size_t i = 0; i < cps.size(); ++i)
        if (cps[i] >= 0x80 && inRanges(kNfcUnstableRanges, cps[i])) {
          char hex[16];
          std::snprintf(hex, sizeof hex, "U+%04X", cps[i]);
          throw Error("tokenizer input", std::string("character ") + hex + " at byte " + std::to_string(offs[i]) +
                          " may change under NFC normalization, which is not implemented",
                      path_ + " asks for NFC: give text in precomposed (NFC) form without combining marks");
        }
    }
  }
  if (s.empty()) return;

  std::vector<std::string> words;
  switch (pre_) {
    case Pre::None:
    case Pre::ByteLevel:
    case Pre::Split: {
      if (byteLevel_ && addPrefixSpace_ && s[0] != ' ') s.insert(s.begin(), ' ');
      std::vector<std::string_view> parts;
      if (pre_ == Pre::None) parts.push_back(s);
      else parts = splitPreTokens(s, pattern_);
      for (std::string_view p : parts) {
        if (!byteLevel_) {
          words.emplace_back(p);
          continue;
        }
        std::string w;
        for (char ch : p) w += byteTable().symbol[static_cast<unsigned char>(ch)];
        words.push_back(std::move(w));
      }
      break;
    }
    case Pre::Bert: {
      // Whitespace separates (and goes); each punctuation character is a word of its own.
      std::vector<uint32_t> cps;
      std::vector<size_t> offs;
      decodeUtf8(s, cps, offs);
      std::string cur;
      for (size_t i = 0; i < cps.size(); ++i) {
        const uint32_t c = cps[i];
        const bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || isUnicodeSpace(c);
        const bool punct = (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) ||
                           isUnicodePunctuation(c);
        if (space || punct) {
          if (!cur.empty()) words.push_back(std::move(cur));
          cur.clear();
          if (punct) words.push_back(s.substr(offs[i], offs[i + 1] - offs[i]));
        } else {
          cur.append(s, offs[i], offs[i + 1] - offs[i]);
        }
      }
      if (!cur.empty()) words.push_back(std::move(cur));
      break;
    }
    case Pre::Metaspace: {
      s = replaceAllCopy(std::move(s), " ", replacement_);
      bool prepend = prepend_ == Prepend::Always || (prepend_ == Prepend::First && atTextStart);
      if (prepend && s.compare(0, replacement_.size(), replacement_) != 0) s = replacement_ + s;
      if (!metaspaceSplit_) {
        words.push_back(s);
        break;
      }
      // Split before each replacement character (MergedWithNext).
      size_t start = 0;
      for (size_t p = s.find(replacement_, 1); p != std::string::npos; p = s.find(replacement_, p + 1)) {
        if (p > start) words.push_back(s.substr(start, p - start));
        start = p;
      }
      words.push_back(s.substr(start));
      break;
    }
  }
  for (const std::string& w : words) {
    if (type_ == ModelType::Bpe) encodeWord(w, out);
    else if (type_ == ModelType::WordPiece) encodeWordPiece(w, out);
    else encodeUnigram(w, out);
  }
}

}  // namespace kh
