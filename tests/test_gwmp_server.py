"""The Semtech UDP server over real loopback sockets, as a packet forwarder sees it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from drivers.dutycycle import EU868_BANDS, GatewayDutyCycles
from drivers.gwmp_server import GwmpServer
from gateway import frames
from gateway.records import Record
from tests.helpers import udp_blaster

ROOT = Path(__file__).resolve().parent.parent
EUI = 0xB827EBFFFE000001
OTHER_EUI = 0xB827EBFFFE000002
PHY = bytes.fromhex("40a1b2c3d400010001") + b"\x11\x22\x33" + b"\xaa\xbb\xcc\xdd"


def rxpk(data: bytes = PHY, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tmst": 3512348611,
        "chan": 2,
        "rfch": 0,
        "freq": 868.5,
        "stat": 1,
        "modu": "LORA",
        "datr": "SF7BW125",
        "codr": "4/5",
        "rssi": -75,
        "lsnr": 5.5,
        "size": len(data),
        "data": base64.b64encode(data).decode(),
    }
    fields.update(extra)
    return fields


class Forwarder(asyncio.DatagramProtocol):
    """A packet forwarder's socket: collects what the server sends."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self, wait: float = 2.0) -> frames.GwmpPacket:
        pkt: frames.GwmpPacket = frames.parse_gwmp(await asyncio.wait_for(self.inbox.get(), wait))
        return pkt

    async def nothing(self, wait: float = 0.2) -> None:
        await asyncio.sleep(wait)
        assert self.inbox.empty(), f"unexpected datagram {self.inbox.get_nowait()!r}"


class Harness:
    def __init__(self, **kw: Any) -> None:
        self.uplinks: list[Record] = []
        self.stats: list[Record] = []
        self.observed: list[tuple[int, dict[str, Any]]] = []
        self.server = GwmpServer(
            bind=("127.0.0.1", 0),
            on_uplink=self.uplinks.append,
            on_stats=self.stats.append,
            on_downlink_observed=lambda eui, txpk: self.observed.append((eui, dict(txpk))),
            **kw,
        )
        self.transports: list[asyncio.DatagramTransport] = []

    async def forwarder(self) -> Forwarder:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            Forwarder, remote_addr=self.server.bound_address
        )
        self.transports.append(transport)
        return proto

    def close(self) -> None:
        for t in self.transports:
            t.close()
        self.server.close()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    await h.server.start()
    yield h
    h.close()


async def settle(condition: Any, wait: float = 2.0) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("version", [1, 2])
async def test_push_ack_is_exactly_the_encoders_for_either_protocol_version(harness: Harness, version: int) -> None:
    fwd = await harness.forwarder()
    for token in (0, 0x00FF, 0xFF00, 0xBEEF):
        fwd.send(frames.encode_push_data(token, EUI, [rxpk()], version=version))
        raw = await asyncio.wait_for(fwd.inbox.get(), 2.0)
        assert raw == frames.encode_push_ack(token, version)


async def test_push_data_is_acked_with_its_token_and_becomes_records(harness: Harness) -> None:
    fwd = await harness.forwarder()
    stat = {"time": "2024-05-01 10:00:00 GMT", "rxnb": 3, "rxok": 2, "rxfw": 2, "ackr": 100.0}
    stat |= {"temp": 41.5, "lati": 51.25, "long": 7.15, "alti": 160, "dwnb": 0, "txnb": 0}
    # Second frame in the unpadded base64 some forwarders write: normalised in the record.
    unpadded = base64.b64encode(PHY).decode().rstrip("=")
    fwd.send(
        frames.encode_push_data(0xBEEF, EUI, [rxpk(), rxpk(rssi=-110) | {"data": unpadded}], stat)
    )
    ack = await fwd.recv()
    assert ack.identifier == frames.PUSH_ACK and ack.token == 0xBEEF
    await settle(lambda: len(harness.uplinks) == 2 and len(harness.stats) == 1)
    body = harness.uplinks[1].decoded()
    assert harness.uplinks[1].kind == "uplink"
    assert body["gateway_eui"] == "b827ebfffe000001"
    assert body["rxpk"]["rssi"] == -110 and body["rxpk"]["datr"] == "SF7BW125"
    assert base64.b64decode(body["rxpk"]["data"]) == PHY and body["rxpk"]["data"].endswith("=")
    assert harness.stats[0].decoded() == {"gateway_eui": "b827ebfffe000001", "stat": stat}
    gw = harness.server.health()["gateways"]["b827ebfffe000001"]
    assert (
        gw["stat"]["temp"] == 41.5 and gw["stat"]["lati"] == 51.25 and gw["stat"]["ackr"] == 100.0
    )
    assert gw["rxpk"] == 2 and gw["stat_totals"]["rxnb"] == 3


async def test_bad_rxpk_is_counted_and_never_loses_its_siblings(harness: Harness) -> None:
    fwd = await harness.forwarder()
    fwd.send(
        frames.encode_push_data(1, EUI, [rxpk(size=99), rxpk(), rxpk(data=b"") | {"data": "!!"}])
    )
    assert (await fwd.recv()).identifier == frames.PUSH_ACK
    await settle(lambda: harness.server.health()["rxpk_bad"] != {})
    health = harness.server.health()
    assert len(harness.uplinks) == 1
    assert health["rxpk_bad"]["size_mismatch"] == 1 and sum(health["rxpk_bad"].values()) == 2


async def test_pull_data_is_acked_and_the_downlink_path_remembered(harness: Harness) -> None:
    fwd = await harness.forwarder()
    fwd.send(frames.encode_pull_data(0x1234, EUI))
    ack = await fwd.recv()
    assert ack.identifier == frames.PULL_ACK and ack.token == 0x1234
    assert fwd.transport is not None
    local = fwd.transport.get_extra_info("sockname")
    gw = harness.server.health()["gateways"]["b827ebfffe000001"]
    assert gw["downlink_addr"] == f"{local[0]}:{local[1]}"


async def answer_downlinks(
    fwd: Forwarder, error: str | None = "NONE", eui: int = EUI
) -> list[frames.GwmpPacket]:
    """Play the forwarder: TX_ACK every PULL_RESP with ``error`` (None: stay silent)."""
    got: list[frames.GwmpPacket] = []
    while True:
        pkt = await fwd.recv(wait=5)
        if pkt.identifier != frames.PULL_RESP:
            continue
        got.append(pkt)
        if error is not None:
            fwd.send(frames.encode_tx_ack(pkt.token, eui, {"error": error}))


TXPK = {
    "imme": False,
    "tmst": 3513348611,
    "freq": 868.5,
    "rfch": 0,
    "powe": 14,
    "modu": "LORA",
    "datr": "SF7BW125",
    "codr": "4/5",
    "ipol": True,
    "size": 17,
    "data": base64.b64encode(bytes(17)).decode(),
}


async def test_downlink_goes_to_the_forwarder_and_its_tx_ack_comes_back(harness: Harness) -> None:
    fwd = await harness.forwarder()
    other = await harness.forwarder()
    other.send(frames.encode_pull_data(1, OTHER_EUI))
    fwd.send(frames.encode_pull_data(2, EUI))
    await other.recv()
    await fwd.recv()
    player = asyncio.create_task(answer_downlinks(fwd))
    try:
        first = await harness.server.send_downlink(EUI, TXPK)
        second = await harness.server.send_downlink(
            EUI, TXPK | {"freq": 869.525, "datr": "SF9BW125"}
        )
    finally:
        player.cancel()
    assert first["error"] == "NONE" and second["error"] == "NONE"
    await other.nothing(0.05)  # the other gateway got nothing
    assert [eui for eui, _ in harness.observed] == [EUI, EUI]
    assert harness.observed[1][1]["freq"] == 869.525
    health = harness.server.health()["downlinks"]
    assert health["sent"] == 2 and health["acked"] == {"NONE": 2} and health["pending"] == 0


async def test_pull_resp_carries_the_txpk_and_a_fresh_token(harness: Harness) -> None:
    fwd = await harness.forwarder()
    fwd.send(frames.encode_pull_data(2, EUI))
    await fwd.recv()
    tokens = []
    for _ in range(3):
        task = asyncio.create_task(harness.server.send_downlink(EUI, TXPK))
        pkt = await fwd.recv()
        assert pkt.identifier == frames.PULL_RESP and pkt.body == {"txpk": TXPK}
        tokens.append(pkt.token)
        fwd.send(frames.encode_tx_ack(pkt.token, EUI, {"error": "TOO_LATE"}))
        assert (await task)["error"] == "TOO_LATE"
    assert len(set(tokens)) == 3
    assert harness.server.health()["downlinks"]["acked"] == {"TOO_LATE": 3}


async def test_a_tx_ack_with_the_wrong_token_does_not_answer_the_caller(harness: Harness) -> None:
    fwd = await harness.forwarder()
    fwd.send(frames.encode_pull_data(2, EUI))
    await fwd.recv()
    task = asyncio.create_task(harness.server.send_downlink(EUI, TXPK, timeout=0.3))
    pkt = await fwd.recv()
    fwd.send(frames.encode_tx_ack((pkt.token + 1) & 0xFFFF, EUI, {"error": "NONE"}))
    result = await task
    assert result["error"] == "TIMEOUT" and "no TX_ACK" in result["detail"]
    assert harness.server.health()["dropped"] == {"stale_tx_ack": 1}


async def test_downlink_to_a_gateway_never_heard_is_refused() -> None:
    h = Harness()
    await h.server.start()
    try:
        result = await h.server.send_downlink(EUI, TXPK)
        assert result["error"] == "UNKNOWN_GATEWAY" and "b827ebfffe000001" in result["detail"]
    finally:
        h.close()


async def test_duty_cycle_refusal_answers_with_an_error_and_sends_nothing() -> None:
    now = [0.0]
    limiter = GatewayDutyCycles(EU868_BANDS, clock=lambda: now[0])
    h = Harness(duty_cycle=limiter)
    await h.server.start()
    try:
        fwd = await h.forwarder()
        fwd.send(frames.encode_pull_data(2, EUI))
        await fwd.recv()
        player = asyncio.create_task(answer_downlinks(fwd))
        # SF12 51 bytes = 2.466 s; the 868.0-868.6 MHz band allows 36 s an hour.
        big = TXPK | {"datr": "SF12BW125", "size": 51, "data": base64.b64encode(bytes(51)).decode()}
        results = [await h.server.send_downlink(EUI, big) for _ in range(15)]
        player.cancel()
        assert [r["error"] for r in results] == ["NONE"] * 14 + ["DUTY_CYCLE_OVERFLOW"]
        assert "868.000-868.600" in results[-1]["detail"]
        await fwd.nothing(0.1)
        # RX2 (869.525 MHz, 10 %) still has room; a frequency outside the plan never does.
        off_plan = await h.server.send_downlink(EUI, TXPK | {"freq": 868.65})
        assert off_plan["error"] == "TX_FREQ"
        await fwd.nothing(0.05)
        health = h.server.health()["downlinks"]
        assert health["sent"] == 14
        assert health["refused"] == {"DUTY_CYCLE_OVERFLOW": 1, "TX_FREQ": 1}
        assert len(h.observed) == 14
    finally:
        h.close()


async def test_a_refused_tx_ack_gives_the_airtime_back() -> None:
    limiter = GatewayDutyCycles(EU868_BANDS)
    h = Harness(duty_cycle=limiter)
    await h.server.start()
    try:
        fwd = await h.forwarder()
        fwd.send(frames.encode_pull_data(2, EUI))
        await fwd.recv()
        player = asyncio.create_task(answer_downlinks(fwd, error="TOO_LATE"))
        assert (await h.server.send_downlink(EUI, TXPK))["error"] == "TOO_LATE"
        player.cancel()
        assert all(band["used_s"] == 0 for band in limiter.usage()[f"{EUI:016x}"])
    finally:
        h.close()


async def test_duty_cycle_is_per_gateway() -> None:
    """Each radio has its own hour: gateway A using up its sub-band leaves gateway B's alone."""
    h = Harness(duty_cycle=GatewayDutyCycles(EU868_BANDS))
    await h.server.start()
    try:
        a, b = await h.forwarder(), await h.forwarder()
        a.send(frames.encode_pull_data(1, EUI))
        b.send(frames.encode_pull_data(2, OTHER_EUI))
        await a.recv()
        await b.recv()
        players = [
            asyncio.create_task(answer_downlinks(a, eui=EUI)),
            asyncio.create_task(answer_downlinks(b, eui=OTHER_EUI)),
        ]
        # SF12 51 bytes = 2.466 s; the 868.0-868.6 MHz band allows 36 s an hour: 14 fit.
        big = TXPK | {"datr": "SF12BW125", "size": 51, "data": base64.b64encode(bytes(51)).decode()}
        to_a = [await h.server.send_downlink(EUI, big) for _ in range(14)]
        assert [r["error"] for r in to_a] == ["NONE"] * 14
        to_b = await h.server.send_downlink(OTHER_EUI, big)
        assert to_b["error"] == "NONE", to_b
        refused = await h.server.send_downlink(EUI, big)
        for p in players:
            p.cancel()
        assert refused["error"] == "DUTY_CYCLE_OVERFLOW"
        assert "b827ebfffe000001" in refused["detail"]
        usage = h.server.health()["duty_cycle"]
        used = {eui: round(bands[2]["used_s"], 3) for eui, bands in usage.items()}
        assert used == {f"{EUI:016x}": round(14 * 2.465792, 3), f"{OTHER_EUI:016x}": 2.466}
        assert [o[0] for o in h.observed] == [EUI] * 14 + [OTHER_EUI]
    finally:
        h.close()


async def test_malformed_datagrams_are_counted_by_kind_and_the_socket_keeps_serving(
    harness: Harness,
) -> None:
    fwd = await harness.forwarder()
    garbage = [
        b"",
        b"\x02\x01",
        b"\x07\x00\x00\x00" + bytes(8) + b"{}",  # unknown version
        b"\x02\x00\x00\x09",  # unknown identifier
        b"\x02\x00\x00\x00" + EUI.to_bytes(8, "big") + b"{not json",
        b"\x02\x00\x00\x00" + EUI.to_bytes(8, "big"),  # PUSH_DATA without body
        b"\x02\x00\x00\x02\x01\x02",  # PULL_DATA with a cut EUI
        bytes(range(256)) * 4,
    ]
    for g in garbage[1:]:
        fwd.send(g)
    # asyncio silently skips empty datagrams; a plain socket sends one.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(garbage[0], harness.server.bound_address)
    fwd.send(frames.encode_push_data(7, EUI, [rxpk()]))
    ack = await fwd.recv()
    assert ack.token == 7
    await fwd.nothing(0.1)  # nothing acked the garbage
    health = harness.server.health()
    assert health["datagrams"] == len(garbage) + 1
    assert sum(health["malformed"].values()) == len(garbage)
    assert {"too_short", "bad_version", "unknown_identifier", "bad_json", "missing_body"} <= set(
        health["malformed"]
    )
    assert health["outcomes"] == {"malformed": len(garbage), "acked": 1}
    assert len(harness.uplinks) == 1


async def test_a_consumer_that_raises_does_not_stop_the_socket() -> None:
    def broken(record: Record) -> None:
        raise RuntimeError("buffer full")

    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=broken)
    await server.start()
    loop = asyncio.get_running_loop()
    transport, fwd = await loop.create_datagram_endpoint(
        Forwarder, remote_addr=server.bound_address
    )
    try:
        for token in (1, 2):
            fwd.send(frames.encode_push_data(token, EUI, [rxpk()]))
            assert (await fwd.recv()).token == token
        assert server.health()["callback_errors"] == 2
    finally:
        transport.close()
        server.close()


async def test_allow_lists_drop_strangers_without_answering() -> None:
    h = Harness(allowed_euis={EUI})
    await h.server.start()
    try:
        fwd = await h.forwarder()
        fwd.send(frames.encode_push_data(1, OTHER_EUI, [rxpk()]))
        fwd.send(frames.encode_pull_data(2, OTHER_EUI))
        await fwd.nothing(0.1)
        fwd.send(frames.encode_push_data(3, EUI, [rxpk()]))
        assert (await fwd.recv()).token == 3
        health = h.server.health()
        assert health["dropped"] == {"unknown_eui": 2}
        assert list(health["gateways"]) == ["b827ebfffe000001"]
        assert len(h.uplinks) == 1
    finally:
        h.close()

    h = Harness(allowed_hosts={"192.0.2.1"})
    await h.server.start()
    try:
        fwd = await h.forwarder()
        fwd.send(frames.encode_push_data(1, EUI, [rxpk()]))
        await fwd.nothing(0.1)
        assert h.server.health()["dropped"] == {"unknown_host": 1}
        assert h.uplinks == []
    finally:
        h.close()


async def test_start_reports_a_busy_port_with_its_address() -> None:
    # the config key is added once, by the command line, which knows which source this is
    first = GwmpServer(bind=("127.0.0.1", 0), on_uplink=lambda r: None)
    await first.start()
    try:
        second = GwmpServer(bind=first.bound_address, on_uplink=lambda r: None)
        host, port = first.bound_address
        with pytest.raises(OSError, match=rf"UDP {host}:{port}: address already in use"):
            await second.start()
    finally:
        first.close()


async def test_receive_buffer_is_enlarged() -> None:
    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=lambda r: None, rcvbuf=1 << 20)
    await server.start()
    try:
        # Linux doubles the request and caps it at rmem_max; the default is ~208 KiB.
        assert server.health()["rcvbuf"] >= 212992
    finally:
        server.close()


def _load_pool() -> list[bytes]:
    pool: list[bytes] = []
    for i in range(1000):
        if i % 100 == 7:
            pool.append(b"\x02\x00\x00\x00" + EUI.to_bytes(8, "big") + b'{"rxpk":[{"data":')
        elif i % 50 == 3:
            pool.append(frames.encode_pull_data(i, EUI))
        else:
            pool.append(frames.encode_push_data(i, EUI + i % 4, [rxpk(rssi=-60 - i % 50)]))
    return pool


def _kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped for our UDP socket (last column of /proc/net/udp)."""
    total = 0
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                total += int(cols[-1])
    return total


async def _blast(
    addr: tuple[str, int], pool: list[bytes], rate: float, seconds: float, tmp: Path
) -> tuple[int, int]:
    """Send ``pool`` round-robin at ``rate`` datagrams/s from another process; count acks."""
    pool_file = tmp / "pool.bin"
    udp_blaster.write_pool(str(pool_file), pool)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.udp_blaster", addr[0], str(addr[1]), str(rate),
        str(seconds), str(pool_file), stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    result = json.loads(out)
    return int(result["sent"]), int(result["acks"])


async def _load(seconds: float, tmp: Path, rate: float = 5000.0) -> None:
    uplinks = 0

    def count(record: Record) -> None:
        # Counted, not kept: 300 000 records held in a list would make the test's own garbage
        # collector pause the loop, which a daemon (records go to the buffer) never does.
        nonlocal uplinks
        uplinks += 1

    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=count)
    await server.start()
    try:
        sent, acks = await _blast(server.bound_address, _load_pool(), rate, seconds, tmp)
        port = server.bound_address[1]
        with contextlib.suppress(AssertionError):
            await settle(lambda: server.health()["datagrams"] + _kernel_drops(port) >= sent,
                         wait=30.0)
        health = server.health()
        outcomes = health["outcomes"]
        assert sent >= rate * seconds * 0.95
        # Every datagram accounted for: received by the server and then acked or counted as
        # malformed. The kernel's drop counter for the socket is read too, so that a failure
        # says where datagrams went; none may be lost there either.
        dropped = _kernel_drops(port)
        assert health["datagrams"] + dropped == sent, (health["datagrams"], dropped, sent)
        assert dropped == 0, f"{dropped} of {sent} dropped by the kernel (rcvbuf {health['rcvbuf']})"
        assert outcomes["acked"] + outcomes["malformed"] == sent
        assert health["malformed"] == {"bad_json": outcomes["malformed"]}
        assert acks == outcomes["acked"]
        assert health["rxpk"] == uplinks
        pulls = sum(1 for i in range(sent) if i % 50 == 3)  # the pool's PULL_DATA slots
        assert health["rxpk"] == sent - outcomes["malformed"] - pulls
    finally:
        await server.stop()


async def test_load_5000_datagrams_per_second_for_3_seconds_all_accounted_for(
    tmp_path: Path,
) -> None:
    await _load(3.0, tmp_path)


@pytest.mark.slow
async def test_load_5000_datagrams_per_second_for_60_seconds_all_accounted_for(
    tmp_path: Path,
) -> None:
    await _load(60.0, tmp_path)


def _nested(depth: int) -> Any:
    obj: Any = 1
    for _ in range(depth):
        obj = {"n": obj}
    return obj


async def test_hostile_objects_are_refused_at_the_door_and_the_rest_goes_on(
        harness: Harness) -> None:
    """A stat nested 300 deep, 30 KB strings, a 300-byte "frame": refused and counted; the
    good rxpk of the same datagrams still become records, every record encodable by orjson."""
    import orjson

    fwd = await harness.forwarder()
    # built with the stdlib's encoder: orjson itself refuses 300 levels, as a backend would
    body = json.dumps({"rxpk": [rxpk()], "stat": {"rxnb": 1, "deep": _nested(300)}})
    fwd.send(bytes((2, 0, 1, 0)) + EUI.to_bytes(8, "big") + body.encode())
    fwd.send(frames.encode_push_data(2, EUI, [rxpk(), rxpk(note="x" * 30_000)],
                                     {"rxnb": 1, "desc": "y" * 30_000}))
    fwd.send(frames.encode_push_data(3, EUI, [rxpk(bytes(300)), rxpk()]))
    for token in (0x100, 2, 3):
        assert (await fwd.recv()).token == token  # every datagram still acked
    await settle(lambda: len(harness.uplinks) == 3)
    await asyncio.sleep(0.05)
    assert len(harness.uplinks) == 3 and harness.stats == []
    for rec in harness.uplinks:
        orjson.dumps(rec.decoded())  # what every forwarder must be able to do
    health = harness.server.health()
    assert health["rxpk_bad"] == {"out_of_bounds": 1, "too_large": 1}
    assert health["malformed"]["stat_out_of_bounds"] == 2


async def test_spoofed_gateway_euis_do_not_grow_the_table_without_bound(harness: Harness) -> None:
    from drivers.gwmp_server import MAX_GATEWAYS

    fwd = await harness.forwarder()
    n = MAX_GATEWAYS + 50
    for i in range(n):
        fwd.send(frames.encode_push_data(i & 0xFFFF, 0x0100000000000000 + i, [rxpk()]))
        await fwd.recv()
    health = harness.server.health()
    assert len(health["gateways"]) == MAX_GATEWAYS
    assert health["gateways_not_kept"] == 50
    assert len(json.dumps(health)) < 2_000_000  # the status stays bounded
    await settle(lambda: len(harness.uplinks) == n)  # their frames still go on


async def test_a_datagrams_uplinks_go_to_a_list_consumer_in_one_call_each_before_its_rxpk() -> None:
    """The daemon takes a datagram's records in one call; the edge decoder sees each rxpk after
    every record of its datagram, and a list consumer that raises is counted, not fatal."""
    events: list[tuple[str, Any]] = []
    fail = [False]

    def take(records: list[Record]) -> None:
        if fail[0]:
            raise RuntimeError("buffer full")
        events.append(("records", [r.decoded()["rxpk"]["tmst"] for r in records]))

    def single(record: Record) -> None:
        raise AssertionError("the list consumer is the one called")

    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=single, on_uplinks=take,
                        on_rxpk=lambda f, us, phy: events.append(("rxpk", f["tmst"])))
    await server.start()
    loop = asyncio.get_running_loop()
    transport, fwd = await loop.create_datagram_endpoint(Forwarder, remote_addr=server.bound_address)
    try:
        bad = rxpk(tmst=9, freq=20_000.0)  # refused at the door, not in the list
        fwd.send(frames.encode_push_data(1, EUI, [rxpk(tmst=1), bad, rxpk(tmst=2), rxpk(tmst=3)]))
        assert (await fwd.recv()).token == 1
        assert events == [("records", [1, 2, 3]), ("rxpk", 1), ("rxpk", 2), ("rxpk", 3)]
        fail[0] = True
        fwd.send(frames.encode_push_data(2, EUI, [rxpk(tmst=4)]))
        assert (await fwd.recv()).token == 2
        health = server.health()
        assert health["callback_errors"] == 1 and health["rxpk"] == 4
        assert events[-1] == ("rxpk", 4), "the edge decoder still sees a frame whose record failed"
    finally:
        transport.close()
        server.close()


async def test_a_datagram_up_to_the_bound_is_read_whole_and_one_beyond_is_counted_too_large() -> None:
    """The socket reads at most one byte past the bound (not asyncio's 256 KiB per datagram):
    a datagram at the bound still arrives whole, a larger one is told apart and counted."""
    uplinks: list[Record] = []
    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=uplinks.append, max_datagram=2000)
    await server.start()
    loop = asyncio.get_running_loop()
    transport, fwd = await loop.create_datagram_endpoint(Forwarder, remote_addr=server.bound_address)
    try:
        many = [rxpk(tmst=i) for i in range(8)]
        while len(frames.encode_push_data(1, EUI, many)) > 2000:
            many.pop()
        fitting = frames.encode_push_data(1, EUI, many)
        fitting_rx = len(many)
        while len(fitting) < 2000:  # pad with JSON whitespace up to the bound exactly
            fitting = fitting[:-1] + b" " * (2000 - len(fitting)) + fitting[-1:]
        assert len(fitting) == 2000
        fwd.send(fitting)
        assert (await fwd.recv()).token == 1
        too_big = frames.encode_push_data(2, EUI, [rxpk(tmst=99)] * 16)
        assert len(too_big) > 2000
        fwd.send(too_big)
        fwd.send(frames.encode_push_data(3, EUI, [rxpk(tmst=100)]))
        assert (await fwd.recv()).token == 3, "the oversized one got no PUSH_ACK"
        health = server.health()
        assert health["malformed"] == {"too_large": 1}
        assert [r.decoded()["rxpk"]["tmst"] for r in uplinks] == [*range(fitting_rx), 100]
    finally:
        transport.close()
        server.close()


async def _burst(fwd: Forwarder, tokens: range, pause_every: int = 10) -> None:
    """Datagrams as fast as a busy forwarder sends them (~5 000 a second)."""
    for token in tokens:
        fwd.send(frames.encode_push_data(token, EUI, [rxpk(tmst=token)]))
        if token % pause_every == 0:
            await asyncio.sleep(0.002)


async def test_dense_traffic_is_read_on_ticks_and_nothing_is_lost_or_reordered() -> None:
    h = Harness()
    await h.server.start()
    try:
        fwd = await h.forwarder()
        await _burst(fwd, range(1, 301))
        acks = [await fwd.recv() for _ in range(300)]
        assert sorted(a.token for a in acks) == list(range(1, 301))  # every one acked once
        await settle(lambda: len(h.uplinks) == 300)
        assert [r.decoded()["rxpk"]["tmst"] for r in h.uplinks] == list(range(1, 301))
        reading = h.server.health()["reading"]
        assert reading["ticks"] > 0 and reading["tick_ms"] == 20.0
        # the traffic stopped: the next tick finds nothing and reading per datagram resumes
        await settle(lambda: h.server.health()["reading"]["mode"] == "per_datagram", wait=1.0)
        ticks = h.server.health()["reading"]["ticks"]
        for token in range(1000, 1005):  # sparse again: each is read and acked as it comes
            fwd.send(frames.encode_push_data(token, EUI, [rxpk()]))
            assert (await fwd.recv()).token == token
            await asyncio.sleep(0.03)
        assert h.server.health()["reading"] == {"mode": "per_datagram", "ticks": ticks, "tick_ms": 20.0}
    finally:
        h.close()


async def test_on_ticks_every_push_ack_still_comes_inside_the_forwarders_timeout() -> None:
    h = Harness()
    await h.server.start()
    try:
        fwd = await h.forwarder()
        loop = asyncio.get_running_loop()
        sent: dict[int, float] = {}
        delays: list[float] = []

        async def read_acks() -> None:
            while len(delays) < 200:
                pkt = await fwd.recv()
                delays.append(loop.time() - sent[pkt.token])

        reader = asyncio.create_task(read_acks())
        for token in range(1, 201):  # 500 a second for 0.4 s: read on ticks
            sent[token] = loop.time()
            fwd.send(frames.encode_push_data(token, EUI, [rxpk()]))
            await asyncio.sleep(0.002)
        await asyncio.wait_for(reader, 5.0)
        assert h.server.health()["reading"]["ticks"] > 5
        # lora_pkt_fwd waits 100 ms for a PUSH_ACK (push_timeout_ms) before it counts it lost:
        # a 20 ms tick stays well inside that, with room for a loaded machine
        assert max(delays) < 0.1, sorted(delays)[-5:]
    finally:
        h.close()


async def test_reading_on_ticks_can_be_turned_off() -> None:
    h = Harness(poll_tick=0)
    await h.server.start()
    try:
        fwd = await h.forwarder()
        await _burst(fwd, range(1, 201))
        acks = [await fwd.recv() for _ in range(200)]
        assert len(acks) == 200
        assert h.server.health()["reading"] == {"mode": "per_datagram", "ticks": 0, "tick_ms": 0}
    finally:
        h.close()


async def test_closing_while_reading_on_ticks_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    await h.server.start()
    fwd = await h.forwarder()
    await _burst(fwd, range(1, 101))
    assert h.server.health()["reading"]["mode"] == "on_ticks"
    h.close()
    await asyncio.sleep(0.05)  # past the tick that was due: cancelled, nothing read or raised
    await h.server.wait_closed()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize(("line", "tick_ms"), [("", 20.0), ('read_tick = "0s"\n', 0), ('read_tick = "5ms"\n', 5.0)])
def test_the_daemon_reads_on_the_configured_tick(tmp_path: Path, line: str, tick_ms: float) -> None:
    from gateway.config import load_config_text
    from gateway.pipeline import Gateway

    gw = Gateway(load_config_text(f'[gateway]\neui = "b827ebfffe000001"\ndata_dir = "{tmp_path}"\n'
                                  f'[[sources.gwmp]]\nbind = "127.0.0.1:0"\n{line}'))
    [source] = gw.sources
    assert isinstance(source, GwmpServer)
    assert source.health()["reading"] == {"mode": "per_datagram", "ticks": 0, "tick_ms": tick_ms}


async def test_a_socket_error_during_a_tick_does_not_stop_reading() -> None:
    h = Harness()
    await h.server.start()
    try:
        fwd = await h.forwarder()
        await _burst(fwd, range(1, 51))
        assert h.server.health()["reading"]["mode"] == "on_ticks"
        real = h.server._sock
        assert real is not None

        class Failing:
            """The socket as a tick sees it, failing its next read once (an ICMP error)."""

            def __init__(self) -> None:
                self.failed = False

            def recvfrom(self, n: int) -> tuple[bytes, Any]:
                if not self.failed:
                    self.failed = True
                    raise ConnectionRefusedError(111, "Connection refused")
                assert real is not None
                return real.recvfrom(n)

        h.server._sock = cast(socket.socket, Failing())
        await _burst(fwd, range(51, 101))
        tokens = {(await fwd.recv()).token for _ in range(100)}
        assert tokens == set(range(1, 101))
        assert h.server.health()["socket_errors"] == 1
    finally:
        h.close()
