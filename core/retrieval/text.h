// Text handling for retrieval: UTF-8 checking with byte offsets, the search normalisation (an NFKC
// subset), character n-gram terms for BM25 and Japanese-aware chunking. Pure functions; never
// touches files or torch.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kh::retrieval {

// Code points of valid UTF-8; kh::Error(where, "invalid UTF-8 at byte N (line L)") otherwise.
std::vector<char32_t> decodeUtf8(std::string_view text, const std::string& where);
std::string encodeUtf8(const std::vector<char32_t>& cps, size_t begin = 0, size_t end = SIZE_MAX);

// The normalisation both documents and queries go through before BM25: Unicode NFKC (ICU; e.g.
// full-width ASCII to ASCII, U+3000 to a space, half-width katakana to full-width with ﾞ/ﾟ
// composed, ① to 1, ㈱ to (株), ㍻ to 平成), then ASCII upper case folded to lower case.
std::vector<char32_t> normalizeForSearch(const std::vector<char32_t>& cps);

// BM25 terms of normalised text: the text is cut at whitespace and ASCII punctuation; each piece
// of n >= 2 characters gives its n-1 character bigrams, a one-character piece its unigram.
// Documents are indexed with `withUnigrams` (every character is also a term), so one-character
// queries find them. Terms are UTF-8 strings ("名前"); unigram terms are marked by a leading '\x01'.
std::vector<std::string> searchTerms(const std::vector<char32_t>& normalized, bool withUnigrams);

struct ChunkOptions {
  int targetChars = 200;  // a chunk closes at the first sentence end at or beyond this many characters
  int overlapChars = 40;  // trailing sentences of the previous chunk (at most this many characters) repeated
  // Markdown: a heading line ("#" to "######" then a blank, at the start of a line) always starts a
  // new chunk, and no overlap reaches back over it, so a chunk never spans two sections.
  bool markdownSections = false;
};
struct TextChunk {
  std::string text;            // the document's text [begin, end)
  int64_t begin = 0, end = 0;  // code point offsets in the document, [begin, end)
};
// Splits at sentence ends (。！？!? and the closing brackets 」』）) that follow them) and at newlines,
// then packs sentences into chunks of about targetChars; a sentence longer than targetChars is cut
// at targetChars. Whitespace-only sentences are dropped. Overlap repeats whole sentences only.
std::vector<TextChunk> chunkText(const std::vector<char32_t>& doc, const ChunkOptions& options);

}  // namespace kh::retrieval
