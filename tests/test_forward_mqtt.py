"""MQTT forwarder against a real mosquitto: topics, ChirpStack JSON, outage without loss, last will."""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from chirpstack_api.gw import gw_pb2
from google.protobuf import json_format

from drivers.gwmp_server import GwmpServer
from gateway import frames
from gateway.buffer import Buffer
from gateway.config import MqttForward
from gateway.forward.base import DeliveryLoop, SendResult
from gateway.forward.mqtt import MqttForwarder
from gateway.records import Record, make_record
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401

pytestmark = pytest.mark.mosquitto

GW = 0xB827EBFFFE000001
GW_HEX = f"{GW:016x}"
ROOT = Path(__file__).resolve().parents[1]
PHY = bytes.fromhex("40a1b2c3d480010001") + b"\x11\x22\x33\x44"


def _rxpk(i: int) -> dict[str, Any]:
    return {"time": "2026-11-25T10:00:00.000001Z", "tmst": 1000 + i, "tmms": 1_400_000_000_123,
            "freq": 868.1, "chan": 2, "rfch": 1, "stat": 1, "modu": "LORA", "datr": "SF7BW125",
            "codr": "4/5", "rssi": -57, "lsnr": 9.5, "size": len(PHY),
            "data": base64.b64encode(PHY).decode()}


def _uplink(i: int, eui: str = GW_HEX) -> Record:
    return make_record("uplink", "gwmp", {"gateway_eui": eui, "rxpk": _rxpk(i)})


class Subscriber:
    """A persistent-session QoS 1 subscriber that reconnects by itself (outlives broker restarts)."""

    def __init__(self, broker: Mosquitto, topics: list[str], ident: str = "test-sub") -> None:
        self.broker, self.topics, self.ident = broker, topics, ident
        self.messages: list[tuple[str, Any, bool]] = []
        self.arrived: list[float] = []  # loop time of each message, parallel to ``messages``
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=self.ident,
                                          clean_session=False) as c:
                    for t in self.topics:
                        await c.subscribe(t, qos=1)
                    self.connected.set()
                    async for m in c.messages:
                        payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else m.payload
                        self.messages.append((str(m.topic), json.loads(payload), bool(m.retain)))
                        self.arrived.append(asyncio.get_running_loop().time())
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def on(self, topic: str) -> list[Any]:
        return [p for t, p, _ in self.messages if t == topic]


async def _until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=64 << 20, commit_interval=0.2)
    buf.open()
    yield buf
    buf.close()


def _cfg(broker: Mosquitto, **kw: Any) -> MqttForward:
    return MqttForward(name="city", url=broker.url, topic_prefix="eu868", **kw)


async def test_uplinks_stats_parking_and_conn_state_on_documented_topics(
    mosquitto: Mosquitto, buffer: Buffer  # noqa: F811
) -> None:
    async with Subscriber(mosquitto, ["eu868/#"], "t1") as sub:
        fwd = MqttForwarder(_cfg(mosquitto), gateway_eui=GW)
        buffer.register("city", start="oldest")
        buffer.append(_uplink(0))
        buffer.append(make_record("stats", "gwmp", {"gateway_eui": GW_HEX, "stat": {
            "time": "2026-11-25 10:00:00 GMT", "lati": 51.25, "long": 7.15, "alti": 150,
            "rxnb": 10, "rxok": 9, "rxfw": 9, "ackr": 100.0, "dwnb": 2, "txnb": 1}}))
        buffer.append(make_record("parking", "nwave", {
            "spot_id": "wuppertal:parking:spot:0002", "status": "occupied",
            "observed_at": "2026-11-25T10:00:00Z", "device": "70b3d50000000002", "data": {"occupied": True}}))
        buffer.append(make_record("event", "x", {"event": "boot", "detail": {}}))
        loop = DeliveryLoop(buffer, fwd)
        task = asyncio.create_task(loop.run())
        base = f"eu868/gateway/{GW_HEX}"
        await _until(lambda: sub.on(f"{base}/event/up") and sub.on(f"{base}/event/stats")
                     and sub.on("eu868/parking/wuppertal:parking:spot:0002/state"), what="all topics")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    up = sub.on(f"{base}/event/up")[0]
    # Strict: the protobuf JSON parser rejects any field name gw.UplinkFrame does not have.
    frame = json_format.ParseDict(up, gw_pb2.UplinkFrame())
    assert frame.phy_payload == PHY
    assert frame.tx_info.frequency == 868_100_000
    lora = frame.tx_info.modulation.lora
    assert (lora.spreading_factor, lora.bandwidth, up["txInfo"]["modulation"]["lora"]["codeRate"]) == (7, 125000, "CR_4_5")
    rx = frame.rx_info
    assert rx.gateway_id == GW_HEX and rx.rssi == -57 and rx.snr == pytest.approx(9.5)
    assert (rx.channel, rx.rf_chain, up["rxInfo"]["crcStatus"]) == (2, 1, "CRC_OK")
    assert int.from_bytes(rx.context, "big") == 1000
    assert rx.gw_time.ToMicroseconds() % 1_000_000 == 1
    assert rx.time_since_gps_epoch.ToMilliseconds() == 1_400_000_000_123

    stats = json_format.ParseDict(sub.on(f"{base}/event/stats")[0], gw_pb2.GatewayStats())
    assert (stats.gateway_id, stats.rx_packets_received, stats.rx_packets_received_ok) == (GW_HEX, 10, 9)
    assert (stats.tx_packets_received, stats.tx_packets_emitted) == (2, 1)
    assert stats.location.latitude == pytest.approx(51.25)

    park = sub.on("eu868/parking/wuppertal:parking:spot:0002/state")[0]
    assert park["status"] == "occupied" and park["device"] == "70b3d50000000002"
    assert [m for m in sub.messages if "event" in m[0] and "boot" in json.dumps(m[1])] == []

    # Retained: a newcomer gets parking state and the connection state (OFFLINE after a clean close).
    async with Subscriber(mosquitto, ["eu868/parking/+/state", f"{base}/state/conn"], "late") as late:
        await _until(lambda: len(late.messages) >= 2, what="retained messages")
    assert all(r for _, _, r in late.messages)
    assert late.on(f"{base}/state/conn") == [{"gatewayId": GW_HEX, "state": "OFFLINE"}]
    assert [m["state"] for m in sub.on(f"{base}/state/conn")] == ["ONLINE", "OFFLINE"]


async def test_downlink_command_is_relayed_to_the_packet_forwarder_and_acked(
    mosquitto: Mosquitto, buffer: Buffer  # noqa: F811
) -> None:
    server = GwmpServer(on_uplink=lambda r: None, bind=("127.0.0.1", 0))
    await server.start()
    pf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pf.bind(("127.0.0.1", 0))
    pf.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(pf, frames.encode_pull_data(7, GW), server.bound_address)
        assert frames.parse_gwmp(await loop.sock_recv(pf, 1024)).identifier == frames.PULL_ACK
        fwd = MqttForwarder(_cfg(mosquitto), gateway_eui=GW, relays=[server])
        buffer.register("city", start="oldest")
        dl = asyncio.create_task(DeliveryLoop(buffer, fwd).run())
        base = f"eu868/gateway/{GW_HEX}"
        async with Subscriber(mosquitto, [f"{base}/event/ack", f"{base}/state/conn"], "t2") as sub:
            await _until(lambda: sub.on(f"{base}/state/conn") == [{"gatewayId": GW_HEX, "state": "ONLINE"}])
            down = {"downlinkId": 4242, "gatewayId": GW_HEX, "items": [{
                "phyPayload": base64.b64encode(b"\x60\x01\x02\x03\x04\x00\x01\x00").decode(),
                "txInfo": {"frequency": 868100000, "power": 14,
                           "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                                   "codeRate": "CR_4_5", "polarizationInversion": True}},
                           "timing": {"delay": {"delay": "1s"}},
                           "context": base64.b64encode((1000).to_bytes(4, "big")).decode()}}]}
            json_format.ParseDict(down, gw_pb2.DownlinkFrame())  # the test speaks real ChirpStack JSON
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                await pub.publish(f"{base}/command/down", json.dumps(down), qos=1)
            resp = frames.parse_gwmp(await asyncio.wait_for(loop.sock_recv(pf, 4096), 5))
            assert resp.identifier == frames.PULL_RESP
            txpk = resp.body["txpk"]
            assert txpk["tmst"] == 1000 + 1_000_000 and txpk["freq"] == pytest.approx(868.1)
            assert (txpk["datr"], txpk["codr"], txpk["ipol"], txpk["powe"]) == ("SF7BW125", "4/5", True, 14)
            await loop.sock_sendto(pf, frames.encode_tx_ack(resp.token, GW, {"error": "NONE"}),
                                   server.bound_address)
            await _until(lambda: sub.on(f"{base}/event/ack"), what="tx ack")
        ack = sub.on(f"{base}/event/ack")[0]
        assert json_format.ParseDict(ack, gw_pb2.DownlinkTxAck()).downlink_id == 4242
        assert ack["items"] == [{"status": "OK"}]
        dl.cancel()
        await asyncio.gather(dl, return_exceptions=True)
    finally:
        pf.close()
        server.close()


def _ascending_runs_needed(seq: list[int]) -> int:
    """Fewest ascending subsequences that cover ``seq`` (= longest strictly decreasing one)."""
    tails: list[int] = []  # patience sorting on the negated values
    for x in seq:
        i = bisect.bisect_left(tails, -x)
        if i == len(tails):
            tails.append(-x)
        else:
            tails[i] = -x
    return len(tails)


class SlowLinkMqttForwarder(MqttForwarder):
    """Adds an LTE-like round trip per batch. On localhost a backlog of a few hundred drains in
    milliseconds, and "live records stay prompt during the drain" could not fail."""

    def __init__(self, *args: Any, link_rtt: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.link_rtt = link_rtt

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        await asyncio.sleep(self.link_rtt)
        return await super().send(records)


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * q))]


async def _outage_run(broker: Mosquitto, buffer: Buffer, outage_s: float, *, order: str,
                      rate: float = 100.0, link_rtt: float = 0.0, max_batch: int = 500) -> dict[str, Any]:
    """Frames at ``rate`` before, during and after a broker outage; returns delivery figures."""
    cfg = MqttForward(name="city", url=broker.url, topic_prefix="eu868", keepalive=2.0)
    fwd = (SlowLinkMqttForwarder(cfg, gateway_eui=GW, publish_timeout=3.0, link_rtt=link_rtt) if link_rtt
           else MqttForwarder(cfg, gateway_eui=GW, publish_timeout=3.0))
    buffer.register("city", start="oldest", live_first=order == "live_first")
    topic = f"eu868/gateway/{GW_HEX}/event/up"
    loop = asyncio.get_running_loop()
    appended_at: list[float] = []
    async with Subscriber(broker, [topic], "outage-sub") as sub:
        commits = asyncio.create_task(buffer.run())
        delivery = DeliveryLoop(buffer, fwd, max_batch=max_batch, backoff_base=0.2, backoff_cap=2.0)
        dl = asyncio.create_task(delivery.run())
        t0 = loop.time()

        async def produce() -> None:
            while True:
                while len(appended_at) < int((loop.time() - t0) * rate):
                    buffer.append(_uplink(len(appended_at)))
                    appended_at.append(loop.time())
                await asyncio.sleep(0.005)

        def arrived() -> dict[int, float]:
            first: dict[int, float] = {}
            for (t, m, _), at in zip(sub.messages, sub.arrived, strict=True):
                if t == topic:
                    first.setdefault(int.from_bytes(base64.b64decode(m["rxInfo"]["context"]), "big") - 1000, at)
            return first

        producer = asyncio.create_task(produce())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(broker.start)
        restart_at, backlog = loop.time(), len(appended_at)
        # Live traffic goes on until the backlog is through, and a little after.
        await _until(lambda: len(arrived()) >= backlog and max(arrived()) >= backlog - 1,
                     timeout=30 + outage_s, what=f"the {backlog} records of the backlog")
        await asyncio.sleep(1.0)
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        sent = len(appended_at)
        await _until(lambda: len(arrived()) >= sent, timeout=30, what=f"all {sent} uplinks at the subscriber")
        dl.cancel()
        commits.cancel()
        await asyncio.gather(dl, commits, return_exceptions=True)
    first = arrived()
    first_seen = list(dict.fromkeys(
        int.from_bytes(base64.b64decode(m["rxInfo"]["context"]), "big") - 1000
        for t, m, _ in sub.messages if t == topic))
    assert sorted(first_seen) == list(range(sent)), "uplinks lost"
    assert delivery.errors, "the outage should have been noticed"
    # Live records during the drain: appended once delivery had resumed, before the backlog
    # was through. Their delay is append -> arrival at a subscriber of the broker.
    resumed = min(at for at in first.values() if at >= restart_at)
    drained = max(first[i] for i in range(backlog))
    live = [i for i in range(backlog, sent) if resumed <= appended_at[i] <= drained]
    delays = [first[i] - appended_at[i] for i in live]
    figures: dict[str, Any] = {
        "order": order, "sent": sent, "backlog": backlog,
        "duplicates": sum(1 for t, _, _ in sub.messages if t == topic) - sent,
        "drain_s": round(drained - resumed, 2), "live_during_drain": len(live),
        "live_p50_s": round(sorted(delays)[len(delays) // 2], 3) if delays else None,
        "live_p95_s": round(_pct(delays, 0.95), 3) if delays else None,
        "live_p99_s": round(_pct(delays, 0.99), 3) if delays else None,
        "live_max_s": round(max(delays), 3) if delays else None,
        "streams": _ascending_runs_needed(first_seen), "errors": dict(delivery.errors),
    }
    print(f"\noutage {outage_s}s at {rate}/s, link rtt {link_rtt}s, batch {max_batch}: {figures}")
    if order == "strict":
        assert first_seen == list(range(sent)), "strict order: a record arrived before an older one"
    else:
        # Live beside the backlog: two ascending streams merged, the backlog and live, never more.
        assert figures["streams"] <= 2, "uplinks reordered within a stream"
    return figures


@pytest.mark.parametrize("order", ["strict", "live_first"])
async def test_broker_outage_at_100_per_second_loses_nothing(
    mosquitto: Mosquitto, buffer: Buffer, order: str  # noqa: F811
) -> None:
    # A slow backhaul (150 ms per batch of 40, ~270 records/s) makes the drain last seconds.
    f = await _outage_run(mosquitto, buffer, 5.0, order=order, link_rtt=0.15, max_batch=40)
    if order == "live_first":
        assert f["drain_s"] >= 1.5 and f["live_during_drain"] >= 100, "drain too short to judge"
        # Strict order makes live records wait most of the drain (p50 ~1.5 s of 2 s here);
        # live-first keeps them to ~0.3 s. A stall of the shared machine can let a few live
        # records slip into the backlog (by design the newest go first), so judge 95 %, not all.
        assert f["live_p95_s"] < 1.0, "live records waited behind the backlog"


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_broker_outage_of_two_minutes_loses_nothing(mosquitto: Mosquitto, buffer: Buffer) -> None:  # noqa: F811
    await _outage_run(mosquitto, buffer, 120.0, order="strict")


class RecordingRelay:
    """Stands in for the local packet forwarder: takes every downlink and says it was sent."""

    def __init__(self) -> None:
        self.txpks: list[dict[str, Any]] = []

    async def send_downlink(self, gateway_eui: int | None, txpk: Mapping[str, Any]) -> dict[str, Any]:
        self.txpks.append(dict(txpk))
        return {"error": "NONE"}


def _down(downlink_id: int) -> dict[str, Any]:
    return {"downlinkId": downlink_id, "gatewayId": GW_HEX, "items": [{
        "phyPayload": base64.b64encode(b"\x60\x01\x02\x03\x04\x00\x01\x00").decode(),
        "txInfo": {"frequency": 868100000, "power": 14,
                   "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                           "codeRate": "CR_4_5", "polarizationInversion": True}},
                   "timing": {"delay": {"delay": "1s"}},
                   "context": base64.b64encode((1000).to_bytes(4, "big")).decode()}}]}


async def test_idle_forwarder_reconnects_by_itself_after_a_broker_restart(
    mosquitto: Mosquitto, buffer: Buffer  # noqa: F811
) -> None:
    relay = RecordingRelay()
    fwd = MqttForwarder(_cfg(mosquitto, keepalive=2.0), gateway_eui=GW, relays=[relay])
    buffer.register("city")
    delivery = DeliveryLoop(buffer, fwd, backoff_base=0.2, backoff_cap=2.0)
    dl = asyncio.create_task(delivery.run())
    base = f"eu868/gateway/{GW_HEX}"
    conn, online = f"{base}/state/conn", {"gatewayId": GW_HEX, "state": "ONLINE"}
    loop = asyncio.get_running_loop()
    try:
        async with Subscriber(mosquitto, [conn, f"{base}/event/ack"], "idle-sub") as sub:
            await _until(lambda: delivery.connected and sub.on(conn)[-1:] == [online], what="first ONLINE")
            await asyncio.to_thread(mosquitto.stop)  # no record flows before, during or after
            await asyncio.sleep(0.5)
            await asyncio.to_thread(mosquitto.start)
            restarted, seen = loop.time(), len(sub.messages)
            # Live (not retained) ONLINE after the restart: the forwarder published it again.
            await _until(lambda: (conn, online, False) in sub.messages[seen:], timeout=2.0 + 5.0,
                         what="ONLINE republished within the backoff window (cap 2 s)")
            took = loop.time() - restarted
            assert delivery.reconnects == 2 and delivery.errors.get("connection_lost") == 1
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                await pub.publish(f"{base}/command/down", json.dumps(_down(77)), qos=1)
            await _until(lambda: relay.txpks, what="downlink after the restart")
            await _until(lambda: sub.on(f"{base}/event/ack"), what="tx ack")
        assert relay.txpks[0]["tmst"] == 1000 + 1_000_000
        assert sub.on(f"{base}/event/ack")[0]["downlinkId"] == 77
        async with Subscriber(mosquitto, [conn], "idle-late") as late:
            await _until(lambda: late.messages, what="retained state/conn")
        assert late.messages == [(conn, online, True)]
        h = delivery.health()
        assert h["connected"] and h["backend"]["errors"]["connection_lost"] == 1
        assert h["backend"]["downlink_status"] == {"OK": 1}
        print(f"\nidle reconnect after broker restart: {took:.2f}s")
    finally:
        dl.cancel()
        await asyncio.gather(dl, return_exceptions=True)


async def test_oversized_downlink_command_is_rejected_counted_and_later_ones_still_work(
    mosquitto: Mosquitto, buffer: Buffer  # noqa: F811
) -> None:
    relay = RecordingRelay()
    fwd = MqttForwarder(_cfg(mosquitto), gateway_eui=GW, relays=[relay])
    buffer.register("city")
    delivery = DeliveryLoop(buffer, fwd)
    dl = asyncio.create_task(delivery.run())
    down = f"eu868/gateway/{GW_HEX}/command/down"
    try:
        await _until(lambda: delivery.connected, what="connected")
        huge = _down(1)
        huge["padding"] = "x" * (70 << 10)  # valid JSON, just too large for a downlink command
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(down, json.dumps(huge), qos=1)
            await pub.publish(down, json.dumps(_down(2)), qos=1)
        await _until(lambda: relay.txpks, what="the normal downlink after the oversized one")
        backend = delivery.health()["backend"]
        assert len(relay.txpks) == 1 and backend["errors"] == {"downlink_too_large": 1}
        assert backend["downlink_status"] == {"INVALID": 1, "OK": 1}
        assert delivery.connected and not delivery.errors
    finally:
        dl.cancel()
        await asyncio.gather(dl, return_exceptions=True)


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from gateway.config import MqttForward
    from gateway.forward.mqtt import MqttForwarder
    async def main():
        fwd = MqttForwarder(MqttForward(name="city", url=sys.argv[1], topic_prefix="eu868"),
                            gateway_eui=int(sys.argv[2], 16))
        await fwd.connect()
        print("connected", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


async def test_last_will_offline_when_gateway_is_killed(mosquitto: Mosquitto) -> None:  # noqa: F811
    conn = f"eu868/gateway/{GW_HEX}/state/conn"
    async with Subscriber(mosquitto, [conn], "will-sub") as sub:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, mosquitto.url, GW_HEX, stdout=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 20)
            assert line.strip() == b"connected"
            await _until(lambda: sub.on(conn)[-1:] == [{"gatewayId": GW_HEX, "state": "ONLINE"}])
            child.send_signal(signal.SIGKILL)
            await _until(lambda: sub.on(conn)[-1:] == [{"gatewayId": GW_HEX, "state": "OFFLINE"}],
                         timeout=10, what="last will")
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()


def test_late_uplinks_are_marked_replay_and_gps_less_ones_carry_the_receive_time() -> None:
    """A frame sent long after receipt (backlog after an outage) says so, and a gateway without
    GPS (no rxpk "time") still tells the network server when the frame was received."""
    received = 1_795_000_000_123_456
    now = [received + 2_000_000]
    cfg = MqttForward(name="city", url="mqtt://127.0.0.1:1883", topic_prefix="eu868")
    fwd = MqttForwarder(cfg, gateway_eui=GW, clock_us=lambda: now[0])
    rxpk = {k: v for k, v in _rxpk(0).items() if k != "time"}
    record = make_record("uplink", "gwmp", {"gateway_eui": GW_HEX, "rxpk": rxpk}, received_us=received)

    msg = fwd.message_for(record)
    assert msg is not None
    fresh = json.loads(msg[1])
    assert "metadata" not in fresh["rxInfo"]
    parsed = json_format.ParseDict(fresh, gw_pb2.UplinkFrame())
    assert parsed.rx_info.gw_time.ToMicroseconds() == received

    now[0] = received + 3600 * 1_000_000  # an hour later: a replay from the buffer
    msg = fwd.message_for(record)
    assert msg is not None
    late = json.loads(msg[1])
    assert late["rxInfo"]["metadata"] == {"replay": "true"}
    assert json_format.ParseDict(late, gw_pb2.UplinkFrame()).rx_info.gw_time.ToMicroseconds() == received
