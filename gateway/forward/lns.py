"""Network-server forwarder over Semtech UDP: uplinks as PUSH_DATA, PULL_DATA keepalives, downlinks.

A record counts as delivered on PUSH_ACK. Replays after an outage are bounded by age: older
than ``max_replay_age`` they are acknowledged unsent (``replay_expired``); sent later than
``late_after`` seconds after receipt, their rxpk carries ``"replay": true`` so the server can
tell. PULL_RESP downlinks go to the local packet forwarder (duty-cycle checked there), TX_ACK back.

Gateways: each local packet forwarder's EUI goes out as the EUI this server knows it by
(``eui_map``, else ``gateway_eui`` for all, else unchanged), and every server-side EUI has a
UDP socket of its own that sends its PULL_DATA and PUSH_DATA. GWMP's PULL_RESP names no
gateway: the server sends it to the address that gateway's PULL_DATA came from, so the socket
it arrives on says which local packet forwarder it is for, and the TX_ACK goes back up on
that socket with that EUI. Sockets are opened at connect for the EUIs the config names (and
the ones seen before a reconnect), and when a new local gateway is first forwarded; at most
``GwmpForward.MAX_GATEWAYS`` per server, further gateways go out as the fallback EUI
(``too_many_gateways``).

While idle, PULL_ACKs are the only sign of the server. One server answers all our EUIs, so
after ``MISSED_PULL_ACKS`` keepalives in a row without a PULL_ACK on *every* socket, the
forwarder reports its connection broken, so the status page says so and the delivery loop
reconnects (a server that lost our addresses then learns them again). A single EUI the server
stops answering (say, one it does not know) is counted (``pull_ack_missing_gateway``) and
shown in that gateway's health, but does not take the others down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

from gateway import frames
from gateway.config import GwmpForward
from gateway.forward.base import Broken, Forwarder, ForwarderError, SendResult
from gateway.forward.mqtt import DownlinkRelay
from gateway.records import Record, now_us

log = logging.getLogger(__name__)

NATURAL_KINDS = ("uplink", "stats")
#: Bytes of rxpk JSON per PUSH_DATA; below common LNS read buffers and typical path MTU x 2.
MAX_PUSH_BYTES = 2400
#: Keepalives in a row without a PULL_ACK before the server counts as gone (as the Semtech
#: forwarder's "PULL_ACK not received" statistic, but acted on).
MISSED_PULL_ACKS = 3
#: Local EUIs remembered per server-side EUI (only to tell "one gateway" from "several").
_MAX_LOCALS = 64


class _Gateway:
    """One server-side EUI: its socket (while connected), where its downlinks go, its figures."""

    def __init__(self, server_eui: int, local_eui: int | None) -> None:
        self.server_eui = server_eui
        self.local_eui = local_eui  # None: whichever local gateway went out under it
        self.locals: set[int] = set() if local_eui is None else {local_eui}
        self.transport: asyncio.DatagramTransport | None = None
        self.unanswered = 0
        self.silent = False
        self.pull_data = 0
        self.pull_ack = 0
        self.last_pull_ack: float | None = None  # time.monotonic()
        self.push_data = 0
        self.downlinks = 0

    def downlink_target(self) -> int | None:
        """The local gateway a PULL_RESP on this socket is for (None: the one heard last)."""
        if self.local_eui is not None:
            return self.local_eui
        return next(iter(self.locals)) if len(self.locals) == 1 else None

    def health(self) -> dict[str, Any]:
        target = self.downlink_target()
        return {
            "local_eui": None if target is None else f"{target:016x}",
            "local_euis": sorted(f"{e:016x}" for e in self.locals),
            "connected": self.transport is not None,
            "pull_data": self.pull_data,
            "pull_ack": self.pull_ack,
            "last_pull_ack_age_s": None if self.last_pull_ack is None
            else round(time.monotonic() - self.last_pull_ack, 3),
            "silent": self.silent,
            "push_data": self.push_data,
            "downlinks": self.downlinks,
        }


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: LnsForwarder, gw: _Gateway) -> None:
        self.owner = owner
        self.gw = gw

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._received(self.gw, data)

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
        #: The fallback server-side EUI: ``gateway_eui`` if set, else this gateway's own.
        self.lns_eui = cfg.gateway_eui if cfg.gateway_eui is not None else gateway_eui
        self.relays = list(relays)
        self.ack_timeout = ack_timeout
        self.late_after = late_after
        self.clock_us = clock_us
        self.max_gateways = cfg.MAX_GATEWAYS
        # server-side EUI -> gateway; kept across reconnects so idle gateways keep a downlink path
        self._gateways: dict[int, _Gateway] = {}
        for local, server_eui in cfg.eui_map.items():
            self._gateways[server_eui] = _Gateway(server_eui, local)
        if cfg.gateway_eui is not None:
            self._gateways.setdefault(cfg.gateway_eui, _Gateway(cfg.gateway_eui, None))
        if not self._gateways:  # pass-through: this gateway's own EUI, as before any uplink
            self._gateways[gateway_eui] = _Gateway(gateway_eui, None)
        self._remote: tuple[Any, ...] | None = None
        self._family = 0
        self._connected = False
        self._acks: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._reserved: set[tuple[int, int]] = set()
        self._pull_ack: asyncio.Event = asyncio.Event()
        self._keepalive: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {"push_data": 0, "push_ack": 0, "rxpk_sent": 0, "replayed": 0,
                                         "replay_expired": 0, "pull_data": 0, "pull_ack": 0,
                                         "downlinks": 0}
        self.errors: dict[str, int] = {}
        self.last_push_sent_us: int | None = None  # for the latency benchmark

    def _count(self, key: str, table: dict[str, int] | None = None) -> None:
        t = self.errors if table is None else table
        t[key] = t.get(key, 0) + 1

    # ---- gateways ----------------------------------------------------------------------
    def server_eui_for(self, local_eui: int | None) -> int:
        """The EUI a local gateway's records go out as (and claims its socket on first use)."""
        if local_eui is None:
            return self.lns_eui
        mapped = self.cfg.eui_map.get(local_eui)
        if mapped is not None:
            return mapped
        server_eui = self.cfg.gateway_eui if self.cfg.gateway_eui is not None else local_eui
        gw = self._gateways.get(server_eui)
        if gw is None:
            if len(self._gateways) >= self.max_gateways:
                self._count("too_many_gateways")
                server_eui = self.lns_eui
                gw = self._gateways.get(server_eui)
                if gw is None:  # the fallback always has a socket, beyond the cap
                    gw = self._gateways[server_eui] = _Gateway(server_eui, None)
            else:
                # pass-through: the server-side EUI is the local one, so is the downlink target
                pass_through = self.cfg.gateway_eui is None
                gw = self._gateways[server_eui] = _Gateway(server_eui, local_eui if pass_through else None)
        elif gw.local_eui is not None and local_eui not in gw.locals:
            # an unmapped gateway whose own EUI another one is mapped to: the server sees one
            self._count("eui_collision")
            log.warning("LNS %s: gateway %016x goes out as %016x, the EUI gateway %016x is mapped "
                        "to; its downlinks go to %016x", self.name, local_eui, server_eui,
                        gw.local_eui, gw.local_eui)
        if len(gw.locals) < _MAX_LOCALS:
            gw.locals.add(local_eui)
        return server_eui

    async def _open(self, gw: _Gateway) -> None:
        if gw.transport is not None or not self._connected or self._remote is None:
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self, gw), remote_addr=self._remote[:2], family=self._family)
        except OSError as exc:
            host, port = self.cfg.server
            raise ForwarderError("socket", f"LNS {self.name}: no socket to {host}:{port} for gateway "
                                 f"{gw.server_eui:016x}: {exc}") from exc
        if not self._connected:  # closed while we waited
            transport.close()
            return
        gw.transport = transport
        gw.unanswered = 0
        self._pull(gw)  # the server learns this gateway's downlink address now, not a keepalive later

    def _pull(self, gw: _Gateway) -> None:
        if gw.transport is None:
            return
        if gw.unanswered >= MISSED_PULL_ACKS and not gw.silent:
            gw.silent = True
            self._count("pull_ack_missing_gateway")
            log.warning("LNS %s: no PULL_ACK for gateway %016x in %d keepalives", self.name,
                        gw.server_eui, gw.unanswered)
        gw.unanswered += 1
        gw.pull_data += 1
        self.counters["pull_data"] += 1
        gw.transport.sendto(frames.encode_pull_data(secrets.randbits(16), gw.server_eui))

    # ---- connection --------------------------------------------------------------------
    async def connect(self) -> None:
        host, port = self.cfg.server
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ForwarderError("resolve", f"LNS {self.name}: cannot reach {host}:{port}: {exc}") from exc
        if not infos:
            raise ForwarderError("resolve", f"LNS {self.name}: {host}:{port} has no address")
        self._family, self._remote = infos[0][0], infos[0][4]
        self._connected = True
        self._pull_ack.clear()
        self.broken = Broken()  # one per connection: an older one cannot mark this one
        try:
            for gw in list(self._gateways.values()):
                await self._open(gw)
        except ForwarderError:
            await self.close()
            raise
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
        while self._connected:
            await asyncio.sleep(self.cfg.keepalive)  # connect (_open) sent the first round
            open_gws = [gw for gw in self._gateways.values() if gw.transport is not None]
            if open_gws and all(gw.unanswered >= MISSED_PULL_ACKS for gw in open_gws):
                host, port = self.cfg.server
                self._count("pull_ack_missing")
                log.warning("LNS %s: %s:%s answered none of the last %d PULL_DATA; reconnecting",
                            self.name, host, port, min(gw.unanswered for gw in open_gws))
                if broken is not None:
                    broken.set()
                return
            for gw in open_gws:
                self._pull(gw)

    async def close(self) -> None:
        self._connected = False
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(BaseException):
                await self._keepalive
            self._keepalive = None
        for gw in self._gateways.values():
            transport, gw.transport = gw.transport, None
            if transport is not None:
                transport.close()
        for f in self._acks.values():
            f.cancel()
        self._acks.clear()

    # ---- uplinks -----------------------------------------------------------------------
    def _datagrams(self, records: list[tuple[int, Record]], now: int) -> tuple[list[tuple[int, bytes, int, list[int]]], list[int]]:
        """(server EUI, datagram, token, seqs) per PUSH_DATA, and the seqs acknowledged unsent (too old)."""
        expired: list[int] = []
        groups: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        out: list[tuple[int, bytes, int, list[int]]] = []
        for seq, record in records:
            age_s = (now - record.received_us) / 1e6
            if age_s > self.cfg.max_replay_age:
                self.counters["replay_expired"] += 1
                expired.append(seq)
                continue
            try:
                body = cbor2.loads(record.body)
                try:
                    local: int | None = int(str(body["gateway_eui"]), 16)
                except (KeyError, TypeError, ValueError):
                    if self.cfg.gateway_eui is None:
                        raise
                    local = None  # one EUI for all: the record's own does not matter
                payload = body["stat"] if record.kind == "stats" else dict(body["rxpk"])
            except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError):
                self._count("bad_record")
                expired.append(seq)
                continue
            eui = self.server_eui_for(local)
            if record.kind == "stats":
                token = self._new_token(eui)
                out.append((eui, frames.encode_push_data(token, eui, None, payload), token, [seq]))
                continue
            if age_s > self.late_after:
                payload["replay"] = True
                self.counters["replayed"] += 1
            groups.setdefault(eui, []).append((seq, payload))
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

    def _new_token(self, eui: int) -> int:
        """A token no PUSH_DATA of this gateway still waiting for its ack uses (acks are per socket)."""
        token = secrets.randbits(16)
        while (eui, token) in self._acks or (eui, token) in self._reserved:
            token = secrets.randbits(16)
        self._reserved.add((eui, token))
        return token

    def _push(self, eui: int, chunk: list[tuple[int, dict[str, Any]]]) -> tuple[int, bytes, int, list[int]]:
        token = self._new_token(eui)
        return eui, frames.encode_push_data(token, eui, [r for _, r in chunk]), token, [s for s, _ in chunk]

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if not self._connected:
            raise ForwarderError("disconnected", f"LNS {self.name}: not connected")
        self._reserved = set()
        datagrams, acked = self._datagrams(records, self.clock_us())
        for eui in {d[0] for d in datagrams}:
            await self._open(self._gateways[eui])  # a gateway forwarded for the first time
        loop = asyncio.get_running_loop()
        waits: list[tuple[asyncio.Future[None], list[int]]] = []
        for eui, datagram, token, seqs in datagrams:
            gw = self._gateways[eui]
            if gw.transport is None:
                raise ForwarderError("disconnected", f"LNS {self.name}: not connected")
            fut: asyncio.Future[None] = loop.create_future()
            self._acks[eui, token] = fut
            gw.transport.sendto(datagram)
            gw.push_data += 1
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
    def _received(self, gw: _Gateway, data: bytes) -> None:
        try:
            pkt = frames.parse_gwmp(data)
        except frames.FrameError as exc:
            self._count(f"malformed_{exc.kind}")
            return
        if pkt.identifier == frames.PUSH_ACK:
            fut = self._acks.pop((gw.server_eui, pkt.token), None)
            if fut is not None and not fut.done():
                self.counters["push_ack"] += 1
                fut.set_result(None)
        elif pkt.identifier == frames.PULL_ACK:
            self.counters["pull_ack"] += 1
            gw.pull_ack += 1
            gw.last_pull_ack = time.monotonic()
            gw.unanswered = 0
            gw.silent = False
            self._pull_ack.set()
        elif pkt.identifier == frames.PULL_RESP:
            txpk = (pkt.body or {}).get("txpk")
            task = asyncio.create_task(self._downlink(gw, pkt.token, pkt.version, txpk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._count("unexpected_identifier")

    async def _downlink(self, gw: _Gateway, token: int, version: int, txpk: Any) -> None:
        self.counters["downlinks"] += 1
        gw.downlinks += 1
        if not isinstance(txpk, dict):
            ack: dict[str, Any] = {"error": "BAD_TXPK"}
        elif not self.relays:
            ack = {"error": "UNKNOWN_GATEWAY"}
        else:
            target = gw.downlink_target()
            ack = {"error": "UNKNOWN_GATEWAY"}
            for relay in self.relays:
                ack = await relay.send_downlink(target, txpk)
                if ack.get("error") != "UNKNOWN_GATEWAY":
                    break
        self._count(str(ack.get("error", "NONE")), self.counters)
        if version >= 2 and gw.transport is not None:
            # Only the Semtech error names go up; our detail text stays in our own logs.
            gw.transport.sendto(frames.encode_tx_ack(token, gw.server_eui, {"error": str(ack.get("error", "NONE"))}))

    def health(self) -> dict[str, Any]:
        host, port = self.cfg.server
        return {"server": f"{host}:{port}", "gateway_eui": f"{self.lns_eui:016x}",
                "connected": self._connected, **self.counters, "errors": dict(self.errors),
                "gateways": {f"{eui:016x}": gw.health() for eui, gw in self._gateways.items()}}
