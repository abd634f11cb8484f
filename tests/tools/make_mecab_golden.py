#!/usr/bin/python3
"""A tiny random BERT with a ruri v1/v2-style tokenizer (BertJapaneseTokenizer: vocab.txt,
tokenizer_config.json with word_tokenizer_type mecab, mecab_dic unidic_lite) and golden sentence
embeddings, from the plain python3-torch BertModel reference of make_encoder_golden.py.

  make_mecab_golden.py OUT_DIR      (the repository keeps OUT_DIR = tests/golden/encoder)

OUT_DIR/ruri_tiny/: config.json, vocab.txt, tokenizer_config.json, special_tokens_map.json,
model.safetensors and golden.json (texts, their token ids DERIVED BY HAND below, and the reference
embedding of those ids). Neither fugashi nor transformers is needed or used: the ids come from
the segmentation the hand-written dictionary tests/golden/mecab_tiny/ makes obvious (one context
id, connection costs 0, so the path with the smallest sum of word costs wins; unknown runs of one
character class are one word at cost 5000) followed by WordPiece on each word."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_encoder_golden import config, random_weights, reference_embedding  # noqa: E402
from reference_models import save_safetensors  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "名前", "は", "小野", "##寺", "絢音", "AB", "##C", "123",
         "です", "猫", "。", "ア", "##ア", "クエリ", "文章", ":", "名", "前", "abc", "が", "好き", "?"]

# By hand. Dictionary words (cost 100): 名前 は 小野寺 小野 寺 絢音 です 。 猫 が 好き 文章 クエリ, 名 and 前
# at 300 each. NFKC first (ＡＢＣ１２３ -> ABC123, ｸｴﾘ -> クエリ, U+3000 -> space); MeCab skips spaces, tabs
# and newlines. WordPiece: the longest vocab prefix, then "##" pieces; an unmatched rest makes the
# word one [UNK]; no vocab entry 小野寺, so 小野 ##寺.
CASES = [
    ("名前は小野寺絢音", [2, 5, 6, 7, 8, 9, 3]),            # 名前(100) beats 名+前(600); 小野寺(100) beats 小野+寺(200)
    ("ＡＢＣ１２３です", [2, 10, 11, 12, 13, 3]),           # ABC (unknown ALPHA run) -> AB ##C; 123 (NUMERIC run); です
    ("\u3000名前 は\t猫です。\n", [2, 5, 6, 14, 13, 15, 3]),  # whitespace never reaches a word
    ("小野犬鳥", [2, 7, 1, 3]),                             # 小野, then the unknown KANJI run 犬鳥: no piece -> [UNK]
    ("ｸｴﾘ: 名前は?", [2, 18, 20, 5, 6, 26, 3]),             # クエリ : 名前 は ?
    ("ＡＢＤ", [2, 1, 3]),                                   # ABD: AB, then ##D is not in the vocab -> [UNK]
    ("猫が好き", [2, 14, 24, 25, 3]),
]


def main(out):
    d = os.path.join(out, "ruri_tiny")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in VOCAB))
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    # As ruri v1/v2 ship it (cl-tohoku/bert-base-japanese-v3's settings).
    tok_cfg = {"added_tokens_decoder": {str(VOCAB.index(t)): {"content": t, "lstrip": False, "normalized": False,
                                                               "rstrip": False, "single_word": False, "special": True}
                                        for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]},
               "clean_up_tokenization_spaces": True, "do_lower_case": False, "do_subword_tokenize": True,
               "do_word_tokenize": True, "jumanpp_kwargs": None, "mecab_kwargs": {"mecab_dic": "unidic_lite"},
               "model_max_length": 512, "never_split": None, "subword_tokenizer_type": "wordpiece",
               "sudachi_kwargs": None, "tokenizer_class": "BertJapaneseTokenizer", "word_tokenizer_type": "mecab",
               **specials}
    json.dump(tok_cfg, open(os.path.join(d, "tokenizer_config.json"), "w"), ensure_ascii=False, indent=1)
    json.dump(specials, open(os.path.join(d, "special_tokens_map.json"), "w"), indent=1)
    cfg = config("bert", len(VOCAB), 40, 2, 0)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    gen = torch.Generator().manual_seed(13)
    w = random_weights(gen, cfg, "", {"pooler.dense.weight": (32, 32), "pooler.dense.bias": (32,)})
    save_safetensors(w, os.path.join(d, "model.safetensors"), {"format": "pt"})
    golden = {"producer": "tests/tools/make_mecab_golden.py (python3-torch %s reference, fp32)" % torch.__version__,
              "note": "ids derived by hand for the dictionary tests/golden/mecab_tiny; BertModel weights without a prefix",
              "cases": [{"text": t, "ids": ids, "embedding": reference_embedding(w, cfg, ids, "")} for t, ids in CASES]}
    json.dump(golden, open(os.path.join(d, "golden.json"), "w"), ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/encoder")
