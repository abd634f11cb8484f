// Scoring rules of evaluation tasks: how one model output is compared with an item's references.
// Pure text functions (no model, no torch) so the rules can be tested against hand-computed values.
// Must never look at anything but the output and the references (the model is scored elsewhere).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kh::eval {

// The scoring rules, as named in a suite file:
//   exact_match   normalise(output) == normalise(reference) for some reference
//   contains      normalise(reference) is a substring of normalise(output) for some reference
//   regex         ECMAScript std::regex search in the raw output; the pattern is the metric's
//                 `pattern` when given, else each reference is a pattern (any match scores 1)
//   numeric       the last number in the output equals the reference's number (MGSM scoring)
//   char_f1       character-level F1 against the best reference (Japanese has no spaces)
//   japanese      1 when the output is written in Japanese (isJapaneseAnswer)
//   mc_loglik     the choice with the highest summed log-likelihood is a reference
//   mc_loglik_norm  the same, the log-likelihood divided by the choice's UTF-8 length in bytes
// Any metric but japanese can require a Japanese answer ({name: numeric, japanese: true}, or the
// shorthand "numeric+japanese"): its score then counts only when isJapaneseAnswer(output).
enum class MetricKind { ExactMatch, Contains, Regex, Numeric, CharF1, Japanese, McLoglik, McLoglikNorm };

const char* metricKindName(MetricKind k);
std::optional<MetricKind> parseMetricKind(std::string_view name);
std::string metricKindNames();  // "exact_match, contains, ..." for hints

struct MetricSpec {
  MetricKind kind = MetricKind::ExactMatch;
  bool requireJapanese = false;  // score AND isJapaneseAnswer(output)
  std::string pattern;           // regex only; "" = references are the patterns
  // The name in tables and records: "numeric", "numeric+japanese", "regex".
  std::string name() const;
  bool multipleChoice() const { return kind == MetricKind::McLoglik || kind == MetricKind::McLoglikNorm; }
};

// Text normalisation of exact_match and contains: full-width ASCII (U+FF01..U+FF5E) and the
// ideographic space (U+3000) become ASCII, then Unicode whitespace is trimmed at both ends.
// Case is kept (Japanese has none; 'Tokyo' vs 'tokyo' is the model's business).
std::string normalizeAnswer(std::string_view text);

// The last number written in `text`, or nullopt. Full-width digits, comma, period and minus
// (０-９ ， ． － and U+2212) count as ASCII; "1,234" is 1234 (commas between digit groups of
// three), "-5" is negative unless the '-' follows a digit or letter ("3-5" is 3 and 5), "2.5" is a
// decimal, a trailing "." ends the number ("18." is 18).
std::optional<double> lastNumber(std::string_view text);
// Numeric equality used by the numeric metric: |a - b| <= 1e-6 * max(1, |b|).
bool sameNumber(double a, double b);

// Character-level F1: both texts width-normalised as normalizeAnswer, every whitespace character
// dropped, then the multiset overlap of code points. precision = overlap / |output|, recall =
// overlap / |reference|, F1 = 2PR / (P + R); 1 when both are empty, 0 when only one is.
double charF1(std::string_view output, std::string_view reference);

// An answer written in Japanese: it has at least one hiragana or katakana character, and at least
// half of its letters are Japanese script. Japanese script = hiragana, katakana (incl. half-width
// and the phonetic extensions, ー), kanji (CJK unified ideographs + extension A + compatibility, 々
// 〆 〇). Letters = Japanese script + Latin (ASCII, full-width, Latin-1/Extended) + Greek, Cyrillic,
// Hangul. Digits, punctuation, symbols and whitespace are not letters. The kana requirement is what
// tells Japanese from Chinese (kanji only).
bool isJapaneseAnswer(std::string_view text);

// Score of one generated output under a text metric (not the mc_* ones): in [0, 1].
// `references` must be non-empty (loadSuite guarantees it).
double scoreOutput(const MetricSpec& metric, std::string_view output, const std::vector<std::string>& references);

}  // namespace kh::eval
