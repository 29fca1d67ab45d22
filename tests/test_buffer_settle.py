"""A commit waits a moment for records in flight at healthy forwarders, never for an outage.

Records every backend acknowledged before their commit are not written to flash. At a steady
rate some are always in flight when the commit comes; the commit gives those a few
milliseconds (``settle_max``), woken by each acknowledgement, so they are not written either.
A forwarder that is disconnected would make the commit write anyway: then it does not wait.
Timing bounds are generous (a shared machine): a delayed commit would take seconds longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.buffer.store import Store
from gateway.forward.base import DeliveryLoop, Forwarder, ForwarderError, SendResult
from gateway.records import Record, make_record


class Backend(Forwarder):
    """Acks every batch after ``rtt`` seconds; holds sends while ``gate`` is clear; ``down``
    refuses connections."""

    def __init__(self, name: str, rtt: float = 0.0, down: bool = False) -> None:
        super().__init__(name)
        self.rtt = rtt
        self.down = down
        self.gate = asyncio.Event()
        self.gate.set()
        self.got: list[int] = []

    async def connect(self) -> None:
        if self.down:
            raise ForwarderError("refused", "connection refused")

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        await asyncio.sleep(self.rtt)
        await self.gate.wait()
        self.got.extend(r.decoded()["i"] for _, r in records)
        return SendResult.all()

    async def close(self) -> None:
        pass


def _rec(i: int) -> Record:
    return make_record("uplink", "test", {"i": i, "pad": "x" * 80})


@pytest.fixture
def inserted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Sequence numbers of every record row written to a store."""
    rows: list[int] = []
    insert = Store.insert

    def spy(self: Store, batch: list[tuple[int, Record]]) -> None:
        rows.extend(s for s, _ in batch)
        insert(self, batch)

    monkeypatch.setattr(Store, "insert", spy)
    yield rows


async def _until(cond: object, limit: float) -> float:
    """Seconds until ``cond()`` holds (observing the system under test; raises after limit)."""
    t0 = time.monotonic()
    async with asyncio.timeout(limit):
        while not cond():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.002)
    return time.monotonic() - t0


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def test_records_in_flight_at_a_commit_and_acked_within_the_cap_are_never_written(
        tmp_path: Path, inserted: list[int]) -> None:
    # A record every 5 ms, each acked 10 ms after it is sent: at every commit a record or two
    # is in flight. Three commits; the settle cap (0.2 s) leaves ample room for the 10 ms.
    b = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 30, commit_interval=0.5, settle_max=0.2)
    b.open()
    fwd = Backend("broker", rtt=0.01)
    b.register("broker")
    loop_task = asyncio.create_task(DeliveryLoop(b, fwd).run())
    run_task = asyncio.create_task(b.run())
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.7:
        b.append(_rec(n))
        n += 1
        await asyncio.sleep(0.005)
    await _until(lambda: len(fwd.got) == n, 10)
    assert b.stats()["pending_records"] < n // 2  # the commits did come
    await _stop(run_task, loop_task)
    assert sorted(fwd.got) == list(range(n))
    assert inserted == []  # not one record reached the store
    b.close()


async def test_a_commit_is_woken_by_the_ack_it_waits_for_and_never_waits_for_an_outage(
        tmp_path: Path, inserted: list[int]) -> None:
    # Healthy forwarder, its send held: the commit waits (cap 5 s) and goes the moment the ack
    # comes; the record was acked in time and is never written.
    (tmp_path / "a").mkdir()
    b = Buffer(tmp_path / "a" / "buffer.sqlite3", max_bytes=1 << 30, commit_interval=0.2, settle_max=5.0)
    b.open()
    up = Backend("up")
    b.register("up")
    tasks = [asyncio.create_task(DeliveryLoop(b, up).run()), asyncio.create_task(b.run())]
    b.append(_rec(0))
    await _until(lambda: up.got == [0], 5)  # acknowledged: the forwarder is healthy
    await _until(lambda: b.stats()["pending_records"] == 0, 5)
    up.gate.clear()
    b.append(_rec(1))  # in flight, held
    await asyncio.sleep(1.0)  # several intervals: the commit is waiting for its ack
    assert b.stats()["pending_records"] == 1
    up.gate.set()
    woken = await _until(lambda: b.stats()["pending_records"] == 0, 4.5)
    assert woken < 1.5, f"the commit came {woken:.2f} s after the ack"  # not at the 5 s cap
    assert up.got == [0, 1] and inserted == []
    await _stop(*tasks)
    b.close()

    # The same, with a second forwarder disconnected: what it owes is written anyway, so the
    # commit does not wait for the held send at all (it would wait up to 5 s otherwise).
    (tmp_path / "b").mkdir()
    b = Buffer(tmp_path / "b" / "buffer.sqlite3", max_bytes=1 << 30, commit_interval=0.2, settle_max=5.0)
    b.open()
    up, down = Backend("up"), Backend("down", down=True)
    b.register("up")
    b.register("down")
    tasks = [asyncio.create_task(DeliveryLoop(b, up).run()),
             asyncio.create_task(DeliveryLoop(b, down, backoff_base=0.05, backoff_cap=0.1).run()),
             asyncio.create_task(b.run())]
    b.append(_rec(0))
    await _until(lambda: up.got == [0], 5)
    await _until(lambda: b.stats()["pending_records"] == 0, 5)
    up.gate.clear()
    seq = b.append(_rec(1))
    committed = await _until(lambda: b.stats()["pending_records"] == 0, 4.5)
    assert committed < 1.5, f"commit delayed {committed:.2f} s by an outage"  # interval 0.2 s
    assert seq in inserted  # owed to the disconnected forwarder: written, as before
    up.gate.set()
    await _stop(*tasks)
    b.close()


async def test_a_record_appended_while_a_commit_waits_goes_with_the_next_commit(tmp_path: Path) -> None:
    # The waiting commit covers only what was appended before it began to wait; a record
    # appended meanwhile (here still owed when the forwarder goes offline) is written by the
    # next commit and read back from the store like any other. The store's next_seq and the
    # cursors written with the first commit stop where that commit did.
    path = tmp_path / "buffer.sqlite3"
    b = Buffer(path, max_bytes=1 << 30, commit_interval=0.2, settle_max=5.0)
    b.open()
    b.register("f")
    b.set_online("f", True)
    b.append(_rec(0))
    assert b.commit()  # the store holds a record: the next commit writes, not skips
    first = b.take("f", 10, 1 << 20)
    assert first is not None
    b.ack("f", first)  # healthy: acknowledging
    run_task = asyncio.create_task(b.run())
    b.append(_rec(1))
    held = b.take("f", 10, 1 << 20)  # in flight
    assert held is not None
    await asyncio.sleep(0.6)  # the commit is waiting for its ack
    seq2 = b.append(_rec(2))
    b.ack("f", held)  # the wait ends; record 2 was not covered
    await _until(lambda: b.stats()["pending_records"] == 1, 2)
    b.set_online("f", False)  # record 2 is owed to a forwarder now offline
    await _until(lambda: b.stats()["pending_records"] == 0, 2)
    other = Buffer(path, max_bytes=1 << 30)  # what a process starting after a crash would see
    other.open()
    other.register("f")
    batch = other.take("f", 10, 1 << 20)
    assert batch is not None and [(s, r.decoded()["i"]) for s, r in batch.records] == [(seq2, 2)]
    other.close()
    await _stop(run_task)
    b.close()
