#!/usr/bin/python3
"""Tiny random BERT and XLM-RoBERTa encoder folders and golden sentence embeddings, from a plain
python3-torch reference of the transformers BertModel / XLMRobertaModel forward (no
transformers needed): embeddings (word + position + token type 0) -> LayerNorm -> post-LN layers
(bidirectional self-attention, GELU MLP) -> mean over the tokens -> L2 normalisation.

  make_encoder_golden.py OUT_DIR      (the repository keeps OUT_DIR = tests/golden/encoder)

OUT_DIR/bert_tiny/ (WordPiece tokenizer.json: BertNormalizer, BertPreTokenizer, [CLS] $A [SEP];
weights under "bert." with an MLM head to ignore) and OUT_DIR/xlmr_tiny/ (Unigram + Metaspace
tokenizer.json, <s> $A </s>; positions from padding_idx + 1; a pooler to ignore). Each gets
golden.json: texts, their token ids DERIVED BY HAND (written below, not computed by a tokenizer),
and the reference embedding of those ids (one sequence at a time, no padding)."""
import base64
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import save_safetensors  # noqa: E402

D, H, L, I = 32, 4, 2, 64


def reference_embedding(w, cfg, ids, prefix):
    """Mean-pooled, L2-normalised last hidden state of one unpadded sequence."""
    g = lambda n: w[prefix + n]  # noqa: E731
    T = len(ids)
    ids_t = torch.tensor(ids)
    if cfg["model_type"] == "xlm-roberta":
        pos = torch.arange(T) + cfg["pad_token_id"] + 1
    else:
        pos = torch.arange(T)
    x = g("embeddings.word_embeddings.weight")[ids_t] + g("embeddings.position_embeddings.weight")[pos] + \
        g("embeddings.token_type_embeddings.weight")[0]
    eps = cfg["layer_norm_eps"]
    ln = lambda x, n: torch.nn.functional.layer_norm(x, (D,), g(n + ".weight"), g(n + ".bias"), eps)  # noqa: E731
    lin = lambda x, n: x @ g(n + ".weight").T + g(n + ".bias")  # noqa: E731
    x = ln(x, "embeddings.LayerNorm")
    dh = D // H
    for i in range(L):
        p = "encoder.layer.%d." % i
        q = lin(x, p + "attention.self.query").view(T, H, dh).transpose(0, 1)  # [H, T, dh]
        k = lin(x, p + "attention.self.key").view(T, H, dh).transpose(0, 1)
        v = lin(x, p + "attention.self.value").view(T, H, dh).transpose(0, 1)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dh), dim=-1)
        ctx = (a @ v).transpose(0, 1).reshape(T, D)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = torch.nn.functional.gelu(lin(x, p + "intermediate.dense"))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    m = x.double().mean(0)
    return (m / m.norm()).tolist()


def random_weights(gen, cfg, prefix, extra):
    V, P, TT = cfg["vocab_size"], cfg["max_position_embeddings"], cfg["type_vocab_size"]
    r = lambda *s: (torch.randn(*s, generator=gen) * 0.3).float()  # noqa: E731
    w = {}

    def lnorm(n):
        w[prefix + n + ".weight"] = 1.0 + r(D)
        w[prefix + n + ".bias"] = r(D)

    def dense(n, o, i):
        w[prefix + n + ".weight"] = r(o, i)
        w[prefix + n + ".bias"] = r(o)

    w[prefix + "embeddings.word_embeddings.weight"] = r(V, D) * 3
    w[prefix + "embeddings.position_embeddings.weight"] = r(P, D) * 3
    w[prefix + "embeddings.token_type_embeddings.weight"] = r(TT, D) * 3
    lnorm("embeddings.LayerNorm")
    for i in range(L):
        p = "encoder.layer.%d." % i
        for n in ("query", "key", "value"):
            dense(p + "attention.self." + n, D, D)
        dense(p + "attention.output.dense", D, D)
        lnorm(p + "attention.output.LayerNorm")
        dense(p + "intermediate.dense", I, D)
        dense(p + "output.dense", D, I)
        lnorm(p + "output.LayerNorm")
    for n, shape in extra.items():
        w[n] = r(*shape)
    return w


def charsmap(mapping):
    """A SentencePiece precompiled_charsmap (base64) for `mapping` (key -> replacement): a
    darts-clone double array, one 256-unit block per trie node (child at base + byte, value unit at
    base + 0), then the NUL-terminated replacements. Unit: offset << 10 | has_leaf << 8 | label;
    value unit: offset into the replacements | 1 << 31."""
    norm, val = b"", {}
    for k in sorted(mapping):
        val[k.encode()] = len(norm)
        norm += mapping[k].encode() + b"\0"
    prefixes = {b""}
    for k in val:
        for i in range(1, len(k) + 1):
            prefixes.add(k[:i])
    order = sorted(prefixes, key=lambda p: (len(p), p))
    block = {p: i + 1 for i, p in enumerate(order)}
    a = [0] * (256 * (len(order) + 1))
    a[0] = (256 * block[b""]) << 10  # the root: its children's base
    for p in order[1:]:
        position = 256 * block[p[:-1]] + p[-1]
        base = 256 * block[p]
        off = position ^ base
        assert off < (1 << 21)
        a[position] = (off << 10) | ((p in val) << 8) | p[-1]
        if p in val:
            a[base] = val[p] | (1 << 31)
    trie = struct.pack("<%dI" % len(a), *a)
    return base64.b64encode(struct.pack("<I", len(trie)) + trie + norm).decode()


def config(model_type, vocab, max_pos, type_vocab, pad):
    return {"architectures": ["BertModel" if model_type == "bert" else "XLMRobertaModel"], "model_type": model_type,
            "vocab_size": vocab, "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H,
            "intermediate_size": I, "max_position_embeddings": max_pos, "type_vocab_size": type_vocab,
            "pad_token_id": pad, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "position_embedding_type": "absolute",
            "torch_dtype": "float32"}


def write(out, name, cfg, tok, w, prefix, cases, gen_note):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False, indent=1)
    save_safetensors(w, os.path.join(d, "model.safetensors"), {"format": "pt"})
    golden = {"producer": "tests/tools/make_encoder_golden.py (python3-torch %s reference, fp32)" % torch.__version__,
              "note": gen_note, "cases": []}
    for text, ids in cases:
        golden["cases"].append({"text": text, "ids": ids, "embedding": reference_embedding(w, cfg, ids, prefix)})
    json.dump(golden, open(os.path.join(d, "golden.json"), "w"), ensure_ascii=False, indent=1)


def bert(out):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "名", "前", "は", "小", "野", "寺", "です", "。", "猫",
             "が", "好", "き", "hello", "world", "##s", ",", "!", ":", "passage", "query", "hel", "##lo", "##x"]
    v = {t: i for i, t in enumerate(vocab)}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": v[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]],
           "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                          "strip_accents": False, "lowercase": True},
           "pre_tokenizer": {"type": "BertPreTokenizer"},
           "post_processor": {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                         {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                              "pair": [], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                                             "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
           "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
           "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                     "max_input_chars_per_word": 100, "vocab": v}}
    # By hand: CJK ideographs become words of their own, kana runs stay together, punctuation is
    # split off, ASCII is lowercased, WordPiece takes the longest prefix then "##" pieces, and a
    # word with an unmatched rest is one [UNK].
    cases = [
        ("名前は小野寺です。", [2, 5, 6, 7, 8, 9, 10, 11, 12, 3]),         # 名 前 は 小 野 寺 です 。
        ("Hello, Worlds!", [2, 17, 20, 18, 19, 21, 3]),                   # hello , world ##s !
        ("猫が好き\thellos", [2, 13, 14, 15, 16, 17, 19, 3]),             # 猫 が 好 き hello ##s
        ("犬です helx", [2, 1, 11, 25, 27, 3]),                          # [UNK](犬) です hel ##x
        ("hellox", [2, 1, 3]),                                           # hello + "x" has no ##x? it has: see next
        ("passage: 猫が好き", [2, 23, 22, 13, 14, 15, 16, 3]),             # passage : 猫 が 好 き
        ("query: 小野寺", [2, 24, 22, 8, 9, 10, 3]),                       # query : 小 野 寺
    ]
    # "hellox": longest prefix "hello", rest "x" needs "##x" (present, id 27) -> hello ##x.
    cases[4] = ("hellox", [2, 17, 27, 3])
    cfg = config("bert", len(vocab), 40, 2, 0)
    gen = torch.Generator().manual_seed(11)
    w = random_weights(gen, cfg, "bert.", {"cls.predictions.bias": (len(vocab),)})
    write(out, "bert_tiny", cfg, tok, w, "bert.", cases, "weights under bert., an MLM head bias to ignore")


def xlmr(out):
    S = "\u2581"
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (S, -3.0), (S + "名前", -2.0), ("名前", -2.5),
              ("は", -2.0), (S + "は", -2.5), ("小野寺", -2.0), (S + "小野寺", -2.0), ("です", -2.0), ("。", -2.0),
              (S + "猫", -2.0), ("猫", -2.5), ("が", -2.0), ("好き", -2.0), (S + "query", -2.0), (":", -2.0),
              (S + "passage", -2.0), (S + "hello", -2.0), (S + "world", -2.0), ("s", -2.5), ("名", -4.0), ("前", -4.0),
              (S + "worlds", -5.0), (S + "ネコ", -2.0)]
    ids = {p: i for i, (p, _) in enumerate(pieces)}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for t in ["<s>", "<pad>", "</s>", "<unk>"]],
           # As XLM-RoBERTa ships it: a SentencePiece charsmap, then runs of spaces collapsed. Half-width
           # katakana and full-width digits map to their NFKC forms, U+200B goes, CR maps to a space;
           # the key CR LF exists too, but HF takes the SHORTEST matching key (CR) for the grapheme CR LF.
           "normalizer": {"type": "Sequence", "normalizers": [
               {"type": "Precompiled", "precompiled_charsmap": charsmap(
                   {"ﾈ": "ネ", "ｺ": "コ", "１": "1", "①": "1", "\u200b": "", "\r": " ", "\r\n": "\n"})},
               {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
           "pre_tokenizer": {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True},
           "post_processor": {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                         {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                              "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                                                             "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
           "decoder": {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True},
           "model": {"type": "Unigram", "unk_id": 3, "byte_fallback": False, "vocab": [[p, s] for p, s in pieces]}}
    # By hand (Viterbi: the segmentation with the highest total score; words split before each ▁):
    # ▁名前(-2) beats ▁(-3)+名前(-2.5) and ▁+名(-4)+前(-4); ▁world(-2)+s(-2.5) = -4.5 beats ▁worlds(-5);
    # 犬 has no piece: ▁ then <unk>.
    cases = [
        ("名前は小野寺です。", [0, 5, 7, 9, 11, 12, 2]),
        ("猫が好き", [0, 13, 15, 16, 2]),
        ("hello worlds", [0, 20, 21, 22, 2]),
        ("犬", [0, 4, 3, 2]),
        ("passage: 猫が好き", [0, 19, 18, 13, 15, 16, 2]),
        ("query: 小野寺", [0, 17, 18, 10, 2]),
        ("ﾈｺが\u200b好き", [0, 26, 15, 16, 2]),   # ネコが好き: ▁ネコ が 好き
        ("猫\r\nが", [0, 13, 4, 15, 2]),          # CR LF -> " " (shortest key): ▁猫 | ▁ が
        ("猫  \r\n  が", [0, 13, 4, 15, 2]),      # five spaces collapse to one: ▁猫 | ▁ が
    ]
    cfg = config("xlm-roberta", len(pieces), 42, 1, 1)
    gen = torch.Generator().manual_seed(12)
    w = random_weights(gen, cfg, "", {"pooler.dense.weight": (D, D), "pooler.dense.bias": (D,)})
    write(out, "xlmr_tiny", cfg, tok, w, "", cases, "positions start at pad_token_id + 1 = 2; a pooler to ignore")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/encoder"
    bert(out)
    xlmr(out)
