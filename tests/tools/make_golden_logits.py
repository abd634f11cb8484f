#!/usr/bin/env python3
"""Golden logits for the tiny checkpoints, from an independent reference: Hugging Face
transformers (eager attention, on the CPU, fp32 and bf16) where it is installed (the GPU
machines), else the plain python3-torch reference in reference_models.py (Debian's python3-torch
is enough; it agrees with transformers to 1e-6 in fp32). The metadata of every file says which
one produced it. The C++ forward pass is tested against what this writes.

  make_golden_logits.py MODELS_DIR OUT_DIR

MODELS_DIR/<name>/ are folders made by `kumihimo-cli make-tiny <family> --seed 0` (or the command in
its MAKE_TINY_ARGS file, e.g. gemma2_hot: --init-std 1.0, logits big enough to reach the soft-caps); OUT_DIR gets
<family>.safetensors with ids [T] (I64), logits_fp32 [T, V] and logits_bf16 [T, V] (both F32), and
metadata saying which implementation and versions produced them."""
import os
import sys

import torch

try:
    import transformers
    from safetensors.torch import save_file
except ImportError:  # Debian 12: python3-torch only
    transformers = None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference_models

    save_file = reference_models.save_safetensors

models_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(0)

# 24 ids: longer than the tiny sliding window (16), all inside a 768-piece vocab, no padding.
IDS = [(i * 37 + 11) % 700 + 5 for i in range(24)]

for family in sorted(os.listdir(models_dir)):
    d = os.path.join(models_dir, family)
    if not os.path.exists(os.path.join(d, "config.json")):
        continue
    out = {"ids": torch.tensor(IDS, dtype=torch.int64)}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with torch.no_grad():
            if transformers is not None:
                model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager")
                model.eval()
                logits = model(torch.tensor([IDS])).logits[0].float()
            else:
                logits = reference_models.logits(d, IDS, dtype)
        out[f"logits_{name}"] = logits.contiguous()
    who = (f"transformers {transformers.__version__} (eager, cpu)" if transformers is not None
           else "tests/tools/reference_models.py (python3-torch)")
    meta = {"produced_by": f"{who}, torch {torch.__version__}",
            "model": open(os.path.join(d, "MAKE_TINY_ARGS")).read().strip() if os.path.exists(os.path.join(d, "MAKE_TINY_ARGS")) else f"kumihimo-cli make-tiny {family} --seed 0"}
    save_file(out, os.path.join(out_dir, f"{family}.safetensors"), metadata=meta)
    print(family, tuple(out["logits_fp32"].shape), "fp32 vs bf16 max diff",
          float((out["logits_fp32"] - out["logits_bf16"]).abs().max()))
