"""Records a forwarder can never send, kept beside the buffer instead of blocking the rest.

One bad record (a body no encoder can write, a value a backend's format cannot hold) must not
stop the records behind it, for any forwarder and across restarts. The delivery loop isolates
it and hands it here: one JSON line per record in ``<data_dir>/<forwarder>.set-aside.jsonl``
(0600, capped), written so that it cannot fail on the record itself (the body as CBOR hex).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson

from gateway.records import Record

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES: Final = 16 << 20


class SetAsideFile:
    """Append-only, size-capped JSON Lines file of records set aside by one forwarder."""

    def __init__(self, path: Path | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.kept = 0  # records written by this process
        self.not_kept = 0  # records the cap, a missing directory or an I/O error left out

    def add(self, seq: int, record: Record, reason: str) -> bool:
        """Keep one record; True when it is on disk (blocking: call it off the event loop)."""
        line = orjson.dumps({
            "set_aside_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": reason[:300],
            "seq": seq, "kind": record.kind, "source": record.source,
            "received_us": record.received_us, "body_cbor_hex": record.body.hex(),
        }) + b"\n"
        if self.path is None:
            self.not_kept += 1
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            self.not_kept += 1
            log.error("cannot open %s: %s; a set-aside record is not kept", self.path, exc)
            return False
        try:
            os.fchmod(fd, 0o600)  # records may name devices and places: not for every user
            if os.fstat(fd).st_size + len(line) > self.max_bytes:
                self.not_kept += 1
                return False
            os.write(fd, line)
            os.fsync(fd)
        except OSError as exc:
            self.not_kept += 1
            log.error("cannot write %s: %s; a set-aside record is not kept", self.path, exc)
            return False
        finally:
            os.close(fd)
        self.kept += 1
        return True
