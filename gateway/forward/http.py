"""HTTP batch webhook forwarder: JSON or CBOR batches with an idempotency key.

2xx acknowledges; 408, 429, 5xx and timeouts leave the request for a retry: the failed request
is kept and sent again byte for byte (same records, same order, same Idempotency-Key) before
anything else, whatever batch the delivery loop offers next, so the receiver can deduplicate.
Records that arrived meanwhile follow in a later request with their own key. Any other 4xx
puts the batch aside (counted, its records written to a bounded JSON Lines file next to the
buffer for a technician, acknowledged) so one poisonous batch never blocks the rest. Never
logs the token.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import ssl
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import orjson

from gateway.config import HttpForward
from gateway.config_values import safe_url
from gateway.forward.base import Forwarder, ForwarderError, SendResult
from gateway.forward.file import record_json, record_line
from gateway.forward.tls import client_tls_context, describe_tls_error
from gateway.records import Record

log = logging.getLogger(__name__)

#: Upper bound on a server's Retry-After we honour inside one send (longer: the loop backs off).
MAX_RETRY_AFTER_S = 300.0
REJECTED_KEPT = 20
#: Seqs delivered by a retried request but not yet seen again in a batch, kept at most (they
#: are acknowledged without sending when the loop offers them again).
SETTLED_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request exactly as sent: a retry sends these bytes again under the same key."""

    bid: str
    data: bytes
    ctype: str
    records: tuple[tuple[int, Record], ...]


def batch_id(gateway_eui: str, records: list[tuple[int, Record]]) -> str:
    """Same records -> same id, across retries and restarts (the receiver deduplicates by it)."""
    h = hashlib.sha256(gateway_eui.encode())
    for seq, r in records:
        h.update(f"{seq}:{r.received_us};".encode())
    return f"{gateway_eui}-{records[0][0]}-{records[-1][0]}-{h.hexdigest()[:16]}"


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        return 0.0  # an HTTP date: rare; our own backoff covers it


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError behind an aiohttp error, if any (aiohttp wraps it one or two levels deep)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        # aiohttp's wrappers subclass ssl errors themselves but carry the real one inside.
        inner = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None)
        if isinstance(inner, BaseException):
            seen = inner
            continue
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class HttpForwarder(Forwarder):
    connect_confirms = False  # a session is not an answer: the first request is

    def __init__(self, cfg: HttpForward, *, gateway_eui: int) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or None, dev_addr_prefixes=cfg.dev_addr_prefixes,
                         net_ids=cfg.net_ids)
        self.cfg = cfg
        self.gateway_eui = f"{gateway_eui:016x}"
        self._shown_url = safe_url(cfg.url)  # for logs and status: no credentials
        self._session: aiohttp.ClientSession | None = None
        self.counters: dict[str, int] = {"batches": 0, "records": 0, "retried_requests": 0}
        self.rejected_by_status: dict[str, int] = {}
        self.rejected: deque[dict[str, Any]] = deque(maxlen=REJECTED_KEPT)
        self.errors: dict[str, int] = {}
        # The request that failed last, sent again before anything else (idempotency).
        self.pending: Attempt | None = None
        # Seqs a retried request delivered that the loop has not offered again yet.
        self._settled: dict[int, None] = {}
        self.dead_letter_records = 0  # lines in the put-aside file (counted at the first write)
        self.dead_letter_bytes: int | None = None
        self.dead_letter_not_kept = 0  # put-aside records the size cap (or no directory) left out

    @property
    def dead_letter_path(self) -> Path | None:
        """``<data_dir>/http-<name>.rejected.jsonl``: one JSON line per put-aside record."""
        return None if self.data_dir is None else Path(self.data_dir) / f"http-{self.name}.rejected.jsonl"

    def _ssl(self) -> ssl.SSLContext | None:
        if not (self.cfg.ca_file or self.cfg.cert_file or self.cfg.key_file):
            return None
        return client_tls_context(f"forward.http {self.name}", ca_file=self.cfg.ca_file,
                                  cert_file=self.cfg.cert_file, key_file=self.cfg.key_file)

    async def connect(self) -> None:
        try:
            ctx = self._ssl()
        except ValueError as exc:
            self._count(self.errors, "tls_config")
            raise ForwarderError("tls_config", str(exc)) from exc
        if self.dead_letter_bytes is None:
            await asyncio.to_thread(self._scan_put_aside)
        connector = aiohttp.TCPConnector(ssl=ctx) if ctx is not None else aiohttp.TCPConnector()
        self._session = aiohttp.ClientSession(connector=connector,
                                              timeout=aiohttp.ClientTimeout(total=self.cfg.timeout))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def encode(self, bid: str, records: list[tuple[int, Record]]) -> tuple[bytes, str]:
        doc = {"batch_id": bid, "gateway_eui": self.gateway_eui,
               "records": [record_json(s, r) for s, r in records]}
        if self.cfg.format == "cbor":
            return cbor2.dumps(doc), "application/cbor"
        return orjson.dumps(doc, default=lambda o: o.hex() if isinstance(o, bytes) else str(o),
                            option=orjson.OPT_NON_STR_KEYS), "application/json"

    def _count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def _attempt(self, records: list[tuple[int, Record]]) -> Attempt:
        records = sorted(records, key=lambda sr: sr[0])  # in sequence order within one request
        bid = batch_id(self.gateway_eui, records)
        data, ctype = self.encode(bid, records)
        return Attempt(bid, data, ctype, tuple(records))

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if self._session is None:
            raise ForwarderError("disconnected", f"HTTP {self.name}: not connected")
        if self.pending is not None:
            # The failed request first, byte for byte; if it fails again the batch is released.
            self.counters["retried_requests"] += 1
            await self._deliver(self.pending)
            for s, _ in self.pending.records:
                self._settled[s] = None
            self.pending = None
            while len(self._settled) > SETTLED_KEPT:  # seqs the buffer dropped meanwhile
                del self._settled[next(iter(self._settled))]
        done = [s for s, _ in records if s in self._settled]
        for s in done:
            del self._settled[s]
        fresh = [(s, r) for s, r in records if s not in done] if done else records
        if not fresh:
            return SendResult.all()
        attempt = self._attempt(fresh)
        try:
            await self._deliver(attempt)
        except ForwarderError:
            self.pending = attempt
            if done:
                return SendResult(frozenset(done))  # the retry went through; these wait
            raise
        return SendResult.all()

    async def _deliver(self, attempt: Attempt) -> None:
        """POST one request; returns when it is delivered or put aside, raises to retry it."""
        assert self._session is not None
        bid = attempt.bid
        headers = {"Content-Type": attempt.ctype, "Idempotency-Key": bid}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        try:
            async with self._session.post(self.cfg.url, data=attempt.data, headers=headers) as resp:
                status = resp.status
                # never read more of a backend's answer than we show
                text = (await resp.content.read(500)).decode(errors="replace")
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            self._count(self.errors, "timeout")
            raise ForwarderError("timeout", f"HTTP {self.name}: no answer from {self._shown_url} "
                                 f"within {self.cfg.timeout:g}s (batch {bid})") from exc
        except aiohttp.ClientError as exc:
            tls_exc = _ssl_cause(exc)
            if tls_exc is not None:
                # A certificate problem, not a network one: the operator fixes files, not cables.
                self._count(self.errors, "tls")
                raise ForwarderError("tls", f"HTTP {self.name}: {self._shown_url}: "
                                     f"{describe_tls_error(tls_exc)}") from exc
            self._count(self.errors, "connection")
            hint = ""
            if (self.cfg.url.startswith("https") and self.cfg.cert_file is None
                    and isinstance(exc, OSError) and exc.errno == errno.ECONNRESET):
                # A TLS 1.3 server refusing a client without certificate often just resets.
                hint = " (if the server requires a client certificate, set cert_file and key_file)"
            raise ForwarderError("connection", f"HTTP {self.name}: {self._shown_url}: {exc}{hint}") from exc
        records = attempt.records
        if 200 <= status < 300:
            self.counters["batches"] += 1
            self.counters["records"] += len(records)
            return
        if status == 429 or status >= 500 or status == 408:
            self._count(self.errors, f"http_{status}")
            if retry_after:
                await asyncio.sleep(retry_after)  # the server said when; the loop's backoff adds jitter
            raise ForwarderError(f"http_{status}", f"HTTP {self.name}: {self._shown_url} answered {status} "
                                 f"for batch {bid}; will retry: {text[:200]}")
        self._count(self.rejected_by_status, str(status))
        self.rejected.append({"batch_id": bid, "status": status, "records": len(records),
                              "first_seq": records[0][0], "last_seq": records[-1][0], "response": text})
        log.warning("forwarder %s: %s answered %d for batch %s (%d records): put aside in %s",
                    self.name, self._shown_url, status, bid, len(records), self.dead_letter_path)
        await asyncio.to_thread(self._put_aside, bid, status, text, records)

    def _put_aside(self, bid: str, status: int, text: str, records: tuple[tuple[int, Record], ...]) -> None:
        """Append the rejected records to the dead-letter file, within ``dead_letter_max`` bytes."""
        path = self.dead_letter_path
        if path is None:
            self.dead_letter_not_kept += len(records)
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            self._count(self.errors, "dead_letter")
            self.dead_letter_not_kept += len(records)
            log.error("forwarder %s: cannot open %s: %s; %d put-aside records not kept",
                      self.name, path, exc, len(records))
            return
        try:
            os.fchmod(fd, 0o600)  # the records may name devices and places: not for every user
            if self.dead_letter_bytes is None:
                self._scan_put_aside()
            if self.dead_letter_bytes is None:  # unreadable: at least its size counts
                self.dead_letter_bytes = os.fstat(fd).st_size
            head = (f'{{"rejected_at":"{datetime.now(UTC).isoformat(timespec="seconds")}",'
                    f'"batch_id":"{bid}","status":{status},"response":').encode()
            head += orjson.dumps(text[:200]) + b',"record":'
            out = bytearray()
            kept = 0
            for seq, record in records:
                line = head + record_line(seq, record)[:-1] + b"}\n"
                if self.dead_letter_bytes + len(out) + len(line) > self.cfg.dead_letter_max:
                    break
                out += line
                kept += 1
            if out:
                os.write(fd, out)
                os.fsync(fd)
            self.dead_letter_bytes += len(out)
            self.dead_letter_records += kept
            if kept < len(records):
                self.dead_letter_not_kept += len(records) - kept
                log.warning("forwarder %s: %s is full (dead_letter_max %d bytes): %d put-aside "
                            "records not kept", self.name, path, self.cfg.dead_letter_max, len(records) - kept)
        except OSError as exc:
            self._count(self.errors, "dead_letter")
            self.dead_letter_not_kept += len(records)
            log.error("forwarder %s: cannot write %s: %s", self.name, path, exc)
        finally:
            os.close(fd)

    def _scan_put_aside(self) -> None:
        """What an earlier run left in the put-aside file (it counts against the cap)."""
        path = self.dead_letter_path
        if path is None:
            return
        try:
            with open(path, "rb") as fh:
                self.dead_letter_records = sum(1 for _ in fh)
                self.dead_letter_bytes = fh.tell()
        except FileNotFoundError:
            self.dead_letter_bytes = 0
        except OSError as exc:
            log.warning("forwarder %s: cannot read %s: %s", self.name, path, exc)

    def health(self) -> dict[str, Any]:
        path = self.dead_letter_path
        return {"url": self._shown_url, "format": self.cfg.format, **self.counters,
                "retry_pending": None if self.pending is None else {
                    "batch_id": self.pending.bid, "records": len(self.pending.records)},
                "rejected_by_status": dict(self.rejected_by_status),
                "rejected": list(self.rejected), "errors": dict(self.errors),
                "put_aside_file": {"path": None if path is None else str(path),
                                   "records": self.dead_letter_records,
                                   "bytes": self.dead_letter_bytes or 0,
                                   "not_kept": self.dead_letter_not_kept}}


def read_put_aside(path: Path) -> list[dict[str, Any]]:
    """The put-aside file's lines (``rejected_at``, ``batch_id``, ``status``, ``response``,
    ``record`` as the file forwarder writes it); a torn last line is skipped."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return []
    return out
