"""Bar charts of the peer benchmark's medians (run by `make bench-peers` in .venv-tb, which
has matplotlib). usage: plot.py results.json out.png

A figure a contender cannot give (no disk buffer) is written on its bar's place, not drawn
as a zero; a sustained rate below the lowest rate tried is drawn as 0 and labelled so."""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = (
    ("sustained_fps", "sustained frames/s before loss\n(higher is better; >= : no loss at the top step)"),
    ("cpu_s_per_10k", "CPU s per 10 000 frames\n(log scale, lower is better)"),
    ("peak_rss_mib", "peak RSS, MiB\n(lower is better)"),
    ("bytes_per_frame", "bytes written per frame\n(log scale, lower is better)"),
    ("outage_lost", "% lost, broker down {outage:g} s\n(lower is better)"),
    ("kill_lost", "% lost, SIGKILL + restart,\nbroker up (lower is better)"),
    ("kill_backlog_lost", "% lost, SIGKILL + restart,\nbroker down (lower is better)"),
)
CANNOT = {("node-red", "bytes_per_frame"): "cannot:\nno disk\nbuffer"}


def med(runs: list[dict], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def sustained(fig: dict, step_seconds: float) -> float:
    """As bench_peers.sustained: what the sender really gave at the highest step delivered whole."""
    best = 0.0
    for _rate, sent, got in fig.get("ladder", ()):
        if got < 0.999 * sent:
            break
        best = sent / step_seconds
    return best


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    runs, args = data["runs"], data["args"]
    names = list(runs)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=False):
        vals, labels = [], []
        for n in names:
            v = med(runs[n], key)
            if key == "sustained_fps" and v:
                v = med([{"s": sustained(r, args["step_seconds"])} for r in runs[n]], "s")
            if key.endswith("_lost") and v is not None:
                sent = med(runs[n], key.replace("lost", "sent"))
                v = 100 * v / sent if sent else None
            if (n, key) in CANNOT or v is None:
                vals.append(0)
                labels.append(CANNOT.get((n, key), "n/a"))
            elif key == "sustained_fps" and v == 0:
                vals.append(0)
                labels.append(f"< {args['ladder'][0]:g}")
            else:
                vals.append(v)
                capped = key == "sustained_fps" and (med(runs[n], key) or 0) >= args["ladder"][-1]
                text = f"{v:.0f}" if v >= 1000 else f"{v:.3g}"
                labels.append((">= " if capped else "") + text + ("%" if key.endswith("_lost") else ""))
        bars = ax.bar(names, vals, color=["#2a7" if n == "schwebe" else "#888" for n in names])
        if key in ("cpu_s_per_10k", "bytes_per_frame") and any(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.bar_label(bars, labels=[lb if v > 0 or ax.get_yscale() != "log" else "" for lb, v in
                                   zip(labels, vals, strict=True)], fontsize=8)
        if ax.get_yscale() == "log":  # a zero bar has no place on a log axis: its label sits at the foot
            for x, (lb, v) in enumerate(zip(labels, vals, strict=True)):
                if v <= 0:
                    ax.text(x, 0.02, lb, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
        ax.set_title(title.format(outage=args["outage_seconds"]), fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(y=0.2)
    last = axes.flat[-1]
    last.axis("off")
    m = data.get("machine", {})
    last.text(0, 0.5, f"{m.get('cpus', '?')} CPU cores shared by the sender,\nthe broker and the contender"
              f"\n(and other users of the machine);\ncompare within one run.\n\n{m.get('date', '')}",
              fontsize=9, va="center")
    fig.suptitle("Schwebe and its peers, same `schwebe simulate` traffic, "
                 f"median of {args['repeat']} alternated runs")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=80)


if __name__ == "__main__":
    main()
