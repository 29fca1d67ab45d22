"""Counters and gauges shared by the rooms, rendered as JSON and Prometheus text.

Incrementing is a dict update: cheap enough for the hot path. Readers (the web
page) take snapshots; nothing here blocks or does I/O.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._gauges: list[Callable[[], Iterable[tuple[str, Labels, float]]]] = []

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0) + value

    def inc_series(self, name: str, key: Labels, value: float = 1) -> None:
        """:meth:`inc` with the labels already a sorted tuple: for callers on the radio path,
        which build their few keys once instead of sorting keyword labels on every frame."""
        series = self._counters[name]
        series[key] = series.get(key, 0) + value

    def get(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def total(self, name: str) -> float:
        return sum(self._counters.get(name, {}).values())

    def add_gauges(self, fn: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
        """Register a callback that yields (name, labels, value) at scrape time."""
        self._gauges.append(fn)

    def snapshot(self) -> dict[str, Any]:
        """Counters as nested JSON: {name: value} or {name: {"a=x,b=y": value}}."""
        out: dict[str, Any] = {}
        for name, series in sorted(self._counters.items()):
            if len(series) == 1 and () in series:
                out[name] = series[()]
            else:
                out[name] = {",".join(f"{k}={v}" for k, v in key) or "_": val
                             for key, val in sorted(series.items())}
        return out

    def prometheus(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self._counters.items()):
            metric = _metric_name(name)
            if name in self._help:
                lines.append(f"# HELP {metric} {self._help[name]}")
            lines.append(f"# TYPE {metric} counter")
            for key, val in sorted(series.items()):
                lines.append(f"{metric}{_labels(key)} {_num(val)}")
        gauges: dict[str, list[str]] = {}
        for fn in self._gauges:
            for name, key, val in fn():
                gauges.setdefault(name, []).append(f"{_metric_name(name)}{_labels(key)} {_num(val)}")
        for name, samples in gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append(f"# TYPE {_metric_name(name)} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def _metric_name(name: str) -> str:
    return "schwebe_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _labels(key: Labels) -> str:
    if not key:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in key
    )
    return "{" + inner + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
