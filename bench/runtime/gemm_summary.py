#!/usr/bin/env python3
"""Summarises a gemm_libs_bench JSON file: geometric-mean GFLOP/s per dtype, library and thread
count over the 15 GPT cases, with the forward (NT), input-gradient (NN) and weight-gradient (TN)
geomeans beside it, and the CPU the run recorded.

  build/bench/gemm_libs_bench --benchmark_enable_random_interleaving=true \
      --benchmark_repetitions=3 --benchmark_out=gemm.json
  python3 bench/runtime/gemm_summary.py gemm.json
"""
import collections, json, math, statistics, sys


def main(path):
    data = json.load(open(path))
    ctx = data["context"]
    runs = collections.defaultdict(list)  # (dtype, lib, threads, case, shape) -> GFLOP/s
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" or "GFLOP/s" not in b or b.get("error_occurred"):
            continue
        dtype, lib, case, shape, threads = b["run_name"].split("/")[:5]
        runs[(dtype, lib, threads, case, shape)].append(b["GFLOP/s"])
    table = collections.defaultdict(lambda: collections.defaultdict(list))
    for (dtype, lib, threads, case, shape), v in runs.items():
        table[(dtype, lib, threads)][case].append(statistics.median(v))
    print(f"CPU: {ctx.get('cpu_model')}  loom GEMM: {ctx.get('loom_gemm')}")
    print(f"{'dtype':5} {'library':14} {'threads':10} {'geomean':>8}  fwd_NT / dx_NN / dW_TN")
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
    for key in sorted(table):
        cases = table[key]
        every = [x for v in cases.values() for x in v]
        per = " / ".join(f"{geo(cases[c]):.0f}" for c in ("fwd_NT", "dx_NN", "dW_TN") if c in cases)
        print(f"{key[0]:5} {key[1]:14} {key[2]:10} {geo(every):8.1f}  {per}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gemm_summary.py gemm_libs_bench.json")
    main(sys.argv[1])
