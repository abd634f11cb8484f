#!/usr/bin/python3
"""Compares kumihimo-cli's BertJapaneseTokenizer (ruri v1/v2: NFKC, MeCab, WordPiece) with a
Python one, text by text.

  KUMIHIMO_MECAB_DIC=DICDIR check_bert_japanese.py KUMIHIMO_CLI MODEL_DIR [TEXT...]

The Python side is transformers' BertJapaneseTokenizer when transformers and fugashi import (then
DICDIR must be the dictionary the model names, e.g. unidic_lite.DICDIR), else a re-implementation
written from tokenization_bert_japanese.py: unicodedata NFKC, MeCab through ctypes on libmecab.so.2
with `-d DICDIR -r DICDIR/mecabrc` (what fugashi.GenericTagger does), node surfaces, str.split()
then greedy longest-match WordPiece with "##" and [UNK] past 100 characters, [CLS] ... [SEP]. Only
wordpiece, do_lower_case false, no never_split: the settings ruri ships. Without TEXT it uses a
built-in list (full-width, half-width kana, spaces, tabs, newlines, unknown words, long runs).
Exit status 1 when any text differs."""
import ctypes
import json
import os
import subprocess
import sys
import unicodedata

TEXTS = ["名前は小野寺絢音", "ＡＢＣ１２３です", "\u3000名前 は\t猫です。\n", "小野犬鳥", "ｸｴﾘ: 名前は?", "ＡＢＤ",
         "猫が好き", "", "   ", "a" * 30 + "です", "a" * 101, "ア" * 100 + "です", "ア" * 101, "名前[SEP]は", "①②③ ㍻",
         "カ\u3099ギ", "名前\u2028は", "文章: 猫\r\nが好き", "クエリ: あなたの名前はなんですか?"]


def python_ids(model_dir, dicdir, text):
    try:
        from transformers import AutoTokenizer  # noqa: F401
        import fugashi  # noqa: F401
    except ImportError:
        return reimplementation(model_dir, dicdir, text), "re-implementation (ctypes libmecab)"
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok(text)["input_ids"], "transformers " + __import__("transformers").__version__


_mecab = None


def reimplementation(model_dir, dicdir, text):
    global _mecab
    cfg = json.load(open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8"))
    assert cfg.get("subword_tokenizer_type", "wordpiece") == "wordpiece" and not cfg.get("do_lower_case", False)
    vocab = {}
    with open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8") as f:
        for i, line in enumerate(f.readlines()):
            vocab[line.rstrip("\n")] = i
    if _mecab is None:
        lib = ctypes.CDLL("libmecab.so.2")
        lib.mecab_new.restype = ctypes.c_void_p
        lib.mecab_sparse_tonode.restype = ctypes.c_void_p
        lib.mecab_sparse_tonode.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        args = [b"mecab", b"-d", dicdir.encode(), b"-r", os.path.join(dicdir, "mecabrc").encode()]
        tagger = lib.mecab_new(len(args), (ctypes.c_char_p * len(args))(*args))
        assert tagger, "MeCab cannot open " + dicdir
        _mecab = (lib, tagger)
    lib, tagger = _mecab

    class Node(ctypes.Structure):
        pass
    # mecab_node_t up to the fields read here (mecab.h): prev, next, enext, bnext, rpath, lpath,
    # surface, feature, id, length, rlength, rcAttr, lcAttr, posid, char_type, stat.
    Node._fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.POINTER(Node)), ("enext", ctypes.c_void_p),
                     ("bnext", ctypes.c_void_p), ("rpath", ctypes.c_void_p), ("lpath", ctypes.c_void_p),
                     ("surface", ctypes.c_void_p), ("feature", ctypes.c_char_p), ("id", ctypes.c_uint),
                     ("length", ctypes.c_ushort), ("rlength", ctypes.c_ushort), ("rcAttr", ctypes.c_ushort),
                     ("lcAttr", ctypes.c_ushort), ("posid", ctypes.c_ushort), ("char_type", ctypes.c_ubyte),
                     ("stat", ctypes.c_ubyte)]
    normalized = unicodedata.normalize("NFKC", text).encode("utf-8")
    buf = ctypes.create_string_buffer(normalized)
    node = ctypes.cast(lib.mecab_sparse_tonode(tagger, buf), ctypes.POINTER(Node))
    words = []
    while node.contents.next:
        node = node.contents.next
        if node.contents.stat == 3:  # EOS
            break
        words.append(ctypes.string_at(node.contents.surface, node.contents.length).decode("utf-8"))
    ids = [vocab["[CLS]"]]
    for word in words:
        for token in word.split():
            chars = list(token)
            if len(chars) > 100:
                ids.append(vocab["[UNK]"])
                continue
            start, sub, bad = 0, [], False
            while start < len(chars):
                end, cur = len(chars), None
                while start < end:
                    s = ("##" if start > 0 else "") + "".join(chars[start:end])
                    if s in vocab:
                        cur = s
                        break
                    end -= 1
                if cur is None:
                    bad = True
                    break
                sub.append(vocab[cur])
                start = end
            ids.extend([vocab["[UNK]"]] if bad else sub)
    ids.append(vocab["[SEP]"])
    return ids


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cli, model_dir = sys.argv[1], sys.argv[2]
    texts = sys.argv[3:] or TEXTS
    dicdir = os.environ.get("KUMIHIMO_MECAB_DIC", "")
    bad = 0
    for text in texts:
        if "[SEP]" in text and "transformers" not in sys.modules:
            continue  # the re-implementation does not split special tokens out
        want, who = python_ids(model_dir, dicdir, text)
        out = subprocess.run([cli, "tokenize", model_dir, text, "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            print("FAIL %r: kumihimo-cli: %s" % (text, out.stderr.strip()))
            bad += 1
            continue
        got = json.loads(out.stdout)["ids"]
        ok = got == want
        bad += not ok
        print("%s %r\n  python (%s): %s\n  kumihimo:  %s" % ("ok  " if ok else "FAIL", text, who, want, got))
    print("%d of %d texts differ" % (bad, len(texts)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
