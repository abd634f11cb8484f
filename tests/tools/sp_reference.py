#!/usr/bin/python3
# Reference ids and decodes from the SentencePiece Python binding (Debian's python3-sentencepiece),
# written as the golden JSON that tests/core/test_tokenizer.cpp checks the C++ tokenizer against.
# Run by hand when a golden model changes; CTest must never need Python (or this file) to run.
#
#   /usr/bin/python3 tests/tools/sp_reference.py --model tests/golden/tokenizer/tiny_sp.model \
#       --out tests/golden/tokenizer/tiny_sp_golden.json
import argparse
import hashlib
import json
import random
import sys

import sentencepiece as spm

# Varied inputs: the training domain (Japanese), ASCII, whitespace runs, characters the tiny model
# never saw (byte fallback), emoji, other scripts, normalization bait, the user-defined symbols.
CASES = [
    "今日は晴れですね。",
    "佐藤花子さんは東京でラーメンを食べました！",
    "このGPUモデルは7億パラメータです？",
    "2024年12月31日に大阪へ行きます。",
    "価格は12345円で、便利なノートです。",
    "日本語とEnglishのmixed文章です。",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "tab\tand\nnewline\n\nend",
    "\r\nwindows line\r\n",
    "",
    " ",
    "x",
    "😀🎉👍🏽",
    "鬱蒼とした森で魑魅魍魎に会った",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "Ünïcödé café naïve façade",
    "ｈｅｌｌｏ　ＷＯＲＬＤ",
    "①②③ ㍻ ﾊﾝｶｸｶﾀｶﾅ",
    "e\u0301 combining accent",
    "zero\u200bwidth",
    "1234567890",
    "▁already has the meta symbol",
    "<start_of_turn>user\nこんにちは<end_of_turn>\n<start_of_turn>model\n",
    "<s>not a control</s>",
    "\U0010ffff last code point and \ufffd",
    "。！？、",
    "ＡＩの未来について話しましょう！" * 3,
]


def random_sequences(sp, count, seed):
    """Id sequences that stress decoding: byte pieces (often cut-off characters), control and
    unknown ids, whitespace pieces."""
    rng = random.Random(seed)
    n = sp.get_piece_size()
    byte_ids = [i for i in range(n) if sp.is_byte(i)]
    special_ids = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    ws_ids = [i for i in range(n) if sp.id_to_piece(i).strip("\u2581") == "" and not sp.is_byte(i)
              and not sp.is_control(i) and not sp.is_unknown(i)]
    out = []
    for _ in range(count):
        seq = []
        for _ in range(rng.randrange(1, 25)):
            r = rng.random()
            if r < 0.4 and byte_ids:
                seq.append(rng.choice(byte_ids))
            elif r < 0.5 and special_ids:
                seq.append(rng.choice(special_ids))
            elif r < 0.6 and ws_ids:
                seq.append(rng.choice(ws_ids))
            else:
                seq.append(rng.randrange(n))
        out.append(seq)
    # Characters cut across byte pieces at every point, and UTF-8 edge cases.
    def b(*vals):
        return [sp.piece_to_id("<0x%02X>" % v) for v in vals]
    if byte_ids:
        out += [b(0xE3, 0x81, 0x82), b(0xE3, 0x81), b(0xF0, 0x9F, 0x98, 0x80), b(0xF0, 0x9F),
                b(0xED, 0xA0, 0x80), b(0xC0, 0x80), b(0xF4, 0x90, 0x80, 0x80), b(0xE0, 0x80, 0x80),
                b(0xEF, 0xBF, 0xBD), b(0x80), b(0xE3, 0x41), b(0x20, 0x20)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--random", type=int, default=300, help="random id sequences to decode")
    args = ap.parse_args()

    sp = spm.SentencePieceProcessor(model_file=args.model)
    model_bytes = open(args.model, "rb").read()
    n = sp.get_piece_size()
    golden = {
        "generator": "tests/tools/sp_reference.py with python3-sentencepiece " + spm.__version__,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "piece_size": n,
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "pad_id": sp.pad_id(),
        "pieces": [sp.id_to_piece(i) for i in range(n)],
        "control": [i for i in range(n) if sp.is_control(i)],
        "byte": [i for i in range(n) if sp.is_byte(i)],
        "cases": [],
        "random_decodes": [],
    }
    for text in CASES:
        ids = sp.encode(text)
        golden["cases"].append({"text": text, "ids": ids, "pieces": [sp.id_to_piece(i) for i in ids],
                                "decode": sp.decode(ids)})
    for seq in random_sequences(sp, args.random, seed=20240601):
        golden["random_decodes"].append({"ids": seq, "decode": sp.decode(seq)})
    # One key, case or sequence per line: readable diffs when a model is regenerated.
    def dump(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = []
    for key, value in golden.items():
        if key in ("cases", "random_decodes"):
            lines.append(" %s:[\n%s\n ]" % (dump(key), ",\n".join("  " + dump(e) for e in value)))
        else:
            lines.append(" %s:%s" % (dump(key), dump(value)))
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    print("wrote %s: %d cases, %d random decodes" % (args.out, len(golden["cases"]),
                                                     len(golden["random_decodes"])), file=sys.stderr)


if __name__ == "__main__":
    main()
