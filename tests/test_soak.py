"""Load soak (issue 16): a real daemon at 5 000 frames/s with every kind of forwarder on
(MQTT to mosquitto, the LNS over UDP to a stand-in network server, an HTTP webhook, a file),
its RSS sampled from /proc the whole time. At the end every frame received is acknowledged
by every backend, nothing dropped, and the RSS slope over the second half is printed and
must be flat. `SOAK_SECONDS` (default 30; `make soak` runs 600)."""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from gateway import frames
from tests.helpers.daemon import Daemon, free_port
from tests.helpers.threaded_app import serve_in_thread
from tests.helpers.threaded_lns import ThreadedLns
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
RATE = 5000
PER_DATAGRAM = 8
EUI = 0xB827EBFFFE000001


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def slope_kib_per_min(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples) or 1.0
    return sum((t - mt) * (r - mr) for t, r in samples) / var * 60


class Webhook:
    def __init__(self) -> None:
        self.records = 0
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/in", self._ingest)
        self.port = serve_in_thread(app)

    async def _ingest(self, request: web.Request) -> web.Response:
        self.records += len((await request.json())["records"])
        return web.json_response({"ok": True})


@pytest.mark.slow
# the run's own length plus start and accounting: `make soak`/`make fuzz` run for minutes
@pytest.mark.timeout(SECONDS + 300)
def test_soak_at_5000_frames_per_second_with_every_forwarder(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    ns, hook = ThreadedLns(), Webhook()
    udp, webp = free_port(socket.SOCK_DGRAM), free_port()
    config = tmp_path / "schwebe.toml"
    config.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{tmp_path / 'data'}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.mqtt]]
name = "city"
url = "{mosquitto.url}"
[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:{ns.port}"
[[forward.http]]
name = "platform"
url = "http://127.0.0.1:{hook.port}/in"
max_batch = 2000
[[forward.file]]
name = "archive"
path = "{tmp_path / 'archive.jsonl'}"
[web]
bind = "127.0.0.1:{webp}"
open_read_only = true
""")
    gw = Daemon(config, webp)
    gw.wait("up", lambda s: s["forwarders"]["city"]["connected"])
    samples: list[tuple[float, int]] = []
    sent = 0
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pf:
        pf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        pf.setblocking(False)
        next_sample = t0
        while (now := time.monotonic()) - t0 < SECONDS:
            # one datagram of PER_DATAGRAM frames every PER_DATAGRAM/RATE s
            rxpk = [{"tmst": sent + j, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                     "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": 13,
                     "data": base64.b64encode(bytes([0x40, 1, 2, 3, 4, 0, 0, 0, 1])
                                              + (sent + j).to_bytes(4, "big")).decode()}
                    for j in range(PER_DATAGRAM)]
            pf.sendto(frames.encode_push_data(sent & 0xFFFF, EUI, rxpk), ("127.0.0.1", udp))
            sent += PER_DATAGRAM
            try:
                while pf.recv(16):
                    pass
            except BlockingIOError:
                pass
            if now >= next_sample:
                samples.append((now - t0, rss_kib(gw.proc.pid)))
                next_sample = now + 2
            delay = t0 + sent / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    offered = sent / (time.monotonic() - t0)
    try:
        st = gw.wait("every backend caught up", lambda s: all(
            f["lag_records"] == 0 for f in s["forwarders"].values()), 180)
        received = st["sources"]["gwmp:0"]["rxpk"]
        acked = {n: f["acked"] for n, f in st["forwarders"].items()}
        drops = st["buffer"]["drops"]
        half = [s for s in samples if s[0] >= SECONDS / 2]
        slope = slope_kib_per_min(half) if len(half) >= 3 else 0.0
        print(f"soak {SECONDS:.0f}s at {offered:.0f} frames/s offered: {received} received, "
              f"acked {acked}, drops {drops}, RSS {samples[0][1] // 1024}->{samples[-1][1] // 1024} MiB, "
              f"slope over the second half {slope:+.0f} KiB/min")
    finally:
        gw.stop()
    assert received >= sent * 0.99, f"{sent - received} of {sent} datagram frames not received"
    assert all(n >= received for n in acked.values()), acked
    assert not drops, drops
    assert slope < 2048, f"RSS grows {slope:.0f} KiB/min"
