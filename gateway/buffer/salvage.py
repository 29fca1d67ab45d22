"""Reading what is left of a damaged store: around bad pages, and past a destroyed header.

Used by ``schwebe buffer export`` on a store moved aside and by the buffer itself, which puts
every readable record some forwarder still needed into the fresh store, so a card that
damaged a few pages costs those pages and not the whole backlog.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.buffer.store import SQLITE_MAGIC, Counters, Store
from gateway.records import KINDS, Record

Row = tuple[int, int, int, int, str, bytes]  # seq, kind code, priority, received_us, source, body


def connect_ro(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.execute("PRAGMA busy_timeout=5000")
    return con


@contextlib.contextmanager
def readable_copy(path: Path) -> Iterator[Path]:
    """``path`` itself, or a temporary copy with a working SQLite header when its first
    100 bytes were destroyed (the pages behind them are often intact: a store uses 4 KiB
    pages, so the header of a fresh database of that size fits it)."""
    with path.open("rb") as f:
        head = f.read(100)
    if head[:16] == SQLITE_MAGIC and struct.unpack(">H", head[16:18])[0] in (4096,):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="schwebe-salvage-") as tmp:
        template = Path(tmp) / "template.sqlite3"
        con = sqlite3.connect(template)
        con.execute("PRAGMA page_size=4096")
        con.execute("CREATE TABLE t (x)")
        con.commit()
        con.close()
        header = bytearray(template.read_bytes()[:100])
        # a change counter unlike "version valid for" makes SQLite take the page count from
        # the file's size; no freelist (the damaged one cannot be trusted)
        header[24:28] = struct.pack(">I", 1)
        header[92:96] = struct.pack(">I", 2)
        header[32:40] = bytes(8)
        copy = Path(tmp) / "repaired.sqlite3"
        with path.open("rb") as src, copy.open("wb") as dst:
            src.seek(100)
            dst.write(header)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        yield copy


def readable_rows(con: sqlite3.Connection, since: int = 0,
                  skipped: list[tuple[int, int]] | None = None, where: str = "",
                  args: tuple[Any, ...] = ()) -> Iterator[Row]:
    """Rows with seq >= ``since`` in seq order, reading around damaged pages.

    When reading fails after seq ``n`` the next readable seq is searched for and reading goes
    on from there; each unreadable stretch is appended to ``skipped`` as (first, last), last
    -1 when nothing beyond was readable. An unreadable table raises sqlite3.DatabaseError.
    """
    sql = ("SELECT seq, kind, priority, received_us, source, body FROM records WHERE seq >= ?"
           + (f" AND {where}" if where else "") + " ORDER BY seq")
    lo = since
    while True:
        last = lo - 1
        try:
            for row in con.execute(sql, (lo, *args)):
                last = row[0]
                yield row
            return
        except sqlite3.DatabaseError:
            if last < since and _first_readable(con, since) is None:
                raise
            nxt = _first_readable(con, last + 1)
            if nxt is None or nxt <= last + 1:
                if skipped is not None:
                    skipped.append((last + 1, -1))
                return
            if skipped is not None:
                skipped.append((last + 1, nxt - 1))
            lo = nxt


def _readable_from(con: sqlite3.Connection, seq: int) -> int | bool | None:
    """The first seq >= ``seq`` whose rows read back (a few of them), None past the end, or
    False when reading there fails."""
    try:
        rows = con.execute("SELECT seq, body FROM records WHERE seq >= ? ORDER BY seq LIMIT 8",
                           (seq,)).fetchall()
    except sqlite3.DatabaseError:
        return False
    return int(rows[0][0]) if rows else None


def _first_readable(con: sqlite3.Connection, start: int) -> int | None:
    """Smallest readable seq at or after ``start`` (damaged pages skipped), None if none."""
    at = _readable_from(con, start)
    if at is not False:
        return None if at is None else int(at)
    # Gallop past the damage, then bisect back so as few readable records as possible are lost.
    bad, step = start, 1
    while True:
        probe = start + step
        if probe > 1 << 62:
            return None
        at = _readable_from(con, probe)
        if at is None:
            return None
        if at is not False:
            break
        bad, step = probe, step * 2
    good = probe
    while good - bad > 1:
        mid = (bad + good) // 2
        if _readable_from(con, mid) is False:
            bad = mid
        else:
            good = mid
    found = _readable_from(con, good)
    return None if found is None or found is False else int(found)


@dataclass
class Salvaged:
    """What came back from a damaged store into a fresh one."""

    records: int = 0  # readable records some forwarder still needed, now in the fresh store
    lost: int | None = None  # records still needed that could not be read (None: unknown)
    cursors: list[tuple[str, int, list[tuple[int, int]]]] = field(default_factory=list)
    next_seq: int = 1


def _acked_by_all(seq: int, cursors: list[tuple[str, int, list[tuple[int, int]]]]) -> bool:
    return bool(cursors) and all(seq <= low or any(a <= seq <= b for a, b in done)
                                 for _n, low, done in cursors)


def salvage_into(bad: Path, store: Store, *, max_bytes: int,
                 cursors: list[tuple[str, int, list[tuple[int, int]]]] | None = None) -> Salvaged:
    """Copy every readable record of ``bad`` that some forwarder had not acknowledged into
    ``store`` (same seqs), in transactions of a thousand; keep the cursors. ``cursors`` (from
    a running buffer's memory) override the damaged file's own."""
    out = Salvaged()
    shm = Path(f"{bad}-shm")
    had_shm = shm.exists()
    try:
        with readable_copy(bad) as path:
            con = connect_ro(path)
            try:
                own: list[tuple[str, int, list[tuple[int, int]]]] = []
                with contextlib.suppress(sqlite3.DatabaseError, ValueError, KeyError, TypeError):
                    own = Store._cursor_rows(con)
                with contextlib.suppress(sqlite3.DatabaseError, ValueError, KeyError, TypeError):
                    row = con.execute("SELECT value FROM meta WHERE key='counters'").fetchone()
                    if row is not None:
                        out.next_seq = Counters.from_json(row[0]).next_seq
                out.cursors = cursors if cursors is not None else own
                floor = min((low for _n, low, _d in out.cursors), default=0)
                skipped: list[tuple[int, int]] = []
                batch: list[tuple[int, Record]] = []
                size = 0
                with contextlib.suppress(sqlite3.DatabaseError):
                    for seq, kind, prio, rx, source, body in readable_rows(con, floor + 1, skipped):
                        out.next_seq = max(out.next_seq, seq + 1)
                        if _acked_by_all(seq, out.cursors) or not 0 <= kind < len(KINDS):
                            continue
                        size += len(body) + len(source)
                        if size > max_bytes:
                            break  # the fresh store keeps its size limit: the oldest stay behind
                        batch.append((seq, Record(KINDS[kind], source, rx, bytes(body), prio)))
                        if len(batch) >= 1000:
                            _insert(store, batch)
                            out.records += len(batch)
                            batch = []
                if batch:
                    _insert(store, batch)
                    out.records += len(batch)
                out.lost = sum(_owed(a, b if b >= 0 else out.next_seq - 1, out.cursors)
                               for a, b in skipped)
            finally:
                con.close()
    except (OSError, sqlite3.Error):
        out.lost = None
    finally:
        if not had_shm:  # reading made it; the evidence stays as it was moved aside
            with contextlib.suppress(OSError):
                shm.unlink()
    if out.cursors:
        store.transaction(lambda: store.save_cursors(out.cursors))
    store.counters.next_seq = max(store.counters.next_seq, out.next_seq)
    return out


def _insert(store: Store, batch: list[tuple[int, Record]]) -> None:
    store.transaction(lambda: store.insert(batch))


def _owed(first: int, last: int, cursors: list[tuple[str, int, list[tuple[int, int]]]]) -> int:
    """Seqs in [first, last] some cursor had not acknowledged (the upper bound for a stretch
    too long to walk)."""
    if last < first:
        return 0
    if last - first > 200_000:
        return last - first + 1
    return sum(1 for s in range(first, last + 1) if not _acked_by_all(s, cursors))
