"""The durable buffer: persistence, cursors, live-vs-backlog, bounds, recovery, disk full."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.buffer import Buffer
from gateway.records import Record, make_record


def _rec(i: int, kind: str = "uplink", t: float = 1_700_000_000.0) -> Record:
    return make_record(kind, "test", {"i": i, "pad": "x" * 80}, received_us=int(t * 1e6))


def _buf(path: Path, **kw: object) -> Buffer:
    args: dict[str, object] = {"max_bytes": 1 << 30}
    args.update(kw)
    b = Buffer(path / "buffer.sqlite3", **args)  # type: ignore[arg-type]
    b.open()
    return b


def _drain(b: Buffer, name: str, n: int = 100_000) -> list[int]:
    got: list[int] = []
    while (batch := b.take(name, n, 1 << 30)) is not None:
        got.extend(r.decoded()["i"] for _, r in batch.records)
        b.ack(name, batch)
    return got


def test_committed_records_survive_reopen_in_order(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    for i in range(1000):
        b.append(_rec(i, "parking" if i % 3 else "uplink"))
    assert b.commit()
    b.close()
    b = _buf(tmp_path)
    st = b.stats()
    assert st["records"] == 1000 and st["pending_records"] == 0
    b.register("f", start="oldest")
    assert _drain(b, "f") == list(range(1000))
    b.close()


async def test_live_record_is_delivered_before_its_commit(tmp_path: Path) -> None:
    b = _buf(tmp_path, commit_interval=3600)
    b.register("f")
    waiter = asyncio.create_task(b.next_batch("f", 10, 1 << 20))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # nothing to send: it waits
    b.append(_rec(7))
    batch = await asyncio.wait_for(waiter, 1)
    assert [r.decoded()["i"] for _, r in batch.records] == [7]
    assert b.stats()["pending_records"] == 1  # not committed yet
    b.close()


def test_new_cursor_starts_at_newest_unless_asked(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    for i in range(5):
        b.append(_rec(i))
    b.register("late")
    b.register("historian", start="oldest")
    b.append(_rec(5))
    assert _drain(b, "late") == [5]
    assert _drain(b, "historian") == [0, 1, 2, 3, 4, 5]
    b.close()


def test_records_deleted_only_when_every_cursor_passed(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    b.register("fast")
    b.register("slow")
    for i in range(5000):
        b.append(_rec(i))
    assert len(_drain(b, "fast")) == 5000
    b.commit()
    assert b.stats()["records"] == 5000  # "slow" still needs them
    assert len(_drain(b, "slow", 1000)) == 5000
    b.commit()
    assert b.stats()["records"] == 0
    b.close()


def test_live_records_get_a_share_during_a_long_backlog(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    b.register("f")
    for i in range(20_000):  # a week of backlog, scaled down
        b.append(_rec(i))
    b.commit()
    first = b.take("f", 100, 1 << 30)
    assert first is not None and [r.decoded()["i"] for _, r in first.records][:3] == [19_950, 19_951, 19_952]
    b.release("f", first)  # the backend failed: everything of it comes again later
    seen: list[int] = []
    for n in range(10):
        b.append(_rec(100_000 + n))  # live traffic arriving while the backlog drains
        batch = b.take("f", 100, 1 << 30)
        assert batch is not None
        ids = [r.decoded()["i"] for _, r in batch.records]
        assert 100_000 + n in ids, "a live record waited behind the backlog"
        seen.extend(ids)
        b.ack("f", batch)
    rest = _drain(b, "f", 500)
    everything = seen + rest
    assert sorted(everything) == [*range(20_000), *range(100_000, 100_010)]
    backlog = [i for i in everything if i < 100_000 and i < 19_950]
    assert backlog == sorted(backlog)
    b.close()


def _ids(batch: object) -> list[int]:
    assert batch is not None
    return [r.decoded()["i"] for _, r in batch.records]  # type: ignore[attr-defined]


def test_strict_cursor_delivers_in_sequence_order_across_outage_and_restart(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    b.register("lns")  # a live-first neighbour on the same store keeps its own order
    b.register("s", live_first=False)
    for i in range(50):
        b.append(_rec(i))
    delivered = _drain(b, "s", 20)
    assert delivered == list(range(50))
    _drain(b, "lns")
    for i in range(50, 3050):  # the backend is down: backlog builds up, committed in groups
        b.append(_rec(i))
        if i % 500 == 0:
            b.commit()
    assert _ids(b.take("lns", 100, 1 << 30))[0] == 3000  # live first: the newest half batch
    first = b.take("s", 100, 1 << 30)
    assert _ids(first) == list(range(50, 150))  # strict: the oldest unsent, not the newest
    assert first is not None
    b.release("s", first)  # the backend failed again: the same records come next
    for n in range(10):
        b.append(_rec(10_000 + n))  # live traffic during the drain waits its turn
        batch = b.take("s", 100, 4000)
        ids = _ids(batch)
        assert 10_000 + n not in ids
        assert ids == list(range(delivered[-1] + 1, delivered[-1] + 1 + len(ids)))
        assert batch is not None and len(ids) <= 100 and sum(len(r.body) for _, r in batch.records) <= 4000
        b.ack("s", batch)
        delivered.extend(ids)
    b.close()  # restart (SIGTERM path): records and cursor progress are committed
    b = _buf(tmp_path)
    b.register("s", live_first=False)  # the cursor from the store takes the configured order
    b.register("lns")
    b.append(_rec(20_000))
    while (batch := b.take("s", 300, 1 << 30)) is not None:
        assert len(batch.records) <= 300
        delivered.extend(_ids(batch))
        b.ack("s", batch)
    assert delivered == [*range(3050), *range(10_000, 10_010), 20_000]
    b.close()


def test_strict_cursor_after_a_crash_repeats_only_the_uncommitted_acks_in_order(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    b.register("s", start="oldest", live_first=False)
    for i in range(2000):
        b.append(_rec(i))
    b.commit()
    a = b.take("s", 300, 1 << 30)
    bb = b.take("s", 300, 1 << 30)  # a second batch before the first settles goes onward
    assert _ids(a) == list(range(300)) and _ids(bb) == list(range(300, 600))
    b.ack("s", bb)  # type: ignore[arg-type]
    c = b.take("s", 300, 1 << 30)
    assert _ids(c) == list(range(600, 900))
    b.ack("s", c)  # type: ignore[arg-type]
    assert b.commit()  # persisted: 300..899 acknowledged, 0..299 still out
    b.ack("s", a)  # type: ignore[arg-type]
    d = b.take("s", 300, 1 << 30)
    assert _ids(d) == list(range(900, 1200))
    b.ack("s", d)  # type: ignore[arg-type]
    assert b._store is not None
    b._store.close()  # kill -9: the last two acks never reach the disk
    b = _buf(tmp_path)
    b.register("s", live_first=False)
    again: list[int] = []
    while (batch := b.take("s", 300, 1 << 30)) is not None:
        again.extend(_ids(batch))
        b.ack("s", batch)
    # At-least-once: exactly the acks after the last commit come again, still in order, and
    # the ranges acknowledged ahead of the low-water mark are not repeated.
    assert again == [*range(300), *range(900, 2000)]
    b.close()


def test_partial_ack_persists_and_only_the_rest_comes_again(tmp_path: Path) -> None:
    b = _buf(tmp_path)
    b.register("f")
    for i in range(10):
        b.append(_rec(i))
    batch = b.take("f", 10, 1 << 30)
    assert batch is not None
    b.ack("f", batch, [s for s, r in batch.records if r.decoded()["i"] % 2 == 0])
    b.close()
    b = _buf(tmp_path)
    b.register("f")
    assert sorted(_drain(b, "f")) == [1, 3, 5, 7, 9]
    b.close()


def test_full_buffer_drops_oldest_of_lowest_priority_first(tmp_path: Path) -> None:
    b = _buf(tmp_path, max_bytes=400_000)
    for i in range(1000):
        b.append(_rec(i, "parking"))
    b.commit()
    for i in range(1000, 4000):
        b.append(_rec(i, "uplink"))
        if i % 500 == 0:
            b.commit()
    b.commit()
    st = b.stats()
    assert st["drops"]["full"].get("uplink", 0) > 0
    assert "parking" not in st["drops"]["full"]
    assert st["bytes"] <= 400_000
    b.register("f", start="oldest")
    got = _drain(b, "f")
    assert got[:1000] == list(range(1000))  # every parking state kept
    assert got[1000:] == sorted(got[1000:]) and got[-1] == 3999  # newest uplinks kept
    b.close()


def test_per_kind_max_age(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    b = _buf(tmp_path, max_age={"uplink": 3600.0}, clock=lambda: now[0])
    b.append(_rec(1, "uplink", t=now[0] - 7200))
    b.append(_rec(2, "parking", t=now[0] - 7200))
    b.append(_rec(3, "uplink", t=now[0] - 10))
    b.commit()
    assert b.stats()["drops"] == {"max_age": {"uplink": 1}}
    b.register("f", start="oldest")
    assert _drain(b, "f") == [2, 3]
    b.close()


def test_low_free_space_counts_as_full(tmp_path: Path) -> None:
    free = [10 << 30]
    b = _buf(tmp_path, min_free_bytes=1 << 30, disk_free=lambda p: free[0])
    for i in range(3000):
        b.append(_rec(i))
    b.commit()
    size = (tmp_path / "buffer.sqlite3").stat().st_size
    free[0] = 100 << 20  # below the floor: the store must not grow
    for i in range(3000, 6000):
        b.append(_rec(i))
        if i % 200 == 0:
            b.commit()
    b.commit()
    st = b.stats()
    assert st["drops"]["disk_full"]["uplink"] >= 2500
    assert (tmp_path / "buffer.sqlite3").stat().st_size <= size * 1.1
    b.close()


def test_sqlite_full_keeps_records_in_reserve_then_recovers(tmp_path: Path) -> None:
    # Without root: SQLite's own page limit gives the genuine "database or disk is full".
    b = _buf(tmp_path, memory_reserve_bytes=60_000)
    assert b._store is not None
    pages = b._store.w.execute("PRAGMA page_count").fetchone()[0]
    b._store.w.execute(f"PRAGMA max_page_count={pages}")
    for i in range(500):
        b.append(_rec(i, "parking" if i < 100 else "uplink"))
    assert not b.commit()
    st = b.stats()
    assert st["write_errors"] == {"disk_full": 1}
    assert st["drops"]["reserve_full"]["uplink"] > 0 and "parking" not in st["drops"]["reserve_full"]
    kept = st["pending_records"]
    b._store.w.execute("PRAGMA max_page_count=1000000")  # space is back
    assert b.commit()
    assert b.stats()["records"] == kept and b.stats()["pending_records"] == 0
    b.register("f", start="oldest")
    assert _drain(b, "f")[:100] == list(range(100))
    b.close()


async def test_run_commits_periodically_and_on_cancel(tmp_path: Path) -> None:
    b = _buf(tmp_path, commit_interval=0.05)
    task = asyncio.create_task(b.run())
    b.append(_rec(1))
    await asyncio.sleep(0.3)
    assert b.stats()["pending_records"] == 0 and b.stats()["last_commit"] is not None
    b.append(_rec(2))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.stats()["pending_records"] == 0
    b.close()
    b = _buf(tmp_path)
    assert b.stats()["records"] == 2
    b.close()


def _prepare_store(tmp_path: Path, n: int = 3000) -> Path:
    b = _buf(tmp_path)
    for i in range(n):
        b.append(_rec(i))
    b.close()
    return tmp_path / "buffer.sqlite3"


def _corrupt_case(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    path = _prepare_store(tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "pages":
        path.write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    elif damage == "header":
        path.write_bytes(data[:50])
    with caplog.at_level(logging.ERROR):
        b = _buf(tmp_path)
    assert "BUFFER STORE CORRUPT" in caplog.text
    moved = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith("-wal")]
    assert len(moved) == 1
    ev = b.stats()["recovery_events"]
    assert len(ev) == 1 and ev[0]["moved_to"] == str(moved[0])
    b.append(_rec(1))
    assert b.commit()
    b.close()
    b = _buf(tmp_path)  # the fresh store is sound, and still remembers the event
    assert b.stats()["records"] == 1 and len(b.stats()["recovery_events"]) == 1
    b.close()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pages", "header"])
def test_corrupt_store_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    _corrupt_case(tmp_path, caplog, damage)


def test_store_corrupted_while_running_is_recovered_and_keeps_pending_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An SD card that corrupts the store under a running daemon: status keeps answering,
    reads fail without losing their place, the store is moved aside, and the records that were
    still in memory (received after the damage) go into the fresh store and are delivered."""
    b = _buf(tmp_path)
    b.register("fwd", start="oldest")
    for i in range(200):
        b.append(_rec(i))
    assert b.commit()
    path = tmp_path / "buffer.sqlite3"
    for f, keep in ((path, 100), (Path(f"{path}-wal"), 32)):
        if f.exists():
            with open(f, "r+b") as fh:
                fh.seek(keep)
                fh.write(os.urandom(f.stat().st_size - keep))
    for i in range(200, 210):
        b.append(_rec(i))  # received after the damage, not yet committed
    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            stats = b.stats()  # never raises: the status page must keep working
            assert stats["records"] >= 10
            if b.take("fwd", 50, 1 << 30) is None:
                continue
        assert stats["write_errors"].get("read", 0) >= 3
        assert b.commit()  # the committer recovers: moves the store aside, writes the pending
    assert "BUFFER STORE CORRUPT" in caplog.text
    events = b.stats()["recovery_events"]
    assert len(events) == 1 and events[0]["kind"] == "corrupt_store"
    assert [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    b.close()
    b = _buf(tmp_path)  # on flash, not only in memory, and the cursor kept its place
    assert _drain(b, "fwd") == list(range(200, 210))
    b.close()


def test_schema_v0_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, kind TEXT, source TEXT, received_us INTEGER, body BLOB)")
    con.execute("CREATE TABLE cursors (name TEXT PRIMARY KEY, low INTEGER NOT NULL)")
    for i in range(1, 11):
        r = _rec(i, "parking" if i % 2 else "uplink")
        con.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?)", (i, r.kind, r.source, r.received_us, r.body))
    con.execute("INSERT INTO cursors VALUES ('mqtt', 4)")
    con.commit()
    con.close()
    b = _buf(tmp_path)
    assert b.stats()["records"] == 10 and b.stats()["recovery_events"] == []
    b.register("mqtt", start="oldest")  # kept its old position
    batch = b.take("mqtt", 100, 1 << 30)
    assert batch is not None
    assert [(r.decoded()["i"], r.priority) for _, r in batch.records][:2] == [(5, 2), (6, 0)]
    assert b.append(_rec(11)) == 11
    b.close()


def test_unusable_data_dir_never_raises_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    b = Buffer(blocker / "buffer.sqlite3", max_bytes=1 << 30)
    b.open()  # must not raise: the daemon keeps running
    b.register("f", start="oldest")
    b.append(_rec(1))
    assert not b.commit()
    assert b.stats()["write_errors"] and b.stats()["pending_records"] == 1
    blocker.unlink()
    blocker.mkdir()  # the technician fixed it
    b.append(_rec(2))
    assert b.commit()
    assert _drain(b, "f") == [1, 2]
    b.close()


def _as_root() -> list[str] | None:
    """How to run mount/umount: directly as root, through passwordless sudo, or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def test_disk_full_on_small_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    root = _as_root()
    res = subprocess.run([*root, "mount", "-t", "tmpfs", "-o", "size=2M,mode=1777", "tmpfs",
                          str(mnt)], capture_output=True, text=True) if root is not None else None
    if res is None or res.returncode != 0:
        msg = f"cannot mount a tmpfs: {res.stderr.strip() if res else 'not root'}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (1200 << 10))
        b = Buffer(mnt / "buffer.sqlite3", max_bytes=64 << 20, memory_reserve_bytes=200_000)
        b.open()
        b.register("f", start="oldest")
        i = 0
        ok = True
        while ok and i < 50_000:
            for _ in range(500):
                b.append(_rec(i, "parking" if i % 10 == 0 else "uplink"))
                i += 1
            ok = b.commit()
        assert not ok, "the tmpfs never filled"
        for _ in range(5):  # keep accepting while the disk stays full
            for _ in range(500):
                b.append(_rec(i, "parking" if i % 10 == 0 else "uplink"))
                i += 1
            b.commit()
        st = b.stats()
        assert st["write_errors"].get("disk_full", 0) + st["write_errors"].get("io", 0) >= 1
        assert sum(st["drops"].get("reserve_full", {}).values()) + sum(st["drops"].get("disk_full", {}).values()) > 0
        assert st["pending_bytes"] <= 200_000
        filler.unlink()  # space returns
        assert b.commit(), b.stats()["last_write_error"]
        assert b.stats()["pending_records"] == 0
        got = _drain(b, "f")
        assert got == sorted(got) and got[-1] == i - 1
        b.close()
    finally:
        subprocess.run([*(root or []), "umount", "-l", str(mnt)], check=False)


def test_io_error_mid_commit_keeps_records_in_memory_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A card that fails writes for a while (EIO): nothing accepted is lost, the error is
    counted by kind, and the next commit after the card recovers writes everything in order."""
    b = _buf(tmp_path)
    b.register("f", start="oldest")
    assert b._store is not None
    store = b._store
    real = store.transaction
    failing = [True]

    def flaky(body: Any) -> None:
        if failing[0]:
            raise sqlite3.OperationalError("disk I/O error")
        real(body)

    monkeypatch.setattr(store, "transaction", flaky)
    for i in range(50):
        b.append(_rec(i))
    for _ in range(3):
        assert not b.commit()
    st = b.stats()
    assert st["write_errors"] == {"io": 3} and st["pending_records"] == 50
    assert st["last_write_error"] == "disk I/O error"
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []  # not corrupt
    for i in range(50, 60):
        b.append(_rec(i))
    failing[0] = False
    assert b.commit()
    assert b.stats()["pending_records"] == 0 and b.stats()["last_write_error"] is None
    b.close()
    b = _buf(tmp_path)
    assert _drain(b, "f") == list(range(60))
    b.close()


def _half_delivered_store(tmp_path: Path, n: int = 4000) -> Path:
    """A store of ``n`` records of which forwarder "lns" acknowledged the first half."""
    b = _buf(tmp_path)
    b.register("lns", start="oldest", live_first=False)
    for i in range(n):
        b.append(_rec(i))
    assert b.commit()
    delivered = 0
    while delivered < n // 2:
        batch = b.take("lns", min(100, n // 2 - delivered), 1 << 30)
        assert batch is not None
        b.ack("lns", batch)
        delivered += len(batch.records)
    b.close()
    return tmp_path / "buffer.sqlite3"


def _delivered_after_recovery(tmp_path: Path) -> tuple[list[int], dict[str, Any]]:
    b = _buf(tmp_path)
    b.register("lns", start="oldest", live_first=False)  # the cursor read back stays
    import cbor2

    got = [cbor2.loads(r.body)["i"] for s in [_drain_records(b, "lns")] for r in s]
    [event] = b.stats()["recovery_events"]
    b.close()
    return got, event


def _drain_records(b: Buffer, name: str) -> list[Record]:
    out: list[Record] = []
    while (batch := b.take(name, 500, 1 << 30)) is not None:
        out += [r for _s, r in batch.records]
        b.ack(name, batch)
    return out


def test_a_destroyed_header_costs_nothing_owed(tmp_path: Path) -> None:
    """The first 100 bytes overwritten: the pages behind are intact, so every record the
    forwarder still needed comes back into the fresh store and is delivered, once."""
    path = _half_delivered_store(tmp_path)
    with path.open("r+b") as f:
        f.write(os.urandom(100))
    got, event = _delivered_after_recovery(tmp_path)
    assert got == list(range(2000, 4000))
    assert event["records_recovered"] == 2000 and event["records_lost"] == 0


def test_garbage_mid_file_costs_only_the_unreadable_records(tmp_path: Path) -> None:
    """64 KiB of garbage in the middle: what is readable and owed is delivered; the log and
    the event count only what was owed and unreadable, not what had been delivered."""
    path = _half_delivered_store(tmp_path, 8000)
    data = bytearray(path.read_bytes())
    mid = (len(data) * 3 // 4) // 4096 * 4096  # in the undelivered half
    data[mid:mid + 65536] = os.urandom(65536)
    path.write_bytes(bytes(data))
    b = _buf(tmp_path)
    b.register("lns", start="oldest", live_first=False)
    before: list[int] = []
    for _ in range(50):  # delivery reads on, meets the damage, the committer recovers
        batch = b.take("lns", 500, 1 << 30)
        if batch is not None:
            before += [r.decoded()["i"] for _s, r in batch.records]
            b.ack("lns", batch)
        b.commit()
        if b.stats()["recovery_events"]:
            break
    [event] = b.stats()["recovery_events"]
    after = [r.decoded()["i"] for r in _drain_records(b, "lns")]
    b.close()
    lost = event["records_lost"]
    got = before + after
    assert got == sorted(got) and len(set(got)) == len(got) and min(got) == 4000
    assert event["records_recovered"] >= len(after) and 0 < lost <= 16 * 40
    assert len(got) + lost == 4000, "every owed record is either delivered or counted lost"


@pytest.mark.parametrize("committed", [False, True])
def test_batches_keep_to_the_byte_bound_and_a_big_record_goes_alone(tmp_path: Path, committed: bool) -> None:
    """A backend's batch limit in bytes: a batch holds as many records as fit, never more, except
    that a record bigger than the bound goes alone (it would otherwise never go at all)."""
    b = _buf(tmp_path)
    b.register("f", live_first=False)  # oldest first: the batches' order is plain to read
    sizes = [10, 300, 20, 2500, 40, 40, 40, 900, 5, 1200, 60]
    for i, size in enumerate(sizes):
        b.append(make_record("uplink", "test", {"i": i, "pad": "x" * size}, received_us=1))
    if committed:
        b.commit()  # read back from the store rather than from memory
    batches = []
    while (batch := b.take("f", 4, 1000)) is not None:
        batches.append([r.decoded()["i"] for _, r in batch.records])
        body = sum(len(r.body) for _, r in batch.records)
        assert len(batch.records) == 1 or body <= 1000
        b.ack("f", batch)
    assert batches == [[0, 1, 2], [3], [4, 5, 6], [7, 8], [9], [10]]
    b.close()
