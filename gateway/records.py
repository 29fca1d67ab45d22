"""Records: the one shape in which data crosses from sources to the buffer and forwarders.

Drivers build records, the buffer stores them, forwarders read them. A record never
carries a reference to the driver or backend that touched it.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Final, Literal, NamedTuple

import cbor2

from gateway.frames import cbor_dumps_fast

Kind = Literal["uplink", "parking", "stats", "event"]
KINDS: Final[tuple[str, ...]] = ("uplink", "parking", "stats", "event")

#: Higher outranks lower when the buffer must drop: parking state and events
#: are worth more than raw frames (a network server can live without a replay).
PRIORITY: Final[dict[str, int]] = {"uplink": 0, "stats": 1, "parking": 2, "event": 2}


class Record(NamedTuple):
    """One thing that happened, ready to be stored and forwarded.

    ``body`` is CBOR; use :func:`make_record` / :meth:`decoded` rather than
    encoding by hand so every producer writes the same shape. Immutable, compared and hashed
    by its fields. A named tuple rather than a frozen dataclass: every frame makes one, and
    a frozen dataclass took 0.6 µs to build against 0.13 µs (the packet-forwarder door builds
    them in C, ext/_push_records.pxi).
    """

    kind: str
    source: str
    received_us: int  # UTC, microseconds since the epoch
    body: bytes  # CBOR
    priority: int = 0

    def decoded(self) -> Any:
        return cbor2.loads(self.body)


def now_us() -> int:
    return time.time_ns() // 1000


def make_record(kind: str, source: str, body: Any, received_us: int | None = None) -> Record:
    if kind not in PRIORITY:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    return Record(
        kind=kind,
        source=source,
        received_us=now_us() if received_us is None else received_us,
        # the compiled writer for plain bodies (every frame's), cbor2 for the rest: same bytes
        body=cbor_dumps_fast(body) or cbor2.dumps(body),
        priority=PRIORITY[kind],
    )


def iso_us(us: int) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2026-11-25T17:20:00.123456Z``."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_iso_second(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    # Records of one burst share their second: formatting it once saves most of the cost.
    # gmtime + strftime: a third of datetime's cost.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
