#!/usr/bin/python3
"""Checks the C++ Precompiled (SentencePiece charsmap) normalizer against SentencePiece itself,
with SentencePiece's real nmt_nfkc charsmap (not committed: it is SentencePiece's data).

  check_precompiled_vs_spm.py BUILD/bin/kumihimo-cli

Trains a small Unigram model with spm_train (nmt_nfkc) on a generated corpus, writes an HF-style
tokenizer.json with its pieces, scores and charsmap (Precompiled + Metaspace + Unigram), and
compares `kumihimo-cli tokenize --no-special` with SentencePieceProcessor.encode on texts full of
what NFKC rewrites (full-width ASCII, half-width katakana, circled numbers, ㈱, Ⅻ, U+3000, U+200B).
Exit status 1 on any difference. Not a ctest: it needs spm_train and python3-sentencepiece."""
import base64
import json
import os
import random
import subprocess
import sys
import tempfile

import sentencepiece as spm

cli = sys.argv[1]
work = tempfile.mkdtemp(prefix="kh-precompiled-")
random.seed(1)
chars = ("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
         "アイウエオカキクケコタナテストガギ名前猫犬好小野寺章株abcdefghijklmnopqrstuvwxyz"
         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!?()XIV")
with open(os.path.join(work, "corpus.txt"), "w") as f:
    for _ in range(3000):
        f.write("".join(random.choice(chars) for _ in range(random.randint(5, 40))) + "\n")
subprocess.run(["spm_train", "--input=" + os.path.join(work, "corpus.txt"), "--model_prefix=" + os.path.join(work, "m"),
                "--vocab_size=300", "--model_type=unigram", "--character_coverage=1.0",
                "--normalization_rule_name=nmt_nfkc"], check=True, capture_output=True)
blob = open(os.path.join(work, "m.model"), "rb").read()


def fields(b):  # protobuf wire format: (field, type, value)
    i = 0
    while i < len(b):
        k, i = varint(b, i)
        f, t = k >> 3, k & 7
        if t == 0:
            v, i = varint(b, i)
        elif t == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif t == 5:
            v, i = b[i:i + 4], i + 4
        else:
            v, i = b[i:i + 8], i + 8
        yield f, t, v


def varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


charsmap = next(v2 for f, _, v in fields(blob) if f == 3 for f2, _, v2 in fields(v) if f2 == 2)
sp = spm.SentencePieceProcessor(model_file=os.path.join(work, "m.model"))
S = "\u2581"
meta = {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True}
tok = {"version": "1.0", "added_tokens": [], "post_processor": None, "pre_tokenizer": meta, "decoder": meta,
       "normalizer": {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()},
       "model": {"type": "Unigram", "unk_id": sp.unk_id(), "byte_fallback": False,
                 "vocab": [[sp.id_to_piece(i), sp.get_score(i)] for i in range(sp.get_piece_size())]}}
json.dump(tok, open(os.path.join(work, "tokenizer.json"), "w"), ensure_ascii=False)
texts = ["ＡＢＣ１２３ｶﾀｶﾅ①猫", "名前は小野寺です。", "㈱テスト", "Ⅻ章", "ｱｲｳｴｵ", "ｈｅｌｌｏ Ｗｏｒｌｄ", "猫が好き！？",
         "\u3000全角空白の後", "⑩（株）ＸＩＶ", "ﾃｽﾄ１２３abc", "㍻", "ｱ\u200bｲ"]
bad = 0
for t in texts:
    want = sp.encode(t)
    r = subprocess.run([cli, "tokenize", work, t, "--json", "--no-special"], capture_output=True, text=True)
    got = json.loads(r.stdout)["ids"] if r.returncode == 0 else r.stderr.strip()
    ok = got == want
    bad += not ok
    print("ok  " if ok else "DIFF", repr(t), got if ok else (got, want))
print("%d of %d texts differ" % (bad, len(texts)))
sys.exit(1 if bad else 0)
