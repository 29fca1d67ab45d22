"""Local JSON Lines sink: one line per record, appended and fsynced per batch (the demo's backend).

A record is acknowledged only after its line is on disk, so a USB stick or the demo's file
sees every record at least once. Bytes inside bodies are written as lower-case hex.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
from pathlib import Path
from typing import IO, Any

import cbor2
import orjson

from gateway.config import FileForward
from gateway.forward.base import Forwarder, ForwarderError, SendResult
from gateway.records import Record

_OPTS = orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    # orjson calls this for what JSON has no type for; CBOR can carry all of these.
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, cbor2.CBORTag):
        return {"tag": obj.tag, "value": obj.value}
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, _dt.date):
        return obj.isoformat()
    return str(obj)


def record_json(seq: int, record: Record) -> dict[str, Any]:
    """The line written for one record (also what tests and the demo page read back)."""
    try:
        body: Any = cbor2.loads(record.body)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        body = {"undecodable_cbor": record.body.hex(), "error": str(exc)}
    return {"seq": seq, "kind": record.kind, "source": record.source,
            "received_us": record.received_us, "body": body}


def record_line(seq: int, record: Record) -> bytes:
    return orjson.dumps(record_json(seq, record), default=_default, option=_OPTS) + b"\n"


class FileForwarder(Forwarder):
    """Appends to ``cfg.path``; the file is opened on connect and closed on close."""

    def __init__(self, cfg: FileForward) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or None, dev_addr_prefixes=cfg.dev_addr_prefixes,
                         net_ids=cfg.net_ids)
        self.path = Path(cfg.path)
        self._fh: IO[bytes] | None = None
        self.lines_written = 0
        self.bytes_written = 0

    async def connect(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held open across batches on purpose
        except OSError as exc:
            raise ForwarderError(
                "open", f"cannot open {self.path} for appending ({exc.strerror}); "
                "check forward.file.path and that the directory is writable") from exc

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if self._fh is None:
            raise ForwarderError("not_open", f"{self.path} is not open")
        chunk = b"".join(record_line(seq, r) for seq, r in records)
        await asyncio.to_thread(self._write, chunk)
        self.lines_written += len(records)
        self.bytes_written += len(chunk)
        return SendResult.all()

    def _write(self, chunk: bytes) -> None:
        assert self._fh is not None
        try:
            self._fh.write(chunk)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            # A short write leaves a partial line; the reader skips it, the retry rewrites it.
            raise ForwarderError("write", f"writing {len(chunk)} bytes to {self.path}: {exc.strerror}") from exc

    async def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            await asyncio.to_thread(fh.close)

    def health(self) -> dict[str, Any]:
        return {"path": str(self.path), "lines_written": self.lines_written,
                "bytes_written": self.bytes_written}
