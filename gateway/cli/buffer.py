"""`schwebe buffer inspect|export`: read a buffer store, even one a running daemon has open.

Only reads (SQLite read-only connection; WAL lets it run beside the daemon's writer), so a
technician can look and carry data away without stopping forwarding or changing a cursor.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import cbor2

from gateway.buffer import buffer_path
from gateway.buffer.salvage import connect_ro, readable_copy, readable_rows
from gateway.buffer.store import KIND_CODE, Counters, Store
from gateway.datadir import live_holder
from gateway.records import KINDS


def _connect_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no buffer store at {path}; check --data-dir (the daemon's gateway.data_dir)")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.execute("PRAGMA busy_timeout=5000")
    return con


def inspect_store(path: Path, now: float | None = None) -> dict[str, Any]:
    """The figures `inspect` prints, computed without counting rows."""
    now = time.time() if now is None else now
    con = _connect_ro(path)
    try:
        row = con.execute("SELECT value FROM meta WHERE key='counters'").fetchone()
        if row is None:
            raise ValueError(f"{path}: no 'counters' meta row; not a Schwebe buffer store (or schema v0)")
        c = Counters.from_json(row[0])
        assert c.count is not None and c.nbytes is not None
        oldest: dict[str, float | None] = {}
        for k in KINDS:
            r = con.execute("SELECT received_us FROM records WHERE kind=? ORDER BY seq LIMIT 1",
                            (KIND_CODE[k],)).fetchone()
            oldest[k] = None if r is None else round(now - r[0] / 1e6, 3)
        total = sum(c.count.values())
        cursors: dict[str, Any] = {}
        for name, low, ranges in sorted(Store._cursor_rows(con)):
            acked_above = sum(b - a + 1 for a, b in ranges)
            depth = max(0, min(total, c.next_seq - 1 - low - acked_above))
            first = con.execute("SELECT received_us FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (low,)).fetchone()
            cursors[name] = {"depth_records": depth, "low": low, "acked_ranges": len(ranges),
                             "lag_s": 0.0 if first is None or depth == 0 else round(now - first[0] / 1e6, 3)}
        return {
            "path": str(path),
            "records": total,
            "records_by_kind": dict(c.count),
            "bytes": sum(c.nbytes.values()),
            "file_bytes": _bytes_on_disk(path),
            "oldest_age_s": oldest,
            "cursors": cursors,
            "drops": c.drops,
            "recovery_events": c.events,
            "next_seq": c.next_seq,
        }
    finally:
        con.close()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray):
        return bytes(obj).hex()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, cbor2.CBORTag):
        return {"tag": obj.tag, "value": _jsonable(obj.value)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def export_rows(path: Path, kind: str | None = None, since_us: int | None = None,
                skipped: list[tuple[int, int]] | None = None) -> Iterator[dict[str, Any]]:
    """Yield records in seq order as JSON-ready dicts; streams, never loads the table.

    A damaged store (a ``*.corrupt-*`` file moved aside) is read around its bad pages, each
    unreadable stretch of seqs appended to ``skipped``; one whose header was destroyed is read
    through a copy with a working header. An unreadable table still raises sqlite3.DatabaseError.
    """
    if not path.exists():
        raise FileNotFoundError(f"no buffer store at {path}; check --data-dir (the daemon's gateway.data_dir)")
    where, args = [], []
    if kind is not None:
        where.append("kind = ?")
        args.append(KIND_CODE[kind])
    if since_us is not None:
        where.append("received_us >= ?")
        args.append(since_us)
    with readable_copy(path) as readable:
        con = connect_ro(readable)
        try:
            for seq, k, prio, rx, source, body in readable_rows(
                    con, 0, skipped, " AND ".join(where), tuple(args)):
                yield _export_row(seq, k, prio, rx, source, body)
        finally:
            con.close()


def _bytes_on_disk(path: Path) -> int:
    """The store with its WAL and shared-memory index: what it takes on the card."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += Path(str(path) + suffix).stat().st_size
        except FileNotFoundError:
            pass
    return total


def _export_row(seq: int, k: int, prio: int, rx: int, source: str, body: bytes) -> dict[str, Any]:
    try:
        decoded: Any = _jsonable(cbor2.loads(body))
    except Exception as exc:
        decoded = {"undecodable_cbor": bytes(body).hex(), "error": str(exc)}
    return {
        "seq": seq, "kind": KINDS[k] if 0 <= k < len(KINDS) else k, "priority": prio,
        "source": source, "received_us": rx,
        "received": datetime.fromtimestamp(rx / 1e6, UTC).isoformat(), "body": decoded,
    }


DEFAULT_CONFIG = Path("/etc/schwebe/schwebe.toml")


def _store_path(args: argparse.Namespace) -> Path:
    """The store to read, said on stderr (which store, and whether a daemon is writing it)."""
    if getattr(args, "file", None):
        path = Path(args.file)
        print(f"schwebe buffer: reading {path}", file=sys.stderr)
        return path
    data_dir: str | Path | None = args.data_dir
    config: str | None = getattr(args, "config", None)
    if not data_dir and not config:
        if not DEFAULT_CONFIG.exists():
            raise ValueError(f"no {DEFAULT_CONFIG}; give --data-dir DIR (the daemon's "
                             "gateway.data_dir), --config FILE or --file STORE")
        config = str(DEFAULT_CONFIG)
    if not data_dir:
        from gateway.config import load_config

        assert config is not None
        data_dir = load_config(Path(config)).gateway.data_dir
    path = buffer_path(Path(data_dir))
    source = f" (gateway.data_dir of {config})" if config and not args.data_dir else ""
    pid = live_holder(Path(data_dir))
    beside = (f"; a daemon (pid {pid}) is running on it: reading read-only, "
              "it never writes or checkpoints the store") if pid else ""
    print(f"schwebe buffer: reading {path}{source}{beside}", file=sys.stderr)
    return path


def _parse_since(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: expected ISO 8601, e.g. 2026-03-01T00:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e6)


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_store(_store_path(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"store      {info['path']} ({info['file_bytes']} bytes on disk, WAL included)")
    print(f"records    {info['records']} ({info['bytes']} bytes counted) "
          + " ".join(f"{k}={n}" for k, n in info["records_by_kind"].items() if n))
    ages = {k: v for k, v in info["oldest_age_s"].items() if v is not None}
    print("oldest     " + (" ".join(f"{k}={v:.0f}s" for k, v in ages.items()) or "-"))
    for name, cur in info["cursors"].items():
        print(f"cursor     {name}: {cur['depth_records']} records behind, lag {cur['lag_s']:.0f}s")
    for reason, per in info["drops"].items():
        print(f"dropped    {reason}: " + " ".join(f"{k}={n}" for k, n in per.items()))
    for ev in info["recovery_events"]:
        print(f"recovery   {ev.get('time')}: {ev.get('detail')} -> {ev.get('moved_to')}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.kind is not None and args.kind not in KINDS:
        raise ValueError(f"--kind {args.kind!r}: expected one of {', '.join(KINDS)}")
    since = None if args.since is None else _parse_since(args.since)
    out: IO[str]
    n = 0
    skipped: list[tuple[int, int]] = []
    with (open(args.out, "w", encoding="utf-8") if args.out else _stdout()) as out:
        try:
            for row in export_rows(_store_path(args), args.kind, since, skipped):
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
                n += 1
        except sqlite3.DatabaseError as exc:
            print(f"schwebe buffer export: store unreadable after {n} records: {exc}", file=sys.stderr)
            return 1
    for a, b in skipped:
        where = f"seq {a} to {b}" if b >= 0 else f"from seq {a} on"
        print(f"schwebe buffer export: damaged pages skipped ({where})", file=sys.stderr)
    print(f"exported {n} records" + (" from a damaged store" if skipped else ""), file=sys.stderr)
    return 1 if skipped else 0


class _stdout:
    def __enter__(self) -> IO[str]:
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (ValueError, FileNotFoundError, sqlite3.DatabaseError) as exc:
            print(f"schwebe buffer: {exc}", file=sys.stderr)
            return 2
    return wrapped


def add_buffer_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `buffer inspect` and `buffer export` on the main CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("buffer", help="look into the durable buffer")
    sub = p.add_subparsers(dest="buffer_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="the daemon's gateway.data_dir (store is buffer.sqlite3 in it)")
    common.add_argument("--file", help="a store file to read instead, e.g. a *.corrupt-* one")
    common.add_argument("--config", help="configuration file (its gateway.data_dir is used; "
                        "default /etc/schwebe/schwebe.toml when no other option is given)")
    i = sub.add_parser("inspect", parents=[common], help="depth per cursor, oldest record, bytes, drops")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_run(_cmd_inspect))
    e = sub.add_parser("export", parents=[common], help="records as JSON Lines (CBOR bodies as JSON)")
    e.add_argument("--kind", help=f"only this kind ({', '.join(KINDS)})")
    e.add_argument("--since", help="only records received at or after this ISO 8601 time")
    e.add_argument("--out", help="write to this file instead of stdout")
    e.set_defaults(func=_run(_cmd_export))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schwebe")
    add_buffer_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
