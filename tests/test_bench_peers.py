"""The peer benchmark's report, kept honest without running the peers (they take minutes and
need Node.js; `make bench-peers` runs them).

The README's peer table must be the one the last full run printed (recorded in
tests/bench/peers/results.json), and the table code must give the same table again from that
run's raw figures: so a hand-edited number, or a change to how the table is made without a new
run, fails here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tests" / "bench" / "peers" / "results.json"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "tests" / "bench" / "bench_peers.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_peers", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


def test_recorded_run_gives_the_recorded_table(bench: ModuleType, recorded: dict[str, Any]) -> None:
    args = SimpleNamespace(**recorded["args"])
    assert bench.table(recorded["runs"], args) == recorded["table"]
    # Alternated and repeated: every contender ran as often as asked.
    assert {len(runs) for runs in recorded["runs"].values()} == {args.repeat}
    assert args.repeat >= 3


def test_readme_shows_the_last_runs_table(recorded: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    assert recorded["table"] in readme, "README's peer table differs from tests/bench/peers/results.json"
    assert "docs/peers.png" in readme and (ROOT / "docs" / "peers.png").is_file()
    for config in ("schwebe.toml", "tb/tb_gateway.json", "tb/socket-stock.json", "tb/socket-fixed.json",
                   "tb/launch.py", "node-red/flows.json", "node-red/settings.js"):
        assert f"tests/bench/peers/{config}" in readme, config
        assert (ROOT / "tests" / "bench" / "peers" / config).is_file(), config


def test_cells_say_what_a_number_would_hide(bench: ModuleType) -> None:
    def run(**fig: Any) -> dict[str, Any]:
        base = {"cost_sent": 1000, "cost_delivered": 1000, "outage_sent": 1000, "outage_lost": 0}
        return {**base, **fig}

    up_to_8000 = [[1000, 3000, 3000], [2000, 6000, 6000], [4000, 12000, 12000], [8000, 12000, 12000]]
    lost_at_8000 = [*up_to_8000[:3], [8000, 20000, 15000]]
    results = {
        # medians of three, not means: one bad repetition does not move the figure. At the top
        # step the sender gave 4 000/s of the 8 000 asked: the cell says what it really gave.
        "schwebe": [run(sustained_fps=8000, ladder=up_to_8000, cpu_s_per_10k=2.0, outage_lost=0),
                    run(sustained_fps=4000, ladder=lost_at_8000, cpu_s_per_10k=2.0, outage_lost=0),
                    run(sustained_fps=8000, ladder=up_to_8000, cpu_s_per_10k=9.0, outage_lost=700)],
        # fell behind at the lowest step; its cost is per delivered frame and says so
        "tb-stock": [run(sustained_fps=0, ladder=[[1000, 3000, 40]], cpu_s_per_10k=100.0, cost_delivered=80,
                         bytes_per_frame=7000.0)] * 3,
        "node-red": [run(sustained_fps=2000, ladder=[[1000, 3000, 3000], [2000, 5400, 5400], [4000, 12000, 11000]],
                         cpu_s_per_10k=3.0, bytes_per_frame=0.0, outage_lost=990)] * 3,
    }
    args = SimpleNamespace(repeat=3, ladder=[1000.0, 2000.0, 4000.0, 8000.0], step_seconds=3.0,
                           outage_seconds=10.0)
    rows = {}
    for line in bench.table(results, args).splitlines()[2:]:
        label, *cells = line.strip("| ").split(" | ")
        rows[label] = cells
    assert rows["sustained frames/s before loss"] == [
        ">= 4000 (no loss at the top step, 8000 asked)", "< 1000 (lost at the lowest rate asked)", "1800"]
    assert rows["CPU s per 10 000 frames (at 500/s)"] == [
        "2.00", "100.00 (50.0x) (per delivered frame; delivered 80 of 1000)", "3.00 (1.5x)"]
    # no disk buffer: "cannot" and why, never a flattering 0
    assert rows["bytes written per frame (at 500/s)"][2].startswith("cannot (no disk buffer")
    assert rows["lost, broker down 10 s (at 100/s)"] == ["0 of 1000", "0 of 1000", "990 of 1000"]
