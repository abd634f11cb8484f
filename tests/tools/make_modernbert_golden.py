#!/usr/bin/python3
"""Tiny random ModernBERT encoder folders (the architecture of ruri-v3) and golden sentence
embeddings, from a plain python3-torch reference of the transformers ModernBertModel forward
written from its published formulas (no transformers needed, no code shared with the C++):

  tok_embeddings -> LayerNorm -> layers [x += Wo(attn(attn_norm(x))); x += Wo(act(in) * gate)
  with in, gate = chunk(Wi(mlp_norm(x)))] -> final_norm -> mean over the tokens -> L2.

Layer 0 has no attn_norm. A layer is global when layer_id % global_attn_every_n_layers == 0;
the others attend only to keys with |i - j| <= local_attention // 2. Rotary position embeddings
rotate the pairs (x[k], x[k + head_dim/2]) by pos * theta^(-2k/head_dim), theta =
global_rope_theta on global layers and local_rope_theta on local ones. The reference runs one
unpadded sequence at a time (as transformers' unpadded flash-attention path does), in float64.

  make_modernbert_golden.py OUT_DIR      (the repository keeps OUT_DIR = tests/golden/encoder)

OUT_DIR/ruri-v3-tiny/: laid out as ruri-v3 ships (ModernBertModel weights without a prefix, no
biases, exact GELU, old-style config keys global_rope_theta / local_rope_theta), 4 layers with
global_attn_every_n_layers 3 (layers 0 and 3 global, 1 and 2 local) and local_attention 4 (a
window of +-2 tokens, shorter than the test texts). Its golden.json also holds every case's
embedding with local_attention 2 ("narrow_window"), so a test can show the window matters.
OUT_DIR/modernbert_mlm_tiny/: ModernBertForMaskedLM ("model." prefix, an MLM head to ignore),
every bias on (norm_bias, attention_bias, mlp_bias), tanh GELU, new-style config keys
(layer_types, rope_parameters).
Token ids in golden.json are DERIVED BY HAND (below) from the Unigram tokenizer.json."""
import copy
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import save_safetensors  # noqa: E402

D, H, L, I = 32, 4, 4, 48
S = "\u2581"
PIECES = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0), ("<pad>", 0.0), ("<sep>", 0.0), ("<mask>", 0.0), ("<cls>", 0.0),
          (S + "名前", -2.0), ("名前", -2.5), ("は", -2.0), ("小野寺", -2.0), ("絢", -3.0), ("音", -3.0), ("です", -2.0),
          ("。", -2.0), (S + "猫", -2.0), ("猫", -2.5), ("が", -2.0), ("好き", -2.0), (S + "あなた", -2.0), ("の", -2.0),
          ("なん", -2.0), ("か", -2.0), ("?", -2.0), (S + "検索クエリ", -2.0), (S + "検索文書", -2.0), (":", -2.0),
          (S, -5.0)]
# By hand: Metaspace puts ▁ before every word (split at spaces); with only these pieces each text
# has one segmentation but for ▁名前 (-2) against ▁ (-5) + 名前 (-2.5); <s> $A </s> around it.
CASES = [
    ("名前は小野寺絢音です。", [1, 7, 9, 10, 11, 12, 13, 14, 2]),
    ("猫が好き", [1, 15, 17, 18, 2]),
    ("あなたの名前はなんですか?", [1, 19, 20, 8, 9, 21, 13, 22, 23, 2]),
    ("猫が好き。猫が好き。猫が好き。", [1, 15, 17, 18, 14, 16, 17, 18, 14, 16, 17, 18, 14, 2]),
    ("検索クエリ: あなたの名前は?", [1, 24, 26, 19, 20, 8, 9, 23, 2]),
    ("検索文書: 名前は小野寺絢音です。", [1, 25, 26, 7, 9, 10, 11, 12, 13, 14, 2]),
]


def tokenizer_json():
    ids = {p: i for i, (p, _) in enumerate(PIECES)}
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for p, i in ids.items() if p.startswith("<")],
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True},
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                          {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                               "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                                              "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
            "decoder": {"type": "Metaspace", "replacement": S, "prepend_scheme": "always", "split": True},
            "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": False, "vocab": [[p, s] for p, s in PIECES]}}


def gelu(x, kind):
    if kind == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))  # gelu_pytorch_tanh


def reference_embedding(w, s, ids, local_attention):
    """Mean-pooled, L2-normalised final_norm output of one unpadded sequence, float64."""
    g = lambda n: w[s["prefix"] + n].double()  # noqa: E731
    T, dh, eps = len(ids), D // H, s["norm_eps"]

    def norm(x, n):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + eps) * g(n + ".weight")
        return y + g(n + ".bias") if s["norm_bias"] else y

    def dense(x, n, bias):
        y = x @ g(n + ".weight").T
        return y + g(n + ".bias") if bias else y

    def rotate(x, theta):  # x: [T, H, dh]; pairs (k, k + dh/2) turned by pos * theta^(-2k/dh)
        out = x.clone()
        for pos in range(T):
            for k in range(dh // 2):
                a = pos * theta ** (-2.0 * k / dh)
                c, sn = math.cos(a), math.sin(a)
                x1, x2 = x[pos, :, k], x[pos, :, k + dh // 2]
                out[pos, :, k] = x1 * c - x2 * sn
                out[pos, :, k + dh // 2] = x2 * c + x1 * sn
        return out

    x = norm(g("embeddings.tok_embeddings.weight")[torch.tensor(ids)], "embeddings.norm")
    for i in range(L):
        p = "layers.%d." % i
        is_global = i % s["every"] == 0
        theta = s["global_theta"] if is_global else s["local_theta"]
        h = x if i == 0 else norm(x, p + "attn_norm")
        qkv = dense(h, p + "attn.Wqkv", s["attention_bias"]).view(T, 3, H, dh)
        q, k, v = rotate(qkv[:, 0], theta), rotate(qkv[:, 1], theta), qkv[:, 2]
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(dh)
        for a in range(T):
            for b in range(T):
                if not is_global and abs(a - b) > local_attention // 2:
                    scores[:, a, b] = -math.inf
        ctx = torch.einsum("hts,shd->thd", torch.softmax(scores, -1), v).reshape(T, D)
        x = x + dense(ctx, p + "attn.Wo", s["attention_bias"])
        u = dense(norm(x, p + "mlp_norm"), p + "mlp.Wi", s["mlp_bias"])
        x = x + dense(gelu(u[:, :I], s["act"]) * u[:, I:], p + "mlp.Wo", s["mlp_bias"])
    m = norm(x, "final_norm").mean(0)
    return (m / m.norm()).tolist()


def random_weights(gen, s, extra):
    r = lambda *shape: (torch.randn(*shape, generator=gen) * 0.25).float()  # noqa: E731
    w, pre = {}, s["prefix"]

    def norm(n):
        w[pre + n + ".weight"] = 1.0 + r(D)
        if s["norm_bias"]:
            w[pre + n + ".bias"] = r(D)

    def dense(n, o, i, bias):
        w[pre + n + ".weight"] = r(o, i)
        if bias:
            w[pre + n + ".bias"] = r(o)

    w[pre + "embeddings.tok_embeddings.weight"] = r(len(PIECES), D) * 4
    norm("embeddings.norm")
    for i in range(L):
        p = "layers.%d." % i
        if i > 0:
            norm(p + "attn_norm")
        dense(p + "attn.Wqkv", 3 * D, D, s["attention_bias"])
        dense(p + "attn.Wo", D, D, s["attention_bias"])
        norm(p + "mlp_norm")
        dense(p + "mlp.Wi", 2 * I, D, s["mlp_bias"])
        dense(p + "mlp.Wo", D, I, s["mlp_bias"])
    norm("final_norm")
    for n, shape in extra.items():
        w[n] = r(*shape)
    return w


def config(s, architecture, new_style):
    c = {"architectures": [architecture], "model_type": "modernbert", "vocab_size": len(PIECES), "hidden_size": D,
         "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H, "hidden_activation": s["act"],
         "max_position_embeddings": 64, "norm_eps": s["norm_eps"], "norm_bias": s["norm_bias"],
         "attention_bias": s["attention_bias"], "mlp_bias": s["mlp_bias"], "local_attention": 4,
         "global_attn_every_n_layers": s["every"], "pad_token_id": 3, "bos_token_id": 1, "eos_token_id": 2,
         "cls_token_id": 6, "sep_token_id": 4, "classifier_pooling": "mean", "attention_dropout": 0.0,
         "embedding_dropout": 0.0, "mlp_dropout": 0.0, "layer_norm_eps": 1e-05, "position_embedding_type": "rope",
         "torch_dtype": "float32"}
    if new_style:
        c["layer_types"] = ["full_attention" if i % s["every"] == 0 else "sliding_attention" for i in range(L)]
        c["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": s["global_theta"]},
                                "sliding_attention": {"rope_type": "default", "rope_theta": s["local_theta"]}}
    else:
        c["global_rope_theta"] = s["global_theta"]
        c["local_rope_theta"] = s["local_theta"]
    return c


def write(out, name, s, cfg, w, note, narrow):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    json.dump(tokenizer_json(), open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False, indent=1)
    save_safetensors(w, os.path.join(d, "model.safetensors"), {"format": "pt"})
    golden = {"producer": "tests/tools/make_modernbert_golden.py (python3-torch %s reference, float64)" % torch.__version__,
              "note": note, "local_attention": cfg["local_attention"], "cases": []}
    for text, ids in CASES:
        case = {"text": text, "ids": ids, "embedding": reference_embedding(w, s, ids, cfg["local_attention"])}
        if narrow:
            case["narrow_window"] = reference_embedding(w, s, ids, 2)
        golden["cases"].append(case)
    if narrow:
        golden["narrow_window_local_attention"] = 2
    json.dump(golden, open(os.path.join(d, "golden.json"), "w"), ensure_ascii=False, indent=1)


def main(out):
    ruri = {"prefix": "", "norm_bias": False, "attention_bias": False, "mlp_bias": False, "act": "gelu",
            "norm_eps": 1e-5, "every": 3, "global_theta": 160000.0, "local_theta": 10000.0}
    w = random_weights(torch.Generator().manual_seed(21), ruri, {})
    write(out, "ruri-v3-tiny", ruri, config(ruri, "ModernBertModel", False), w,
          "ruri-v3 layout: no prefix, no biases; layers 0, 3 global, 1, 2 local (window +-2)", True)

    mlm = dict(ruri, prefix="model.", norm_bias=True, attention_bias=True, mlp_bias=True, act="gelu_pytorch_tanh",
               norm_eps=1e-6, global_theta=1000.0, local_theta=50.0)
    extra = {"head.dense.weight": (D, D), "head.norm.weight": (D,), "head.norm.bias": (D,), "decoder.bias": (len(PIECES),)}
    w = random_weights(torch.Generator().manual_seed(22), mlm, extra)
    write(out, "modernbert_mlm_tiny", mlm, config(mlm, "ModernBertForMaskedLM", True), w,
          "ForMaskedLM under model. (head ignored), all biases, tanh GELU, layer_types + rope_parameters", False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/encoder")
