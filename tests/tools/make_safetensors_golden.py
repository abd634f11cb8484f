#!/usr/bin/env python3
"""Writes tests/golden/safetensors/all_dtypes.{safetensors,json} with the reference writer
(Hugging Face `safetensors`, its torch API). The C++ reader is tested against these files.
Needs torch + safetensors (the GPU machines have both; Debian 12 has no python3-safetensors).
Usage: make_safetensors_golden.py OUT_DIR"""
import json
import os
import sys

import safetensors
import torch
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

# Values exactly representable in every dtype they are stored in, so the JSON holds them exactly.
tensors = {
    "f32": (torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5.5) / 4,
    "f16": (torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.125 - 0.25).to(torch.float16),
    "bf16": (torch.arange(8, dtype=torch.float32) * -1.5 + 3).to(torch.bfloat16),
    "f64": torch.tensor([1e-300, -2.5, 3.0e300], dtype=torch.float64),
    "i64": torch.tensor([-(2**40), 0, 2**50], dtype=torch.int64),
    "i32": torch.tensor([[-7, 8], [2**30, -(2**31)]], dtype=torch.int32),
    "i16": torch.tensor([-32768, 32767, 5], dtype=torch.int16),
    "i8": torch.tensor([-128, 127, 0, 1], dtype=torch.int8),
    "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True], dtype=torch.bool),
    "scalar_f32": torch.tensor(0.75, dtype=torch.float32),
    "empty_f32": torch.zeros((0, 3), dtype=torch.float32),
    "model.layers.0.self_attn.q_proj.weight": torch.arange(16, dtype=torch.float32).reshape(4, 4).to(torch.bfloat16),
}
metadata = {"format": "pt", "written_by": f"safetensors {safetensors.__version__}, torch {torch.__version__}"}
save_file(tensors, os.path.join(out, "all_dtypes.safetensors"), metadata=metadata)

names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
         torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
         torch.bool: "BOOL"}
expected = {"__metadata__": metadata, "tensors": {}}
for k, t in tensors.items():
    expected["tensors"][k] = {"dtype": names[t.dtype], "shape": list(t.shape),
                              "values": [float(v) for v in t.to(torch.float64).flatten().tolist()]}
with open(os.path.join(out, "all_dtypes.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", out, metadata["written_by"])
