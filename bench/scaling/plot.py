#!/usr/bin/env python3
"""Plots and a markdown report from bench/scaling/suite.sh's JSONL rows.

  python plot.py out/scaling/results.jsonl out/scaling

Writes tokens_vs_rate.png (tokens/s against the link rate, one line per layout, the one-host
reference at the left), step_split.png (each run's step as compute plus exposed communication)
and report.md (every row, with the bound max(compute, link time) and step / bound, where compute
is the layout's one-host step time and link time the bytes each rank sends per step at the rate).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rate_bytes_per_s(rate):
    if rate == "unlimited":
        return None
    for unit, scale in (("kbit", 1e3), ("mbit", 1e6), ("gbit", 1e9)):
        if rate.endswith(unit):
            return float(rate[: -len(unit)]) * scale / 8
    raise ValueError(rate)


def main():
    rows_path, out = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(rows_path)]
    layouts = list(dict.fromkeys(r["layout"] for r in rows))
    reference = {r["layout"]: r for r in rows if r["hosts"] == 1}
    linked = [r for r in rows if r["hosts"] > 1]
    rates = list(dict.fromkeys(r["rate"] for r in linked))
    for r in linked:
        ref = reference.get(r["layout"])
        speed = rate_bytes_per_s(r["rate"])
        r["link_ms"] = (r["link_bytes_per_step"] / speed * 1e3
                        if speed and "link_bytes_per_step" in r else 0.0)
        r["compute_ms"] = ref["step_ms"] if ref else None
        if r["compute_ms"] is not None:
            r["bound_ms"] = max(r["compute_ms"], r["link_ms"])
            r["step_over_bound"] = r["step_ms"] / r["bound_ms"]

    columns = ["1 host"] + rates
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layout in layouts:
        ys = [reference[layout]["tokens_per_s"] if layout in reference else None]
        ys += [next((r["tokens_per_s"] for r in linked
                     if r["layout"] == layout and r["rate"] == rate), None) for rate in rates]
        ax.plot(range(len(columns)), ys, marker="o", label=layout)
    ax.set_xticks(range(len(columns)), ["1 host\n(no link)"] + [f"2 hosts\n{rate}" for rate in rates])
    ax.set_ylabel("tokens/s (all ranks)")
    ax.set_title(f"{rows[0]['cpu']}: tokens/s against the link rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/tokens_vs_rate.png", dpi=110)

    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(linked)), 4.5))
    labels = [f"{r['layout']}\n{r['rate']}" for r in linked]
    # Rows from before the parameter all-gathers were timed carry only the reductions' wait.
    exposed = [r.get("exposed_comm_ms", r["exposed_reduce_ms"]) for r in linked]
    compute = [r["step_ms"] - e for r, e in zip(linked, exposed)]
    ax.bar(range(len(linked)), compute, label="compute (and hidden communication)")
    ax.bar(range(len(linked)), exposed, bottom=compute, label="exposed communication")
    ax.scatter(range(len(linked)), [r.get("link_ms", 0) for r in linked], color="black",
               marker="_", s=200, label="link time of the step's bytes", zorder=3)
    ax.set_xticks(range(len(linked)), labels, fontsize=7, rotation=90)
    ax.set_ylabel("ms per step")
    ax.set_title("Step time split on 2 posed hosts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/step_split.png", dpi=110)

    with open(f"{out}/report.md", "w") as f:
        f.write(f"CPU: {rows[0]['cpu']}; global batch and preset as run; medians over steps 3+.\n\n")
        f.write("| layout | hosts x ranks | link | tokens/s | step ms | exposed ms | link ms "
                "| compute ms | step / max(compute, link) | peak MiB/rank |\n")
        f.write("|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            fmt = lambda k, p=0: (f"{r[k]:.{p}f}" if r.get(k) is not None else "-")
            r.setdefault("exposed_comm_ms", r["exposed_reduce_ms"])
            f.write(f"| {r['layout']} | {r['hosts']} x {r['ranks_per_host']} | "
                    f"{r['rate'] if r['hosts'] > 1 else 'one host, no link'} | {fmt('tokens_per_s')} | "
                    f"{fmt('step_ms')} | {fmt('exposed_comm_ms')} | {fmt('link_ms')} | "
                    f"{fmt('compute_ms')} | {fmt('step_over_bound', 2)} | "
                    f"{r['peak_bytes_per_rank'] / 2**20:.0f} |\n")


if __name__ == "__main__":
    main()
