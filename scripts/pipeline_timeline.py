#!/usr/bin/env python3
"""Draws pipeline timelines (Chrome traces from train_gpt --trace or pipeline_schedule --trace_out)
as one PNG: a panel per trace, stacked on one time axis, a row per rank, F / B / W boxes
labelled with their micro-batch (the second stage a rank holds drawn darker), receive waits
hatched grey; with data parallelism a row of gradient reductions and parameter all-gathers
(labelled with their bucket) below each rank's. Traces of runs without --pp (forward "F",
backward "B" per micro-batch) draw the same way.

  python pipeline_timeline.py --out zb-v.png "measured=step.json" "simulated=sim.json"
  python pipeline_timeline.py --out schedules.png gpipe=g.json 1f1b=o.json   # one per schedule

Needs matplotlib (bench/scaling/plot_venv.sh installs it: its python runs this script).
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (first stage on a rank, a later one): F blue, B green, W orange.
COLORS = {"F": ("#8db7e8", "#3f7fc7"), "B": ("#9fd89a", "#3f9f48"), "W": ("#f5c27f", "#d98b1f")}
REDUCE_COLOR = "#c3a6e0"  # data-parallel gradient reductions ("rank r dp" tracks)
GATHER_COLOR = "#e8a6b8"  # data-parallel parameter all-gathers (the same tracks)
DP_COLORS = {"dp_reduce": REDUCE_COLOR, "dp_gather": GATHER_COLOR}
OPTIMIZER_COLOR = "#b0b0b0"  # the optimizer step (with the wait for the reductions)


def read_trace(path):
    """({track: name}, {track: [(kind, start_ms, duration_ms, label, stage)]}) of a Chrome
    trace: its thread names and X events (label: the micro-batch, or a reduction's bucket)."""
    try:
        with open(path) as f:
            trace = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"pipeline_timeline: cannot read {path}: {e}")
    if "traceEvents" not in trace:
        sys.exit(f"pipeline_timeline: {path} is not a Chrome trace (no traceEvents)")
    names, tracks = {}, {}
    for e in trace["traceEvents"]:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[e["tid"]] = e.get("args", {}).get("name", f"track {e['tid']}")
        if e.get("ph") != "X":
            continue
        args = e.get("args", {})
        label = args.get("bucket", -1) if e["cat"] in DP_COLORS else args.get("micro_batch", -1)
        tracks.setdefault(e["tid"], []).append((e["cat"], e["ts"] / 1000, e["dur"] / 1000, label,
                                                args.get("stage", -1)))
    if not tracks:
        sys.exit(f"pipeline_timeline: {path} has no ops")
    return names, tracks


def draw(ax, title, names, tracks):
    # Rows: each rank's ops, its reductions and gathers ("rank r dp") right below it.
    order = sorted(tracks, key=lambda t: (names.get(t, "").replace(" dp", ""), t))
    row = {t: i for i, t in enumerate(order)}
    for t, ops in tracks.items():
        stages = [s for k, _, _, _, s in ops if k in COLORS]
        first = min(stages) if stages else -1
        y = row[t]
        for kind, start, dur, label, stage in ops:
            if kind in COLORS or kind in DP_COLORS:
                color = DP_COLORS[kind] if kind in DP_COLORS else COLORS[kind][stage != first]
                ax.barh(y, dur, left=start, height=0.8, color=color, edgecolor="white",
                        linewidth=0.5)
                ax.text(start + dur / 2, y, str(label), ha="center", va="center", fontsize=6,
                        clip_on=True)
            elif kind == "optimizer_step" and dur > 0.001:
                ax.barh(y, dur, left=start, height=0.8, color=OPTIMIZER_COLOR, linewidth=0)
            elif kind.startswith("recv") and dur > 0.001:  # a wait (1 us: none)
                ax.barh(y, dur, left=start, height=0.8, color="#eeeeee", hatch="///",
                        edgecolor="#bbbbbb", linewidth=0)
    end = max(s + d for ops in tracks.values() for _, s, d, _, _ in ops)
    ax.set_title(f"{title}  (step {end:.1f} ms)", fontsize=9, loc="left")
    ax.set_yticks(range(len(order)), [names.get(t, f"track {t}") for t in order], fontsize=8)
    ax.invert_yaxis()
    return end


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+", help="TITLE=FILE (or FILE, titled by its name)")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args()
    panels = []
    for spec in args.traces:
        title, _, path = spec.rpartition("=")
        panels.append((title or path, *read_trace(path)))
    rows = sum(len(tracks) for _, _, tracks in panels)
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(11, 0.9 + 0.45 * rows + 0.45 * len(panels)),
                             gridspec_kw={"height_ratios": [len(t) for _, _, t in panels]})
    for ax, (title, names, tracks) in zip(axes[:, 0], panels):
        draw(ax, title, names, tracks)
    axes[-1, 0].set_xlabel("ms")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k][0]) for k in COLORS]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="#eeeeee", hatch="///",
                                 edgecolor="#bbbbbb"))
    handles.append(plt.Rectangle((0, 0), 1, 1, color=REDUCE_COLOR))
    handles.append(plt.Rectangle((0, 0), 1, 1, color=GATHER_COLOR))
    handles.append(plt.Rectangle((0, 0), 1, 1, color=OPTIMIZER_COLOR))
    fig.legend(handles, ["F (forward)", "B (input gradient)", "W (weight gradient)",
                         "waiting to receive", "gradient reduction (bucket)",
                         "parameter all-gather (bucket)", "optimizer step"],
               loc="upper right", ncol=7, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
