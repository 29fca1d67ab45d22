"""An idle gateway spares its SD card: not one byte written to storage while nothing happens.

Measured as a technician would on the running daemon: `/proc/<pid>/io` write_bytes (what the
process sent to the block layer), with the data directory on a real disk, not a tmpfs (a tmpfs
never counts, so such a test could not fail).
"""

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

import pytest

from gateway import frames
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.mosquitto


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/<pid>/io")


def on_a_real_disk(path: Path) -> bool:
    best = ("", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mnt, fstype = line.split()[:3]
        if str(path).startswith(mnt) and len(mnt) >= len(best[0]):
            best = (mnt, fstype)
    return best[1] not in ("tmpfs", "ramfs", "")


def status(port: int) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_idle_gateway_writes_nothing_to_storage(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    data_dir = REPO / ".pytest-flash" / tmp_path.name  # on the repository's disk
    if not on_a_real_disk(data_dir):
        msg = "the repository is on a RAM file system here: write_bytes cannot count"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    data_dir.mkdir(parents=True, exist_ok=True)
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    cfg = tmp_path / "schwebe.toml"
    cfg.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.mqtt]]
name = "broker"
url = "mqtt://{mosquitto.host}:{mosquitto.port}"
[buffer]
commit_interval = "1s"
[web]
bind = "127.0.0.1:{web}"
open_read_only = true
""")
    # No .pyc written by a late import: those bytes would be Python's, not the gateway's.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if status(web)["forwarders"]["broker"]["connected"]:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited {proc.returncode}: {proc.communicate()[1][-2000:]}")
            assert time.monotonic() < deadline, "daemon did not come up in 30 s"
            time.sleep(0.2)
        # some traffic first, delivered to the broker, so the store and cursors exist
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pf:
            rxpk = [{"tmst": 1, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                     "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": 13,
                     "data": "QAEAACYAAQABqrvM3Q=="}]
            pf.sendto(frames.encode_push_data(1, 0xB827EBFFFE000001, rxpk), ("127.0.0.1", udp))
        deadline = time.monotonic() + 20
        while status(web)["forwarders"]["broker"].get("acked", 0) < 1:
            assert time.monotonic() < deadline, "the uplink never reached the broker"
            time.sleep(0.2)
        time.sleep(4)  # the last commits (records, cursor) settle; the kernel writes them back
        os.sync()
        before = write_bytes(proc.pid)
        time.sleep(20)  # idle: keepalives to the broker, the status page polled, nothing else
        status(web)
        os.sync()
        after = write_bytes(proc.pid)
        assert after - before == 0, f"an idle gateway wrote {after - before} bytes in 20 s"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)
