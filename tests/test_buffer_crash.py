"""kill -9 and SIGTERM against a real writer process: what the durability promise says holds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.buffer import Buffer

ROOT = Path(__file__).resolve().parent.parent


def _spawn(mode: str, db: Path, run: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.buffer_writer", mode, str(db), str(run)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(p: subprocess.Popen[str]) -> tuple[str, str]:
    # Not communicate(): it reads the raw pipe and would lose what readline() has buffered.
    assert p.stdout is not None and p.stderr is not None
    with p.stdout, p.stderr:
        out, err = p.stdout.read(), p.stderr.read()
    p.wait(timeout=30)
    return out, err


def _wait_open(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("OPEN"), f"writer did not start: {line!r} {p.stderr.read() if p.stderr else ''}"
    return line


def _kill_loop(tmp_path: Path, iterations: int, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "buffer.sqlite3"
    committed: dict[int, int] = {}
    log: list[tuple[int, str, int]] = []  # (run, event, line index) in delivery order
    deliveries: list[tuple[int, int, int, int]] = []  # (run of writer, record run, i, line no.)
    last_commit_line: dict[int, int] = {}
    for run in range(iterations):
        p = _spawn("kill", db, run)
        opened = _wait_open(p)
        assert opened.strip() == "OPEN 0", "the store needed recovery after a kill -9"
        time.sleep(rng.uniform(0.02, 0.4))
        p.send_signal(signal.SIGKILL)
        out, _err = _finish(p)
        for n, line in enumerate(out.splitlines()):
            if line.startswith("C "):
                committed[run] = int(line.split()[1])
                last_commit_line[run] = n
            elif line.startswith("D "):
                for tok in line.split()[1:]:
                    r, i = tok.split(":")
                    deliveries.append((run, int(r), int(i), n))
        log.append((run, "killed", len(out)))
    # Drain whatever the cursor still holds, in-process.
    buf = Buffer(db, max_bytes=1 << 30)
    buf.open()
    assert buf.stats()["recovery_events"] == []
    buf.register("c")
    while (batch := buf.take("c", 10_000, 1 << 30)) is not None:
        deliveries.extend((iterations, *(lambda d: (d["r"], d["i"]))(r.decoded()), 0) for _, r in batch.records)
        buf.ack("c", batch)
    buf.close()

    delivered = {(r, i) for _, r, i, _ in deliveries}
    for run, upto in committed.items():
        missing = [i for i in range(1, upto + 1) if (run, i) not in delivered]
        assert not missing, f"run {run}: committed records never delivered: {missing[:10]}"
    assert sum(committed.values()) > 0
    # Order: within each writer run's records, first deliveries come in increasing order.
    seen: set[tuple[int, int]] = set()
    last_i: dict[int, int] = {}
    for _by, r, i, _n in deliveries:
        if (r, i) in seen:
            # At-least-once window: only records whose ack was not yet committed come again.
            first = next(d for d in deliveries if (d[1], d[2]) == (r, i))
            assert first[3] > last_commit_line.get(first[0], -1), f"{r}:{i} delivered twice outside the window"
            continue
        seen.add((r, i))
        assert i > last_i.get(r, 0), f"record {r}:{i} delivered after {r}:{last_i[r]}"
        last_i[r] = i


def test_kill9_quick(tmp_path: Path) -> None:
    _kill_loop(tmp_path, 5, seed=1)


@pytest.mark.slow
def test_kill9_100_times(tmp_path: Path) -> None:
    _kill_loop(tmp_path, 100, seed=2)


def test_sigterm_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite3"
    p = _spawn("term", db, 0)
    _wait_open(p)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, err = _finish(p)
    assert p.returncode == 0, err
    assert out.splitlines()[-1] == "CLOSED"
    appended = max(int(line.split()[1]) for line in out.splitlines() if line.startswith("A "))
    assert appended > 0
    buf = Buffer(db, max_bytes=1 << 30)
    buf.open()
    buf.register("check", start="oldest")
    got = []
    while (batch := buf.take("check", 100_000, 1 << 30)) is not None:
        got.extend(r.decoded()["i"] for _, r in batch.records)
        buf.ack("check", batch)
    buf.close()
    assert got == list(range(1, len(got) + 1))
    assert len(got) >= appended
