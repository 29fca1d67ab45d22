"""HTTP batch webhook forwarder: JSON or CBOR batches with an idempotency key.

2xx acknowledges; 429, 5xx and timeouts leave the batch for a retry with the same batch id;
any other 4xx puts the batch aside (counted, kept for inspection, acknowledged) so one
poisonous batch never blocks the rest. Never logs the token.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ssl
from collections import deque
from typing import Any

import aiohttp
import cbor2
import orjson

from gateway.config import HttpForward
from gateway.forward.base import Forwarder, ForwarderError, SendResult
from gateway.forward.file import record_json
from gateway.forward.tls import client_tls_context, describe_tls_error
from gateway.records import Record

#: Upper bound on a server's Retry-After we honour inside one send (longer: the loop backs off).
MAX_RETRY_AFTER_S = 300.0
REJECTED_KEPT = 20


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
    def __init__(self, cfg: HttpForward, *, gateway_eui: int) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or None, dev_addr_prefixes=cfg.dev_addr_prefixes,
                         net_ids=cfg.net_ids)
        self.cfg = cfg
        self.gateway_eui = f"{gateway_eui:016x}"
        self._session: aiohttp.ClientSession | None = None
        self.counters: dict[str, int] = {"batches": 0, "records": 0}
        self.rejected_by_status: dict[str, int] = {}
        self.rejected: deque[dict[str, Any]] = deque(maxlen=REJECTED_KEPT)
        self.errors: dict[str, int] = {}

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

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if self._session is None:
            raise ForwarderError("disconnected", f"HTTP {self.name}: not connected")
        bid = batch_id(self.gateway_eui, records)
        data, ctype = self.encode(bid, records)
        headers = {"Content-Type": ctype, "Idempotency-Key": bid}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        try:
            async with self._session.post(self.cfg.url, data=data, headers=headers) as resp:
                status = resp.status
                # never read more of a backend's answer than we show
                text = (await resp.content.read(500)).decode(errors="replace")
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            self._count(self.errors, "timeout")
            raise ForwarderError("timeout", f"HTTP {self.name}: no answer from {self.cfg.url} "
                                 f"within {self.cfg.timeout:g}s (batch {bid})") from exc
        except aiohttp.ClientError as exc:
            tls_exc = _ssl_cause(exc)
            if tls_exc is not None:
                # A certificate problem, not a network one: the operator fixes files, not cables.
                self._count(self.errors, "tls")
                raise ForwarderError("tls", f"HTTP {self.name}: {self.cfg.url}: "
                                     f"{describe_tls_error(tls_exc)}") from exc
            self._count(self.errors, "connection")
            hint = ""
            if (self.cfg.url.startswith("https") and self.cfg.cert_file is None
                    and isinstance(exc, OSError) and exc.errno == errno.ECONNRESET):
                # A TLS 1.3 server refusing a client without certificate often just resets.
                hint = " (if the server requires a client certificate, set cert_file and key_file)"
            raise ForwarderError("connection", f"HTTP {self.name}: {self.cfg.url}: {exc}{hint}") from exc
        if 200 <= status < 300:
            self.counters["batches"] += 1
            self.counters["records"] += len(records)
            return SendResult.all()
        if status == 429 or status >= 500 or status == 408:
            self._count(self.errors, f"http_{status}")
            if retry_after:
                await asyncio.sleep(retry_after)  # the server said when; the loop's backoff adds jitter
            raise ForwarderError(f"http_{status}", f"HTTP {self.name}: {self.cfg.url} answered {status} "
                                 f"for batch {bid}; will retry: {text[:200]}")
        self._count(self.rejected_by_status, str(status))
        self.rejected.append({"batch_id": bid, "status": status, "records": len(records),
                              "first_seq": records[0][0], "last_seq": records[-1][0], "response": text})
        return SendResult.all()

    def health(self) -> dict[str, Any]:
        return {"url": self.cfg.url, "format": self.cfg.format, **self.counters,
                "rejected_by_status": dict(self.rejected_by_status),
                "rejected": list(self.rejected), "errors": dict(self.errors)}
