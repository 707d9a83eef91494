#!/usr/bin/env python3
"""PyTorch twin of `train_gpt --preset moe-small --ep N` for side-by-side speed runs
(bench/models/moe_vs_torch.sh).

The same model as loom's MoE presets (docs/expert_parallel.md): learned positions, pre-norm
RMSNorm blocks, GPT-2 attention (c_attn / c_proj with biases), the first block's MLP a SwiGLU of
8/3·dim, the others a mixture of experts: sigmoid router (logits = x · gateᵀ), top-k of score +
balancing bias, gates normalised over the k, SwiGLU routed experts of width H plus shared experts,
tied LM head; AdamW as loom's (betas 0.9/0.95, weight decay 0.1 on matrices), clipping at 1.0, f32,
random tokens. PyTorch has no MoE layer of its own, so expert parallelism is written here the way
PyTorch users write it: the experts split over the ranks, tokens sorted by expert, the counts and
then the rows exchanged with dist.all_to_all_single (gloo, in a small autograd Function), experts run per local expert, rows sent back and combined with the gates; replicated
gradients averaged with all_reduce, expert gradients divided by the world size. Each rank trains
on its slice of every global batch.

  python3 train_moe_torch.py --preset moe-small --batch 8 --steps 10 --threads 1 --world_size 2
"""
import argparse
import math
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from train_gpt_torch import adamw, record_step, run_ranks



class AllToAll(torch.autograd.Function):
    """dist.all_to_all_single with autograd: rows[send[j]] to rank j; backward sends the
    gradients back with the splits swapped."""

    @staticmethod
    def forward(ctx, rows, send, recv):
        ctx.send, ctx.recv = send, recv
        out = rows.new_empty(sum(recv), rows.shape[1])
        dist.all_to_all_single(out, rows.contiguous(), recv, send)
        return out

    @staticmethod
    def backward(ctx, grad):
        back = grad.new_empty(sum(ctx.send), grad.shape[1])
        dist.all_to_all_single(back, grad.contiguous(), ctx.send, ctx.recv)
        return back, None, None

PRESETS = {
    "tiny-moe": dict(vocab=64, ctx=64, layers=2, heads=4, dim=64, experts=8, top_k=2, hidden=32,
                     shared=1),
    "moe-small": dict(vocab=4096, ctx=256, layers=6, heads=4, dim=256, experts=16, top_k=4,
                      hidden=128, shared=1),
}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGlu(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Moe(nn.Module):
    """Routed experts [rank·E/P, (rank+1)·E/P) of E on this rank, plus shared experts."""

    def __init__(self, dim, experts, top_k, hidden, shared, rank, world):
        super().__init__()
        self.experts, self.top_k, self.rank, self.world = experts, top_k, rank, world
        self.local = experts // world
        self.gate = nn.Linear(dim, experts, bias=False)
        self.register_buffer("bias", torch.zeros(experts))
        self.w_gate = nn.Parameter(torch.empty(self.local, hidden, dim))
        self.w_up = nn.Parameter(torch.empty(self.local, hidden, dim))
        self.w_down = nn.Parameter(torch.empty(self.local, dim, hidden))
        for w in (self.w_gate, self.w_up, self.w_down):
            w.expert = True
        self.shared = SwiGlu(dim, shared * hidden) if shared else None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        scores = torch.sigmoid(x @ self.gate.weight.t())
        chosen = (scores + self.bias).topk(self.top_k, dim=-1).indices  # [N, K]
        gates = scores.gather(1, chosen)
        gates = gates / gates.sum(-1, keepdim=True)
        flat = chosen.reshape(-1)
        order = flat.argsort(stable=True)  # slots grouped by expert, token order within
        rows = x[order // self.top_k]
        counts = torch.bincount(flat, minlength=self.experts)  # per expert
        if self.world > 1:
            recv_counts = torch.empty_like(counts)
            dist.all_to_all_single(recv_counts, counts)  # [source][local expert]
            send_split = counts.view(self.world, self.local).sum(1).tolist()
            recv_split = recv_counts.view(self.world, self.local).sum(1).tolist()
            recv = AllToAll.apply(rows, send_split, recv_split)
            expert_of = torch.arange(self.local).repeat(self.world).repeat_interleave(recv_counts)
        else:
            recv, expert_of = rows, torch.arange(self.experts).repeat_interleave(counts)
        out = torch.zeros_like(recv)
        # Every expert runs, even on no rows: the autograd graph then has the same shape on every
        # rank, so the engine runs the exchanges' backward in the same order everywhere (with a
        # data-dependent graph the ranks' orders differed and gloo matched the wrong calls).
        for e in range(self.local):
            idx = (expert_of == e).nonzero().squeeze(1)
            h = recv.index_select(0, idx)
            y = (F.silu(h @ self.w_gate[e].t()) * (h @ self.w_up[e].t())) @ self.w_down[e].t()
            out = out.index_copy(0, idx, y)
        if self.world > 1:
            out = AllToAll.apply(out, recv_split, send_split)
        combined = torch.zeros_like(x).index_add(
            0, order // self.top_k, out * gates.reshape(-1)[order].unsqueeze(1))
        if self.shared is not None:
            combined = combined + self.shared(x)
        self.load = counts.detach()
        return combined.reshape(shape)


class Block(nn.Module):
    def __init__(self, cfg, moe, rank, world):
        super().__init__()
        dim = cfg["dim"]
        self.heads = cfg["heads"]
        self.ln_1, self.ln_2 = RMSNorm(dim), RMSNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.mlp = (Moe(dim, cfg["experts"], cfg["top_k"], cfg["hidden"], cfg["shared"], rank,
                        world) if moe else SwiGlu(dim, 8 * dim // 3))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.reshape(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln_2(x))


class MoeGPT(nn.Module):
    def __init__(self, cfg, rank, world):
        super().__init__()
        self.wte = nn.Embedding(cfg["vocab"], cfg["dim"])
        self.wpe = nn.Embedding(cfg["ctx"], cfg["dim"])
        self.h = nn.ModuleList(Block(cfg, i >= 1, rank, world) for i in range(cfg["layers"]))
        self.ln_f = RMSNorm(cfg["dim"])
        std_res = 0.02 / math.sqrt(2 * cfg["layers"])
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, std_res if ("proj" in name or "w_down" in name) else 0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def sync_and_clip(model, world, max_norm):
    """Averages replicated gradients over the ranks, scales expert gradients to the global mean,
    clips by the global norm (experts counted on their rank, the rest once)."""
    dense = [p for p in model.parameters() if p.grad is not None and not hasattr(p, "expert")]
    experts = [p for p in model.parameters() if p.grad is not None and hasattr(p, "expert")]
    if world > 1:
        flat = torch.cat([p.grad.reshape(-1) for p in dense])
        dist.all_reduce(flat)
        flat /= world
        at = 0
        for p in dense:
            p.grad.copy_(flat[at:at + p.numel()].view_as(p))
            at += p.numel()
        for p in experts:
            p.grad /= world
    sq = torch.stack([p.grad.pow(2).sum() for p in experts]).sum() if experts else torch.zeros(())
    if world > 1:
        dist.all_reduce(sq)
    sq = sq + torch.stack([p.grad.pow(2).sum() for p in dense]).sum()
    factor = min(1.0, max_norm / (math.sqrt(sq.item()) + 1e-6))
    for p in dense + experts:
        p.grad *= factor


def train(args, rank=0, world=1):
    torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    cfg = PRESETS[args.preset]
    T = args.seq_len or cfg["ctx"]
    model = MoeGPT(cfg, rank, world)
    opt = adamw(model.parameters(), args.lr)
    data = torch.randint(0, cfg["vocab"], (args.steps, args.batch, T + 1))
    per = args.batch // world
    steps = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        batch = data[step, rank * per:(rank + 1) * per]
        loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        sync_and_clip(model, world, 1.0)
        opt.step()
        with torch.no_grad():  # aux-loss-free bias, from the loads summed over the ranks
            for block in model.h:
                if isinstance(block.mlp, Moe):
                    load = block.mlp.load.float()
                    if world > 1:
                        dist.all_reduce(load)
                    block.mlp.bias += 1e-3 * torch.sign(load.mean() - load)
        record_step(steps, loss.item(), t0, args.batch * T, rank)
    return steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="moe-small", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8, help="global batch (over all ranks)")
    ap.add_argument("--seq_len", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="threads per rank")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--world_size", type=int, default=1, help="expert-parallel ranks (gloo)")
    ap.add_argument("--port", type=int, default=29527)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    args.precision = "fp32"
    cfg = PRESETS[args.preset]
    if args.world_size < 1 or args.batch % args.world_size or cfg["experts"] % args.world_size:
        ap.error("--world_size must divide --batch and the experts")
    run_ranks(args, train)


if __name__ == "__main__":
    main()
