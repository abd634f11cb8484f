#!/usr/bin/python3
"""Writes tests/golden/retrieval/nfkc.jsonl: texts and what the BM25 normalisation must make of
them, from Python's unicodedata (an implementation independent of ICU, which the C++ uses):
NFKC, then ASCII upper case folded to lower case.  Usage: make_nfkc_golden.py OUT"""
import json
import sys
import unicodedata

texts = [
    "ＡＢＣ１２３　ｘ",                 # full-width ASCII, ideographic space
    "ｶﾞｷﾞﾊﾟｱｲｳｰ",                     # half-width katakana with (semi-)voiced marks
    "名前は？小野寺絢音です！",
    "①②③ ⑩ ㈱ ㍻ ㌔ ㎏",              # circled numbers, squared words and units
    "ﬁle Ⅻ x² H₂O",                    # ligature, Roman numeral, super/subscripts
    "Café Cafe\u0301 ＣＡＦＥ",          # precomposed vs combining acute, full-width capitals
    "\U0001D400\U0001D401 😀 𠮷野家",    # math bold capitals (non-BMP), emoji, a supplementary kanji
    "\ufdfa",                           # one code point that NFKC expands to 18
    "ﾞ ゛ か\u3099",                    # standalone voiced marks, kana + combining mark
    "\u1100\u1161\u11a8",               # Hangul jamo that compose to one syllable
]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for t in texts:
        n = unicodedata.normalize("NFKC", t)
        n = "".join(c.lower() if "A" <= c <= "Z" else c for c in n)
        f.write(json.dumps({"text": t, "normalized": n}, ensure_ascii=False) + "\n")
print(f"unicodedata {unicodedata.unidata_version}: {len(texts)} texts")
