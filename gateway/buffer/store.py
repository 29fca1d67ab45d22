"""The buffer's SQLite file: schema, migration, fast integrity check, and the SQL of a commit.

Policy (what to drop, when to commit) lives in ``gateway.buffer``; this room only knows how
rows are laid out and how to change them in few, large, append-mostly transactions.
Counters live in a meta row so opening a store of ten million records never counts them.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gateway.records import KINDS, PRIORITY, Record

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: Estimated bytes a row costs beyond its body and source: rowid, header, the kind index
#: entry, page slack. Measured at ~45-55 bytes for 100-byte bodies; rounded up so the budget
#: errs on the side of a smaller file.
ROW_OVERHEAD: Final = 64
KIND_CODE: Final[dict[str, int]] = {k: i for i, k in enumerate(KINDS)}
MAX_EVENTS: Final = 20  # recovery events kept in the meta row for the status page

_META_V1: Final = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_RECORDS_V1: Final = (
    "CREATE TABLE records (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, "
    "priority INTEGER NOT NULL, received_us INTEGER NOT NULL, source TEXT NOT NULL, "
    "body BLOB NOT NULL)"
)
# The kind index (kind, rowid) finds the oldest row of a kind for drop and expiry policy.
_INDEX_V1: Final = "CREATE INDEX records_by_kind ON records(kind)"
#: Cursors are meta rows ("cursor:<name>" -> {"low", "done"}): with the counters they fit one
#: page, so a commit rewrites one small-table page rather than two.
CURSOR_KEY: Final = "cursor:"


class CorruptStore(Exception):
    """The file cannot be used as a buffer store; ``str()`` says why and where."""


def utc_stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


def row_cost(body_len: int, source_len: int) -> int:
    return body_len + source_len + ROW_OVERHEAD


def check_header(path: Path) -> None:
    """Cheap checks on the first 100 bytes and the file size; raise CorruptStore."""
    size = path.stat().st_size
    if size == 0:
        return  # SQLite treats an empty file as a new database
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100:
        raise CorruptStore(f"{path}: truncated, {size} bytes is shorter than the 100-byte header")
    if head[:16] != SQLITE_MAGIC:
        raise CorruptStore(f"{path}: not an SQLite file (bytes 0-15 are {head[:16].hex()})")
    (page_size,) = struct.unpack(">H", head[16:18])
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise CorruptStore(f"{path}: page size {page_size} at byte offset 16 is invalid")
    change, pages = struct.unpack(">II", head[24:32])
    (valid_for,) = struct.unpack(">I", head[92:96])
    wal = Path(f"{path}-wal")
    has_wal = wal.exists() and wal.stat().st_size > 0
    # The in-header page count is trustworthy only when written by the same change; a WAL
    # may hold pages not yet copied back, so only judge a file without one.
    if valid_for == change and not has_wal and pages * page_size > size:
        raise CorruptStore(
            f"{path}: truncated, header at byte offset 28 says {pages} pages of {page_size} "
            f"bytes ({pages * page_size} bytes) but the file has {size}"
        )


@dataclass
class Counters:
    """Totals kept in the meta row, changed in the same transaction as the rows."""

    next_seq: int = 1
    count: dict[str, int] | None = None
    nbytes: dict[str, int] | None = None
    drops: dict[str, dict[str, int]] | None = None
    events: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.count = self.count or {k: 0 for k in KINDS}
        self.nbytes = self.nbytes or {k: 0 for k in KINDS}
        self.drops = self.drops or {}
        self.events = self.events or []

    def to_json(self) -> str:
        return json.dumps(
            {"next_seq": self.next_seq, "count": self.count, "bytes": self.nbytes,
             "drops": self.drops, "events": self.events},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Counters:
        d = json.loads(text)
        return cls(d["next_seq"], d["count"], d["bytes"], d["drops"], d.get("events", []))

    def add_drop(self, reason: str, kind: str, n: int) -> None:
        if n:
            assert self.drops is not None
            per = self.drops.setdefault(reason, {})
            per[kind] = per.get(kind, 0) + n


def _connect(path: Path, synchronous: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                              check_same_thread=False)
    else:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("PRAGMA busy_timeout=5000")
    return con


def _migrate_v0(con: sqlite3.Connection) -> Counters:
    """v0 (the first prototype): kind as text, no priority, cursors without ranges, no meta."""
    log.warning("buffer store has schema version 0; migrating to %d", SCHEMA_VERSION)
    con.execute("BEGIN IMMEDIATE")
    con.execute("ALTER TABLE records RENAME TO records_v0")
    con.execute(_META_V1)
    con.execute(_RECORDS_V1)
    cases = " ".join(f"WHEN '{k}' THEN {KIND_CODE[k]}" for k in KINDS)
    prios = " ".join(f"WHEN '{k}' THEN {PRIORITY[k]}" for k in KINDS)
    con.execute(
        f"INSERT INTO records (seq, kind, priority, received_us, source, body) "
        f"SELECT seq, CASE kind {cases} ELSE {KIND_CODE['event']} END, "
        f"CASE kind {prios} ELSE 2 END, received_us, source, body FROM records_v0"
    )
    con.execute("DROP TABLE records_v0")
    con.execute(_INDEX_V1)
    for name, low in con.execute("SELECT name, low FROM cursors").fetchall():
        con.execute("INSERT INTO meta VALUES (?, ?)", (CURSOR_KEY + name, json.dumps({"low": low, "done": []})))
    con.execute("DROP TABLE cursors")
    c = Counters()
    assert c.count is not None and c.nbytes is not None
    for code, n, nb, top in con.execute(
        "SELECT kind, COUNT(*), SUM(length(body) + length(source)), MAX(seq) FROM records GROUP BY kind"
    ):
        k = KINDS[code]
        c.count[k] = n
        c.nbytes[k] = nb + n * ROW_OVERHEAD
        c.next_seq = max(c.next_seq, top + 1)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('counters', ?)", (c.to_json(),))
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    con.execute("COMMIT")
    return c


class Store:
    """One open store: a writer connection (used from one thread at a time) and a reader."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self._saved_counters: str | None = None  # the counters row as last written
        self.w = _connect(path, synchronous)
        try:
            self.counters = self._load()
            self.r = _connect(path, synchronous)
        except BaseException:
            self.w.close()
            raise

    def _load(self) -> Counters:
        con = self.w
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and "records" in tables and "meta" not in tables:
            counters = _migrate_v0(con)
        elif version == 0 and not tables:
            counters = Counters()
            con.execute("BEGIN IMMEDIATE")
            for ddl in (_META_V1, _RECORDS_V1, _INDEX_V1):
                con.execute(ddl)
            con.execute("INSERT INTO meta VALUES ('counters', ?)", (counters.to_json(),))
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute("COMMIT")
        elif version == SCHEMA_VERSION:
            row = con.execute("SELECT value FROM meta WHERE key='counters'").fetchone()
            if row is None:
                raise CorruptStore(f"{self.path}: the meta row 'counters' is missing")
            counters = Counters.from_json(row[0])
        else:
            raise CorruptStore(
                f"{self.path}: schema version {version} is unknown to this build "
                f"(expected {SCHEMA_VERSION}); was it written by a newer Schwebe?"
            )
        # A cheap probe: the ends of the rowid tree and one full row at each end.
        # Two queries: SQLite answers a lone MIN() or MAX() from the b-tree edge, but scans
        # the whole table for both in one SELECT.
        lo = con.execute("SELECT MIN(seq) FROM records").fetchone()[0]
        hi = con.execute("SELECT MAX(seq) FROM records").fetchone()[0]
        for seq in {lo, hi} - {None}:
            row = con.execute("SELECT kind, length(body), source FROM records WHERE seq=?", (seq,)).fetchone()
            if row is None or not 0 <= row[0] < len(KINDS):
                raise CorruptStore(f"{self.path}: record {seq} is unreadable or has a bad kind")
        if hi is not None and hi >= counters.next_seq:
            raise CorruptStore(f"{self.path}: record {hi} is beyond next_seq {counters.next_seq}")
        self._cursor_rows(con)
        return counters

    def close(self) -> None:
        self.r.close()
        self.w.close()

    # ---- reads (reader connection, event-loop thread) ----------------------------------
    def read_range(self, lo: int, hi: int, limit: int) -> list[tuple[int, Record]]:
        rows = self.r.execute(
            "SELECT seq, kind, source, received_us, body, priority FROM records "
            "WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
            (lo, hi, limit),
        ).fetchall()
        return [(s, Record(KINDS[k], src, rx, bytes(body), prio)) for s, k, src, rx, body, prio in rows]

    def first_received_after(self, seq: int) -> int | None:
        row = self.r.execute(
            "SELECT received_us FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
        ).fetchone()
        return None if row is None else int(row[0])

    def oldest_received(self, kind: str, *, writer: bool = False) -> int | None:
        """Receive time of the kind's oldest row; ``writer`` reads inside the writer's own
        transaction (the committer's), so no reader touches the WAL index for it."""
        row = (self.w if writer else self.r).execute(
            "SELECT received_us FROM records WHERE kind = ? ORDER BY seq LIMIT 1", (KIND_CODE[kind],)
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _cursor_rows(con: sqlite3.Connection) -> list[tuple[str, int, list[tuple[int, int]]]]:
        out = []
        for key, value in con.execute(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?", (CURSOR_KEY, CURSOR_KEY[:-1] + ";")
        ):
            d = json.loads(value)
            out.append((key[len(CURSOR_KEY):], int(d["low"]), [(int(a), int(b)) for a, b in d["done"]]))
        return out

    def load_cursors(self) -> list[tuple[str, int, list[tuple[int, int]]]]:
        return self._cursor_rows(self.w)

    def file_bytes(self) -> int:
        """Bytes in use by pages (file size less free pages), as the writer sees it now."""
        page_size = self.w.execute("PRAGMA page_size").fetchone()[0]
        pages = self.w.execute("PRAGMA page_count").fetchone()[0]
        free = self.w.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    # ---- writes (writer connection, inside one transaction) ----------------------------
    def insert(self, rows: Sequence[tuple[int, Record]]) -> None:
        c = self.counters
        assert c.count is not None and c.nbytes is not None
        # Rows below next_seq are already stored (a commit whose completion was not seen,
        # e.g. cancelled mid-flight, is retried with the same rows).
        rows = [(s, r) for s, r in rows if s >= c.next_seq]
        self.w.executemany(
            "INSERT OR IGNORE INTO records (seq, kind, priority, received_us, source, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(s, KIND_CODE[r.kind], r.priority, r.received_us, r.source, r.body) for s, r in rows],
        )
        for s, r in rows:
            c.count[r.kind] += 1
            c.nbytes[r.kind] += row_cost(len(r.body), len(r.source))
            c.next_seq = max(c.next_seq, s + 1)

    def _delete(self, where: str, args: tuple[Any, ...]) -> dict[str, int]:
        """Delete rows matching ``where``; return the number deleted per kind."""
        c = self.counters
        assert c.count is not None and c.nbytes is not None
        gone: dict[str, int] = {}
        for code, n, nb in self.w.execute(
            f"SELECT kind, COUNT(*), SUM(length(body) + length(source)) FROM records WHERE {where} GROUP BY kind",
            args,
        ).fetchall():
            k = KINDS[code]
            gone[k] = n
            c.count[k] -= n
            c.nbytes[k] -= nb + n * ROW_OVERHEAD
        if gone:
            self.w.execute(f"DELETE FROM records WHERE {where}", args)
        return gone

    def delete_through(self, seq: int) -> int:
        """Every cursor has passed ``seq``: one range delete on the rowid tree."""
        return sum(self._delete("seq <= ?", (seq,)).values())

    def rebase(self, first_seq: int, delta_us: int, lo_us: int, hi_us: int) -> int:
        """The wall clock stepped by ``delta_us``: move the receive times of rows from
        ``first_seq`` on that were stamped before the step (outside ``[lo_us, hi_us]``)."""
        cur = self.w.execute(
            "UPDATE records SET received_us = received_us + ? "
            "WHERE seq >= ? AND (received_us < ? OR received_us > ?)",
            (delta_us, first_seq, lo_us, hi_us),
        )
        return cur.rowcount

    def expire(self, kind: str, cutoff_us: int) -> int:
        code = KIND_CODE[kind]
        # Walks the kind's index from its oldest row; stops at the first young one, so the
        # cost is proportional to what is deleted.
        row = self.w.execute(
            "SELECT seq FROM records WHERE kind = ? AND received_us >= ? ORDER BY seq LIMIT 1",
            (code, cutoff_us),
        ).fetchone()
        if row is None:
            gone = self._delete("kind = ?", (code,))
        else:
            gone = self._delete("kind = ? AND seq < ?", (code, row[0]))
        return gone.get(kind, 0)

    def drop_oldest(self, need_bytes: int, chunk: int = 4096) -> dict[str, int]:
        """Free about ``need_bytes`` by deleting the oldest rows of the lowest priority first."""
        dropped: dict[str, int] = {}
        assert self.counters.count is not None
        for prio in sorted(set(PRIORITY.values())):
            kinds = [k for k in KINDS if PRIORITY[k] == prio]
            while need_bytes > 0:
                heads = []
                for k in kinds:
                    if self.counters.count[k] > 0:
                        row = self.w.execute(
                            "SELECT seq FROM records WHERE kind = ? ORDER BY seq LIMIT 1", (KIND_CODE[k],)
                        ).fetchone()
                        if row is not None:
                            heads.append((row[0], k))
                if not heads:
                    break
                _, k = min(heads)
                freed, upto = 0, None
                for seq, cost in self.w.execute(
                    "SELECT seq, length(body) + length(source) FROM records WHERE kind = ? ORDER BY seq LIMIT ?",
                    (KIND_CODE[k], chunk),
                ):
                    freed += cost + ROW_OVERHEAD
                    upto = seq
                    if freed >= need_bytes:
                        break
                if upto is None:
                    break
                n = self._delete("kind = ? AND seq <= ?", (KIND_CODE[k], upto)).get(k, 0)
                dropped[k] = dropped.get(k, 0) + n
                need_bytes -= freed
            if need_bytes <= 0:
                break
        return dropped

    def save_cursors(self, cursors: Iterable[tuple[str, int, list[tuple[int, int]]]]) -> None:
        self.w.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(CURSOR_KEY + n, json.dumps({"low": low, "done": done}, separators=(",", ":")))
             for n, low, done in cursors],
        )

    def delete_cursor(self, name: str) -> None:
        self.w.execute("DELETE FROM meta WHERE key = ?", (CURSOR_KEY + name,))

    def save_counters(self) -> None:
        """Write the counters row, unless it would write what is there already (an idle
        gateway's commit must not dirty a page of the card)."""
        text = self.counters.to_json()
        if text == self._saved_counters:
            return
        self.w.execute("INSERT OR REPLACE INTO meta VALUES ('counters', ?)", (text,))
        self._saved_counters = text

    def transaction(self, body: Callable[[], None]) -> None:
        """Run ``body`` in one write transaction; on failure roll back counters too."""
        self.w.execute("BEGIN IMMEDIATE")
        try:
            body()
            self.save_counters()
            self.w.execute("COMMIT")
        except BaseException:
            try:
                self.w.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            try:
                row = self.w.execute("SELECT value FROM meta WHERE key='counters'").fetchone()
                self.counters = Counters.from_json(row[0])
            except sqlite3.Error:
                pass  # keep in-memory counters; the next successful commit rewrites them
            self._saved_counters = None  # rolled back: write them again next time
            raise


def move_aside(path: Path, now: float) -> Path:
    """Rename a bad store (and its WAL) out of the way; never delete a technician's evidence."""
    stamp = utc_stamp(now)
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    if path.exists():
        os.replace(path, target)
    wal = Path(f"{path}-wal")
    if wal.exists():
        os.replace(wal, Path(f"{target}-wal"))
    shm = Path(f"{path}-shm")
    if shm.exists():
        shm.unlink()
    return target


def salvage_count(path: Path) -> int | None:
    """How many records a bad store claimed to hold, if its meta row is still readable."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key='counters'").fetchone()
            return sum(json.loads(row[0])["count"].values()) if row else None
        finally:
            con.close()
    except Exception:
        return None


def open_store(path: Path, synchronous: str, now: float,
               salvage: Callable[[Path, Store], tuple[int, int | None]] | None = None,
               ) -> tuple[Store, dict[str, Any] | None]:
    """Open or create the store; a bad file is moved aside and a fresh store opened.

    ``salvage(moved, fresh)`` copies what is readable and still owed into the fresh store
    and returns (records recovered, records lost or None when unknown).
    Returns the store and the recovery event (or None). Never raises for a bad file; raises
    sqlite3.OperationalError / OSError when the disk refuses (full, I/O error, locked,
    unwritable directory): then nothing was moved and the caller should try again later.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.exists():
            check_header(path)
        return Store(path, synchronous), None
    except sqlite3.OperationalError:
        # Disk full, I/O error, locked by another process: the file may be fine. Moving it
        # aside would throw good data away, so the caller retries later instead.
        raise
    except (CorruptStore, sqlite3.DatabaseError, json.JSONDecodeError, KeyError, TypeError) as exc:
        reason = str(exc) or type(exc).__name__
    lost = salvage_count(path)
    moved = move_aside(path, now)
    store = Store(path, synchronous)
    recovered = 0
    if salvage is not None:
        try:
            recovered, lost = salvage(moved, store)
        except Exception:  # salvage is a bonus: a fresh store must open whatever it meets
            log.exception("reading back the damaged store failed")
    log.error(
        "BUFFER STORE CORRUPT: %s; moved it to %s and opened a fresh store: %d records still "
        "owed to a forwarder were read back into it, %s could not be read. Keep the moved file "
        "for analysis; `schwebe buffer export` reads what is left of it.",
        reason, moved, recovered, "an unknown number" if lost is None else lost,
    )
    event = {"time": datetime.fromtimestamp(now, UTC).isoformat(), "kind": "corrupt_store",
             "detail": reason, "moved_to": str(moved), "records_lost": lost,
             "records_recovered": recovered}
    c = store.counters
    assert c.events is not None
    c.events.append(event)
    c.add_drop("corrupt", "unknown", lost or 0)
    store.transaction(lambda: None)
    return store, event
