// Text metrics of evaluation tasks (see metrics.h). Works on code points decoded from UTF-8; bytes
// that are not valid UTF-8 are taken one by one as U+FFFD (an output may be cut mid-character).
#include "core/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <unordered_map>

#include "core/error.h"

namespace kh::eval {

namespace {

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Full-width ASCII and the ideographic space to ASCII; U+2212 MINUS SIGN to '-'.
char32_t narrow(char32_t c) {
  if (c >= 0xFF01 && c <= 0xFF5E) return c - 0xFEE0;
  if (c == 0x3000) return U' ';
  if (c == 0x2212) return U'-';
  return c;
}

// Unicode White_Space.
bool isSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool isKana(char32_t c) {
  return (c >= 0x3041 && c <= 0x309F) ||  // hiragana (with ゝゞ and the sound marks)
         (c >= 0x30A0 && c <= 0x30FF) ||  // katakana, ・ ー
         (c >= 0x31F0 && c <= 0x31FF) ||  // katakana phonetic extensions
         (c >= 0xFF66 && c <= 0xFF9F);    // half-width katakana
}
bool isKanji(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0xF900 && c <= 0xFAFF) || c == 0x3005 ||
         c == 0x3006 || c == 0x3007;
}
bool isOtherLetter(char32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= 0xFF21 && c <= 0xFF3A) || (c >= 0xFF41 && c <= 0xFF5A) ||
         (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) ||  // Latin-1 letters, Latin Extended-A/B
         (c >= 0x370 && c <= 0x3FF) || (c >= 0x400 && c <= 0x4FF) ||  // Greek, Cyrillic
         (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0x1100 && c <= 0x11FF) || (c >= 0x3130 && c <= 0x318F);  // Hangul
}

bool isDigit(char32_t c) { return c >= '0' && c <= '9'; }
bool isAsciiAlnum(char32_t c) { return isDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// Widths narrowed; optionally every whitespace dropped.
std::vector<char32_t> narrowed(std::string_view s, bool dropSpace) {
  std::vector<char32_t> out;
  for (char32_t c : decode(s)) {
    c = narrow(c);
    if (dropSpace && isSpace(c)) continue;
    out.push_back(c);
  }
  return out;
}

}  // namespace

const char* metricKindName(MetricKind k) {
  switch (k) {
    case MetricKind::ExactMatch: return "exact_match";
    case MetricKind::Contains: return "contains";
    case MetricKind::Regex: return "regex";
    case MetricKind::Numeric: return "numeric";
    case MetricKind::CharF1: return "char_f1";
    case MetricKind::Japanese: return "japanese";
    case MetricKind::McLoglik: return "mc_loglik";
    case MetricKind::McLoglikNorm: return "mc_loglik_norm";
  }
  return "?";
}

std::optional<MetricKind> parseMetricKind(std::string_view name) {
  for (MetricKind k : {MetricKind::ExactMatch, MetricKind::Contains, MetricKind::Regex, MetricKind::Numeric, MetricKind::CharF1,
                       MetricKind::Japanese, MetricKind::McLoglik, MetricKind::McLoglikNorm})
    if (name == metricKindName(k)) return k;
  return std::nullopt;
}

std::string metricKindNames() {
  return "exact_match, contains, regex, numeric, char_f1, japanese, mc_loglik, mc_loglik_norm (add '+japanese' or "
         "japanese: true to count only answers written in Japanese)";
}

std::string MetricSpec::name() const {
  std::string n = metricKindName(kind);
  if (requireJapanese && kind != MetricKind::Japanese) n += "+japanese";
  return n;
}

std::string normalizeAnswer(std::string_view text) {
  std::vector<char32_t> cps = narrowed(text, false);
  size_t b = 0, e = cps.size();
  while (b < e && isSpace(cps[b])) ++b;
  while (e > b && isSpace(cps[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) append(out, cps[i]);
  return out;
}

std::optional<double> lastNumber(std::string_view text) {
  const std::vector<char32_t> s = narrowed(text, false);
  std::optional<double> last;
  size_t i = 0;
  while (i < s.size()) {
    if (!isDigit(s[i])) {
      ++i;
      continue;
    }
    const size_t start = i;
    const bool negative = start > 0 && s[start - 1] == U'-' && (start < 2 || !isAsciiAlnum(s[start - 2]));
    std::string digits;
    size_t groupLen = 0;  // digits since the start or the last comma
    bool sawComma = false;
    while (i < s.size()) {
      if (isDigit(s[i])) {
        digits += static_cast<char>(s[i]);
        ++groupLen;
        ++i;
      } else if (s[i] == U',' && (sawComma ? groupLen == 3 : groupLen <= 3) && i + 3 < s.size() && isDigit(s[i + 1]) &&
                 isDigit(s[i + 2]) && isDigit(s[i + 3]) && (i + 4 >= s.size() || !isDigit(s[i + 4]))) {
        // "1,234": a comma between digit groups of three.
        sawComma = true;
        groupLen = 0;
        ++i;
      } else {
        break;
      }
    }
    if (i + 1 < s.size() && s[i] == U'.' && isDigit(s[i + 1])) {
      digits += '.';
      ++i;
      while (i < s.size() && isDigit(s[i])) digits += static_cast<char>(s[i++]);
    }
    double v = std::strtod(digits.c_str(), nullptr);
    last = negative ? -v : v;
  }
  return last;
}

bool sameNumber(double a, double b) { return std::fabs(a - b) <= 1e-6 * std::max(1.0, std::fabs(b)); }

double charF1(std::string_view output, std::string_view reference) {
  const std::vector<char32_t> o = narrowed(output, true), r = narrowed(reference, true);
  if (o.empty() && r.empty()) return 1.0;
  if (o.empty() || r.empty()) return 0.0;
  std::unordered_map<char32_t, int64_t> count;
  for (char32_t c : r) ++count[c];
  int64_t overlap = 0;
  for (char32_t c : o) {
    auto it = count.find(c);
    if (it != count.end() && it->second > 0) {
      --it->second;
      ++overlap;
    }
  }
  if (overlap == 0) return 0.0;
  const double p = static_cast<double>(overlap) / static_cast<double>(o.size());
  const double rc = static_cast<double>(overlap) / static_cast<double>(r.size());
  return 2 * p * rc / (p + rc);
}

bool isJapaneseAnswer(std::string_view text) {
  int64_t japanese = 0, letters = 0;
  bool kana = false;
  for (char32_t c : decode(text)) {
    if (isKana(c)) {
      kana = true;
      ++japanese;
      ++letters;
    } else if (isKanji(c)) {
      ++japanese;
      ++letters;
    } else if (isOtherLetter(c)) {
      ++letters;
    }
  }
  return kana && 2 * japanese >= letters;
}

double scoreOutput(const MetricSpec& m, std::string_view output, const std::vector<std::string>& references) {
  KH_ASSERT(!references.empty(), "an item without references reached scoring");
  KH_ASSERT(!m.multipleChoice(), "multiple-choice metrics are scored from log-likelihoods, not text");
  if (m.requireJapanese && !isJapaneseAnswer(output)) return 0.0;
  double best = 0.0;
  switch (m.kind) {
    case MetricKind::ExactMatch: {
      const std::string o = normalizeAnswer(output);
      for (const auto& r : references)
        if (o == normalizeAnswer(r)) best = 1.0;
      break;
    }
    case MetricKind::Contains: {
      const std::string o = normalizeAnswer(output);
      for (const auto& r : references)
        if (o.find(normalizeAnswer(r)) != std::string::npos) best = 1.0;
      break;
    }
    case MetricKind::Regex: {
      const std::string o(output);
      if (!m.pattern.empty()) {
        best = std::regex_search(o, std::regex(m.pattern, std::regex::ECMAScript)) ? 1.0 : 0.0;
      } else {
        for (const auto& r : references)
          if (std::regex_search(o, std::regex(r, std::regex::ECMAScript))) best = 1.0;
      }
      break;
    }
    case MetricKind::Numeric: {
      const auto got = lastNumber(output);
      if (!got) break;
      for (const auto& r : references) {
        const auto want = lastNumber(r);
        if (want && sameNumber(*got, *want)) best = 1.0;
      }
      break;
    }
    case MetricKind::CharF1:
      for (const auto& r : references) best = std::max(best, charF1(output, r));
      break;
    case MetricKind::Japanese:
      best = isJapaneseAnswer(output) ? 1.0 : 0.0;
      break;
    case MetricKind::McLoglik:
    case MetricKind::McLoglikNorm:
      break;
  }
  return best;
}

}  // namespace kh::eval
