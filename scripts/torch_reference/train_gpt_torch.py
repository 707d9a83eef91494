#!/usr/bin/env python3
"""PyTorch twin of `train_gpt` for side-by-side speed runs (bench/models/train_vs_torch.sh).

Trains the same GPT-2 architecture (learned positions, pre-norm LayerNorm, tanh GELU, tied LM
head) with the same sizes, batch, AdamW settings (betas 0.9/0.95, weight decay 0.1 on matrices and
embeddings only), gradient clipping at 1.0, f32 or bf16 autocast (--precision bf16), on random tokens, and reports tokens/s per
step. Attention uses torch's scaled_dot_product_attention when available (torch >= 2.0).

  python3 train_gpt_torch.py --preset cpu-small --batch 8 --steps 10 --threads 2 --json out.json
  python3 train_gpt_torch.py --world_size 2 --batch 16 --threads 1   # DDP (gloo), 2 processes
  # one process per rank started by a launcher (mpirun, scripts/posed_cluster.sh): rank and world
  # from OMPI_COMM_WORLD_RANK/SIZE (or RANK/WORLD_SIZE), rendezvous at MASTER_ADDR:MASTER_PORT
  mpirun -np 2 python3 train_gpt_torch.py --world_from_env --batch 8 --threads 1
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "tiny": dict(vocab=64, ctx=64, layers=2, heads=4, dim=64),
    "cpu-small": dict(vocab=4096, ctx=256, layers=6, heads=6, dim=384),
    "gpt2-124m": dict(vocab=50257, ctx=1024, layers=12, heads=12, dim=768),
}


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.mlp_proj = nn.Linear(4 * dim, dim)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None:
            y = sdpa(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads)
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, layers, heads, dim):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(ctx, dim)
        self.h = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if "proj" in name else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def train(args, rank=0, world=1):
    """Trains args.steps steps; with world > 1, rank `rank` of a DistributedDataParallel (gloo)
    job on its slice of each global batch of args.batch sequences. Returns rank 0's step list."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    cfg = PRESETS[args.preset]
    T = args.seq_len or cfg["ctx"]
    model = GPT(**cfg)
    net = model
    if world > 1 and args.fsdp2:
        # FSDP2: each block sharded on its own, then the rest (embeddings, ln_f) at the root.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mesh = init_device_mesh("cpu", (world,))
        policy = MixedPrecisionPolicy(reduce_dtype=torch.bfloat16 if args.bf16_grads else None)
        for block in model.h:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
    elif world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)  # default 25 MiB buckets
        if args.bf16_grads:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
            net.register_comm_hook(None, default_hooks.bf16_compress_hook)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    data = torch.randint(0, cfg["vocab"], (args.steps, args.batch, T + 1))
    per = args.batch // world
    steps = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        batch = data[step, rank * per:(rank + 1) * per]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = net(batch[:, :-1], batch[:, 1:])
        loss.backward()  # DDP all-reduces gradient buckets during backward
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ms = (time.perf_counter() - t0) * 1000
        tok_s = args.batch * T / (ms / 1000)
        steps.append({"step": step + 1, "loss": loss.item(), "step_ms": ms, "tokens_per_s": tok_s})
        if rank == 0:
            print(f"step {step + 1:4d} | loss {loss.item():.4f} | {ms:8.1f} ms | "
                  f"{tok_s:8.0f} tok/s", flush=True)
    return steps


def ddp_worker(rank, world, args, port):
    import os
    import torch.distributed as dist
    if not args.world_from_env:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    steps = train(args, rank, world)
    if rank == 0:
        write_json(args, steps, world)
    dist.destroy_process_group()


def write_json(args, steps, world):
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "world_size": world,
                       "precision": args.precision, "steps": steps}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8, help="global batch (over all ranks)")
    ap.add_argument("--seq_len", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="threads per rank")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--world_size", type=int, default=1,
                    help="> 1: DistributedDataParallel over gloo with this many processes")
    ap.add_argument("--port", type=int, default=29517)
    ap.add_argument("--json", default="")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: CPU autocast to bf16 (f32 weights and optimizer)")
    ap.add_argument("--bf16_grads", action="store_true",
                    help="gradients on the wire in bf16 (DDP: PyTorch's bf16_compress_hook; "
                         "FSDP2: reduce_dtype bf16)")
    ap.add_argument("--fsdp2", action="store_true",
                    help="with more than one rank: FSDP2 (fully_shard per block and at the root) "
                         "instead of DDP")
    ap.add_argument("--world_from_env", action="store_true",
                    help="this process is one rank started by a launcher: rank and world size "
                         "from OMPI_COMM_WORLD_RANK/SIZE or RANK/WORLD_SIZE, rendezvous at "
                         "MASTER_ADDR:MASTER_PORT (gloo's interface: GLOO_SOCKET_IFNAME)")
    args = ap.parse_args()
    if args.world_from_env:
        import os
        env = os.environ
        rank = int(env.get("OMPI_COMM_WORLD_RANK", env.get("RANK", "-1")))
        world = int(env.get("OMPI_COMM_WORLD_SIZE", env.get("WORLD_SIZE", "0")))
        if rank < 0 or world < 1 or "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
            ap.error("--world_from_env needs a launcher's rank and size (OMPI_COMM_WORLD_RANK/"
                     "SIZE or RANK/WORLD_SIZE) and MASTER_ADDR, MASTER_PORT")
        if args.batch % world:
            ap.error("--batch must be a multiple of the world size")
        ddp_worker(rank, world, args, int(env["MASTER_PORT"]))
        return
    if args.world_size < 1 or args.batch % args.world_size:
        ap.error("--batch must be a multiple of --world_size >= 1")
    if args.world_size == 1:
        write_json(args, train(args), 1)
    else:
        torch.multiprocessing.spawn(ddp_worker, args=(args.world_size, args, args.port),
                                    nprocs=args.world_size)


if __name__ == "__main__":
    main()
