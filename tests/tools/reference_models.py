"""Plain python3-torch reference forward passes for the tiny checkpoints, written from the
published model definitions (transformers' LlamaModel, MistralModel, Qwen2Model, Gemma2Model and
GPT2Model, eager attention). The fallback of make_golden_logits.py where transformers is missing
(Debian 12 has python3-torch 1.13 but no transformers); it reads safetensors with numpy.
It is a second, independent implementation: it shares no code with the C++ engine."""
import json
import math
import os
import struct

import numpy as np
import torch

_DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = raw[8 + n + b:8 + n + end]
        if e["dtype"] == "BF16":  # bf16 -> fp32 by widening the 16 bits
            u = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
            t = torch.from_numpy(u.view(np.float32).copy()).to(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(buf, dtype=_DT[e["dtype"]]).copy())
        out[name] = t.reshape(e["shape"])
    return out


def save_safetensors(tensors, path, metadata):
    """Minimal safetensors writer for the test tools: 8-byte length, JSON header padded with
    spaces to a multiple of 8, raw little-endian data in name order. F32 and I64 only."""
    names = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for k in sorted(tensors):
        b = tensors[k].contiguous().numpy().tobytes()
        header[k] = {"dtype": names[tensors[k].dtype], "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_weights(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    w = {}
    for f in files:
        w.update(load_safetensors(os.path.join(d, f)))
    return w


def _act(x, name):
    if name in ("silu", "swish"):
        return torch.nn.functional.silu(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return torch.nn.functional.gelu(x, approximate="tanh")
    raise ValueError(name)


def _rms(x, w, eps, gemma):
    xf = x.float()
    n = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if gemma:
        return (n * (1.0 + w.float())).to(x.dtype)
    return w * n.to(x.dtype)


def _rope(q, k, pos, theta, hd, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    f = pos.float()[:, None] * inv[None, :]
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)

    def rot(x):
        return torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def _attend(q, k, v, scale, softcap, window):
    # q: [H, T, hd], k/v: [KVH, T, hd]
    H, T, _ = q.shape
    k = k.repeat_interleave(H // k.shape[0], 0)
    v = v.repeat_interleave(H // v.shape[0], 0)
    s = torch.matmul(q, k.transpose(1, 2)) * scale
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window:
        allowed &= (i - j) < window
    s = s.float().masked_fill(~allowed, torch.finfo(torch.float32).min)
    p = torch.softmax(s, -1).to(v.dtype)
    return torch.matmul(p, v).transpose(0, 1).reshape(T, -1)


def logits(d, ids, dtype):
    """Logits [T, V] (fp32) of the model in folder d for token ids, computing in dtype."""
    c = json.load(open(os.path.join(d, "config.json")))
    w = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_weights(d).items()}
    ids = torch.tensor(ids)
    T = len(ids)
    pos = torch.arange(T)
    arch = c["architectures"][0]
    if arch == "GPT2LMHeadModel":
        D, H = c["n_embd"], c["n_head"]
        hd, eps = D // H, c.get("layer_norm_epsilon", 1e-5)
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][pos]
        for i in range(c["n_layer"]):
            p = f"transformer.h.{i}."
            h = torch.nn.functional.layer_norm(x, (D,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = (t.reshape(T, H, hd).transpose(0, 1) for t in qkv.split(D, -1))
            scale = 1 / math.sqrt(hd) / ((i + 1) if c.get("scale_attn_by_inverse_layer_idx") else 1)
            a = _attend(q, k, v, scale, 0, 0)
            x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = torch.nn.functional.layer_norm(x, (D,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            m = _act(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], c.get("activation_function", "gelu_new"))
            x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = torch.nn.functional.layer_norm(x, (D,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
        return (x @ w["transformer.wte.weight"].T).float()

    gemma = arch == "Gemma2ForCausalLM"
    D, H = c["hidden_size"], c["num_attention_heads"]
    KVH = c.get("num_key_value_heads", H)
    hd = c.get("head_dim") or D // H
    eps = c.get("rms_norm_eps", 1e-6)
    theta = c.get("rope_theta", 10000.0)
    act = c.get("hidden_activation") or c.get("hidden_act", "silu")
    scale = c["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    softcap = c.get("attn_logit_softcapping") if gemma else 0
    L = c["num_hidden_layers"]
    if gemma:
        windows = [c.get("sliding_window", 4096) if i % 2 == 0 else 0 for i in range(L)]
    elif arch == "MistralForCausalLM":
        windows = [c.get("sliding_window") or 0] * L
    else:
        windows = [0] * L
    x = w["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * torch.tensor(D ** 0.5, dtype=x.dtype)

    def lin(name, h):
        y = h @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y
    for i in range(L):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps, gemma)
        q = lin(p + "self_attn.q_proj", h).reshape(T, H, hd).transpose(0, 1)
        k = lin(p + "self_attn.k_proj", h).reshape(T, KVH, hd).transpose(0, 1)
        v = lin(p + "self_attn.v_proj", h).reshape(T, KVH, hd).transpose(0, 1)
        q, k = _rope(q, k, pos, theta, hd, x.dtype)
        a = lin(p + "self_attn.o_proj", _attend(q, k, v, scale, softcap, windows[i]))
        if gemma:
            x = x + _rms(a, w[p + "post_attention_layernorm.weight"], eps, True)
            h = _rms(x, w[p + "pre_feedforward_layernorm.weight"], eps, True)
        else:
            x = x + a
            h = _rms(x, w[p + "post_attention_layernorm.weight"], eps, False)
        m = lin(p + "mlp.down_proj", _act(lin(p + "mlp.gate_proj", h), act) * lin(p + "mlp.up_proj", h))
        x = x + (_rms(m, w[p + "post_feedforward_layernorm.weight"], eps, True) if gemma else m)
    x = _rms(x, w["model.norm.weight"], eps, gemma)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    out = x @ head.T
    if gemma and c.get("final_logit_softcapping"):
        cap = c["final_logit_softcapping"]
        out = torch.tanh(out / cap) * cap
    return out.float()
