"""What every backend forwarder is, and the loop that feeds one from the buffer.

A concrete forwarder (MQTT, HTTP, NGSI-LD, LNS) only connects, sends a batch and says which
records its backend acknowledged. Cursors, batching, reconnect backoff with full jitter,
filters and health figures live here, once. A forwarder never reaches back into a driver.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2

from gateway.buffer import Batch, Buffer
from gateway.forward.set_aside import SetAsideFile
from gateway.records import Record

log = logging.getLogger(__name__)

#: What a forwarder raises on a record it cannot encode (orjson's JSONEncodeError is a
#: TypeError, cbor2's errors are ValueErrors); never a connection failure.
POISON_ERRORS: Final = (TypeError, ValueError, RecursionError, OverflowError)
#: A live batch of this many records or more earns the forwarder's whole ``coalesce`` pause;
#: smaller ones a share of it (a lone record 1/32). Batches then shrink to single records sent
#: at once below ~COALESCE_FULL / coalesce records a second (1 600 for MQTT's 20 ms) and grow
#: to the whole pause above: the CPU is saved where it is spent, and at a few hundred frames a
#: second no record waits for the next batch at a commit (the buffer writes those to flash).
COALESCE_FULL: Final = 32

#: NwkID length in bits for each NetID type (LoRaWAN Backend Interfaces 1.0, DevAddr layout).
_NWKID_BITS: Final = (6, 6, 9, 11, 12, 13, 15, 17)


@dataclass(frozen=True, slots=True)
class SendResult:
    """Which sequence numbers the backend acknowledged; ``None`` means the whole batch."""

    acked: frozenset[int] | None = None

    @classmethod
    def all(cls) -> SendResult:
        return cls(None)


class ForwarderError(Exception):
    """A delivery failure with a short ``kind`` for the health counters (``timeout``, ``refused``...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def dev_addr_of(record: Record) -> int | None:
    """DevAddr of an uplink data frame (bytes 1..4 little-endian of the PHYPayload), else None."""
    if record.kind != "uplink":
        return None
    try:
        body = cbor2.loads(record.body)
        phy = base64.b64decode(body["rxpk"]["data"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, cbor2.CBORDecodeError):
        return None
    if len(phy) < 5 or (phy[0] >> 5) not in (2, 3, 4, 5):  # data frames only
        return None
    return int.from_bytes(phy[1:5], "little")


def net_id_matches(dev_addr: int, net_id: int) -> bool:
    """Whether a DevAddr was allocated from ``net_id`` (type prefix and NwkID bits)."""
    net_type = net_id >> 21
    prefix_len = net_type + 1
    if dev_addr >> (32 - prefix_len) != (1 << prefix_len) - 2:  # `type` ones then a zero
        return False
    bits = _NWKID_BITS[net_type]
    nwk_id = (dev_addr >> (32 - prefix_len - bits)) & ((1 << bits) - 1)
    return nwk_id == net_id & ((1 << bits) - 1)


class Broken(asyncio.Event):
    """A forwarder's "this connection died" event that also calls listeners when set.

    The delivery loop waits for records or for this, whichever comes first; with a listener
    that wakes its buffer cursor it waits on one event, where racing two waits cost two tasks
    and a wait() every batch (most of the loop's own CPU at 2 000 frames/s, py-spy).
    """

    def __init__(self) -> None:
        super().__init__()
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        for fn in self._listeners:
            fn()


class Forwarder(abc.ABC):
    """A backend. Subclasses implement connect/send/close; filters come with the constructor.

    ``send`` raises (ideally :class:`ForwarderError`) when the connection is unusable: the
    loop releases the batch, closes and reconnects with backoff. It returns a
    :class:`SendResult` naming what the backend acknowledged; the rest is offered again.

    ``broken``: a forwarder holding a long-lived connection (subscriptions, retained state)
    sets this :class:`Broken` event when that connection dies, so the loop reconnects even while
    no records flow; ``connect`` installs a fresh one. None: the loop learns of failures in ``send`` only.
    An optional ``health()`` returning a dict shows up under ``"backend"`` in the loop's health.
    ``data_dir``: the buffer's directory, set by the :class:`DeliveryLoop`, for a forwarder
    that keeps files of its own next to the buffer (HTTP's put-aside records).
    """

    broken: Broken | None = None
    data_dir: Path | None = None
    #: True when ``connect`` returns only after the backend answered (a CONNACK, a PULL_ACK,
    #: an open file). HTTP-style forwarders connect without a word from the backend: they
    #: count as connected only once a request was answered.
    connect_confirms: bool = True
    #: Seconds between the starts of two sends while the loop keeps up with live traffic:
    #: what arrives meanwhile goes out together. One send per frame costs a wakeup and a
    #: syscall each side (at 2 000 frames/s most of a daemon's CPU); 0 sends at once. A
    #: backlog (a full batch) never waits; sparse traffic waits a share (COALESCE_FULL).
    coalesce: float = 0.0

    def __init__(
        self,
        name: str,
        *,
        kinds: Iterable[str] | None = None,
        dev_addr_prefixes: Iterable[tuple[int, int]] = (),  # (value, bits): config.parse_prefix
        net_ids: Iterable[int] = (),
    ) -> None:
        self.name = name
        self.kinds = None if kinds is None else frozenset(kinds)
        self.dev_addr_prefixes = tuple(dev_addr_prefixes)
        self.net_ids = tuple(net_ids)

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def send(self, records: list[tuple[int, Record]]) -> SendResult: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def accepts(self, record: Record) -> bool:
        """Kind filter, then DevAddr/NetID filters for uplink data frames (others pass)."""
        if self.kinds is not None and record.kind not in self.kinds:
            return False
        if record.kind != "uplink" or not (self.dev_addr_prefixes or self.net_ids):
            return True
        addr = dev_addr_of(record)
        if addr is None:
            return True  # joins and proprietary frames carry no DevAddr to judge by
        for value, bits in self.dev_addr_prefixes:
            if bits == 0 or addr >> (32 - bits) == value >> (32 - bits):
                return True
        return any(net_id_matches(addr, n) for n in self.net_ids)


class DeliveryLoop:
    """Feeds one forwarder from its buffer cursor: batches, acks, reconnects, health."""

    def __init__(
        self,
        buffer: Buffer,
        forwarder: Forwarder,
        *,
        max_batch: int = 500,
        max_batch_bytes: int = 256 << 10,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,  # durations only: steps of the wall clock must not count
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.buffer = buffer
        self.forwarder = forwarder
        path = getattr(buffer, "path", None)  # stand-in buffers (fleet simulation) have none
        if forwarder.data_dir is None and path is not None:
            forwarder.data_dir = Path(path).parent
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self.clock = clock
        self.sleep = sleep
        self.connected = False
        self.answered = False  # the backend has answered since the last connect
        self.attempt = 0
        self.errors: dict[str, int] = {}
        self.sent = 0
        self.acked = 0
        self.filtered = 0
        self.reconnects = 0
        self.last_ack: float | None = None
        self.connected_at = 0.0
        self.last_error: str | None = None
        self.set_aside = 0  # records this forwarder can never send, kept aside (see _send)
        # Tells the buffer whether this backend is connected and answering: a commit waits a
        # few milliseconds for the acks of a healthy forwarder, never for one in an outage.
        self._online: Callable[[str, bool], None] = buffer.set_online
        self._set_aside_store: SetAsideFile | None = None
        self._hooked: Broken | None = None  # the connection whose end wakes our cursor

    def backoff_delay(self) -> float:
        """Full jitter: uniform over [0, min(cap, base * 2**attempt)], so a fleet spreads out."""
        return self.rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2.0 ** min(self.attempt, 62)))

    def _error(self, exc: BaseException, where: str) -> None:
        kind = getattr(exc, "kind", None) or type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = f"{where}: {exc}"
        log.warning("forwarder %s: %s failed (%s): %s", self.forwarder.name, where, kind, exc)

    async def _disconnect(self) -> None:
        self.connected = False
        self.answered = False
        self._online(self.forwarder.name, False)
        with contextlib.suppress(Exception):
            await self.forwarder.close()

    async def run(self) -> None:
        name = self.forwarder.name
        if name not in self.buffer.cursors():
            self.buffer.register(name)
        batch: Batch | None = None
        loop = asyncio.get_running_loop()
        live_sent_at: float | None = None  # loop.time() of the last send of a part-full batch
        live_sent_n = 0  # and how many records it held
        try:
            while True:
                coalesce = self.forwarder.coalesce
                if coalesce > 0 and live_sent_at is not None:
                    # The pause scales with the last batch: sparse traffic (a lone record) waits
                    # 1/32 of it, so a frame every 10 ms is not held for the whole pause,
                    # while a busy stream (COALESCE_FULL records a batch or more) waits it all.
                    # The event loop's monotonic clock: pacing only, no decision hangs on it.
                    pause = coalesce * min(1.0, live_sent_n / COALESCE_FULL)
                    wait = live_sent_at + pause - loop.time()
                    live_sent_at = None
                    if wait > 0:
                        await asyncio.sleep(min(wait, pause))
                if not self.connected:
                    try:
                        await self.forwarder.connect()
                    except Exception as exc:
                        self._error(exc, "connect")
                        delay = self.backoff_delay()
                        self.attempt += 1
                        await self.sleep(delay)
                        continue
                    self.connected = True
                    self.answered = self.forwarder.connect_confirms
                    self._online(name, self.answered)
                    self.connected_at = self.clock()
                    self.reconnects += 1
                batch = await self._next_batch(name)
                if batch is None:
                    # The connection died while idle: reconnect now, not at the next record.
                    self._error(ForwarderError("connection_lost", "connection lost while idle; "
                                               "reconnecting with backoff"), "idle")
                    if self.clock() - self.connected_at >= self.backoff_cap:
                        self.attempt = 0  # it had been stable: no ack will ever reset it while idle
                    await self._disconnect()
                    delay = self.backoff_delay()
                    self.attempt += 1
                    await self.sleep(delay)
                    continue
                wanted: list[tuple[int, Record]] = []
                skipped: list[int] = []
                for s, r in batch.records:  # one filter call per record: it may parse the frame
                    if self.forwarder.accepts(r):
                        wanted.append((s, r))
                    else:
                        skipped.append(s)
                if not wanted:
                    self.buffer.ack(name, batch)
                    self.filtered += len(skipped)
                    batch = None
                    continue
                if len(batch.records) < self.max_batch:
                    live_sent_at, live_sent_n = loop.time(), len(batch.records)
                try:
                    result = await self._send(wanted)
                except Exception as exc:
                    self._error(exc, "send")
                    self.buffer.release(name, batch)
                    batch = None
                    await self._disconnect()
                    delay = self.backoff_delay()
                    self.attempt += 1
                    await self.sleep(delay)
                    continue
                if not self.answered:
                    self._online(name, True)
                self.answered = True  # the backend answered this request
                if result.acked is None and not skipped:
                    acked = wanted  # the usual case: all of it, no list of seqs to build
                    self.buffer.ack(name, batch)
                else:
                    acked = [(s, r) for s, r in wanted if result.acked is None or s in result.acked]
                    self.buffer.ack(name, batch, [*(s for s, _ in acked), *skipped])
                batch = None
                self.sent += len(wanted)
                self.acked += len(acked)
                self.filtered += len(skipped)
                if acked:
                    self.last_ack = self.clock()
                    self.attempt = 0
                if len(acked) < len(wanted):
                    # Partly refused: try again later rather than in a tight loop.
                    self.errors["partial"] = self.errors.get("partial", 0) + 1
                    delay = self.backoff_delay()
                    self.attempt += 1
                    await self.sleep(delay)
        finally:
            if batch is not None:
                self.buffer.release(name, batch)
            await self._disconnect()

    async def _send(self, records: list[tuple[int, Record]]) -> SendResult:
        """Send; a batch the forwarder cannot even encode is split until the bad record is
        alone, and that one is set aside (kept in a file, counted) so it never blocks the
        records behind it. Connection failures (ForwarderError, OSError...) propagate."""
        try:
            return await self.forwarder.send(records)
        except POISON_ERRORS as exc:
            if len(records) == 1:
                seq, record = records[0]
                reason = f"{type(exc).__name__}: {exc}"
                await asyncio.to_thread(self._set_aside_file().add, seq, record, reason)
                self.set_aside += 1
                if self.set_aside & (self.set_aside - 1) == 0:  # 1st, 2nd, 4th...: no log flood
                    log.error("forwarder %s: record %d (%s from %s) cannot be sent (%s); set "
                              "aside in %s, delivery goes on (%d so far)", self.forwarder.name,
                              seq, record.kind, record.source, reason,
                              self._set_aside_file().path, self.set_aside)
                return SendResult.all()
        mid = len(records) // 2
        first = await self._send(records[:mid])
        second = await self._send(records[mid:])
        if first.acked is None and second.acked is None:
            return SendResult.all()
        acked = {s for s, _ in records[:mid]} if first.acked is None else set(first.acked)
        acked |= {s for s, _ in records[mid:]} if second.acked is None else set(second.acked)
        return SendResult(frozenset(acked))

    def _set_aside_file(self) -> SetAsideFile:
        if self._set_aside_store is None:
            directory = self.forwarder.data_dir
            path = None if directory is None else Path(directory) / f"{self.forwarder.name}.set-aside.jsonl"
            self._set_aside_store = SetAsideFile(path)
        return self._set_aside_store

    async def _next_batch(self, name: str) -> Batch | None:
        """The next batch, or None when the forwarder reports its connection broken first."""
        batch = self.buffer.take(name, self.max_batch, self.max_batch_bytes)
        if batch is not None:
            return batch  # a drain never pays for the wait below
        broken = self.forwarder.broken
        if broken is not None and broken is not self._hooked:
            # One wait for both: the connection's end wakes the cursor as a record would.
            broken.add_listener(lambda: self.buffer.wake(name))
            self._hooked = broken
        return await self.buffer.next_batch(name, self.max_batch, self.max_batch_bytes, stop=broken)

    def health(self) -> dict[str, Any]:
        """For /api/status and /metrics; the forwarder's own figures under ``"backend"``."""
        lag_records, lag_s = self.buffer.cursor_lag(self.forwarder.name)
        backend = getattr(self.forwarder, "health", None)
        extra = {"backend": backend()} if callable(backend) else {}
        return {
            "name": self.forwarder.name,
            # "connected" only once the backend answered, never on a socket or session alone
            "connected": self.connected and self.answered,
            "connection_open": self.connected,
            "last_ack_age_s": None if self.last_ack is None else round(self.clock() - self.last_ack, 3),
            "lag_records": lag_records,
            "lag_s": lag_s,
            "errors": dict(self.errors),
            "last_error": self.last_error,
            "sent": self.sent,
            "acked": self.acked,
            "filtered": self.filtered,
            "connects": self.reconnects,
            "set_aside": self.set_aside,
            **extra,
        }
