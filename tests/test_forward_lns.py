"""LNS forwarder against a local UDP network-server stand-in and a simulated packet forwarder."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from drivers.gwmp_server import GwmpServer
from gateway import frames
from gateway.buffer import Buffer
from gateway.config import GwmpForward
from gateway.forward.base import DeliveryLoop
from gateway.forward.lns import LnsForwarder
from gateway.forward.registry import build_forwarder
from gateway.records import make_record, now_us

LOCAL = 0xB827EBFFFE000001


class FakeLns(asyncio.DatagramProtocol):
    """Acks PUSH_DATA/PULL_DATA (unless ``down``), records rxpk, can send a PULL_RESP."""

    def __init__(self) -> None:
        self.down = False
        self.ack_delay = 0.0
        self.rxpk: list[dict[str, Any]] = []
        self.tx_acks: list[Any] = []
        self.pull_addr: Any = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pkt = frames.parse_gwmp(data)
        assert self.transport is not None
        if pkt.identifier == frames.TX_ACK:
            self.tx_acks.append(pkt)
            return
        if self.down:
            return
        if pkt.identifier == frames.PUSH_DATA:
            self.rxpk.extend((pkt.body or {}).get("rxpk", []))
            asyncio.get_running_loop().call_later(
                self.ack_delay, self.transport.sendto, frames.encode_push_ack(pkt.token), addr)
        elif pkt.identifier == frames.PULL_DATA:
            self.pull_addr = addr
            self.transport.sendto(frames.encode_pull_ack(pkt.token), addr)


@pytest.fixture
async def lns():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(FakeLns, local_addr=("127.0.0.1", 0))
    yield proto, transport.get_extra_info("sockname")[:2]
    transport.close()


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=64 << 20)
    buf.open()
    yield buf
    buf.close()


def _uplink(i: int, received_us: int | None = None):
    return make_record("uplink", "gwmp", {"gateway_eui": f"{LOCAL:016x}", "rxpk": {
        "tmst": i, "freq": 868.1, "datr": "SF7BW125", "modu": "LORA", "data": "QAECAwQAAQAB"}},
        received_us=received_us)


async def _until(cond, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_uplinks_pushed_acked_and_downlink_relayed_with_tx_ack(lns, buffer: Buffer) -> None:
    server_proto, addr = lns
    gw = GwmpServer(on_uplink=lambda r: None, bind=("127.0.0.1", 0))
    await gw.start()
    pf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pf.bind(("127.0.0.1", 0))
    pf.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(pf, frames.encode_pull_data(1, LOCAL), gw.bound_address)
        await loop.sock_recv(pf, 64)  # PULL_ACK
        fwd = build_forwarder(GwmpForward(name="lns", server=addr, keepalive=0.2),
                              gateway_eui=LOCAL, sources=[gw])
        assert isinstance(fwd, LnsForwarder)
        buffer.register("lns", start="oldest")
        for i in range(20):
            buffer.append(_uplink(i))
        dl = DeliveryLoop(buffer, fwd)
        task = asyncio.create_task(dl.run())
        await _until(lambda: dl.acked == 20)
        assert sorted(r["tmst"] for r in server_proto.rxpk) == list(range(20))
        assert not any("replay" in r for r in server_proto.rxpk)
        # The LNS schedules a downlink: it reaches the packet forwarder, its TX_ACK goes back up.
        await _until(lambda: server_proto.pull_addr is not None)
        txpk = {"imme": True, "freq": 869.525, "rfch": 0, "powe": 14, "modu": "LORA",
                "datr": "SF9BW125", "codr": "4/5", "ipol": True, "size": 4, "data": "YAECAw=="}
        server_proto.transport.sendto(frames.encode_pull_resp(777, txpk), server_proto.pull_addr)
        resp = frames.parse_gwmp(await asyncio.wait_for(loop.sock_recv(pf, 4096), 5))
        assert resp.identifier == frames.PULL_RESP and resp.body["txpk"]["freq"] == 869.525
        await loop.sock_sendto(pf, frames.encode_tx_ack(resp.token, LOCAL, {"error": "NONE"}), gw.bound_address)
        await _until(lambda: server_proto.tx_acks)
        up = server_proto.tx_acks[0]
        assert (up.token, up.gateway_eui, up.body["txpk_ack"]["error"]) == (777, LOCAL, "NONE")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        pf.close()
        gw.close()


async def test_replay_after_outage_is_age_bounded_marked_and_live_is_not_held_back(lns, buffer: Buffer) -> None:
    server_proto, addr = lns
    now = now_us()
    fwd = LnsForwarder(GwmpForward(name="lns", server=addr, max_replay_age=60.0, keepalive=0.2),
                       gateway_eui=LOCAL, ack_timeout=0.3)
    buffer.register("lns", start="oldest")
    # Buffered during an outage: 50 too old to replay, 1000 recent enough (but late).
    for i in range(50):
        buffer.append(_uplink(i, received_us=now - 120_000_000))
    for i in range(50, 1050):
        buffer.append(_uplink(i, received_us=now - 30_000_000))
    dl = DeliveryLoop(buffer, fwd, max_batch=10, backoff_base=0.05, backoff_cap=0.1)
    server_proto.down = True
    server_proto.ack_delay = 0.02  # a distant server: the replay takes ~2 s
    task = asyncio.create_task(dl.run())
    await asyncio.sleep(0.5)
    assert dl.acked == 0 and dl.errors  # nothing acked while the server is silent
    server_proto.down = False
    await _until(lambda: len(server_proto.rxpk) >= 1)
    live_sent_at: dict[int, float] = {}

    async def live() -> None:
        for i in range(10_000, 10_020):
            buffer.append(_uplink(i))
            t0 = asyncio.get_running_loop().time()
            await _until(lambda i=i: any(r["tmst"] == i for r in server_proto.rxpk))
            live_sent_at[i] = asyncio.get_running_loop().time() - t0

    await live()
    await _until(lambda: dl.acked >= 1070, timeout=20)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    tmsts = [r["tmst"] for r in server_proto.rxpk]
    assert not set(tmsts) & set(range(50)), "expired replays must not be sent"
    assert set(range(50, 1050)) <= set(tmsts)
    assert all(r.get("replay") is True for r in server_proto.rxpk if 50 <= r["tmst"] < 1050)
    assert not any(r.get("replay") for r in server_proto.rxpk if r["tmst"] >= 10_000)
    assert fwd.health()["replay_expired"] == 50
    # Live frames went out while the backlog was still being replayed, not after it.
    last_backlog = max(tmsts.index(i) for i in range(50, 1050))
    assert all(tmsts.index(i) < last_backlog for i in range(10_000, 10_020))
    assert max(live_sent_at.values()) < 0.5
    print(f"\nlive latency during replay: max {max(live_sent_at.values()) * 1000:.1f} ms")


async def test_silent_server_while_idle_is_reported_and_reconnected(lns, buffer: Buffer) -> None:
    """No uplinks flow, the server stops answering PULL_DATA: the status says so within a few
    keepalives (not at the next uplink), and the loop reconnects once the server is back."""
    server_proto, addr = lns
    fwd = LnsForwarder(GwmpForward(name="lns", server=addr, keepalive=0.1),
                       gateway_eui=LOCAL, ack_timeout=0.5)
    buffer.register("lns", start="oldest")
    dl = DeliveryLoop(buffer, fwd, backoff_base=0.05, backoff_cap=0.2)
    task = asyncio.create_task(dl.run())
    try:
        await _until(lambda: dl.connected and fwd.counters["pull_ack"] >= 2)
        server_proto.down = True
        await _until(lambda: fwd.errors.get("pull_ack_missing", 0) >= 1, timeout=5.0)
        await _until(lambda: dl.errors.get("connection_lost", 0) >= 1)
        assert "connection lost while idle" in (dl.last_error or "")
        await _until(lambda: not dl.connected or dl.errors.get("no_pull_ack", 0) >= 1)
        connects = dl.reconnects
        server_proto.down = False
        await _until(lambda: dl.connected and dl.reconnects > connects, timeout=5.0)
        # and it delivers again
        buffer.append(_uplink(1))
        await _until(lambda: dl.acked == 1)
        assert [r["tmst"] for r in server_proto.rxpk] == [1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_answered_keepalives_never_break_the_connection(lns, buffer: Buffer) -> None:
    _, addr = lns
    fwd = LnsForwarder(GwmpForward(name="lns", server=addr, keepalive=0.05),
                       gateway_eui=LOCAL, ack_timeout=0.5)
    buffer.register("lns", start="oldest")
    dl = DeliveryLoop(buffer, fwd, backoff_base=0.05, backoff_cap=0.2)
    task = asyncio.create_task(dl.run())
    try:
        await _until(lambda: fwd.counters["pull_ack"] >= 15)
        assert dl.reconnects == 1 and "pull_ack_missing" not in fwd.errors
        assert dl.errors == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
