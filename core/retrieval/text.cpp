// UTF-8, the search normalisation and chunking for retrieval (see text.h for what is covered).
#include "core/retrieval/text.h"

#include <algorithm>

#include "core/error.h"

namespace kh::retrieval {

std::vector<char32_t> decodeUtf8(std::string_view s, const std::string& where) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t line = 1;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    char32_t cp = 0, min = 0;
    if (c < 0x80) n = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07, min = 0x10000;
    bool ok = n > 0 && i + n <= s.size();
    for (int k = 1; ok && k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (ok && n > 1 && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok)
      throw Error(where, "invalid UTF-8 at byte " + std::to_string(i) + " (line " + std::to_string(line) + ")",
                  "save the file as UTF-8");
    if (cp == '\n') ++line;
    out.push_back(cp);
    i += static_cast<size_t>(n);
  }
  return out;
}

std::string encodeUtf8(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  end = std::min(end, cps.size());
  for (size_t i = begin; i < end; ++i) {
    const char32_t c = cps[i];
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

namespace {

// Half-width katakana U+FF61..U+FF9F to their full-width forms (JIS X 0201 order).
const char32_t kHalfKana[] = {
    0x3002, 0x300C, 0x300D, 0x3001, 0x30FB, 0x30F2, 0x30A1, 0x30A3, 0x30A5, 0x30A7, 0x30A9, 0x30E3, 0x30E5,
    0x30E7, 0x30C3, 0x30FC, 0x30A2, 0x30A4, 0x30A6, 0x30A8, 0x30AA, 0x30AB, 0x30AD, 0x30AF, 0x30B1, 0x30B3,
    0x30B5, 0x30B7, 0x30B9, 0x30BB, 0x30BD, 0x30BF, 0x30C1, 0x30C4, 0x30C6, 0x30C8, 0x30CA, 0x30CB, 0x30CC,
    0x30CD, 0x30CE, 0x30CF, 0x30D2, 0x30D5, 0x30D8, 0x30DB, 0x30DE, 0x30DF, 0x30E0, 0x30E1, 0x30E2, 0x30E4,
    0x30E6, 0x30E8, 0x30E9, 0x30EA, 0x30EB, 0x30EC, 0x30ED, 0x30EF, 0x30F3, 0x3099, 0x309A};

bool takesDakuten(char32_t c) {
  return (c >= 0x30AB && c <= 0x30C8 && c != 0x30C3 && (c % 2 == 1) != (c >= 0x30C4)) || (c >= 0x30CF && c <= 0x30DB && (c - 0x30CF) % 3 == 0) ||
         c == 0x30A6;
}

bool isSpaceOrAsciiPunct(char32_t c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x3000) return true;
  return c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
}

}  // namespace

std::vector<char32_t> normalizeForSearch(const std::vector<char32_t>& in) {
  std::vector<char32_t> out;
  out.reserve(in.size());
  for (char32_t c : in) {
    if (c >= 0xFF01 && c <= 0xFF5E) c = c - 0xFF01 + 0x21;
    else if (c == 0x3000) c = ' ';
    else if (c >= 0xFF61 && c <= 0xFF9F) c = kHalfKana[c - 0xFF61];
    if (c >= 'A' && c <= 'Z') c = c - 'A' + 'a';
    if ((c == 0x3099 || c == 0x309A) && !out.empty()) {  // (semi-)voiced mark: compose when the kana has a form
      char32_t& p = out.back();
      if (c == 0x3099 && takesDakuten(p)) { p = p == 0x30A6 ? 0x30F4 : p + 1; continue; }
      if (c == 0x309A && p >= 0x30CF && p <= 0x30DB && (p - 0x30CF) % 3 == 0) { p += 2; continue; }
      c = c == 0x3099 ? 0x309B : 0x309C;  // standalone marks as NFKC leaves them spacing
    }
    out.push_back(c);
  }
  return out;
}

std::vector<std::string> searchTerms(const std::vector<char32_t>& cps, bool withUnigrams) {
  std::vector<std::string> terms;
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && isSpaceOrAsciiPunct(cps[i])) ++i;
    size_t j = i;
    while (j < cps.size() && !isSpaceOrAsciiPunct(cps[j])) ++j;
    const size_t n = j - i;
    if (n == 1 || (withUnigrams && n > 0))
      for (size_t k = i; k < j; ++k) terms.push_back("\x01" + encodeUtf8(cps, k, k + 1));
    for (size_t k = i; k + 1 < j; ++k) terms.push_back(encodeUtf8(cps, k, k + 2));
    i = j;
  }
  return terms;
}

namespace {
bool isSentenceEnd(char32_t c) { return c == 0x3002 || c == 0xFF01 || c == 0xFF1F || c == '!' || c == '?'; }
bool isCloser(char32_t c) { return c == 0x300D || c == 0x300F || c == 0xFF09 || c == ')'; }
bool isBlank(char32_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == 0x3000; }
}  // namespace

std::vector<TextChunk> chunkText(const std::vector<char32_t>& doc, const ChunkOptions& opt) {
  const size_t target = static_cast<size_t>(std::max(1, opt.targetChars));
  // Sentences as [begin, end) with blanks trimmed at both ends.
  std::vector<std::pair<size_t, size_t>> sentences;
  auto push = [&](size_t b, size_t e) {
    while (b < e && isBlank(doc[b])) ++b;
    while (e > b && isBlank(doc[e - 1])) --e;
    for (; e - b > target; b += target) sentences.push_back({b, b + target});
    if (e > b) sentences.push_back({b, e});
  };
  size_t start = 0;
  for (size_t i = 0; i < doc.size(); ++i) {
    if (doc[i] == '\n') {
      push(start, i);
      start = i + 1;
    } else if (isSentenceEnd(doc[i])) {
      size_t e = i + 1;
      while (e < doc.size() && (isSentenceEnd(doc[e]) || isCloser(doc[e]))) ++e;
      push(start, e);
      start = e;
      i = e - 1;
    }
  }
  push(start, doc.size());

  std::vector<TextChunk> chunks;
  size_t s = 0;
  while (s < sentences.size()) {
    size_t e = s, len = 0;
    while (e < sentences.size() && len < target) len += sentences[e].second - sentences[e].first, ++e;
    TextChunk c;
    c.begin = static_cast<int64_t>(sentences[s].first);
    c.end = static_cast<int64_t>(sentences[e - 1].second);
    c.text = encodeUtf8(doc, static_cast<size_t>(c.begin), static_cast<size_t>(c.end));
    chunks.push_back(std::move(c));
    if (e >= sentences.size()) break;
    // Overlap: step back over whole trailing sentences that fit in overlapChars, never to s.
    size_t next = e, back = 0;
    while (next > s + 1 && back + (sentences[next - 1].second - sentences[next - 1].first) <= static_cast<size_t>(std::max(0, opt.overlapChars)))
      back += sentences[next - 1].second - sentences[next - 1].first, --next;
    s = next;
  }
  return chunks;
}

}  // namespace kh::retrieval
