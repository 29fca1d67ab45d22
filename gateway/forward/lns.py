"""Network-server forwarder over Semtech UDP: uplinks as PUSH_DATA, PULL_DATA keepalives, downlinks.

A record counts as delivered on PUSH_ACK. Replays after an outage are bounded by age: older
than ``max_replay_age`` they are acknowledged unsent (``replay_expired``); sent later than
``late_after`` seconds after receipt, their rxpk carries ``"replay": true`` so the server can
tell. PULL_RESP downlinks go to the local packet forwarder (duty-cycle checked there), TX_ACK back.

While idle, PULL_ACKs are the only sign of the server: after ``MISSED_PULL_ACKS`` keepalives
without one, the forwarder reports its connection broken, so the status page says so and the
delivery loop reconnects (a server that lost our address then learns it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

from gateway import frames
from gateway.config import GwmpForward
from gateway.forward.base import Forwarder, ForwarderError, SendResult
from gateway.forward.mqtt import DownlinkRelay
from gateway.records import Record, now_us

log = logging.getLogger(__name__)

NATURAL_KINDS = ("uplink", "stats")
#: Bytes of rxpk JSON per PUSH_DATA; below common LNS read buffers and typical path MTU x 2.
MAX_PUSH_BYTES = 2400
#: Keepalives in a row without a PULL_ACK before the server counts as gone (as the Semtech
#: forwarder's "PULL_ACK not received" statistic, but acted on).
MISSED_PULL_ACKS = 3


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: LnsForwarder) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._received(data)

    def error_received(self, exc: Exception) -> None:
        self.owner._count("socket_error")


class LnsForwarder(Forwarder):
    def __init__(
        self,
        cfg: GwmpForward,
        *,
        gateway_eui: int,
        relays: Sequence[DownlinkRelay] = (),
        ack_timeout: float = 2.0,
        late_after: float = 10.0,
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or NATURAL_KINDS, dev_addr_prefixes=cfg.dev_addr_prefixes,
                         net_ids=cfg.net_ids)
        self.cfg = cfg
        self.lns_eui = cfg.gateway_eui if cfg.gateway_eui is not None else gateway_eui
        self.relays = list(relays)
        self.ack_timeout = ack_timeout
        self.late_after = late_after
        self.clock_us = clock_us
        self._transport: asyncio.DatagramTransport | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._pull_ack: asyncio.Event = asyncio.Event()
        self._unanswered_pulls = 0
        self._keepalive: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._local_euis: set[int] = set()
        self._reserved: set[int] = set()
        self.counters: dict[str, int] = {"push_data": 0, "push_ack": 0, "rxpk_sent": 0, "replayed": 0,
                                         "replay_expired": 0, "pull_data": 0, "pull_ack": 0,
                                         "downlinks": 0}
        self.errors: dict[str, int] = {}
        self.last_push_sent_us: int | None = None  # for the latency benchmark

    def _count(self, key: str, table: dict[str, int] | None = None) -> None:
        t = self.errors if table is None else table
        t[key] = t.get(key, 0) + 1

    # ---- connection --------------------------------------------------------------------
    async def connect(self) -> None:
        host, port = self.cfg.server
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), remote_addr=(host, port))
        except OSError as exc:
            raise ForwarderError("resolve", f"LNS {self.name}: cannot reach {host}:{port}: {exc}") from exc
        self._transport = transport
        self._pull_ack.clear()
        self._unanswered_pulls = 0
        self.broken = asyncio.Event()  # one per connection: an older one cannot mark this one
        self._keepalive = asyncio.create_task(self._keepalive_loop(), name=f"lns-keepalive:{self.name}")
        try:
            # UDP "connects" always; the server answering PULL_DATA is what says it is there.
            await asyncio.wait_for(self._pull_ack.wait(), self.ack_timeout)
        except TimeoutError:
            await self.close()
            raise ForwarderError("no_pull_ack", f"LNS {self.name}: {host}:{port} did not answer "
                                 f"PULL_DATA within {self.ack_timeout:g}s") from None

    async def _keepalive_loop(self) -> None:
        broken = self.broken
        while self._transport is not None:
            if self._unanswered_pulls >= MISSED_PULL_ACKS:
                host, port = self.cfg.server
                self._count("pull_ack_missing")
                log.warning("LNS %s: %s:%s answered none of the last %d PULL_DATA; reconnecting",
                            self.name, host, port, self._unanswered_pulls)
                if broken is not None:
                    broken.set()
                return
            self._unanswered_pulls += 1
            self.counters["pull_data"] += 1
            self._send(frames.encode_pull_data(secrets.randbits(16), self.lns_eui))
            await asyncio.sleep(self.cfg.keepalive)

    def _send(self, datagram: bytes) -> None:
        if self._transport is None:
            raise ForwarderError("disconnected", f"LNS {self.name}: not connected")
        self._transport.sendto(datagram)

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(BaseException):
                await self._keepalive
            self._keepalive = None
        if transport is not None:
            transport.close()
        for f in self._acks.values():
            f.cancel()
        self._acks.clear()

    # ---- uplinks -----------------------------------------------------------------------
    def _datagrams(self, records: list[tuple[int, Record]], now: int) -> tuple[list[tuple[bytes, int, list[int]]], list[int]]:
        """(datagram, token, seqs) per PUSH_DATA, and the seqs acknowledged unsent (too old)."""
        expired: list[int] = []
        groups: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        out: list[tuple[bytes, int, list[int]]] = []
        for seq, record in records:
            age_s = (now - record.received_us) / 1e6
            if age_s > self.cfg.max_replay_age:
                self.counters["replay_expired"] += 1
                expired.append(seq)
                continue
            try:
                body = cbor2.loads(record.body)
                eui = self.lns_eui if self.cfg.gateway_eui is not None else int(str(body["gateway_eui"]), 16)
            except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError):
                self._count("bad_record")
                expired.append(seq)
                continue
            if record.kind == "stats":
                token = self._new_token()
                out.append((frames.encode_push_data(token, eui, None, body["stat"]), token, [seq]))
                continue
            self._local_euis.add(int(str(body["gateway_eui"]), 16))
            rxpk = dict(body["rxpk"])
            if age_s > self.late_after:
                rxpk["replay"] = True
                self.counters["replayed"] += 1
            groups.setdefault(eui, []).append((seq, rxpk))
        for eui, items in groups.items():
            chunk: list[tuple[int, dict[str, Any]]] = []
            size = 0
            for seq, rxpk in items:
                n = len(str(rxpk.get("data", ""))) + 300
                if chunk and (size + n > MAX_PUSH_BYTES or len(chunk) >= frames.MAX_RXPK):
                    out.append(self._push(eui, chunk))
                    chunk, size = [], 0
                chunk.append((seq, rxpk))
                size += n
            if chunk:
                out.append(self._push(eui, chunk))
        return out, expired

    def _new_token(self) -> int:
        """A token no PUSH_DATA still waiting for its ack uses (acks are matched by token)."""
        token = secrets.randbits(16)
        while token in self._acks or token in self._reserved:
            token = secrets.randbits(16)
        self._reserved.add(token)
        return token

    def _push(self, eui: int, chunk: list[tuple[int, dict[str, Any]]]) -> tuple[bytes, int, list[int]]:
        token = self._new_token()
        return frames.encode_push_data(token, eui, [r for _, r in chunk]), token, [s for s, _ in chunk]

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if self._transport is None:
            raise ForwarderError("disconnected", f"LNS {self.name}: not connected")
        self._reserved = set()
        datagrams, acked = self._datagrams(records, self.clock_us())
        loop = asyncio.get_running_loop()
        waits: list[tuple[asyncio.Future[None], list[int]]] = []
        for datagram, token, seqs in datagrams:
            fut: asyncio.Future[None] = loop.create_future()
            self._acks[token] = fut
            self._send(datagram)
            self.counters["push_data"] += 1
            self.counters["rxpk_sent"] += len(seqs)
            waits.append((fut, seqs))
        self.last_push_sent_us = now_us()
        if waits:
            await asyncio.wait([f for f, _ in waits], timeout=self.ack_timeout)
        missing = 0
        for fut, seqs in waits:
            if fut.done() and not fut.cancelled():
                acked.extend(seqs)
            else:
                missing += 1
                fut.cancel()
        self._acks = {t: f for t, f in self._acks.items() if not f.done()}
        if missing and len(acked) == 0:
            self._count("push_ack_timeout")
            raise ForwarderError("push_ack_timeout", f"LNS {self.name}: no PUSH_ACK for {missing} "
                                 f"PUSH_DATA within {self.ack_timeout:g}s")
        if missing:
            self._count("push_ack_timeout")
        return SendResult(frozenset(acked))

    # ---- receive path ------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        try:
            pkt = frames.parse_gwmp(data)
        except frames.FrameError as exc:
            self._count(f"malformed_{exc.kind}")
            return
        if pkt.identifier == frames.PUSH_ACK:
            fut = self._acks.pop(pkt.token, None)
            if fut is not None and not fut.done():
                self.counters["push_ack"] += 1
                fut.set_result(None)
        elif pkt.identifier == frames.PULL_ACK:
            self.counters["pull_ack"] += 1
            self._unanswered_pulls = 0
            self._pull_ack.set()
        elif pkt.identifier == frames.PULL_RESP:
            txpk = (pkt.body or {}).get("txpk")
            task = asyncio.create_task(self._downlink(pkt.token, pkt.version, txpk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._count("unexpected_identifier")

    async def _downlink(self, token: int, version: int, txpk: Any) -> None:
        self.counters["downlinks"] += 1
        if not isinstance(txpk, dict):
            ack: dict[str, Any] = {"error": "BAD_TXPK"}
        elif not self.relays:
            ack = {"error": "UNKNOWN_GATEWAY"}
        else:
            target = self.lns_eui if self.lns_eui in self._local_euis else None
            ack = {"error": "UNKNOWN_GATEWAY"}
            for relay in self.relays:
                ack = await relay.send_downlink(target, txpk)
                if ack.get("error") != "UNKNOWN_GATEWAY":
                    break
        self._count(str(ack.get("error", "NONE")), self.counters)
        if version >= 2 and self._transport is not None:
            # Only the Semtech error names go up; our detail text stays in our own logs.
            self._transport.sendto(frames.encode_tx_ack(token, self.lns_eui, {"error": str(ack.get("error", "NONE"))}))

    def health(self) -> dict[str, Any]:
        host, port = self.cfg.server
        return {"server": f"{host}:{port}", "gateway_eui": f"{self.lns_eui:016x}",
                "connected": self._transport is not None, **self.counters, "errors": dict(self.errors)}
