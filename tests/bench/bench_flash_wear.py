"""Bytes written to flash per frame by the running daemon, healthy backend vs broker outage.

The real `schwebe run` (one UDP source, the durable buffer, one MQTT forwarder to a real
mosquitto), fed PUSH_DATA at a steady rate; bytes come from the daemon's own /proc/<pid>/io
`write_bytes` (everything it sent toward the disk: SQLite pages, WAL, its index, spot state),
measured after a warm-up. Data directory on the repository's disk (a tmpfs would count 0).
Run: .venv/bin/python tests/bench/bench_flash_wear.py [--rates 1,10,100] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import frames  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

PF_EUI = 0xAA555A0000000101


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes")


def status(port: int) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def run_one(rate: float, seconds: float, outage: bool, work: Path) -> float:
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    data_dir = work / "data"
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    cfg = work / "schwebe.toml"
    cfg.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.mqtt]]
name = "broker"
url = "{broker.url}"
[web]
bind = "127.0.0.1:{web}"
open_read_only = true
""")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if status(web)["forwarders"]["broker"]["connected"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daemon did not come up")
            time.sleep(0.2)
        if outage:
            broker.stop()
        n = 0

        def send_for(duration: float) -> None:
            nonlocal n
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < duration:
                due = int(elapsed * rate) + 1
                while n < due:
                    phy = bytes([0x40, n & 0xFF, 1, 2, 0x26, 0, n & 0xFF, (n >> 8) & 0xFF, 1,
                                 0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 3, 4])
                    rx = {"tmst": n, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1,
                          "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": -70,
                          "lsnr": 7.0, "size": len(phy), "data": frames.b64encode(phy)}
                    sock.sendto(frames.encode_push_data(n & 0xFFFF, PF_EUI, [rx]),
                                ("127.0.0.1", udp))
                    n += 1
                time.sleep(min(0.05, 1 / rate))

        send_for(min(10.0, seconds / 3))  # warm-up: store, cursors, first pages exist
        first, before = n, write_bytes(proc.pid)
        send_for(seconds)
        time.sleep(2)  # the last commit
        written = write_bytes(proc.pid) - before
        return written / max(1, n - first)
    finally:
        sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="1,10,100")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    print(f"{'frames/s':>9} {'healthy B/frame':>16} {'broker down B/frame':>20}")
    for rate in (float(r) for r in args.rates.split(",")):
        row = []
        for outage in (False, True):
            work = Path(tempfile.mkdtemp(prefix="schwebe-wear-", dir=ROOT))
            try:
                row.append(run_one(rate, args.seconds, outage, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        print(f"{rate:>9g} {row[0]:>16.0f} {row[1]:>20.0f}", flush=True)


if __name__ == "__main__":
    main()
