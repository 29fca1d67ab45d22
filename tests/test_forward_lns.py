"""LNS forwarder against a local UDP network-server stand-in and a simulated packet forwarder."""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest

from drivers.gwmp_server import GwmpServer
from gateway import frames
from gateway.buffer import Buffer
from gateway.config import GwmpForward, load_config_text
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
        # per gateway EUI, as a real server keeps them: where its PULL_DATA came from (its
        # downlink address) and the rxpk tmst values its PUSH_DATA carried
        self.pull_addrs: dict[int, Any] = {}
        self.pushed: dict[int, list[int]] = {}
        self.ignore_pulls_of: set[int] = set()  # EUIs this server does not answer
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
            self.pushed.setdefault(pkt.gateway_eui, []).extend(
                r["tmst"] for r in (pkt.body or {}).get("rxpk", []))
            asyncio.get_running_loop().call_later(
                self.ack_delay, self.transport.sendto, frames.encode_push_ack(pkt.token), addr)
        elif pkt.identifier == frames.PULL_DATA:
            self.pull_addr = addr
            self.pull_addrs[pkt.gateway_eui] = addr
            if pkt.gateway_eui not in self.ignore_pulls_of:
                self.transport.sendto(frames.encode_pull_ack(pkt.token), addr)

    def pull_resp(self, eui: int, token: int, txpk: dict[str, Any]) -> None:
        """A downlink for gateway ``eui``: to the address its last PULL_DATA came from."""
        assert self.transport is not None
        self.transport.sendto(frames.encode_pull_resp(token, txpk), self.pull_addrs[eui])


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


# ---- several local packet forwarders behind one gateway: one server-side EUI and socket each

LOCAL_A, LOCAL_B, LOCAL_C = 0xB827EBFFFE00000A, 0xB827EBFFFE00000B, 0xB827EBFFFE00000C
SERVER_A, SERVER_B = 0x0016C001FF10A23A, 0x0016C001FF10A23B
GATEWAY = 0x0016C001FF000001  # [gateway].eui, neither local packet forwarder's
TXPK = {"imme": True, "freq": 869.525, "rfch": 0, "powe": 14, "modu": "LORA",
        "datr": "SF9BW125", "codr": "4/5", "ipol": True, "size": 4, "data": "YAECAw=="}


class PacketForwarder:
    """A simulated lora_pkt_fwd with its own EUI and socket, talking to a GwmpServer."""

    def __init__(self, eui: int, server: tuple[str, int]) -> None:
        self.eui, self.server = eui, server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    async def pull(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, frames.encode_pull_data(secrets.randbits(16), self.eui), self.server)
        assert frames.parse_gwmp(await asyncio.wait_for(loop.sock_recv(self.sock, 64), 5)).identifier \
            == frames.PULL_ACK

    async def push(self, tmsts: range) -> None:
        loop = asyncio.get_running_loop()
        rxpk = [{"tmst": t, "freq": 868.1, "datr": "SF7BW125", "modu": "LORA", "data": "QAECAwQAAQAB"}
                for t in tmsts]
        await loop.sock_sendto(self.sock, frames.encode_push_data(secrets.randbits(16), self.eui, rxpk),
                               self.server)
        assert frames.parse_gwmp(await asyncio.wait_for(loop.sock_recv(self.sock, 64), 5)).identifier \
            == frames.PUSH_ACK

    async def downlink(self, timeout: float) -> Any:  # noqa: ASYNC109
        """The next PULL_RESP (answered with a TX_ACK), or None if none came in ``timeout``."""
        loop = asyncio.get_running_loop()
        try:
            pkt = frames.parse_gwmp(await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout))
        except TimeoutError:
            return None
        assert pkt.identifier == frames.PULL_RESP
        await loop.sock_sendto(self.sock, frames.encode_tx_ack(pkt.token, self.eui, {"error": "NONE"}),
                               self.server)
        return pkt

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def local_gateways(buffer: Buffer):
    """A GwmpServer source feeding the buffer, with packet forwarders A, B and C behind it."""
    gw = GwmpServer(on_uplink=buffer.append, bind=("127.0.0.1", 0))
    await gw.start()
    pfs = {eui: PacketForwarder(eui, gw.bound_address) for eui in (LOCAL_A, LOCAL_B, LOCAL_C)}
    for pf in pfs.values():
        await pf.pull()
    yield gw, pfs
    for pf in pfs.values():
        pf.close()
    gw.close()


def _gwmp_forward(server: tuple[str, int], extra: str, keepalive: str = "200ms") -> GwmpForward:
    cfg = load_config_text(f'[gateway]\neui = "{GATEWAY:016x}"\n[[forward.gwmp]]\nname = "lns"\n'
                           f'server = "{server[0]}:{server[1]}"\nkeepalive = "{keepalive}"\n{extra}')
    return cfg.forward.gwmp[0]


async def test_mapped_gateways_each_get_their_own_eui_keepalives_and_downlinks(
        lns, buffer: Buffer, local_gateways) -> None:
    server, addr = lns
    gw, pfs = local_gateways
    fcfg = _gwmp_forward(addr, f'[forward.gwmp.eui_map]\n"{LOCAL_A:016x}" = "{SERVER_A:016x}"\n'
                               f'"{LOCAL_B:016x}" = "{SERVER_B:016x}"\n')
    fwd = build_forwarder(fcfg, gateway_eui=GATEWAY, sources=[gw])
    buffer.register("lns", start="oldest")
    dl = DeliveryLoop(buffer, fwd)
    task = asyncio.create_task(dl.run())
    try:
        # Keepalives for both mapped EUIs from connect on, each from its own socket, before any
        # uplink: the server has a downlink path to each gateway.
        await _until(lambda: {SERVER_A, SERVER_B} <= set(server.pull_addrs))
        assert set(server.pull_addrs) == {SERVER_A, SERVER_B}
        assert server.pull_addrs[SERVER_A] != server.pull_addrs[SERVER_B]
        await pfs[LOCAL_A].push(range(0, 5))
        await pfs[LOCAL_B].push(range(100, 103))
        await _until(lambda: dl.acked == 8)
        assert server.pushed == {SERVER_A: [0, 1, 2, 3, 4], SERVER_B: [100, 101, 102]}

        # A pulled last, so "any gateway" would be A: the downlink for B must still reach B.
        await pfs[LOCAL_A].pull()
        server.pull_resp(SERVER_B, 4242, TXPK)
        got = await pfs[LOCAL_B].downlink(5)
        assert got is not None and got.body["txpk"]["freq"] == 869.525
        await _until(lambda: server.tx_acks)
        up = server.tx_acks[0]
        assert (up.token, up.gateway_eui, up.body["txpk_ack"]["error"]) == (4242, SERVER_B, "NONE")
        assert await pfs[LOCAL_A].downlink(0.3) is None  # and nothing went on air at A

        server.pull_resp(SERVER_A, 4343, TXPK)
        assert await pfs[LOCAL_A].downlink(5) is not None
        await _until(lambda: len(server.tx_acks) == 2)
        assert (server.tx_acks[1].token, server.tx_acks[1].gateway_eui) == (4343, SERVER_A)

        gateways = fwd.health()["gateways"]
        assert set(gateways) == {f"{SERVER_A:016x}", f"{SERVER_B:016x}"}
        b = gateways[f"{SERVER_B:016x}"]
        assert b["local_eui"] == f"{LOCAL_B:016x}" and b["pull_ack"] >= 1 and b["downlinks"] == 1
        assert 0 <= b["last_pull_ack_age_s"] < 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_pass_through_gateways_get_keepalives_and_downlinks_under_their_own_eui(
        lns, buffer: Buffer, local_gateways) -> None:
    server, addr = lns
    gw, pfs = local_gateways
    # keepalives far apart: a gateway's first PULL_DATA must not wait for the next one
    fwd = build_forwarder(_gwmp_forward(addr, "", keepalive="30s"), gateway_eui=GATEWAY, sources=[gw])
    buffer.register("lns", start="oldest")
    dl = DeliveryLoop(buffer, fwd)
    task = asyncio.create_task(dl.run())
    try:
        await _until(lambda: dl.connected)
        await pfs[LOCAL_A].push(range(0, 3))
        await pfs[LOCAL_B].push(range(100, 102))
        await _until(lambda: dl.acked == 5)
        assert server.pushed == {LOCAL_A: [0, 1, 2], LOCAL_B: [100, 101]}
        # The first uplink of a gateway opened its socket and sent its PULL_DATA right away.
        await _until(lambda: {LOCAL_A, LOCAL_B} <= set(server.pull_addrs), timeout=1.0)
        assert server.pull_addrs[LOCAL_A] != server.pull_addrs[LOCAL_B]
        await pfs[LOCAL_B].pull()  # B pulled last: the downlink for A must still reach A
        server.pull_resp(LOCAL_A, 99, TXPK)
        assert await pfs[LOCAL_A].downlink(5) is not None
        await _until(lambda: server.tx_acks)
        assert (server.tx_acks[0].token, server.tx_acks[0].gateway_eui) == (99, LOCAL_A)
        assert await pfs[LOCAL_B].downlink(0.3) is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_gateways_over_the_cap_go_out_under_the_fallback_eui(lns, buffer: Buffer, local_gateways) -> None:
    server, addr = lns
    gw, pfs = local_gateways
    fwd = build_forwarder(_gwmp_forward(addr, ""), gateway_eui=GATEWAY, sources=[gw])
    assert isinstance(fwd, LnsForwarder)
    fwd.max_gateways = 3  # GATEWAY (open from connect), A and B; C is one too many
    buffer.register("lns", start="oldest")
    dl = DeliveryLoop(buffer, fwd)
    task = asyncio.create_task(dl.run())
    try:
        await _until(lambda: dl.connected)
        for i, eui in enumerate((LOCAL_A, LOCAL_B, LOCAL_C)):
            await pfs[eui].push(range(i * 100, i * 100 + 2))
            await _until(lambda i=i: dl.acked == 2 * (i + 1))
        assert server.pushed == {LOCAL_A: [0, 1], LOCAL_B: [100, 101], GATEWAY: [200, 201]}
        assert fwd.errors["too_many_gateways"] == 2
        assert set(fwd.health()["gateways"]) == {f"{e:016x}" for e in (GATEWAY, LOCAL_A, LOCAL_B)}
        # Keepalives go on for every gateway, not only for the first one.
        await _until(lambda: all(g["pull_ack"] >= 3 for g in fwd.health()["gateways"].values()))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_one_unanswered_eui_is_shown_but_does_not_break_the_others(lns, buffer: Buffer) -> None:
    """Idle failure detection: the server is gone when it answers none of our EUIs; one EUI it
    does not answer (say, not registered there) is counted and shown, and the others go on."""
    server, addr = lns
    server.ignore_pulls_of = {SERVER_B}
    fcfg = GwmpForward(name="lns", server=addr, keepalive=0.05, eui_map={LOCAL_A: SERVER_A, LOCAL_B: SERVER_B})
    fwd = LnsForwarder(fcfg, gateway_eui=GATEWAY, ack_timeout=0.5)
    buffer.register("lns", start="oldest")
    dl = DeliveryLoop(buffer, fwd, backoff_base=0.05, backoff_cap=0.2)
    task = asyncio.create_task(dl.run())
    try:
        await _until(lambda: fwd.errors.get("pull_ack_missing_gateway") == 1)
        await _until(lambda: fwd.health()["gateways"][f"{SERVER_A:016x}"]["pull_ack"] >= 10)
        b = fwd.health()["gateways"][f"{SERVER_B:016x}"]
        assert b["silent"] is True and b["pull_ack"] == 0 and b["last_pull_ack_age_s"] is None
        assert dl.reconnects == 1 and "pull_ack_missing" not in fwd.errors and dl.errors == {}
        server.ignore_pulls_of = set()  # B gets registered on the server
        await _until(lambda: not fwd.health()["gateways"][f"{SERVER_B:016x}"]["silent"])
        server.down = True  # and now the whole server goes: that is a broken connection
        await _until(lambda: fwd.errors.get("pull_ack_missing", 0) >= 1, timeout=5.0)
        await _until(lambda: dl.errors.get("connection_lost", 0) >= 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
