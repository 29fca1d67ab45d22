"""Durable store-and-forward buffer: records in, group commits to SQLite (WAL), cursors out.

Appends never touch the disk; ``run()`` commits the pending records once per interval in one
transaction, off the event loop. Forwarders read live records before they are committed and
the backlog from disk, each through its own cursor. Must never block a producer on I/O.
To spare the flash, a commit writes only what some forwarder still owes: records every
backend acknowledged before their commit are never written, and a commit with nothing to
write (idle, or every backend current and the store empty) does not touch the store at all.
Records still in flight at the commit's moment get a short wait (``settle_max``, at most
50 ms by default) to be acknowledged, but only while every forwarder owing them is connected
and answering; an outage never delays a commit.

Durability promise (WAL journal; a commit = one transaction every ``commit_interval``):

* Process crash (kill -9, OOM kill, segfault), either synchronous level: every commit that
  completed is kept; the store always opens. Lost: records appended after the last completed
  commit (at most one interval plus that commit's settle wait, ``settle_max``; plus the memory
  reserve while the disk is failing) and cursor progress since that commit, which is why delivery is at-least-once: those records are
  delivered again. Live records were usually forwarded before the crash anyway.
* Power cut with ``synchronous="NORMAL"`` (default, one fsync per checkpoint, not per commit):
  the store stays consistent, but commits not yet written back by the OS can be lost too,
  i.e. up to the kernel's dirty write-back delay (typically 5-30 s) or the commits since the
  last checkpoint, whichever is less. ``synchronous="FULL"``: the WAL is fsynced at every
  commit (at most one fsync per interval), so a power cut loses only the records of the last
  interval. Both assume the flash honours flush; a card that lies can corrupt the file, and
  ``open()`` then moves it aside and starts fresh (counted as ``corrupt``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import logging
import operator
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from gateway.buffer.cursor import Cursor, RangeSet
from gateway.buffer.store import Counters, Store, move_aside, open_store, row_cost
from gateway.clocksteps import Step, StepWatch
from gateway.records import KINDS, Record

log = logging.getLogger(__name__)

#: Cursor-passed rows are deleted once this many have accumulated, so deletes free whole
#: pages in one go instead of touching the oldest leaf page at every commit.
DELETE_EVERY_ROWS: Final = 2048
#: Consecutive "malformed" errors after which the store is moved aside at run time.
CORRUPT_AFTER: Final = 3
#: The longest a periodic commit waits for records in flight at healthy forwarders to be
#: acknowledged (seconds), so that they need not be written at all; by default also at most a
#: tenth of ``commit_interval``. The crash window grows by at most this (README "What the
#: buffer promises").
SETTLE_MAX: Final = 0.05
#: A connected forwarder counts as healthy for the settle wait while its last acknowledgement
#: is at most this old (seconds, or two commit intervals when those are longer): a backend that
#: stopped answering but is not yet known to be gone does not hold commits back either.
HEALTHY_ACK_AGE: Final = 2.0


@dataclass(frozen=True, slots=True)
class Batch:
    """Records handed to one forwarder. ``ranges`` are the seq ranges it claims (gaps included)."""

    name: str
    records: list[tuple[int, Record]]
    ranges: tuple[tuple[int, int], ...]


#: An idle buffer looks for rows past their maximum age this often (seconds); a commit that
#: writes anyway looks every time.
IDLE_EXPIRY_CHECK: Final = 60.0

_seq: Final = operator.itemgetter(0)  # a pending (seq, record)'s seq, for bisect


@dataclass
class _Snapshot:
    rows: list[tuple[int, Record]]
    next_seq: int
    cursors: list[tuple[str, int, list[tuple[int, int]]]]
    versions: dict[str, int]
    forget: list[str]
    delete_through: int
    now: float
    disk_low: bool
    mem_drops: dict[str, dict[str, int]] = field(default_factory=dict)
    taken: int = 0  # the pending prefix this commit covers (``rows``: the part still owed)
    force: bool = False  # write even when every backend already has everything
    steps: list[Step] = field(default_factory=list)  # wall-clock steps to apply to stored stamps
    skipped: bool = False  # set by the committer: nothing needed writing


class Buffer:
    """The buffer. Use from one event loop; ``commit()`` may run in a worker thread."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        commit_interval: float = 1.0,
        max_age: Mapping[str, float] | None = None,
        min_free_bytes: int = 0,
        memory_reserve_bytes: int = 16 << 20,
        synchronous: Literal["NORMAL", "FULL"] | str = "NORMAL",
        clock: Callable[[], float] = time.time,
        disk_free: Callable[[Path], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        settle_max: float | None = None,
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"buffer synchronous={synchronous!r}: use 'NORMAL' or 'FULL'")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.commit_interval = commit_interval
        self.max_age = dict(max_age or {})
        self.min_free_bytes = min_free_bytes
        self.memory_reserve_bytes = memory_reserve_bytes
        self.synchronous = synchronous.upper()
        self.clock = clock
        # The settle cap: a periodic commit waits at most this long for in-flight acks.
        self.settle_max = min(SETTLE_MAX, commit_interval / 10) if settle_max is None else settle_max
        self._monotonic = monotonic
        self._disk_free = disk_free or (lambda p: shutil.disk_usage(p).free)
        self._store: Store | None = None
        self._pending: list[tuple[int, Record]] = []
        self._pending_bytes = 0
        self._committing = 0  # length of the pending prefix a commit is writing right now
        self._committed_max = 0
        self._next_seq = 1
        self._deleted_through = 0
        self._cursors: dict[str, Cursor] = {}
        self._versions: dict[str, int] = {}
        self._persisted_lows: dict[str, int] = {}  # cursors in the store, registered or not
        self._forget: list[str] = []
        self._wake: dict[str, asyncio.Event] = {}
        self._commit_soon: asyncio.Event | None = None
        self._settle_wake: asyncio.Event | None = None  # set by acks while a commit settles
        self._mem_drops: dict[str, dict[str, int]] = {}
        self._view = Counters()
        self._write_errors: dict[str, int] = {}
        self._last_error: str | None = None
        self._malformed = 0
        # Reads (take, status) run on the event loop with their own connection; a corrupt page
        # found there is counted and, past CORRUPT_AFTER, recovered by the committer (which
        # holds the write lock), never by the reader.
        self._read_malformed = 0
        self._recover_requested: str | None = None
        self._last_commit: float | None = None
        self._next_expiry = 0.0  # clock time when an idle buffer next looks for expired rows
        self._oldest_stored: dict[str, int | None] = {}  # per kind, as of the last commit
        self._last_commit_s = 0.0
        self._lock = threading.Lock()
        # Wall-clock steps (gateway/clocksteps.py): stamps of this run's records move with
        # them. Steps not yet applied to the store are applied to what is read from it; the
        # step lock makes "applied in the store" and "still to apply" one fact for readers.
        self._watch = StepWatch(clock, monotonic)
        self._watch.check()  # the baseline: steps from now on
        self._run_first: int | None = None  # first seq this process gave out
        self._unsaved_steps: list[Step] = []
        self._step_lock = threading.Lock()
        self._steps_seen: list[dict[str, Any]] = []

    # ---- life cycle --------------------------------------------------------------------
    def open(self) -> None:
        """Open the store, moving a bad one aside. Never raises: when the disk refuses (full,
        I/O error, locked), records are kept in the memory reserve and opening is retried at
        every commit."""
        self._try_open()

    def _try_open(self) -> bool:
        try:
            store, _event = open_store(self.path, self.synchronous, self.clock(), self._salvage)
        except (sqlite3.OperationalError, OSError) as exc:
            self._note_error(exc)
            return False
        self._attach(store)
        return True

    def _attach(self, store: Store) -> None:
        self._store = store
        c = store.counters
        self._next_seq = max(self._next_seq, c.next_seq)
        self._committed_max = max(self._committed_max, c.next_seq - 1)
        self._view = copy.deepcopy(c)
        for name, low, done in store.load_cursors():
            self._persisted_lows[name] = low
            if name not in self._cursors:
                cur = Cursor(name, low, RangeSet(done), dirty=False)
                cur.live_mark = max(low, cur.done.max_end() or low)
                self._cursors[name] = cur
                self._versions[name] = 0
        self._deleted_through = min(self._persisted_lows.values(), default=0)
        if self._run_first is None:
            self._run_first = self._next_seq

    def close(self) -> None:
        """Final commit, then close. Records that cannot be written are reported lost."""
        self.commit(force=True)
        if self._store is None:
            if self._pending:
                log.error("buffer closing without a store (%s): %d records lost",
                          self._last_error, len(self._pending))
            return
        if self._pending:
            log.error("buffer closing with %d records that could not be written: %s",
                      len(self._pending), self._last_error)
        self._store.close()
        self._store = None

    async def run(self) -> None:
        """Commit every ``commit_interval`` (sooner when the reserve is half full); final commit on cancel."""
        self._commit_soon = asyncio.Event()
        loop = asyncio.get_running_loop()
        settled = 0.0  # how long the last commit waited for acks: the next interval is shorter
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._commit_soon.wait(),
                                           max(0.0, self.commit_interval - settled))
                early = self._commit_soon.is_set()  # reserve half full, a clock step, recovery
                self._commit_soon.clear()
                settled = 0.0
                if self._store is None and not self._try_open():
                    continue
                # The commit covers what was appended up to now. Records still in flight at
                # healthy forwarders get a few milliseconds to be acknowledged, so they need
                # not be written; what arrives meanwhile waits for the next commit, which comes
                # as much earlier. An early commit does not wait.
                through = self._next_seq - 1
                if not early:
                    t0 = loop.time()
                    await self._settle(through)
                    settled = loop.time() - t0
                snap = self._prepare(through=through)
                ok = await asyncio.to_thread(self._write_locked, snap)
                self._finish(snap, ok)
        finally:
            # Cancelled (SIGTERM path): whatever was received is committed before we return;
            # the lock waits for a write still running in the worker thread.
            self.commit()

    # ---- producer side -----------------------------------------------------------------
    def append(self, record: Record) -> int:
        """Queue a record for the next commit and offer it to live forwarders. Never does I/O.
        Returns its sequence number."""
        seq = self._next_seq
        self.append_many((record,))
        return seq

    def append_many(self, records: Sequence[Record]) -> None:
        """:meth:`append` for the records of one datagram: the same sequence numbers and
        bounds, the forwarders woken once rather than once a record."""
        pending, reserve = self._pending, self.memory_reserve_bytes
        for record in records:
            pending.append((self._next_seq, record))
            self._next_seq += 1
            self._pending_bytes += row_cost(len(record.body), len(record.source))
            if self._pending_bytes > reserve:
                self._shed_pending()
                pending = self._pending  # shedding builds a new list
        if self._pending_bytes > reserve // 2 and self._commit_soon is not None:
            self._commit_soon.set()
        for ev in self._wake.values():
            ev.set()

    def _shed_pending(self) -> None:
        """Reserve full: drop uncommitted records, oldest of the lowest priority first, to 90 %."""
        target = self.memory_reserve_bytes * 9 // 10
        head, tail = self._pending[: self._committing], self._pending[self._committing :]
        order = sorted(range(len(tail)), key=lambda i: (tail[i][1].priority, tail[i][0]))
        drop: set[int] = set()
        for i in order:
            if self._pending_bytes <= target:
                break
            r = tail[i][1]
            self._pending_bytes -= row_cost(len(r.body), len(r.source))
            drop.add(i)
            per = self._mem_drops.setdefault("reserve_full", {})
            per[r.kind] = per.get(r.kind, 0) + 1
        self._pending = head + [x for i, x in enumerate(tail) if i not in drop]

    # ---- commit --------------------------------------------------------------------------
    def commit(self, force: bool = False) -> bool:
        """Write what is pending and owed in one transaction (blocking). True when it
        succeeded. ``force`` writes counters and cursors even when nothing is owed (a clean
        shutdown leaves the store exactly current)."""
        if self._store is None and not self._try_open():
            return False
        snap = self._prepare(force)
        ok = self._write_locked(snap)
        self._finish(snap, ok)
        return ok

    def _prepare(self, force: bool = False, through: int | None = None) -> _Snapshot:
        """Snapshot a commit of the pending records up to seq ``through`` (default: all)."""
        self._watch_clock()
        pending = self._pending
        if through is None or not pending or pending[-1][0] <= through:
            taken, through = len(pending), self._next_seq - 1
        else:
            taken = bisect.bisect_right(pending, through, key=_seq)
        self._committing = taken
        cursors, versions = [], {}
        for name, cur in self._cursors.items():
            # The store holds nothing above ``through`` (its next_seq says so): a cursor that
            # acknowledged records above it is written as of ``through`` and stays dirty, so
            # after a crash new records get seqs above every cursor written.
            low, done = cur.low, list(cur.done)
            clamped = low > through or bool(done and done[-1][1] > through)
            if clamped:
                low = min(low, through)
                done = [(a, min(b, through)) for a, b in done if a <= through]
            if cur.dirty:
                cursors.append((name, low, done))
                if not clamped:
                    versions[name] = self._versions[name]
            self._persisted_lows[name] = low
        for name in self._forget:
            self._persisted_lows.pop(name, None)
        delete_through = min(self._persisted_lows.values(), default=0)
        if (delete_through - self._deleted_through < DELETE_EVERY_ROWS
                and delete_through < self._committed_max):
            # Delete in chunks, except when every forwarder is past all that is stored: then
            # empty the store, so commits go back to writing nothing at all.
            delete_through = self._deleted_through
        try:
            disk_low = self._disk_free(self.path.parent) < self.min_free_bytes
        except OSError:
            disk_low = False
        # Records every forwarder's backend acknowledged before this commit are not written:
        # the card sees only what is still owed to someone (no forwarder: everything is kept).
        live = [c for c in self._cursors.values() if c.name not in self._forget]
        if live:
            # At or below every cursor's low, all is acknowledged: skipped in one step (with
            # healthy backends, that is nearly everything); only the rest is looked at one by one.
            start = bisect.bisect_right(pending, min(c.low for c in live), hi=taken, key=_seq)
            rows = [x for x in pending[start:taken] if not all(c.acked(x[0]) for c in live)]
        else:
            rows = pending[:taken]
        snap = _Snapshot(
            rows=rows, next_seq=through + 1, cursors=cursors, versions=versions,
            forget=self._forget[:], delete_through=delete_through, now=self.clock(),
            disk_low=disk_low, mem_drops=copy.deepcopy(self._mem_drops), taken=taken,
            force=force, steps=self._unsaved_steps[:],
        )
        return snap

    # ---- settling before a commit ----------------------------------------------------------
    def _healthy(self, cur: Cursor) -> bool:
        """Connected (its delivery loop says so) and acknowledging lately."""
        age = max(HEALTHY_ACK_AGE, 2 * self.commit_interval)
        return cur.online and self._monotonic() - cur.last_ack <= age

    def _owes(self, cur: Cursor, through: int) -> bool:
        """Whether ``cur`` has not acknowledged some pending record with seq <= ``through``."""
        pending = self._pending
        if not pending or cur.low >= through:
            return False
        first = pending[0][0]
        if first > through:
            return False
        for a, b in cur.done.gaps(max(cur.low + 1, first), through):
            i = bisect.bisect_left(pending, a, key=_seq)
            if i < len(pending) and pending[i][0] <= b:
                return True
        return False

    def _worth_settling(self, through: int) -> bool:
        """True when every forwarder that still owes a pending record (up to ``through``) is
        connected and healthy, so waiting could spare the card the write. One that is not
        (an outage) would make the commit write anyway: then no one waits."""
        owed = False
        for cur in self._cursors.values():
            if cur.name in self._forget or not self._owes(cur, through):
                continue
            if not self._healthy(cur):
                return False
            owed = True
        return owed

    async def _settle(self, through: int) -> None:
        """Wait at most the settle cap until every forwarder acknowledged the pending records
        up to ``through``; woken by each ack, never polling. Returns at once when nothing is
        in flight, or when some forwarder owing records is disconnected or not answering."""
        cap = self.settle_max
        if cap <= 0 or not self._worth_settling(through):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cap
        wake = self._settle_wake = asyncio.Event()
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), left)
                except TimeoutError:
                    return
                if not self._worth_settling(through):
                    return
        finally:
            self._settle_wake = None

    def _write_locked(self, snap: _Snapshot) -> bool:
        with self._lock:
            if self._recover_requested is not None:
                reason, self._recover_requested = self._recover_requested, None
                self._read_malformed = 0
                self._recover_at_runtime(reason)
            store = self._store
            if store is None:
                return False
            if not snap.force and not snap.steps and (
                    self._nothing_to_write(snap) or self._all_delivered(store, snap)):
                snap.skipped = True  # nothing went to the card: cursors stay to be written
                return True  # an idle gateway writes nothing: not one page, not one fsync
            self._next_expiry = snap.now + max(self.commit_interval, IDLE_EXPIRY_CHECK)
            t0 = time.monotonic()
            try:
                with self._step_lock if snap.steps else contextlib.nullcontext():
                    try:
                        store.transaction(lambda: self._body(store, snap, make_room=snap.disk_low))
                    except sqlite3.OperationalError as exc:
                        if "full" not in str(exc):
                            raise
                        # Disk full: free pages by policy inside the transaction, then insert into them.
                        store.transaction(lambda: self._body(store, snap, make_room=True))
                    self._unsaved_steps = self._unsaved_steps[len(snap.steps):]
            except sqlite3.DatabaseError as exc:
                self._note_error(exc)
                return False
            except Exception as exc:  # never let the committer die: records stay in memory
                log.exception("buffer commit to %s failed unexpectedly", self.path)
                self._note_error(exc)
                return False
            self._malformed = 0
            self._last_error = None
            self._last_commit = snap.now
            self._last_commit_s = time.monotonic() - t0
            self._view = copy.deepcopy(store.counters)
            return True

    def _nothing_to_write(self, snap: _Snapshot) -> bool:
        """True when a commit would change nothing on the card: no records, no cursor moved,
        no drop to count, nothing to delete, and the age limits not due for a look yet."""
        return (not snap.rows and not snap.cursors and not snap.forget
                and snap.delete_through <= self._deleted_through
                and not any(n for per in snap.mem_drops.values() for n in per.values())
                # (a wall clock set back by NTP must not postpone the look for long)
                and 0 < self._next_expiry - snap.now <= max(self.commit_interval, IDLE_EXPIRY_CHECK))

    @staticmethod
    def _all_delivered(store: Store, snap: _Snapshot) -> bool:
        """True when the store holds no record and nothing new is owed: every backend has
        everything, so neither records nor cursor progress need the card. (After a crash the
        cursors persisted with the last write are consistent with what the store holds: the
        records since were all acknowledged, and new ones get sequence numbers above them.)"""
        held = sum((store.counters.count or {}).values())
        return (held == 0 and not snap.rows and not snap.forget
                and not any(n for per in snap.mem_drops.values() for n in per.values()))

    def _body(self, store: Store, snap: _Snapshot, *, make_room: bool) -> None:
        c = store.counters
        for step in snap.steps:
            # Before the insert: every stored row of this run was written with the old scale
            # (or inside the step's new-scale window); the rows inserted now were re-stamped
            # in memory already.
            store.rebase(self._run_first or 0, step.delta_us, step.lo_us, step.hi_us)
        for reason, per in snap.mem_drops.items():
            for kind, n in per.items():
                c.add_drop(reason, kind, n)
        incoming = sum(row_cost(len(r.body), len(r.source)) for _, r in snap.rows)
        if make_room and incoming:
            # The file must not grow: reuse the pages of the oldest, least important rows.
            for kind, n in store.drop_oldest(incoming).items():
                c.add_drop("disk_full", kind, n)
        store.insert(snap.rows)
        c.next_seq = max(c.next_seq, snap.next_seq)
        if snap.delete_through > 0:
            # After the insert: rows of this very commit may already be acknowledged (live).
            store.delete_through(snap.delete_through)
        for kind, age in self.max_age.items():
            n = store.expire(kind, int((snap.now - age) * 1e6))
            c.add_drop("max_age", kind, n)
        assert c.nbytes is not None
        used = max(sum(c.nbytes.values()), store.file_bytes())
        if used > self.max_bytes:
            # Hysteresis: drop to 95 % so a full buffer deletes in chunks, not per commit.
            for kind, n in store.drop_oldest(used - self.max_bytes * 95 // 100).items():
                c.add_drop("full", kind, n)
        for name in snap.forget:
            store.delete_cursor(name)
        store.save_cursors(snap.cursors)
        # The status page's "oldest record" ages, read here while the commit writes anyway:
        # a status page polled on an idle gateway must not touch the store (its WAL index is
        # a mapped file, so even a read dirties pages of the card).
        held = c.count or {}
        self._oldest_stored = {k: store.oldest_received(k, writer=True) if held.get(k) else None
                               for k in KINDS}

    def _read_failed(self, exc: sqlite3.DatabaseError) -> None:
        text = str(exc)
        self._write_errors = {**self._write_errors, "read": self._write_errors.get("read", 0) + 1}
        if self._last_error != text:
            log.error("buffer read from %s failed (%s)", self.path, exc)
        self._last_error = text
        if "malformed" in text or "not a database" in text:
            self._read_malformed += 1
            if self._read_malformed >= CORRUPT_AFTER and self._recover_requested is None:
                self._recover_requested = text
                if self._commit_soon is not None:
                    self._commit_soon.set()

    def _note_error(self, exc: Exception) -> None:
        text = str(exc)
        kind = ("disk_full" if "full" in text or getattr(exc, "errno", None) == 28
                else "io" if "I/O" in text or isinstance(exc, OSError) else "database")
        # Copy-on-write: stats() may read this dict from the event loop meanwhile.
        self._write_errors = {**self._write_errors, kind: self._write_errors.get(kind, 0) + 1}
        if self._last_error != str(exc):
            log.error("buffer commit to %s failed (%s); keeping %d records in memory and "
                      "retrying every %.1fs", self.path, exc, len(self._pending), self.commit_interval)
        self._last_error = str(exc)
        if "malformed" in str(exc) or "not a database" in str(exc):
            self._malformed += 1
            if self._malformed >= CORRUPT_AFTER:
                self._recover_at_runtime(str(exc))

    def _salvage(self, moved: Path, store: Store,
                 cursors: list[tuple[str, int, list[tuple[int, int]]]] | None = None) -> tuple[int, int | None]:
        from gateway.buffer.salvage import salvage_into

        got = salvage_into(moved, store, max_bytes=self.max_bytes, cursors=cursors)
        return got.records, got.lost

    def _recover_at_runtime(self, reason: str) -> None:
        assert self._store is not None
        self._store.close()
        moved = move_aside(self.path, self.clock())
        self._store = None
        try:
            store, _ = open_store(self.path, self.synchronous, self.clock())
        except (sqlite3.OperationalError, OSError) as exc:
            log.error("BUFFER STORE CORRUPT while running (%s): moved to %s; no fresh store "
                      "yet: %s", reason, moved, exc)
            self._note_error(exc)  # the next commit tries again
            return
        # What this process knows of the cursors is newer than what the damaged file says.
        known = [(c.name, c.low, list(c.done)) for c in self._cursors.values()]
        try:
            recovered, lost = self._salvage(moved, store, known)
        except Exception:
            log.exception("reading back the damaged store failed")
            recovered, lost = 0, sum((self._view.count or {}).values())
        log.error("BUFFER STORE CORRUPT while running (%s): moved to %s; %d records still owed "
                  "were read back into a fresh store, %s could not be read; continuing",
                  reason, moved, recovered, "an unknown number" if lost is None else lost)
        assert store.counters.events is not None
        store.counters.events.append({"time": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
                                      "kind": "corrupt_store", "detail": reason,
                                      "moved_to": str(moved), "records_lost": lost,
                                      "records_recovered": recovered})
        store.counters.add_drop("corrupt", "unknown", lost or 0)
        # Pending records (not yet committed) keep their seqs and go into the fresh store.
        store.counters.next_seq = self._committed_max + 1
        for cur in self._cursors.values():
            cur.dirty = True
        self._persisted_lows = {}
        self._store = store
        self._malformed = 0

    def _finish(self, snap: _Snapshot, ok: bool) -> None:
        self._committing = 0
        if not ok:
            return
        n = snap.taken
        done, self._pending = self._pending[:n], self._pending[n:]
        self._pending_bytes -= sum(row_cost(len(r.body), len(r.source)) for _, r in done)
        self._committed_max = max(self._committed_max, snap.next_seq - 1)
        self._deleted_through = max(self._deleted_through, snap.delete_through)
        for name, version in snap.versions.items():
            if snap.skipped:
                break  # not written: a cursor (even a new one) must reach the store later
            if name in self._cursors and self._versions.get(name) == version:
                self._cursors[name].dirty = False
        for name in snap.forget:
            self._forget.remove(name)
        for reason, per in snap.mem_drops.items():
            for kind, k in per.items():
                self._mem_drops[reason][kind] -= k

    # ---- cursors and delivery ------------------------------------------------------------
    def register(self, name: str, start: Literal["newest", "oldest"] = "newest",
                 live_first: bool = True) -> None:
        """Add a forwarder's cursor; one already in the store keeps its position.

        ``live_first`` (default): after an outage the newest records go out beside the
        backlog (a network server needs a fresh uplink within a second), so delivery is two
        ascending streams. False: strictly in sequence order, oldest unsent first.
        """
        if name in self._cursors:
            self._cursors[name].live_first = live_first  # the order is configuration, not state
            return
        low = self._next_seq - 1 if start == "newest" else self._deleted_through
        self._cursors[name] = Cursor(name, low, live_mark=low, live_first=live_first)
        self._versions[name] = 0
        if name in self._forget:
            self._forget.remove(name)

    def unregister(self, name: str) -> None:
        """Forget a forwarder removed from the configuration, so it holds no records back."""
        if self._cursors.pop(name, None) is not None:
            self._forget.append(name)
            self._persisted_lows.pop(name, None)

    def cursors(self) -> list[str]:
        return list(self._cursors)

    async def next_batch(self, name: str, max_records: int, max_bytes: int,
                         stop: asyncio.Event | None = None) -> Batch | None:
        """Wait until records are available for ``name``; claim up to the given bounds.
        None when ``stop`` is set first (whoever sets it calls :meth:`wake` too)."""
        ev = self._wake.setdefault(name, asyncio.Event())
        while True:
            ev.clear()
            if stop is not None and stop.is_set():
                return None
            batch = self.take(name, max_records, max_bytes)
            if batch is not None:
                return batch
            await ev.wait()

    def wake(self, name: str) -> None:
        """Wake a :meth:`next_batch` waiting for ``name`` (it looks at its ``stop`` again)."""
        ev = self._wake.get(name)
        if ev is not None:
            ev.set()

    def take(self, name: str, max_records: int, max_bytes: int) -> Batch | None:
        """Non-waiting form of :meth:`next_batch`. Live records get half a batch during backlog
        unless the cursor was registered with ``live_first=False``."""
        self._watch_clock()  # before a forwarder judges ages (LNS replay) against the clock
        cur = self._cursors[name]
        version = (cur.low, len(cur.done))
        try:
            out, ranges = cur.take(self._next_seq - 1, max_records, max_bytes, self._read)
        except sqlite3.DatabaseError as exc:
            # Nothing was claimed or marked done: the records are offered again once the store
            # reads (or was recovered); the caller waits for the next append meanwhile.
            self._read_failed(exc)
            return None
        if (cur.low, len(cur.done)) != version:
            self._versions[name] += 1  # empty stretches were marked done: persist that
        return Batch(name, out, ranges) if out else None

    def _read(self, lo: int, hi: int, limit: int) -> list[tuple[int, Record]]:
        res: list[tuple[int, Record]] = []
        if lo <= self._committed_max and self._store is not None:
            if not self._unsaved_steps:
                res = self._store.read_range(lo, min(hi, self._committed_max), limit)
            else:
                with self._step_lock:  # a commit applying the steps is not half-way meanwhile
                    res = self._restamp(self._store.read_range(lo, min(hi, self._committed_max), limit),
                                        self._unsaved_steps)
        if len(res) < limit and hi > self._committed_max:
            pending = self._pending
            start = bisect.bisect_left(pending, max(lo, self._committed_max + 1), key=_seq)
            stop = min(bisect.bisect_right(pending, hi, lo=start, key=_seq), start + limit - len(res))
            res += pending[start:stop]
        return res

    def ack(self, name: str, batch: Batch, seqs: Iterable[int] | None = None) -> None:
        """The backend took ``seqs`` (default: all of the batch); the rest is released."""
        cur = self._cursors.get(name)
        if cur is None:
            return
        if seqs is not None and not isinstance(seqs, (list, tuple, set, frozenset)):
            seqs = list(seqs)
        cur.settle(batch.ranges, () if seqs is None else [s for s, _ in batch.records], seqs)
        self._versions[name] += 1
        if name in self._wake:
            self._wake[name].set()
        if seqs is None or seqs:
            cur.last_ack = self._monotonic()
        if self._settle_wake is not None:
            self._settle_wake.set()  # a commit waiting for acks looks again

    def set_online(self, name: str, online: bool) -> None:
        """The delivery loop's word on its backend: connected and answering, or not. Only a
        commit's wait for in-flight records (``_settle``) looks at it: records owed to a
        forwarder that is not online never hold a commit back."""
        cur = self._cursors.get(name)
        if cur is None or cur.online == online:
            return
        cur.online = online
        if self._settle_wake is not None:
            self._settle_wake.set()

    def release(self, name: str, batch: Batch) -> None:
        """Delivery failed: every record of the batch will be offered again."""
        self.ack(name, batch, ())

    # ---- wall-clock steps -------------------------------------------------------------
    def _watch_clock(self) -> None:
        step = self._watch.check()
        if step is None:
            return
        log.warning("the wall clock stepped by %+.0f s (NTP, or a bad time source): the receive "
                    "times of the records this process holds move with it, so their ages "
                    "(max_age, replay age) count the time that really passed", step.delta_us / 1e6)
        self._pending = self._restamp(self._pending, [step])
        self._steps_seen = [*self._steps_seen, {
            "time": datetime.fromtimestamp(step.at, UTC).isoformat(timespec="seconds"),
            "step_s": round(step.delta_us / 1e6, 3)}][-8:]
        with self._step_lock:
            self._unsaved_steps = [*self._unsaved_steps, step]
        if self._commit_soon is not None:
            self._commit_soon.set()

    def _restamp(self, rows: list[tuple[int, Record]], steps: list[Step]) -> list[tuple[int, Record]]:
        first = self._run_first if self._run_first is not None else 0
        out = []
        for seq, r in rows:
            rx = r.received_us
            if seq >= first:
                for step in steps:
                    rx = step.apply(rx)
            out.append((seq, r if rx == r.received_us else r._replace(received_us=rx)))
        return out

    # ---- status --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Figures for /api/status and ``schwebe buffer inspect``."""
        self._watch_clock()
        now = self.clock()
        v = self._view
        assert v.count is not None and v.nbytes is not None and v.drops is not None
        drops = copy.deepcopy(v.drops)
        for reason, per in self._mem_drops.items():
            for kind, n in per.items():
                if n:
                    drops.setdefault(reason, {})
                    drops[reason][kind] = drops[reason].get(kind, 0) + n
        oldest: dict[str, float | None] = {}
        cursors: dict[str, Any] = {}
        if self._store is not None:
            for k in KINDS:
                rx = self._oldest_stored.get(k) if v.count.get(k) else None
                if rx is None:
                    rx = next((r.received_us for _, r in self._pending if r.kind == k), None)
                oldest[k] = None if rx is None else round(max(0.0, now - rx / 1e6), 3)
            for name, cur in self._cursors.items():
                depth, lag = self.cursor_lag(name)
                cursors[name] = {
                    "depth_records": depth, "lag_s": lag,
                    "low": cur.low, "acked_ranges": len(cur.done), "inflight": cur.inflight.size(),
                    "order": "live_first" if cur.live_first else "strict",
                }
        return {
            "path": str(self.path),
            "mode": {"journal": "wal", "synchronous": self.synchronous},
            "records": sum(v.count.values()) + len(self._pending),
            "bytes": sum(v.nbytes.values()) + self._pending_bytes,
            "max_bytes": self.max_bytes,
            "pending_records": len(self._pending),
            "pending_bytes": self._pending_bytes,
            "oldest_age_s": oldest,
            "cursors": cursors,
            "drops": drops,
            "last_commit": None if self._last_commit is None
            else datetime.fromtimestamp(self._last_commit, UTC).isoformat(),
            "last_commit_duration_s": round(self._last_commit_s, 4),
            "write_errors": dict(self._write_errors),
            "last_write_error": self._last_error,
            "recovery_events": list(v.events or []),
            "clock_steps": list(self._steps_seen),
            "next_seq": self._next_seq,
        }

    def cursor_lag(self, name: str) -> tuple[int, float]:
        """(records not yet acknowledged, age in seconds of the oldest of them) for a cursor.

        The count is seq arithmetic, no COUNT(*): exact unless records were dropped by
        policy, then an upper bound capped at the number of records held.
        """
        cur = self._cursors.get(name)
        if cur is None:
            return 0, 0.0
        total = sum((self._view.count or {}).values()) + len(self._pending)
        depth = min(total, cur.pending_count(self._next_seq - 1))
        first = self._first_unsent(cur) if depth else None
        return depth, 0.0 if first is None else round(max(0.0, self.clock() - first / 1e6), 3)

    def _first_unsent(self, cur: Cursor) -> int | None:
        lo = cur.low + 1
        first = cur.done.first()
        if lo <= self._committed_max and self._store is not None:
            try:
                got = self._store.read_range(lo, first[0] - 1 if first else self._committed_max, 1)
            except sqlite3.DatabaseError as exc:
                self._read_failed(exc)
                got = []
            if got:
                return got[0][1].received_us
        pend = self._read(max(lo, self._committed_max + 1), self._next_seq, 1)
        return pend[0][1].received_us if pend else None


def buffer_path(data_dir: Path) -> Path:
    """Where the daemon keeps its store inside ``gateway.data_dir``."""
    return Path(data_dir) / "buffer.sqlite3"

