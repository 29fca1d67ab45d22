"""Bar charts of the peer benchmark's medians (run by `make bench-peers` in .venv-tb, which
has matplotlib). usage: plot.py results.json out.png"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = (
    ("sustained_fps", "sustained frames/s before loss\n(higher is better)"),
    ("cpu_s_per_10k", "CPU s per 10 000 frames\n(log scale, lower is better)"),
    ("peak_rss_mib", "peak RSS, MiB\n(lower is better)"),
    ("bytes_per_frame", "bytes written per frame\n(lower is better)"),
    ("outage_lost", "frames lost, broker down\n(lower is better)"),
    ("kill_lost", "frames lost, SIGKILL + restart\n(lower is better)"),
)


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    runs = data["runs"]
    names = list(runs)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=False):
        vals = []
        for n in names:
            xs = [r[key] for r in runs[n] if r.get(key) is not None]
            vals.append(statistics.median(xs) if xs else 0)
        bars = ax.bar(names, vals, color=["#2a7" if n == "schwebe" else "#888" for n in names])
        if key == "cpu_s_per_10k":
            ax.set_yscale("log")
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"Schwebe and its peers, same simulated traffic, median of {data['args']['repeat']} runs")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


if __name__ == "__main__":
    main()
