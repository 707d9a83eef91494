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
  # tensor parallelism (DTensor, parallelize_module): every rank sees the whole batch
  python3 train_gpt_torch.py --world_size 2 --tp --batch 8 --threads 1
  # pipeline parallelism (torch.distributed.pipelining): one schedule over all ranks
  python3 train_gpt_torch.py --world_size 2 --pp 1f1b --micro_batches 4 --batch 8 --threads 1
"""
import argparse
import contextlib
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
    def __init__(self, dim, heads, split_qkv=False):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        # Tensor parallelism shards each of q, k, v by heads, so they are separate Linears there
        # (a fused [3C, C] weight sharded by rows would mix them); the same math.
        self.split_qkv = split_qkv
        if split_qkv:
            self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        else:
            self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.mlp_proj = nn.Linear(4 * dim, dim)

    def attention(self, x):
        B, T, C = x.shape
        if self.split_qkv:  # under tensor parallelism: this rank's heads (width C / tp each)
            q, k, v = self.q(x), self.k(x), self.v(x)
        else:
            q, k, v = self.c_attn(x).split(C, dim=2)
        heads = self.heads * q.shape[-1] // C
        q, k, v = (t.reshape(B, T, heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None:
            y = sdpa(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads)
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, q.shape[1] * q.shape[3]))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, layers, heads, dim, split_qkv=False):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(ctx, dim)
        self.h = nn.ModuleList(Block(dim, heads, split_qkv) for _ in range(layers))
        self.tp_mesh = None  # set by parallelize_tp: the head and loss are vocabulary-parallel
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
        x = self.ln_f(x)
        if self.tp_mesh is None:
            logits = x @ self.wte.weight.t()
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
        # Tied head on the vocabulary-sharded embedding: logits sharded over the vocabulary, and
        # PyTorch's loss_parallel cross-entropy (train() runs forward and backward inside its
        # context), so no rank holds full-vocabulary logits.
        from torch.distributed.tensor import DTensor, Replicate
        x = DTensor.from_local(x, self.tp_mesh, [Replicate()])
        logits = x @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def parallelize_tp(model, world):
    """Megatron-style tensor parallelism with DTensor (torch.distributed.tensor.parallel):
    q, k, v and c_fc column-wise, c_proj and mlp_proj row-wise, the token embedding row-wise
    (vocabulary-sharded), the tied head and the loss vocabulary-parallel."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                                   parallelize_module)
    mesh = init_device_mesh("cpu", (world,))
    for block in model.h:
        parallelize_module(block, mesh, {"q": ColwiseParallel(), "k": ColwiseParallel(),
                                         "v": ColwiseParallel(), "c_proj": RowwiseParallel(),
                                         "c_fc": ColwiseParallel(), "mlp_proj": RowwiseParallel()})
    parallelize_module(model, mesh, {"wte": RowwiseParallel(input_layouts=Replicate(),
                                                            output_layouts=Replicate())})
    model.tp_mesh = mesh


def clip_tp_grad_norm(model, max_norm):
    """clip_grad_norm_ over a mix of sharded DTensor and plain gradients (torch's own refuses
    the mix): the shards' squares summed over the ranks in one all-reduce, replicated ones once."""
    import torch.distributed as dist
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    sharded, whole = torch.zeros(()), torch.zeros(())
    for g in grads:
        if hasattr(g, "to_local"):
            local = g.to_local()
            if any(pl.is_shard() for pl in g.placements):
                sharded += local.float().pow(2).sum()
                continue
            g = local
        whole += g.float().pow(2).sum()
    dist.all_reduce(sharded)
    total = (sharded + whole).sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        (g.to_local() if hasattr(g, "to_local") else g).mul_(coef)


def adamw(params, lr):
    """loom's AdamW settings: betas 0.9/0.95, weight decay 0.1 on matrices and embeddings only."""
    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def record_step(steps, loss, t0, tokens, rank):
    """Appends the step that started at t0 to `steps` (and prints it on rank 0)."""
    ms = (time.perf_counter() - t0) * 1000
    tok_s = tokens / (ms / 1000)
    steps.append({"step": len(steps) + 1, "loss": loss, "step_ms": ms, "tokens_per_s": tok_s})
    if rank == 0:
        print(f"step {len(steps):4d} | loss {loss:.4f} | {ms:8.1f} ms | {tok_s:8.0f} tok/s",
              flush=True)


class Stage(nn.Module):
    """One pipeline stage: `blocks` blocks, the embeddings before them on the first stage, ln_f
    and the LM head after them on the last (its own weight: PyTorch's pipelining does not tie
    parameters across stages; loom keeps two copies and sums their gradients)."""

    def __init__(self, vocab, ctx, heads, dim, blocks, layers, first, last):
        super().__init__()
        self.first, self.last = first, last
        if first:
            self.wte = nn.Embedding(vocab, dim)
            self.wpe = nn.Embedding(ctx, dim)
        self.h = nn.ModuleList(Block(dim, heads) for _ in range(blocks))
        if last:
            self.ln_f = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if "proj" in name else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, x):
        if self.first:
            x = self.wte(x) + self.wpe(torch.arange(x.shape[1]))
        for block in self.h:
            x = block(x)
        return self.head(self.ln_f(x)) if self.last else x


# loom's --schedule names -> (torch.distributed.pipelining class, stages per rank, V placement)
PIPELINE_SCHEDULES = {
    "gpipe": ("ScheduleGPipe", 1, False),
    "1f1b": ("Schedule1F1B", 1, False),
    "interleaved": ("ScheduleInterleaved1F1B", 2, False),
    "zb-v": ("ScheduleZBVZeroBubble", 2, True),
    "dualpipe-v": ("ScheduleDualPipeV", 2, True),
}


def train_pp(args, rank, world):
    """Pipeline parallelism over all `world` ranks with torch.distributed.pipelining: the blocks
    cut into world x chunks stages as loom cuts them (the first L mod S stages one more block),
    placed interleaved (stage s on rank s mod p) or in a V (rank r: stages r and 2p - 1 - r);
    the whole batch in args.micro_batches micro-batches; the gradient norm clipped over all
    stages; AdamW per rank on its stages. Returns rank 0's step list."""
    import torch.distributed as dist
    from torch.distributed import pipelining
    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]
    T = args.seq_len or cfg["ctx"]
    name, chunks, v_shape = PIPELINE_SCHEDULES[args.pp]
    n = world * chunks
    mine = [rank, 2 * world - 1 - rank] if v_shape else [rank + c * world for c in range(chunks)]
    stages, modules = [], []
    for s in mine:
        torch.manual_seed(1337 + s)
        blocks = cfg["layers"] // n + (1 if s < cfg["layers"] % n else 0)
        m = Stage(cfg["vocab"], cfg["ctx"], cfg["heads"], cfg["dim"], blocks, cfg["layers"],
                  first=s == 0, last=s == n - 1)
        modules.append(m)
        stages.append(pipelining.PipelineStage(m, s, n, torch.device("cpu")))

    def loss_fn(logits, targets):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    cls = getattr(pipelining, name)
    schedule = cls(stages if chunks > 1 else stages[0], n_microbatches=args.micro_batches,
                   loss_fn=loss_fn)
    params = [p for m in modules for p in m.parameters()]
    opt = adamw(params, args.lr)
    torch.manual_seed(1337)
    data = torch.randint(0, cfg["vocab"], (args.steps, args.batch, T + 1))
    steps = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        x, y = data[step, :, :-1], data[step, :, 1:]
        losses = []
        kwargs = {"target": y, "losses": losses} if n - 1 in mine else {}
        if 0 in mine:
            schedule.step(x, **kwargs)
        else:
            schedule.step(**kwargs)
        with torch.no_grad():  # the gradient norm over every stage, as loom's over the pipeline
            sq = torch.zeros(2)
            sq[0] = sum(p.grad.float().pow(2).sum() for p in params if p.grad is not None)
            sq[1] = torch.stack(losses).mean() if losses else 0.0
            dist.all_reduce(sq)
            coef = torch.clamp(1.0 / (sq[0].sqrt() + 1e-6), max=1.0)
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(coef)
        opt.step()
        record_step(steps, sq[1].item(), t0, args.batch * T, rank)
    return steps


def train(args, rank=0, world=1):
    """Trains args.steps steps; with world > 1, rank `rank` of a DistributedDataParallel (gloo)
    job on its slice of each global batch of args.batch sequences. Returns rank 0's step list."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    cfg = PRESETS[args.preset]
    T = args.seq_len or cfg["ctx"]
    model = GPT(**cfg, split_qkv=args.tp)
    net = model
    if world > 1 and args.tp:
        parallelize_tp(model, world)
    elif world > 1 and args.fsdp2:
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
    opt = adamw(model.parameters(), args.lr)
    data = torch.randint(0, cfg["vocab"], (args.steps, args.batch, T + 1))
    per = args.batch if args.tp else args.batch // world  # tensor parallelism: the whole batch
    loss_context = contextlib.nullcontext
    if world > 1 and args.tp:
        from torch.distributed.tensor.parallel import loss_parallel as loss_context
    steps = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        batch = data[step, rank * per:(rank + 1) * per] if not args.tp else data[step]
        with loss_context():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = net(batch[:, :-1], batch[:, 1:])
            loss.backward()  # DDP all-reduces gradient buckets during backward
        if args.tp and world > 1:
            clip_tp_grad_norm(model, 1.0)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        record_step(steps, loss.item(), t0, args.batch * T, rank)
    return steps


def gloo_worker(rank, world, args, port, train_fn):
    """One rank of a gloo job: train_fn(args, rank, world), rank 0's steps to args.json."""
    import os
    import torch.distributed as dist
    if not getattr(args, "world_from_env", False):
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    steps = train_fn(args, rank, world)
    if rank == 0:
        write_json(args, steps, world)
    dist.destroy_process_group()


def run_ranks(args, train_fn):
    """train_fn on one rank inline, or on args.world_size spawned gloo processes."""
    if args.world_size == 1:
        write_json(args, train_fn(args), 1)
    else:
        torch.multiprocessing.spawn(gloo_worker,
                                    args=(args.world_size, args, args.port, train_fn),
                                    nprocs=args.world_size)


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
    ap.add_argument("--tp", action="store_true",
                    help="with more than one rank: tensor parallelism over all ranks (DTensor "
                         "parallelize_module; each rank sees the whole batch) instead of DDP")
    ap.add_argument("--pp", default="", choices=[""] + sorted(PIPELINE_SCHEDULES),
                    help="with more than one rank: pipeline parallelism over all ranks with this "
                         "schedule (torch.distributed.pipelining) instead of DDP")
    ap.add_argument("--micro_batches", type=int, default=0,
                    help="with --pp: micro-batches per step (0: the world size)")
    ap.add_argument("--world_from_env", action="store_true",
                    help="this process is one rank started by a launcher: rank and world size "
                         "from OMPI_COMM_WORLD_RANK/SIZE or RANK/WORLD_SIZE, rendezvous at "
                         "MASTER_ADDR:MASTER_PORT (gloo's interface: GLOO_SOCKET_IFNAME)")
    args = ap.parse_args()
    if args.pp:
        args.micro_batches = args.micro_batches or args.world_size
        if args.world_size < 2 or args.batch % args.micro_batches:
            ap.error("--pp needs --world_size >= 2 and --batch a multiple of --micro_batches")
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
        gloo_worker(rank, world, args, int(env["MASTER_PORT"]), train_pp if args.pp else train)
        return
    if args.world_size < 1 or (args.batch % args.world_size and not args.pp):
        ap.error("--batch must be a multiple of --world_size >= 1")
    run_ranks(args, train_pp if args.pp else train)


if __name__ == "__main__":
    main()
