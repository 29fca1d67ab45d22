"""The whole daemon in-process: packet forwarder -> gwmp source -> buffer -> MQTT and LNS forwarders.

A real mosquitto, a UDP network-server stand-in and the status page; a stop while the broker
is down loses nothing: after a restart on the same data_dir every received frame arrives.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import frames
from gateway.config import load_config_text
from gateway.pipeline import Gateway
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401
from tests.test_forward_mqtt import Subscriber

pytestmark = pytest.mark.mosquitto

GW = 0xB827EBFFFE000001
GW_HEX = f"{GW:016x}"
PF_EUI = 0xAA555A0000000101  # the packet forwarder's own EUI (what the rxpk records carry)


class LnsStandIn(asyncio.DatagramProtocol):
    """Answers PUSH_ACK / PULL_ACK and keeps every rxpk it was pushed."""

    def __init__(self) -> None:
        self.rxpk: list[dict[str, Any]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pkt = frames.parse_gwmp(data)
        assert self.transport is not None
        if pkt.identifier == frames.PUSH_DATA:
            self.rxpk.extend((pkt.body or {}).get("rxpk", []))
            self.transport.sendto(frames.encode_push_ack(pkt.token, pkt.version), addr)
        elif pkt.identifier == frames.PULL_DATA:
            self.transport.sendto(frames.encode_pull_ack(pkt.token, pkt.version), addr)


def _phy(fcnt: int) -> bytes:
    return bytes([0x40]) + (0x26011ABC).to_bytes(4, "little") + bytes([0x80]) \
        + fcnt.to_bytes(2, "little") + b"\x01\xaa\xbb\xcc" + b"\x00\x00\x00\x00"


def _rxpk(fcnt: int) -> dict[str, Any]:
    phy = _phy(fcnt)
    return {"tmst": 1000 + fcnt, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
            "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": len(phy),
            "data": base64.b64encode(phy).decode()}


def _config(tmp_path: Path, broker: Mosquitto, lns_port: int) -> str:
    return f"""
[gateway]
eui = "{GW_HEX}"
data_dir = "{tmp_path / 'data'}"

[buffer]
commit_interval = "50ms"

[[sources.gwmp]]
bind = "127.0.0.1:0"

[[forward.mqtt]]
name = "city"
url = "{broker.url}"
topic_prefix = "eu868"
start = "oldest"

[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:{lns_port}"
start = "oldest"

[web]
bind = "127.0.0.1:0"
open_read_only = true

[parking]
closed_spots = ["e2e:spot:roadworks"]
"""


async def _until(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


class Running:
    """A Gateway serving in a task; ``stop()`` is the SIGTERM path (request_stop + drain)."""

    def __init__(self, cfg_text: str) -> None:
        self.gw = Gateway(load_config_text(cfg_text))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.gw.serve(install_signals=False))
        await asyncio.wait_for(self.gw.supervisor.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.task is not None:
            self.gw.supervisor.request_stop()
            await asyncio.wait_for(self.task, 20)
            self.task = None

    def push(self, sock: socket.socket, first: int, n: int) -> None:
        addr = self.gw.sources[0].bound_address
        for i in range(first, first + n, 8):
            batch = [_rxpk(k) for k in range(i, min(i + 8, first + n))]
            sock.sendto(frames.encode_push_data(i & 0xFFFF, PF_EUI, batch), addr)

    async def status(self) -> dict[str, Any]:
        host, port = self.gw.web.bound_address
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/api/status") as r:
            assert r.status == 200
            return dict(await r.json())

    async def metrics(self) -> dict[str, float]:
        """/metrics as {'name{labels}': value}, the way a Prometheus scrape sees it."""
        host, port = self.gw.web.bound_address
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/metrics") as r:
            assert r.status == 200
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out


def _fcnts_mqtt(sub: Subscriber) -> list[int]:
    ups = sub.on(f"eu868/gateway/{PF_EUI:016x}/event/up")
    return [int.from_bytes(base64.b64decode(u["phyPayload"])[6:8], "little") for u in ups]


def _fcnts_lns(lns: LnsStandIn) -> list[int]:
    return [int.from_bytes(base64.b64decode(r["data"])[6:8], "little") for r in lns.rxpk]


async def test_uplinks_reach_mqtt_and_lns_status_moves_and_a_stop_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto  # noqa: F811
) -> None:
    loop = asyncio.get_running_loop()
    transport, lns = await loop.create_datagram_endpoint(LnsStandIn, local_addr=("127.0.0.1", 0))
    lns_port = transport.get_extra_info("sockname")[1]
    cfg = _config(tmp_path, mosquitto, lns_port)
    pf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        async with Subscriber(mosquitto, ["eu868/#"], "e2e-sub") as sub:
            # 1. live: everything reaches both backends, the status page counts it
            async with Running(cfg) as run:
                # the configured closure is a parking record of its own: let it go out first
                await _until(lambda: run.gw.deliveries["city"].acked >= 1, what="closure record")
                before = await run.status()
                run.push(pf, 0, 40)
                await _until(lambda: sorted(_fcnts_mqtt(sub)) == list(range(40))
                             and sorted(_fcnts_lns(lns)) == list(range(40)), what="40 uplinks at both")
                await _until(lambda: run.gw.deliveries["city"].acked >= 40
                             and run.gw.deliveries["lns"].acked >= 40, what="acks")
                after = await run.status()
                assert after["counters"]["received"] - before["counters"]["received"] == 40
                assert after["counters"]["forwarded"] - before["counters"]["forwarded"] == 80
                assert after["forwarders"]["city"]["connected"] is True
                assert after["forwarders"]["lns"]["lag_records"] == 0
                assert after["parking"]["spots"]["e2e:spot:roadworks"]["status"] == "closed"

                # 2. broker down: frames keep arriving, the LNS still gets them live
                await asyncio.to_thread(mosquitto.stop)
                run.push(pf, 40, 60)
                await _until(lambda: sorted(_fcnts_lns(lns)) == list(range(100)), what="LNS during the outage")
                await _until(lambda: run.gw.metrics.total("records_received") >= 100, what="receipt")
                lagging = await run.status()
                assert lagging["forwarders"]["city"]["lag_records"] == 60
                assert lagging["forwarders"]["city"]["errors"], "the outage is visible in health"
                # ... and to a monitoring system scraping /metrics
                m = await run.metrics()
                city, lns_lab = 'forwarder="city"', 'forwarder="lns"'
                assert m[f"schwebe_forwarder_connected{{{city}}}"] == 0.0
                assert m[f"schwebe_forwarder_connected{{{lns_lab}}}"] == 1.0
                assert m[f"schwebe_forwarder_lag_records{{{city}}}"] == 60.0
                assert m[f"schwebe_forwarder_lag_records{{{lns_lab}}}"] == 0.0
                assert m[f"schwebe_forwarder_lag_seconds{{{city}}}"] > 0.0
                assert sum(v for k, v in m.items()
                           if k.startswith(f"schwebe_forwarder_errors_total{{{city},")) >= 1
                assert m[f"schwebe_forwarder_acked_total{{{lns_lab}}}"] >= 100
                # 3. leaving the block is the SIGTERM path: stop while MQTT still owes 60 frames
            assert sorted(_fcnts_mqtt(sub)) == list(range(40))

        # 4. broker back, restart on the same data_dir: the 60 owed frames arrive, nothing lost.
        # (A fresh subscriber: the aiomqtt one above does not always notice a broker SIGTERM.)
        await asyncio.to_thread(mosquitto.start)
        async with (Subscriber(mosquitto, [f"eu868/gateway/{PF_EUI:016x}/event/up"], "e2e-sub2") as sub2,
                    Running(cfg) as run2):
                await _until(lambda: sorted(set(_fcnts_mqtt(sub2))) == list(range(40, 100)),
                             timeout=20, what="the 60 owed uplinks on MQTT after the restart")
                status = await run2.status()
                assert status["forwarders"]["city"]["lag_records"] == 0
                assert status["forwarders"]["lns"]["sent"] == 0  # the LNS had them all already
        assert sorted(set(_fcnts_lns(lns))) == list(range(100))
    finally:
        pf.close()
        transport.close()
