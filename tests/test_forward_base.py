"""The delivery loop against a fake backend that fails on command: outages, filters, backoff."""

from __future__ import annotations

import asyncio
import base64
import random
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.config import parse_prefix
from gateway.forward.base import (
    Broken,
    DeliveryLoop,
    Forwarder,
    ForwarderError,
    SendResult,
    dev_addr_of,
    net_id_matches,
)
from gateway.records import Record, make_record


class FakeBackend(Forwarder):
    """Accepts batches into ``got`` unless ``down``; ``refuse`` names ids it will not ack."""

    def __init__(self, name: str = "fake", **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.down = False
        self.got: list[int] = []
        self.batches: list[int] = []
        self.refuse: set[int] = set()
        self.connects = 0

    async def connect(self) -> None:
        if self.down:
            raise ForwarderError("refused", "connection refused by fake backend")
        self.connects += 1

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        await asyncio.sleep(0)
        if self.down:
            raise ForwarderError("timeout", "fake backend timed out")
        self.batches.append(len(records))
        acked = set()
        for seq, r in records:
            i = r.decoded()["i"]
            if i in self.refuse:
                self.refuse.discard(i)  # refused once, taken on the retry
                continue
            self.got.append(i)
            acked.add(seq)
        return SendResult(frozenset(acked))

    async def close(self) -> None:
        pass


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def _uplink(i: int, phy: bytes) -> Record:
    return make_record("uplink", "t", {"i": i, "gateway_eui": "0102030405060708",
                                        "rxpk": {"data": base64.b64encode(phy).decode()}})


def _streams(seq: list[int]) -> int:
    """How many ascending streams the delivery order interleaves (greedy is optimal here)."""
    tails: list[int] = []
    for x in seq:
        fits = [k for k, t in enumerate(tails) if t < x]
        if fits:
            best = max(fits, key=lambda k: tails[k])
            tails[best] = x
        else:
            tails.append(x)
    return len(tails)


def _buf(tmp_path: Path) -> Buffer:
    b = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 30)
    b.open()
    return b


async def _until(cond: object, limit: float = 10.0) -> None:
    # Polling is fine here: the conditions are observations of the loop under test.
    async with asyncio.timeout(limit):
        while not cond():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def test_outage_of_ten_minutes_at_100_per_second_then_recovery(tmp_path: Path) -> None:
    """Time compressed: 60 000 records (10 min at 100/s) while the backend is down."""
    b = _buf(tmp_path)
    fwd = FakeBackend()
    loop = DeliveryLoop(b, fwd, max_batch=500, backoff_base=0.01, backoff_cap=1.0,
                        rng=random.Random(1), sleep=_no_sleep)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    for i in range(100):
        b.append(make_record("parking", "t", {"i": i}))
    await _until(lambda: len(fwd.got) == 100)
    fwd.down = True
    for i in range(100, 60_100):
        b.append(make_record("parking", "t", {"i": i}))
        if i % 1000 == 0:
            b.commit()
            await asyncio.sleep(0)
    b.commit()
    await asyncio.sleep(0.05)
    assert loop.health()["connected"] is False
    assert loop.health()["lag_records"] == 60_000
    assert loop.errors.get("refused", 0) + loop.errors.get("timeout", 0) > 0
    fwd.down = False
    live_from = 60_100
    for i in range(live_from, live_from + 300):  # live traffic continues during the drain
        b.append(make_record("parking", "t", {"i": i}))
        await asyncio.sleep(0)
    await _until(lambda: len(set(fwd.got)) == 60_400)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(set(fwd.got)) == list(range(60_400))
    assert len(fwd.got) == 60_400, "duplicates without a failure"
    live = [i for i in fwd.got if i >= live_from]
    assert live == sorted(live)
    # Newest-first share plus oldest-first backlog: two ascending streams, never a third.
    assert _streams(fwd.got) == 2
    assert all(n <= 500 for n in fwd.batches)
    # The first live record went out before the backlog had drained.
    assert fwd.got.index(live_from) < fwd.got.index(30_000)
    h = loop.health()
    assert h["acked"] == 60_400 and h["lag_records"] == 0
    b.close()


async def test_strict_order_through_an_outage_delivers_in_sequence(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    fwd = FakeBackend()
    loop = DeliveryLoop(b, fwd, max_batch=500, backoff_base=0.01, rng=random.Random(1), sleep=_no_sleep)
    b.register("fake", live_first=False)
    task = asyncio.create_task(loop.run())
    for i in range(100):
        b.append(make_record("parking", "t", {"i": i}))
    await _until(lambda: len(fwd.got) == 100)
    fwd.down = True
    for i in range(100, 20_100):
        b.append(make_record("parking", "t", {"i": i}))
        if i % 1000 == 0:
            b.commit()
            await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    fwd.down = False
    for i in range(20_100, 20_400):  # live traffic during the drain queues behind the backlog
        b.append(make_record("parking", "t", {"i": i}))
        await asyncio.sleep(0)
    await _until(lambda: len(fwd.got) == 20_400)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fwd.got == list(range(20_400))
    assert all(n <= 500 for n in fwd.batches)
    b.close()


async def test_refused_records_are_retried_and_the_rest_acked(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    fwd = FakeBackend()
    fwd.refuse = {3}
    loop = DeliveryLoop(b, fwd, rng=random.Random(1), sleep=_no_sleep)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    for i in range(6):
        b.append(make_record("event", "t", {"i": i}))
    await _until(lambda: len(fwd.got) == 6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(fwd.got) == list(range(6)) and fwd.got.count(3) == 1
    assert loop.errors == {"partial": 1}
    b.close()


async def test_filtered_records_are_acked_without_sending(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    ours = bytes([0x40]) + (0x26011234).to_bytes(4, "little") + b"\x00\x01\x00" + b"\x00" * 4
    foreign = bytes([0x40]) + (0x48000001).to_bytes(4, "little") + b"\x00\x01\x00" + b"\x00" * 4
    join = bytes([0x00]) + b"\x00" * 22
    fwd = FakeBackend(kinds={"uplink"}, dev_addr_prefixes=[parse_prefix("26010000/16")])
    loop = DeliveryLoop(b, fwd, rng=random.Random(1), sleep=_no_sleep)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    b.append(_uplink(0, ours))
    b.append(_uplink(1, foreign))
    b.append(make_record("stats", "t", {"i": 2}))
    b.append(_uplink(3, join))
    await _until(lambda: loop.health()["lag_records"] == 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fwd.got == [0, 3]
    assert loop.filtered == 2
    b.close()


def test_dev_addr_and_net_id_helpers() -> None:
    phy = bytes([0x40]) + (0x26011234).to_bytes(4, "little") + b"\x00" * 7
    assert dev_addr_of(_uplink(0, phy)) == 0x26011234
    assert dev_addr_of(make_record("parking", "t", {})) is None
    # TTN's NetID 0x000013 (type 0, NwkID 0x13) owns DevAddrs 0x26000000/7.
    assert net_id_matches(0x26011234, 0x000013)
    assert not net_id_matches(0x48000001, 0x000013)


async def test_backoff_has_full_jitter_and_a_cap(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    fwd = FakeBackend()
    fwd.down = True
    delays: list[float] = []

    async def record_sleep(d: float) -> None:
        delays.append(d)
        if len(delays) >= 400:
            fwd.down = False
        await asyncio.sleep(0)

    loop = DeliveryLoop(b, fwd, backoff_base=1.0, backoff_cap=30.0, rng=random.Random(3), sleep=record_sleep)
    task = asyncio.create_task(loop.run())
    await _until(lambda: loop.connected)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays[0] <= 1.0 and delays[1] <= 2.0 and delays[2] <= 4.0
    capped = delays[10:]
    assert max(capped) <= 30.0
    assert min(capped) < 3.0 and max(capped) > 27.0  # spread over the whole window, not clustered
    assert loop.health()["errors"] == {"refused": 400}
    b.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_real_time_outage_of_two_minutes_at_100_per_second(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    fwd = FakeBackend()
    loop = DeliveryLoop(b, fwd, max_batch=500, backoff_base=0.5, backoff_cap=5.0, rng=random.Random(7))
    b.register("fake")
    committer = asyncio.create_task(b.run())
    task = asyncio.create_task(loop.run())
    n = 0

    async def produce(seconds: float) -> None:
        nonlocal n
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            for _ in range(10):
                b.append(make_record("parking", "t", {"i": n}))
                n += 1
            await asyncio.sleep(0.1)

    await produce(5)
    fwd.down = True
    await produce(120)
    outage_end = n
    fwd.down = False
    await produce(15)
    await _until(lambda: len(set(fwd.got)) == n, limit=60)
    for t in (task, committer):
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
    assert sorted(set(fwd.got)) == list(range(n)) and n >= 13_000
    assert _streams(fwd.got) <= 2
    assert b.stats()["records"] <= n - outage_end + 2048  # drained rows are deleted in chunks
    b.close()


class BreakableBackend(FakeBackend):
    """A backend with a long-lived connection that can die while idle, and its own health."""

    async def connect(self) -> None:
        await super().connect()
        self.broken = Broken()

    def health(self) -> dict[str, object]:
        return {"put_aside": 3, "connects": self.connects}


async def test_connection_lost_while_idle_is_reconnected_without_traffic(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    fwd = BreakableBackend()
    loop = DeliveryLoop(b, fwd, rng=random.Random(1), sleep=_no_sleep)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    await _until(lambda: loop.connected)
    await asyncio.sleep(0.01)  # idle: waiting for records that do not come
    assert fwd.broken is not None
    fwd.broken.set()
    await _until(lambda: fwd.connects == 2)
    assert loop.errors == {"connection_lost": 1} and loop.connected
    b.append(make_record("event", "t", {"i": 0}))
    await _until(lambda: fwd.got == [0])  # the new connection delivers
    # Per-forwarder details reach /api/status through the loop's health.
    assert loop.health()["backend"] == {"put_aside": 3, "connects": 2}
    assert "backend" not in DeliveryLoop(b, FakeBackend("other")).health()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    b.close()


async def test_stopping_while_a_record_arrives_loses_nothing(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    fwd = BreakableBackend()
    loop = DeliveryLoop(b, fwd, rng=random.Random(1), sleep=_no_sleep)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    await _until(lambda: loop.connected)
    await asyncio.sleep(0.01)
    b.append(make_record("event", "t", {"i": 5}))  # wakes the waiting batch, which claims it...
    task.cancel()  # ...in the same turn as the shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fwd.got == []
    batch = b.take("fake", 10, 1 << 20)
    assert batch is not None and [r.decoded()["i"] for _, r in batch.records] == [5]
    b.close()


async def test_live_traffic_is_coalesced_and_a_lone_record_goes_at_once(tmp_path: Path) -> None:
    """A forwarder with ``coalesce`` sends what arrived during the pause in one batch (the
    daemon's CPU at 2 000 frames/s halved with it), yet a record after a quiet spell waits for
    nothing, and a backlog is never held back."""
    b = _buf(tmp_path)
    fwd = FakeBackend()
    fwd.coalesce = 0.2
    loop = DeliveryLoop(b, fwd, rng=random.Random(1), sleep=_no_sleep, max_batch=20)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    t0 = asyncio.get_running_loop().time()
    for i in range(40):  # ~1 000 records/s for 40 ms: live traffic
        b.append(make_record("event", "t", {"i": i}))
        await asyncio.sleep(0.001)
    await _until(lambda: len(fwd.got) == 40)
    assert sorted(fwd.got) == list(range(40))  # order across memory and store: see _streams
    # not one send per record: the pause grows with the batches (a lone record waits 1/32 of
    # it), e.g. [1, 5, 20, 8, 6] with max_batch 20
    assert len(fwd.batches) <= 6, fwd.batches
    await asyncio.sleep(0.25)  # quiet for longer than coalesce
    sent = len(fwd.batches)
    t1 = asyncio.get_running_loop().time()
    b.append(make_record("event", "t", {"i": 40}))
    await _until(lambda: len(fwd.got) == 41)
    assert asyncio.get_running_loop().time() - t1 < 0.1 and len(fwd.batches) == sent + 1
    for i in range(41, 141):  # a backlog at once: full batches back to back, no pause each
        b.append(make_record("event", "t", {"i": i}))
    t2 = asyncio.get_running_loop().time()
    await _until(lambda: len(fwd.got) == 141)
    assert asyncio.get_running_loop().time() - t2 < 0.4, "full batches waited for coalesce"
    assert t0 < t2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    b.close()


async def test_sparse_live_traffic_is_not_held_for_the_whole_coalesce_pause(tmp_path: Path) -> None:
    """A record every 30 ms makes batches of one: each waits at most 1/32 of the pause
    (6 ms of 200 ms here), so a quiet gateway's frames are not delayed to save CPU it has."""
    b = _buf(tmp_path)
    fwd = FakeBackend()
    fwd.coalesce = 0.2
    loop = DeliveryLoop(b, fwd, rng=random.Random(1), sleep=_no_sleep, max_batch=20)
    b.register("fake")
    task = asyncio.create_task(loop.run())
    clock = asyncio.get_running_loop().time
    delays = []
    for i in range(10):
        t = clock()
        b.append(make_record("event", "t", {"i": i}))
        await _until(lambda i=i: len(fwd.got) == i + 1)
        delays.append(clock() - t)
        await asyncio.sleep(0.03)
    assert max(delays) < 0.1, delays  # the whole pause would be up to 0.2 s
    assert len(fwd.batches) == 10
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    b.close()
