// UTF-8, the search normalisation and chunking for retrieval (see text.h for what is covered).
#include "core/retrieval/text.h"

#include <unicode/unorm2.h>
#include <unicode/utypes.h>

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

bool isSpaceOrAsciiPunct(char32_t c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x3000) return true;
  return c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
}

}  // namespace

std::vector<char32_t> normalizeForSearch(const std::vector<char32_t>& in) {
  // ICU's NFKC (Debian libicu): code points -> UTF-16 -> NFKC -> code points.
  std::vector<UChar> u16;
  u16.reserve(in.size() + 8);
  for (char32_t c : in) {
    if (c >= 0x10000) {
      u16.push_back(static_cast<UChar>(0xD800 + ((c - 0x10000) >> 10)));
      u16.push_back(static_cast<UChar>(0xDC00 + ((c - 0x10000) & 0x3FF)));
    } else {
      u16.push_back(static_cast<UChar>(c));
    }
  }
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* nfkc = unorm2_getNFKCInstance(&err);
  if (U_FAILURE(err)) throw Error("retrieval", std::string("ICU's NFKC data is unavailable: ") + u_errorName(err));
  // NFKC can expand (e.g. ㍻ -> 平成, U+FDFA to 18 characters): size, then normalise.
  const int32_t need = unorm2_normalize(nfkc, u16.data(), static_cast<int32_t>(u16.size()), nullptr, 0, &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err))
    throw Error("retrieval", std::string("NFKC failed: ") + u_errorName(err));
  std::vector<UChar> norm(static_cast<size_t>(need) + 1);
  err = U_ZERO_ERROR;
  const int32_t len = unorm2_normalize(nfkc, u16.data(), static_cast<int32_t>(u16.size()), norm.data(),
                                       static_cast<int32_t>(norm.size()), &err);
  if (U_FAILURE(err)) throw Error("retrieval", std::string("NFKC failed: ") + u_errorName(err));
  std::vector<char32_t> out;
  out.reserve(static_cast<size_t>(len));
  for (int32_t i = 0; i < len; ++i) {
    char32_t c = norm[static_cast<size_t>(i)];
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < len) {
      c = 0x10000 + ((c - 0xD800) << 10) + (norm[static_cast<size_t>(i) + 1] - 0xDC00);
      ++i;
    }
    if (c >= 'A' && c <= 'Z') c = c - 'A' + 'a';
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

  // Markdown headings: sentences that begin a line with 1-6 '#' and a blank.
  std::vector<bool> heading(sentences.size(), false);
  if (opt.markdownSections)
    for (size_t k = 0; k < sentences.size(); ++k) {
      const size_t b = sentences[k].first;
      size_t p = b;
      while (p > 0 && doc[p - 1] != '\n' && isBlank(doc[p - 1])) --p;
      if (p > 0 && doc[p - 1] != '\n') continue;  // not at the start of a line
      size_t h = b;
      while (h < sentences[k].second && doc[h] == '#') ++h;
      heading[k] = h > b && h - b <= 6 && (h == sentences[k].second || doc[h] == ' ' || doc[h] == '\t' || doc[h] == 0x3000);
    }
  std::vector<TextChunk> chunks;
  size_t s = 0;
  while (s < sentences.size()) {
    size_t e = s, len = 0;
    while (e < sentences.size() && len < target && (e == s || !heading[e]))
      len += sentences[e].second - sentences[e].first, ++e;
    TextChunk c;
    c.begin = static_cast<int64_t>(sentences[s].first);
    c.end = static_cast<int64_t>(sentences[e - 1].second);
    c.text = encodeUtf8(doc, static_cast<size_t>(c.begin), static_cast<size_t>(c.end));
    chunks.push_back(std::move(c));
    if (e >= sentences.size()) break;
    // Overlap: step back over whole trailing sentences that fit in overlapChars, never to s.
    size_t next = e, back = 0;
    while (!heading[e] && next > s + 1 && back + (sentences[next - 1].second - sentences[next - 1].first) <= static_cast<size_t>(std::max(0, opt.overlapChars)))
      back += sentences[next - 1].second - sentences[next - 1].first, --next;
    s = next;
  }
  return chunks;
}

}  // namespace kh::retrieval
