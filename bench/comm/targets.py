#!/usr/bin/env python3
"""Reads coll_bench JSON files (--json) and prints issue #4's acceptance targets for them.

    python3 bench/comm/targets.py allreduce.json reducescatter.json allgather.json

Each target compares loom's shm backend with MPI's own call at the same (op, bytes) from the same
file (so the same run and buffers). Speedup = MPI time / loom time; for the latency targets the
time ratio loom / MPI is shown. Exit code 1 when any target present in the files is missed.
"""
import json
import sys

KIB, MIB = 1 << 10, 1 << 20

# (title, op, byte range, kind, bound): kind "ratio" = loom/MPI time <= bound,
# "speedup" = MPI/loom time >= bound.
TARGETS = [
    ("all-reduce >= 8 MiB: busbw >= 2.0x MPI", "allreduce", (8 * MIB, None), "speedup", 2.0),
    ("all-reduce 4-64 KiB: latency <= 0.5x MPI", "allreduce", (4 * KIB, 64 * KIB), "ratio", 0.5),
    ("all-reduce <= 1 KiB: latency <= 1.2x MPI", "allreduce", (0, 1 * KIB), "ratio", 1.2),
    ("reduce-scatter >= 1 MiB: >= 1.5x MPI", "reducescatter", (1 * MIB, None), "speedup", 1.5),
    ("all-gather >= 1 MiB: >= 1.5x MPI", "allgather", (1 * MIB, None), "speedup", 1.5),
]


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            rows.extend(json.load(f))
    return rows


def main(paths):
    rows = load(paths)
    times = {}  # (op, bytes, buffers) -> {backend: time}
    wrong = 0
    for r in rows:
        key = (r["op"], r["bytes"], r.get("buffers", "heap"))
        times.setdefault(key, {})[r["backend"]] = r["time_us"]
        wrong += r["wrong"]
    missed = False
    for title, op, (lo, hi), kind, bound in TARGETS:
        values = []
        for (o, b, buffers), t in sorted(times.items()):
            if o != op or b < lo or (hi is not None and b > hi):
                continue
            if "loom_shm" not in t or "MPI" not in t:
                continue
            v = t["loom_shm"] / t["MPI"] if kind == "ratio" else t["MPI"] / t["loom_shm"]
            values.append((b, v, buffers))
        if not values:
            continue
        bad = [(b, v) for b, v, _ in values if (v > bound if kind == "ratio" else v < bound)]
        missed = missed or bool(bad)
        worst = max(v for _, v, _ in values) if kind == "ratio" else min(v for _, v, _ in values)
        buffers = ",".join(sorted({x for _, _, x in values}))
        print(f"{'met   ' if not bad else 'MISSED'} {title}: {kind} {worst:.2f} at worst over "
              f"{len(values)} sizes ({buffers} buffers)"
              + ("" if not bad else "; missed at " + ", ".join(f"{b} B ({v:.2f})" for b, v in bad)))
    print(f"{'met   ' if wrong == 0 else 'MISSED'} 0 wrong elements: {wrong} wrong")
    return 1 if missed or wrong else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
