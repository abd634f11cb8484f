#!/usr/bin/env python3
"""Independent check of what Kumihimo writes, with the reference implementations (Hugging Face
transformers, safetensors, sentencepiece). Runs where those are installed (the GPU machines).

  hf_check.py MODELS_DIR OUT_JSON

MODELS_DIR holds folders made by `kumihimo-cli make-tiny` (one per family, any names) and
kumihimo_written.safetensors + kumihimo_written.json (a file written by Kumihimo's writer and the
values it should hold). For each model folder it records whether transformers loads it with no
missing, unexpected or mis-shaped weights, the config transformers parsed, and the token ids the
slow (SentencePiece) tokenizer gives for fixed texts, so the C++ tokenizer can be compared."""
import glob
import json
import os
import sys

import safetensors
import torch
import transformers
from safetensors import safe_open

models_dir, out_path = sys.argv[1], sys.argv[2]
report = {"versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                       "safetensors": safetensors.__version__},
          "writer": {}, "models": {}}

TEXTS = ["こんにちは、世界！", "名前は小野寺絢音です。", "Hello world 123", "  spaces  and\ttabs\n",
         "<start_of_turn>user\nこんにちは<end_of_turn>\n", "<|im_start|>user\nhi<|im_end|>", "😀 絵文字", ""]

# 1. Kumihimo's writer, read by the reference reader.
w = os.path.join(models_dir, "kumihimo_written.safetensors")
if os.path.exists(w):
    want = json.load(open(os.path.join(models_dir, "kumihimo_written.json")))
    problems = []
    with safe_open(w, framework="pt") as f:
        meta = f.metadata()
        if meta != want["__metadata__"]:
            problems.append(f"metadata {meta} != {want['__metadata__']}")
        for k, spec in want["tensors"].items():
            t = f.get_tensor(k)
            got = [float(v) for v in t.to(torch.float64).flatten().tolist()]
            if list(t.shape) != spec["shape"] or got != spec["values"]:
                problems.append(f"{k}: shape {list(t.shape)} values {got[:4]}...")
    report["writer"] = {"file": os.path.basename(w), "ok": not problems, "problems": problems}

# 2. Every tiny model: loads in transformers with nothing missing/unexpected/mis-shaped.
for d in sorted(glob.glob(os.path.join(models_dir, "*/config.json"))):
    d = os.path.dirname(d)
    name = os.path.basename(d)
    entry = {}
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
        entry["class"] = type(model).__name__
        entry["missing"] = sorted(info["missing_keys"])
        entry["unexpected"] = sorted(info["unexpected_keys"])
        entry["mismatched"] = [str(x) for x in info.get("mismatched_keys", [])]
        entry["loads_cleanly"] = not (entry["missing"] or entry["unexpected"] or entry["mismatched"])
        entry["parameters"] = sum(p.numel() for p in model.parameters())
        entry["tied"] = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        c = model.config
        entry["config"] = {k: getattr(c, k, None) for k in [
            "vocab_size", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "n_inner", "sliding_window",
            "query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping", "rope_theta",
            "tie_word_embeddings", "layer_types"]}
    except Exception as e:  # noqa: BLE001 - the report says what failed
        entry["error"] = f"{type(e).__name__}: {e}"
    for kind, kwargs in (("slow", {"use_fast": False}), ("fast", {})):
        try:
            tok = transformers.AutoTokenizer.from_pretrained(d, **kwargs)
            entry[f"tokenizer_{kind}"] = {
                "class": type(tok).__name__,
                "encodings": {t: tok.encode(t) for t in TEXTS},
                "special": {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
                            "unk": tok.unk_token_id}}
        except Exception as e:  # noqa: BLE001
            entry[f"tokenizer_{kind}"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    report["models"][name] = entry

with open(out_path, "w") as f:
    json.dump(report, f, indent=1, ensure_ascii=False, default=str)
print(json.dumps({k: {"class": v.get("class"), "loads_cleanly": v.get("loads_cleanly"), "error": v.get("error"),
                      "tok_slow": v.get("tokenizer_slow", {}).get("class") or v.get("tokenizer_slow", {}).get("error"),
                      "tok_fast": v.get("tokenizer_fast", {}).get("class") or v.get("tokenizer_fast", {}).get("error")}
                  for k, v in report["models"].items()}, indent=1))
print("writer:", report["writer"])
