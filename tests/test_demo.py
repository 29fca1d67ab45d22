"""`schwebe demo` as a new user runs it: frames flow, counters move, Ctrl-C exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_demo_shows_frames_flowing_and_stops_cleanly_on_ctrl_c() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    try:
        banner = ""
        deadline = time.monotonic() + 30
        while "Ctrl-C" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            banner += line
        assert f"http://127.0.0.1:{port}/" in banner, banner
        assert "curl" in banner
        status: dict = {}  # type: ignore[type-arg]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = get_json(f"http://127.0.0.1:{port}/api/status")
            if status["counters"]["received"] > 0 and status["counters"]["forwarded"] > 0:
                break
            time.sleep(0.5)
        assert status["counters"]["received"] > 0, status
        assert status["counters"]["forwarded"] > 0, status
        assert status["healthy"] is True
        # the simulated ABP sensors are decoded at the edge into spot states
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            spots = status["parking"]["spots"]
            if any(s["status"] in ("free", "occupied") for s in spots.values()):
                break
            time.sleep(0.5)
            status = get_json(f"http://127.0.0.1:{port}/api/status")
        assert any(s["status"] in ("free", "occupied") for s in spots.values()), spots
        assert get_json(f"http://127.0.0.1:{port}/healthz") == {"ok": True}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        acked = [line for line in metrics.splitlines()
                 if line.startswith('schwebe_forwarder_acked_total{forwarder="local-sink"}')]
        assert acked and float(acked[0].split()[-1]) > 0, metrics
        assert "# TYPE schwebe_buffer_records gauge" in metrics
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err
