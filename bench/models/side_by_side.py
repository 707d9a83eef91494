"""Readers shared by the side-by-side PyTorch comparisons (bench/models/*_vs_torch*.sh).

Each figure is the median over every round's steps after the first two (warm-up).

  from side_by_side import loom_median, torch_median, cpu_model
  loom_median(f"{work}/loom_{{r}}.jsonl", rounds, "tokens_per_s")   # train_gpt --metrics_out
  tok_s, version = torch_median(f"{work}/torch_{{r}}.json", rounds) # train_gpt_torch.py --json
"""
import json
import statistics

WARMUP_STEPS = 2


def loom_median(pattern, rounds, key):
    """Median of `key` over the steps of train_gpt's metrics files pattern.format(r=1..rounds)."""
    vals = []
    for r in range(1, int(rounds) + 1):
        with open(pattern.format(r=r)) as f:
            vals += [json.loads(line)[key] for line in f][WARMUP_STEPS:]
    return statistics.median(vals)


def torch_median(pattern, rounds):
    """(median tokens/s, torch version) of train_gpt_torch.py's JSON files pattern.format(r=...)."""
    vals, version = [], ""
    for r in range(1, int(rounds) + 1):
        with open(pattern.format(r=r)) as f:
            t = json.load(f)
        vals += [s["tokens_per_s"] for s in t["steps"][WARMUP_STEPS:]]
        version = t["torch"]
    return statistics.median(vals), version


def cpu_model():
    """The first CPU's model name with its family and model numbers (/proc/cpuinfo)."""
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0]
    info = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in first.splitlines() if ":" in l)}
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, "
            f"model {info.get('model', '?')})")
