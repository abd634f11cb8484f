#!/usr/bin/python3
"""Plain reference for the deterministic merge methods (mergekit semantics, as in FACTS.md):
writes tests/golden/merge/<case>.safetensors holding the inputs, the expected output and the
case's parameters (metadata "params", JSON). Written from the published formulas, element by
element where that is clearer; never imports Kumihimo or mergekit. Math in float64.

Usage: /usr/bin/python3 tests/tools/merge_reference.py [out_dir]
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_models  # noqa: E402  (the shared safetensors writer)

F64 = torch.float64


def save_file(tensors, path, metadata):
    """Writes every tensor as F32 with the test tools' one minimal writer (reference_models.py)."""
    reference_models.save_safetensors({k: v.to(torch.float32) for k, v in tensors.items()}, path, metadata)


# ---- sparsifiers over a flat list of values -------------------------------------------------

def keep_top_k(d, density):
    """TIES: keep the int(density * n) entries of largest magnitude."""
    flat = d.reshape(-1).tolist()
    k = int(density * len(flat))
    ranked = sorted(range(len(flat)), key=lambda i: -abs(flat[i]))
    keep = set(ranked[:k])
    return torch.tensor([v if i in keep else 0.0 for i, v in enumerate(flat)], dtype=F64).reshape(d.shape)


def keep_breadcrumbs(d, density, gamma):
    """Breadcrumbs: rank |d| ascending; drop the n_top = int(gamma n) largest and enough of the
    smallest that int(density n) remain (if that needs more than n - n_top, fewer top ones go)."""
    flat = d.reshape(-1).tolist()
    n = len(flat)
    keep_n, n_top = int(density * n), int(gamma * n)
    n_bot = n - keep_n - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    ascending = sorted(range(n), key=lambda i: abs(flat[i]))
    keep = set(ascending[n_bot:n - n_top])
    return torch.tensor([v if i in keep else 0.0 for i, v in enumerate(flat)], dtype=F64).reshape(d.shape)


def sign(x):
    return 1 if x > 0 else (-1 if x < 0 else 0)


def task_arithmetic(base, models, weights, sparsify, consensus, normalize, lam):
    """theta = base + lam * merge(w_i * sparsify(theta_i - base))."""
    xs = [sparsify(m - base, i) * w for i, (m, w) in enumerate(zip(models, weights))]
    flat_x = [x.reshape(-1).tolist() for x in xs]
    n = base.numel()
    out = []
    for e in range(n):
        vals = [fx[e] for fx in flat_x]
        if consensus:
            s = 1 if sum(vals) >= 0 else -1
            kept = [(v, w) for v, w in zip(vals, weights) if sign(v) == s]
            delta = sum(v for v, _ in kept)
            div = sum(w for _, w in kept)
            if div == 0:
                div = 1.0
        else:
            delta = sum(vals)
            div = sum(weights)
        if normalize:
            delta /= div
        out.append(delta * lam)
    return base + torch.tensor(out, dtype=F64).reshape(base.shape)


def linear(models, weights, normalize=True):
    acc = sum(m * w for m, w in zip(models, weights))
    return acc / sum(weights) if normalize else acc


def slerp(t, v0, v1):
    a, b = v0.reshape(-1), v1.reshape(-1)
    na, nb = a.norm().item(), b.norm().item()
    ua = a / na if na > 1e-8 else a
    ub = b / nb if nb > 1e-8 else b
    dot = float((ua * ub).sum())
    if abs(dot) > 0.9995:
        return (1 - t) * v0 + t * v1
    th = math.acos(dot)
    return (math.sin((1 - t) * th) * v0 + math.sin(t * th) * v1) / math.sin(th)


def slerp_vectors(t, a, b):
    """Slerp of two 1-D vectors, lerp when sin(theta) is ~0 (nuslerp's rule)."""
    ua = a / max(a.norm().item(), 1e-7)
    ub = b / max(b.norm().item(), 1e-7)
    th = math.acos(max(-1.0, min(1.0, float((ua * ub).sum()))))
    if abs(math.sin(th)) < 1e-8:
        return (1 - t) * a + t * b
    return (math.sin((1 - t) * th) * a + math.sin(t * th) * b) / math.sin(th)


def nuslerp(w0, w1, v0, v1, flatten, row_wise):
    t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
    if flatten:
        return slerp_vectors(t, v0.reshape(-1), v1.reshape(-1)).reshape(v0.shape)
    out = torch.empty_like(v0)
    if row_wise:  # mergekit's dim=0: vectors run along dim 0, one per column
        for c in range(v0.shape[1]):
            out[:, c] = slerp_vectors(t, v0[:, c], v1[:, c])
    else:         # dim=-1: one vector per row
        for r in range(v0.shape[0]):
            out[r] = slerp_vectors(t, v0[r], v1[r])
    return out


def model_stock(base, models):
    offs = [(m - base).reshape(-1) for m in models]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            c = float((offs[i] * offs[j]).sum()) / max(offs[i].norm().item() * offs[j].norm().item(), 1e-6)
            cos.append(max(-1.0, min(1.0, c)))
    c = sum(cos) / len(cos)
    n = len(models)
    t = n * c / (1 + (n - 1) * c)
    return t * (sum(models) / n) + (1 - t) * base


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "golden", "merge")
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    shape = (8, 16)
    base = torch.randn(shape, generator=g).to(torch.float32)
    common = torch.randn(shape, generator=g) * 0.3
    models = [(base + common + torch.randn(shape, generator=g) * 0.5).to(torch.float32) for _ in range(3)]
    near = (base * 1.5 + torch.randn(shape, generator=g) * 1e-3).to(torch.float32)  # cos(base, near) ~ 1
    B = base.to(F64)
    M = [m.to(F64) for m in models]

    def write(case, method, base_t, model_ts, expected, **params):
        params["method"] = method
        tensors = {"expected": expected}
        if base_t is not None:
            tensors["base"] = base_t
        for i, m in enumerate(model_ts):
            tensors[f"model.{i}"] = m
        save_file(tensors, os.path.join(out_dir, case + ".safetensors"), {"params": json.dumps(params)})
        print(case, "max |expected|", float(expected.abs().max()))

    w3 = [1.0, 0.6, 0.3]
    write("linear", "linear", None, models, linear(M, w3), weights=w3)
    write("task_arithmetic", "task_arithmetic", base, models,
          task_arithmetic(B, M, [0.7, 0.4, 0.5], lambda d, i: d, False, False, 0.8),
          weights=[0.7, 0.4, 0.5], **{"lambda": 0.8})
    write("task_arithmetic_normalized", "task_arithmetic", base, models,
          task_arithmetic(B, M, [0.7, 0.4, 0.5], lambda d, i: d, False, True, 1.0),
          weights=[0.7, 0.4, 0.5], normalize=True)
    dens = [0.5, 0.3, 0.7]
    write("ties", "ties", base, models,
          task_arithmetic(B, M, w3, lambda d, i: keep_top_k(d, dens[i]), True, True, 1.0),
          weights=w3, densities=dens)
    write("ties_unnormalized", "ties", base, models,
          task_arithmetic(B, M, [1.0, -0.5, 0.8], lambda d, i: keep_top_k(d, dens[i]), True, False, 1.2),
          weights=[1.0, -0.5, 0.8], densities=dens, normalize=False, **{"lambda": 1.2})
    gam = [0.05, 0.1, 0.01]
    write("breadcrumbs", "breadcrumbs", base, models,
          task_arithmetic(B, M, w3, lambda d, i: keep_breadcrumbs(d, dens[i], gam[i]), False, False, 1.0),
          weights=w3, densities=dens, gammas=gam)
    dens2 = [0.9, 0.95, 0.6]
    gam2 = [0.2, 0.1, 0.0]  # n_bot < 0 for the first two: fewer top entries dropped; gamma 0 keeps the top
    write("breadcrumbs_ties", "breadcrumbs_ties", base, models,
          task_arithmetic(B, M, w3, lambda d, i: keep_breadcrumbs(d, dens2[i], gam2[i]), True, False, 1.0),
          weights=w3, densities=dens2, gammas=gam2)
    write("slerp", "slerp", base, models[:1], slerp(0.3, B, M[0]), t=0.3)
    write("slerp_t0", "slerp", base, models[:1], slerp(0.0, B, M[0]), t=0.0)
    write("slerp_parallel", "slerp", base, [near], slerp(0.4, B, near.to(F64)), t=0.4)
    write("nuslerp", "nuslerp", None, models[:2], nuslerp(0.3, 0.7, M[0], M[1], True, False),
          weights=[0.3, 0.7])
    write("nuslerp_base_rows", "nuslerp", base, models[:2],
          B + nuslerp(1.0, 2.0, M[0] - B, M[1] - B, False, False),
          weights=[1.0, 2.0], nuslerp_flatten=False)
    write("nuslerp_row_wise", "nuslerp", None, models[1:], nuslerp(0.5, 0.5, M[1], M[2], False, True),
          weights=[0.5, 0.5], nuslerp_flatten=False, nuslerp_row_wise=True)
    write("model_stock", "model_stock", base, models, model_stock(B, M))
    write("passthrough", "passthrough", None, models[2:], M[2])


if __name__ == "__main__":
    main()
