#!/usr/bin/env python3
"""Independent PyTorch GPT-2 reference for loom's parity test.

Reads a safetensors file holding GPT-2 weights under "weights.<HF name>" ([in, out] Conv1D
layout, tied LM head), "inputs" and "targets" (i32 [B, T]) and metadata "n_head"; builds the same
model in plain PyTorch (written from the GPT-2 paper / Hugging Face semantics, not from loom's
code), runs forward and backward of the mean cross-entropy, and writes a file with everything from
the input plus "ref.logits" [B, T, V], "ref.loss" [] and "ref.grad.<name>" for every parameter.

  python3 scripts/torch_reference/gpt_parity.py --in input.safetensors --out reference.safetensors
"""
import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def gpt2_forward(p, idx, n_layer, n_head):
    """p: dict of leaf tensors with HF GPT-2 names. idx: int64 [B, T]. Returns logits."""
    B, T = idx.shape
    C = p["wte.weight"].shape[1]
    hs = C // n_head
    x = p["wte.weight"][idx] + p["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(n_layer):
        h = f"h.{i}."
        a = torch.nn.functional.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], 1e-5)
        qkv = a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, n_head, hs).transpose(1, 2)
        k = k.view(B, T, n_head, hs).transpose(1, 2)
        v = v.view(B, T, n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + (y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"])
        m = torch.nn.functional.layer_norm(x, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], 1e-5)
        m = m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"]
        m = torch.nn.functional.gelu(m, approximate="tanh")
        x = x + (m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"])
    x = torch.nn.functional.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    return x @ p["wte.weight"].t()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tensors, meta = safetensors_io.load(args.inp)
    n_head = int(meta["n_head"])
    params = {k[len("weights."):]: torch.tensor(v, requires_grad=True)
              for k, v in tensors.items() if k.startswith("weights.")}
    n_layer = len({k.split(".")[1] for k in params if k.startswith("h.")})
    idx = torch.tensor(tensors["inputs"]).long()
    targets = torch.tensor(tensors["targets"]).long()
    logits = gpt2_forward(params, idx, n_layer, n_head)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
    loss.backward()
    out = dict(tensors)
    out["ref.logits"] = logits.detach().numpy().astype(np.float32)
    out["ref.loss"] = np.array(loss.item(), dtype=np.float32)
    for name, t in params.items():
        out["ref.grad." + name] = t.grad.numpy().astype(np.float32)
    meta = dict(meta)
    meta["reference"] = f"torch {torch.__version__}, scripts/torch_reference/gpt_parity.py"
    safetensors_io.save(args.out, out, meta)
    print(f"loss {loss.item():.6f}; wrote {args.out}")


if __name__ == "__main__":
    main()
