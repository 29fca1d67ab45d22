"""The fault campaign (issue 16), one run with figures: a real daemon under steady packet-
forwarder traffic while its MQTT broker restarts, its HTTP backend answers 500, 429, slowly
or by resetting the connection, and the daemon itself is killed with SIGKILL and restarted.
Afterwards every frame the gateway acknowledged (PUSH_ACK) is accounted for at both backends:
delivered, or lost within the documented window (records not yet committed when a SIGKILL
came: at most one commit interval's worth per kill). Duplicates are counted.

`CAMPAIGN_SECONDS` (default 45) sets how long the faults go on; the figures are printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from aiohttp import web

from gateway import frames
from tests.helpers.daemon import Daemon, free_port
from tests.helpers.threaded_app import serve_in_thread
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401

EUI = 0xB827EBFFFE000001
SECONDS = float(os.environ.get("CAMPAIGN_SECONDS", "45"))
RATE = 100  # frames per second
COMMIT = 0.5  # buffer.commit_interval


def frame_id(data_b64: str) -> int:
    return int.from_bytes(base64.b64decode(data_b64)[9:13], "big")


class Radio:
    """A packet forwarder: one uplink every 1/RATE s, each with its number in the payload;
    remembers which the gateway acknowledged (PUSH_ACK)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: set[int] = set()
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending: dict[int, int] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            i = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                phy = bytes([0x40, 1, 2, 3, 4, 0, 0, 0, 1]) + i.to_bytes(4, "big")
                rxpk = [{"tmst": i, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                         "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5,
                         "size": len(phy), "data": base64.b64encode(phy).decode()}]
                token = i & 0xFFFF
                pending[token] = i
                s.sendto(frames.encode_push_data(token, EUI, rxpk), ("127.0.0.1", self.port))
                self.sent += 1
                i += 1
                next_at += 1 / RATE
                while True:
                    try:
                        ack = s.recv(64)
                    except BlockingIOError:
                        if time.monotonic() >= next_at:
                            break
                        time.sleep(0.001)
                        continue
                    except ConnectionRefusedError:  # the gateway was down for that one
                        continue
                    if len(ack) >= 4 and ack[3] == 1:  # PUSH_ACK
                        done = pending.pop(int.from_bytes(ack[1:3], "little"), None)  # as _head writes it
                        if done is not None:
                            self.acked.add(done)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class FlakyWebhook:
    """An HTTP backend that changes its mind every 2 s: fine, 500, 429, slow, reset."""

    MODES = ("ok", "500", "ok", "429", "ok", "slow", "ok", "reset")

    def __init__(self) -> None:
        self.got: list[int] = []
        self.answers: dict[str, int] = {}
        self.flaky = True
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/ingest", self._ingest)
        self.port = serve_in_thread(app)

    def mode(self) -> str:
        if not self.flaky:
            return "ok"
        return self.MODES[int(time.monotonic() / 2) % len(self.MODES)]

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode()
        self.answers[mode] = self.answers.get(mode, 0) + 1
        if mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if mode == "slow":
            await asyncio.sleep(20)  # past the forwarder's timeout
        if mode in ("500", "429"):
            return web.Response(status=int(mode), headers={"Retry-After": "1"} if mode == "429" else {})
        body = await request.json()
        self.got += [frame_id(r["body"]["rxpk"]["data"]) for r in body["records"]]
        return web.json_response({"ok": True})


class Subscriber:
    def __init__(self, broker: Mosquitto) -> None:
        self.got: list[int] = []
        self.broker = broker
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="campaign-listener",
                             clean_session=False)
        self.c.on_message = lambda _c, _u, m: self.got.append(frame_id(json.loads(m.payload)["phyPayload"]))
        self.c.on_connect = lambda c, *_a: c.subscribe("eu868/gateway/+/event/up", qos=1)
        self.c.reconnect_delay_set(0.1, 1)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()


@pytest.mark.slow
# the run's own length plus start and accounting: `make soak`/`make fuzz` run for minutes
@pytest.mark.timeout(SECONDS + 300)
def test_fault_campaign_accounts_for_every_acknowledged_frame(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    hook = FlakyWebhook()
    listener = Subscriber(mosquitto)
    udp, web_port = free_port(socket.SOCK_DGRAM), free_port()
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
[[forward.http]]
name = "platform"
url = "http://127.0.0.1:{hook.port}/ingest"
timeout = "3s"
[buffer]
commit_interval = "{COMMIT}s"
[web]
bind = "127.0.0.1:{web_port}"
open_read_only = true
""")
    gw = Daemon(config, web_port)
    gw.wait("up", lambda s: s["forwarders"]["city"]["connected"])
    radio = Radio(udp)
    kills = broker_restarts = 0
    t0 = time.monotonic()
    try:
        next_kill, next_broker = t0 + 9, t0 + 5
        while time.monotonic() - t0 < SECONDS:
            now = time.monotonic()
            if now >= next_kill:
                gw.proc.send_signal(signal.SIGKILL)
                gw.proc.wait(10)
                gw.stop()
                gw = Daemon(config, web_port)
                kills += 1
                next_kill = now + 9
            if now >= next_broker:
                mosquitto.restart()
                broker_restarts += 1
                next_broker = now + 7
            time.sleep(0.2)
        radio.stop()
        hook.flaky = False
        # the backlog drains once the faults stop
        gw.wait("backlog delivered", lambda s: all(f["lag_records"] == 0 for f in s["forwarders"].values()), 120)
        time.sleep(2)
    finally:
        radio.stop()
        gw.stop()
        listener.c.loop_stop()
    acked = radio.acked
    window = int(kills * RATE * (COMMIT + 0.2))  # uncommitted at a SIGKILL, plus one read
    rows = []
    for name, got in (("mqtt", listener.got), ("http", hook.got)):
        missing = acked - set(got)
        dups = len(got) - len(set(got))
        rows.append((name, len(acked), len(missing), dups))
        print(f"campaign {SECONDS:.0f}s: {radio.sent} sent, {len(acked)} acknowledged by the gateway; "
              f"{name}: {len(missing)} lost (window {window}), {dups} duplicates; "
              f"{kills} SIGKILLs, {broker_restarts} broker restarts, webhook answers {hook.answers}")
    for name, _n, lost, dups in rows:
        assert lost <= window, f"{name}: {lost} acknowledged frames lost, more than {window}"
        assert dups <= len(acked), f"{name}: {dups} duplicates"
    assert kills >= 2 and broker_restarts >= 2 and {"500", "429", "reset"} <= hook.answers.keys()
