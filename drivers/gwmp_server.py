"""Semtech UDP (GWMP) server for local packet forwarders: uplinks in, downlinks out.

Acks PUSH_DATA/PULL_DATA, turns each good rxpk and stat into a record, keeps per-gateway
health, routes downlinks (after the EU868 duty-cycle check, per gateway) and their TX_ACK back to the
caller. No datagram, however malformed, may stop the socket; every one lands in a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from drivers.dutycycle import (
    BAD_TXPK,
    OK,
    Booking,
    DutyCycleRefused,
    GatewayDutyCycles,
)
from gateway import frames
from gateway.frames.door import out_of_bounds
from gateway.records import Record, make_record, now_us

log = logging.getLogger(__name__)

#: Kernel receive buffer asked for: a burst of several thousand datagrams must
#: survive a garbage-collection pause. Best effort: Linux caps it at rmem_max.
DEFAULT_RCVBUF: Final = 4 * 1024 * 1024

#: Under dense traffic the socket is read on a tick instead of at each datagram, as a network
#: card's interrupt moderation does: once ``DENSE`` datagrams arrive within one ``POLL_TICK``
#: (200 a second and more), the socket is read every ``POLL_TICK`` seconds, draining what queued
#: meanwhile, until a tick finds fewer than ``SPARSE`` (under 100 a second): then each datagram
#: is read as it comes again. A datagram waits at most ``POLL_TICK`` (the packet forwarder
#: waits 100 ms for its PUSH_ACK), and the daemon wakes once a tick rather than once a datagram:
#: each wake-up after a sleep runs on cold caches, several times slower than the same work warm
#: (tests/bench/bench_end_to_end.py --daemon).
POLL_TICK: Final = 0.02
DENSE: Final = 4
SPARSE: Final = 2
#: Datagrams read in one tick at most (the rest wait for the next: the loop stays responsive).
POLL_MAX: Final = 2048

#: txpk_ack errors this server adds to the forwarder's own (TOO_LATE, TX_FREQ, ...).
UNKNOWN_GATEWAY: Final = "UNKNOWN_GATEWAY"
TIMEOUT: Final = "TIMEOUT"
SEND_FAILED: Final = "SEND_FAILED"

_STAT_TOTALS: Final = ("rxnb", "rxok", "rxfw", "dwnb", "txnb")
_STAT_LAST: Final = (
    "rxnb",
    "rxok",
    "rxfw",
    "ackr",
    "dwnb",
    "txnb",
    "temp",
    "lati",
    "long",
    "alti",
    "time",
)


@dataclass(slots=True)
class ConcentratorHealth:
    """What one packet forwarder told us and when (shown on the status page)."""

    gateway_eui: str
    protocol_version: int = 2
    uplink_addr: tuple[str, int] | None = None
    downlink_addr: tuple[str, int] | None = None
    last_seen: float = 0.0  # monotonic
    last_pull: float = 0.0
    push_data: int = 0
    pull_data: int = 0
    rxpk: int = 0
    rxpk_bad: int = 0
    last_stat: dict[str, Any] = field(default_factory=dict)
    stat_totals: dict[str, int] = field(default_factory=dict)
    stats_received: int = 0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "gateway_eui": self.gateway_eui,
            "protocol_version": self.protocol_version,
            "uplink_addr": None
            if self.uplink_addr is None
            else f"{self.uplink_addr[0]}:{self.uplink_addr[1]}",
            "downlink_addr": None
            if self.downlink_addr is None
            else f"{self.downlink_addr[0]}:{self.downlink_addr[1]}",
            "last_seen_s_ago": round(now - self.last_seen, 3) if self.last_seen else None,
            "last_pull_s_ago": round(now - self.last_pull, 3) if self.last_pull else None,
            "push_data": self.push_data,
            "pull_data": self.pull_data,
            "rxpk": self.rxpk,
            "rxpk_bad": self.rxpk_bad,
            "stats_received": self.stats_received,
            "stat": dict(self.last_stat),
            "stat_totals": dict(self.stat_totals),
        }


#: No LoRa frame exceeds 255 bytes (the other limits of the door: gateway/frames/door.py).
MAX_PHY: Final = 255
_PUSH_ACK_ID: Final = bytes((frames.PUSH_ACK,))
#: Distinct gateway EUIs kept on the status page; spoofed EUIs beyond it are counted, not kept.
MAX_GATEWAYS: Final = 256


@dataclass(slots=True)
class _Pending:
    gateway_eui: int
    future: asyncio.Future[dict[str, Any]]


def _eui_hex(eui: int) -> str:
    return f"{eui:016x}"


class GwmpServer(asyncio.DatagramProtocol):
    """One UDP socket serving any number of packet forwarders (uplink and downlink path)."""

    def __init__(
        self,
        *,
        on_uplink: Callable[[Record], None],
        on_stats: Callable[[Record], None] | None = None,
        bind: tuple[str, int] = ("127.0.0.1", 1700),
        allowed_euis: set[int] | None = None,
        allowed_hosts: set[str] | None = None,
        duty_cycle: GatewayDutyCycles | None = None,
        on_downlink_observed: Callable[[int, Mapping[str, Any]], None] | None = None,
        on_rxpk: Callable[[Mapping[str, Any], int, bytes], None] | None = None,
        on_uplinks: Callable[[list[Record]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_us: Callable[[], int] = now_us,
        name: str = "gwmp",
        source: str | None = None,
        rcvbuf: int = DEFAULT_RCVBUF,
        max_datagram: int = frames.MAX_DATAGRAM,
        downlink_timeout: float = 5.0,
        poll_tick: float = POLL_TICK,
    ) -> None:
        self._on_uplink = on_uplink
        # a datagram's uplink records in one call, when the consumer takes them so (the daemon)
        self._on_uplinks = on_uplinks
        self._on_stats = on_stats
        self._bind = bind
        self._allowed_euis = None if allowed_euis is None else frozenset(allowed_euis)
        self._allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        self._duty = duty_cycle
        self._on_downlink_observed = on_downlink_observed
        # sees each good rxpk dict (after its record): edge decoding without a CBOR round trip
        self._on_rxpk = on_rxpk
        self._clock = clock
        self._wall_us = wall_clock_us
        self.name = name  # the supervisor's component name
        self._source = name if source is None else source
        self._rcvbuf_wanted = rcvbuf
        self._rcvbuf = 0
        self._max_datagram = max_datagram
        self._downlink_timeout = downlink_timeout
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._closed: asyncio.Future[None] | None = None
        self._poll_tick = poll_tick  # 0: read every datagram as it comes, whatever the rate
        self._poll: asyncio.TimerHandle | None = None  # the next tick, while reading on ticks
        self._window_start, self._window_n = 0.0, 0  # datagrams in the current tick-long window
        self._ticks = 0  # ticks that read datagrams (for /api/status)
        self._gateways: dict[int, ConcentratorHealth] = {}
        self._gateways_not_kept = 0  # datagrams from EUIs beyond MAX_GATEWAYS (none expired)
        self._pending: dict[int, _Pending] = {}
        # Every datagram ends in exactly one outcome, so sum(outcomes) == datagrams.
        self._datagrams = 0
        self._by_identifier: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._malformed: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._rxpk_bad: Counter[str] = Counter()
        self._rxpk = 0
        self._stats = 0
        self._callback_errors = 0
        self._socket_errors = 0
        self._downlinks_sent = 0
        self._downlinks_refused: Counter[str] = Counter()
        self._downlinks_acked: Counter[str] = Counter()
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind the socket; returns once datagrams can arrive (the supervisor's READY point)."""
        loop = asyncio.get_running_loop()
        host, port = self._bind
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._rcvbuf = self._grow_rcvbuf(sock)
            sock.bind(sockaddr)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"UDP {host}:{port}: {(exc.strerror or str(exc)).lower()}; "
                "is another packet-forwarder server running there?",
            ) from exc
        self._closed = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._transport = transport  # connection_made may only run on the next loop turn
        self._sock = sock
        log.info(
            "GWMP server listening",
            extra={
                "fields": {
                    "bind": f"{self.bound_address[0]}:{self.bound_address[1]}",
                    "rcvbuf": self._rcvbuf,
                }
            },
        )

    def _grow_rcvbuf(self, sock: socket.socket) -> int:
        force = getattr(socket, "SO_RCVBUFFORCE", None)
        if force is not None:
            # Needs CAP_NET_ADMIN; lets a systemd unit exceed rmem_max without sysctl.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, force, self._rcvbuf_wanted)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < self._rcvbuf_wanted:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf_wanted)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    async def run(self) -> None:
        """Serve until closed (the supervisor's component protocol; start() first for READY)."""
        if self._transport is None:
            await self.start()
        await self.wait_closed()

    async def stop(self) -> None:
        self.close()
        await self.wait_closed()

    @property
    def bound_address(self) -> tuple[str, int]:
        if self._transport is None:
            raise RuntimeError("GWMP server is not started; await start() first")
        addr = self._transport.get_extra_info("sockname")
        return str(addr[0]), int(addr[1])

    def close(self) -> None:
        """Stop serving; pending downlinks are answered with a TIMEOUT-style error."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._transport is not None:
            self._transport.close()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_result({"error": TIMEOUT, "detail": "GWMP server closed"})
        self._pending.clear()

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await asyncio.shield(self._closed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector datagram transport does not subclass DatagramTransport on 3.11.
        self._transport = cast(asyncio.DatagramTransport, transport)
        # asyncio reads each datagram into a fresh 256 KiB buffer (its max_size), which the
        # allocator maps and unmaps per datagram: a sixth of the receive path's CPU at 2 000
        # frames/s. One byte over our bound is enough to tell a datagram too large.
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = self._max_datagram + 1  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a forwarder that went away: not our problem to die of.
        self._socket_errors += 1
        log.debug("GWMP socket error: %s", exc)

    # ------------------------------------------------------------------ receive path

    def _malformed_count(self, kind: str, addr: Any, detail: str) -> None:
        self._malformed[kind] += 1
        self._outcomes["malformed"] += 1
        if kind not in self._warned:
            # One warning per kind: a flood of garbage must not flood the journal too.
            self._warned.add(kind)
            log.warning(
                "malformed GWMP datagram from %s: %s (further ones of this kind counted)",
                addr,
                detail,
            )

    def _drop(self, reason: str) -> None:
        self._dropped[reason] += 1
        self._outcomes["dropped"] += 1

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._receive(data, addr)
        if self._poll_tick > 0:
            now = self._clock()
            if now - self._window_start > self._poll_tick:
                self._window_start, self._window_n = now, 0
            self._window_n += 1
            if self._window_n >= DENSE and self._poll is None and self._transport is not None:
                # Dense traffic: read on ticks from now on (POLL_TICK above). The selector
                # datagram transport pauses as a stream's does (typeshed omits it).
                cast(asyncio.ReadTransport, self._transport).pause_reading()
                self._poll = asyncio.get_running_loop().call_later(self._poll_tick, self._tick)

    def _receive(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._datagrams += 1
        try:
            self._handle(data, addr)
        except Exception:  # the socket must outlive any bug in one datagram
            self._malformed_count("internal_error", addr, "unexpected error while handling")
            log.exception("GWMP datagram from %s raised; counted as internal_error", addr)

    def _tick(self) -> None:
        """Read what queued since the last tick; back to reading on arrival when little had."""
        self._poll = None
        transport, sock = self._transport, self._sock
        if transport is None or sock is None or transport.is_closing():
            return
        n = 0
        try:
            while n < POLL_MAX:
                try:
                    data, addr = sock.recvfrom(self._max_datagram + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # as the transport does: an ICMP error of an earlier send
                    self.error_received(exc)
                    break
                n += 1
                self._receive(data, addr)
        finally:
            # Whatever happened above, the socket is read again: on the next tick, or as
            # datagrams come.
            if n >= SPARSE:
                self._ticks += 1
                self._poll = asyncio.get_running_loop().call_later(self._poll_tick, self._tick)
            else:
                self._window_start, self._window_n = self._clock(), n
                cast(asyncio.ReadTransport, transport).resume_reading()

    def _handle(self, data: bytes, addr: tuple[Any, int]) -> None:
        if self._allowed_hosts is not None and addr[0] not in self._allowed_hosts:
            self._drop("unknown_host")
            return
        n = len(data)
        if n > self._max_datagram:
            self._malformed_count(
                "too_large", addr, f"more than {self._max_datagram} bytes (the bound)"
            )
            return
        if n < 4:
            self._malformed_count("too_short", addr, f"{n} bytes, a GWMP header needs 4")
            return
        ident = data[3]
        # Allow-list before any JSON work: a stranger's flood costs us a few bytes of reading.
        if (
            self._allowed_euis is not None
            and ident in (frames.PUSH_DATA, frames.PULL_DATA, frames.TX_ACK)
            and n >= 12
            and int.from_bytes(data[4:12], "big") not in self._allowed_euis
        ):
            self._drop("unknown_eui")
            return
        if ident == frames.PUSH_DATA:
            self._push_data(data, addr)
        elif ident == frames.PULL_DATA:
            self._pull_data(data, addr)
        elif ident == frames.TX_ACK:
            self._tx_ack(data, addr)
        else:
            try:
                pkt = frames.parse_gwmp(data)
            except frames.FrameError as exc:
                self._malformed_count(exc.kind, addr, str(exc))
                return
            # PUSH_ACK / PULL_RESP / PULL_ACK travel from a server, never to one.
            self._by_identifier[pkt.identifier_name] += 1
            self._drop("unexpected_identifier")

    def _gateway(self, eui: int) -> ConcentratorHealth:
        gw = self._gateways.get(eui)
        if gw is None:
            gw = ConcentratorHealth(_eui_hex(eui))
            if len(self._gateways) >= MAX_GATEWAYS and not self._expire_gateways():
                # A flood of spoofed EUIs: serve the datagram, keep no state for it.
                self._gateways_not_kept += 1
                return gw
            self._gateways[eui] = gw
        return gw

    def _expire_gateways(self, silent_for: float = 3600.0) -> bool:
        """Forget gateways not heard for ``silent_for`` seconds; True when room was made."""
        now = self._clock()
        stale = [e for e, g in self._gateways.items()
                 if now - max(g.last_seen, g.last_pull) > silent_for and e not in self._pinned()]
        for e in stale:
            del self._gateways[e]
        return bool(stale)

    def _pinned(self) -> set[int]:
        return {p.gateway_eui for p in self._pending.values()}

    def _push_data(self, data: bytes, addr: tuple[Any, int]) -> None:
        try:
            push = frames.decode_push_data(data)
        except frames.FrameError as exc:
            self._malformed_count(exc.kind, addr, str(exc))
            return
        assert self._transport is not None
        # Ack first: the forwarder's ackr statistic must not depend on our callbacks. The
        # PUSH_ACK is the datagram's own header (version and token, checked by the decoder)
        # with the PUSH_ACK identifier: frames.encode_push_ack's bytes without its checks.
        self._transport.sendto(data[:3] + _PUSH_ACK_ID, addr)
        self._by_identifier["PUSH_DATA"] += 1
        self._outcomes["acked"] += 1
        now = self._clock()
        received_us = self._wall_us()
        gw = self._gateway(push.gateway_eui)
        gw.last_seen = now
        gw.uplink_addr = (str(addr[0]), int(addr[1]))
        gw.protocol_version = push.version
        gw.push_data += 1
        eui_hex = gw.gateway_eui
        # Per rxpk, in one call (C in the compiled build): the decoder's verdict, the length
        # bound, "data" as padded standard base64 whatever dialect the forwarder wrote, the
        # door (bounds, then plausibility: gateway/frames/door.py), and the record.
        records, good, phys, refused = frames.uplink_records(
            push.rxpk, eui_hex, MAX_PHY, Record, self._source, received_us)
        if refused:
            bad = self._rxpk_bad
            for kind in refused:
                bad[kind] += 1
            gw.rxpk_bad += len(refused)
        if good:
            self._rxpk += len(good)
            gw.rxpk += len(good)
            self._deliver(records, good, phys, received_us)
        if push.stat is not None and out_of_bounds(push.stat) is not None:
            self._malformed["stat_out_of_bounds"] += 1  # the rxpk above still count
        elif push.stat is not None:
            self._stats += 1
            gw.stats_received += 1
            stat = push.stat
            for key in _STAT_LAST:
                if key in stat:
                    gw.last_stat[key] = stat[key]
            for key in _STAT_TOTALS:
                value = stat.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    gw.stat_totals[key] = gw.stat_totals.get(key, 0) + value
            if self._on_stats is not None:
                self._emit(
                    self._on_stats, "stats", {"gateway_eui": eui_hex, "stat": stat}, received_us
                )

    def _deliver(self, records: list[Record], good: list[dict[str, Any]], phys: list[bytes],
                 received_us: int) -> None:
        """A datagram's good rxpk: their records (in one call when the consumer takes a list),
        then each rxpk to the edge decoder, so every parking record follows its uplink."""
        if self._on_uplinks is not None:
            try:
                self._on_uplinks(records)
            except Exception:  # a consumer bug must not stop the radio path
                self._callback_errors += 1
                if self._callback_errors == 1:
                    log.exception("GWMP uplink consumer raised; further errors are only counted")
        else:
            for record in records:
                self._call(self._on_uplink, "uplink", record)
        if self._on_rxpk is not None:
            for f, phy in zip(good, phys, strict=True):
                try:
                    self._on_rxpk(f, received_us, phy)
                except Exception:  # a consumer bug must not stop the radio path
                    self._callback_errors += 1
                    if self._callback_errors == 1:
                        log.exception("GWMP rxpk consumer raised; further errors are only counted")

    def _emit(
        self, callback: Callable[[Record], None], kind: str, body: Any, received_us: int
    ) -> None:
        self._call(callback, kind, make_record(kind, self._source, body, received_us))

    def _call(self, callback: Callable[[Record], None], kind: str, record: Record) -> None:
        try:
            callback(record)
        except Exception:  # a consumer bug must not stop the radio path
            self._callback_errors += 1
            if self._callback_errors == 1:
                log.exception("GWMP %s consumer raised; further errors are only counted", kind)

    def _pull_data(self, data: bytes, addr: tuple[Any, int]) -> None:
        try:
            pkt = frames.parse_gwmp(data)
        except frames.FrameError as exc:
            self._malformed_count(exc.kind, addr, str(exc))
            return
        assert self._transport is not None and pkt.gateway_eui is not None
        self._transport.sendto(frames.encode_pull_ack(pkt.token, pkt.version), addr)
        self._by_identifier["PULL_DATA"] += 1
        self._outcomes["acked"] += 1
        gw = self._gateway(pkt.gateway_eui)
        now = self._clock()
        gw.last_seen = gw.last_pull = now
        gw.downlink_addr = (str(addr[0]), int(addr[1]))
        gw.protocol_version = pkt.version
        gw.pull_data += 1

    def _tx_ack(self, data: bytes, addr: tuple[Any, int]) -> None:
        try:
            pkt = frames.parse_gwmp(data)
        except frames.FrameError as exc:
            self._malformed_count(exc.kind, addr, str(exc))
            return
        self._by_identifier["TX_ACK"] += 1
        pending = self._pending.get(pkt.token)
        if pending is None or pending.gateway_eui != pkt.gateway_eui:
            # Late (after our timeout) or for somebody else's downlink.
            self._drop("stale_tx_ack")
            return
        del self._pending[pkt.token]
        self._outcomes["tx_ack"] += 1
        ack: dict[str, Any] = {"error": OK}
        body = pkt.body or {}
        inner = body.get("txpk_ack")
        if isinstance(inner, dict):
            ack.update(inner)
            if not isinstance(ack.get("error"), str) or not ack["error"]:
                ack["error"] = OK
        if not pending.future.done():
            pending.future.set_result(ack)

    # ------------------------------------------------------------------ downlinks

    def _pick_gateway(self, gateway_eui: int | None) -> ConcentratorHealth | None:
        if gateway_eui is not None:
            gw = self._gateways.get(gateway_eui)
            return gw if gw is not None and gw.downlink_addr is not None else None
        # No EUI given: the forwarder whose downlink path was refreshed last.
        best: ConcentratorHealth | None = None
        for gw in self._gateways.values():
            if gw.downlink_addr is not None and (best is None or gw.last_pull > best.last_pull):
                best = gw
        return best

    def _refuse(self, error: str, detail: str) -> dict[str, Any]:
        self._downlinks_refused[error] += 1
        return {"error": error, "detail": detail}

    async def send_downlink(
        self,
        gateway_eui: int | None,
        txpk: Mapping[str, Any],
        timeout: float | None = None,  # noqa: ASYNC109 - per-call TX_ACK wait; callers pass the LNS's budget
    ) -> dict[str, Any]:
        """Send ``txpk`` as PULL_RESP and return the forwarder's ``txpk_ack`` (``error`` ``"NONE"`` = sent).

        Refusals (no such forwarder, duty cycle, bad txpk) come back in the same
        shape, with a ``detail`` for the operator, and nothing goes on air.
        """
        if self._transport is None or self._transport.is_closing():
            return self._refuse(SEND_FAILED, "GWMP server is not running")
        gw = self._pick_gateway(gateway_eui)
        if gw is None:
            who = "any gateway" if gateway_eui is None else f"gateway {_eui_hex(gateway_eui)}"
            return self._refuse(
                UNKNOWN_GATEWAY,
                f"no PULL_DATA received from {who} yet, so there is no downlink path; "
                "check that its packet forwarder points at this server",
            )
        eui = int(gw.gateway_eui, 16)
        freq = txpk.get("freq")
        if not isinstance(freq, (int, float)) or isinstance(freq, bool):
            return self._refuse(BAD_TXPK, "txpk needs 'freq' in MHz")
        freq_hz = round(float(freq) * 1e6)
        booking: Booking | None = None
        if self._duty is not None:
            try:
                booking = self._duty.book(eui, freq_hz, txpk)
            except DutyCycleRefused as exc:
                return self._refuse(exc.error, exc.detail)
        token = secrets.randbits(16)
        while token in self._pending:
            token = secrets.randbits(16)
        assert gw.downlink_addr is not None
        datagram = frames.encode_pull_resp(token, txpk, gw.protocol_version)
        expect_ack = gw.protocol_version >= 2
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if expect_ack:
            self._pending[token] = _Pending(eui, future)
        try:
            self._transport.sendto(datagram, gw.downlink_addr)
        except OSError as exc:
            self._pending.pop(token, None)
            if booking is not None:
                booking.release()
            return self._refuse(SEND_FAILED, f"sending PULL_RESP to {gw.downlink_addr}: {exc}")
        self._downlinks_sent += 1
        if self._on_downlink_observed is not None:
            try:
                self._on_downlink_observed(eui, txpk)
            except Exception:  # an observer must not cost the downlink
                self._callback_errors += 1
                log.exception("downlink observer raised")
        if not expect_ack:
            # Protocol version 1 has no TX_ACK: sent is all we can know.
            self._downlinks_acked[OK] += 1
            return {"error": OK, "detail": "protocol v1 forwarder; no TX_ACK in that version"}
        wait = self._downlink_timeout if timeout is None else timeout
        try:
            ack = await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            self._pending.pop(token, None)
            self._downlinks_acked[TIMEOUT] += 1
            # The airtime stays booked: the radio may well have sent it.
            return {
                "error": TIMEOUT,
                "detail": f"no TX_ACK from gateway {gw.gateway_eui} within {wait:g} s",
            }
        finally:
            self._pending.pop(token, None)
        error = str(ack.get("error", OK))
        self._downlinks_acked[error] += 1
        if error != OK and booking is not None and error != TIMEOUT:
            # The forwarder refused it (TOO_LATE, TX_FREQ...): nothing went on air.
            booking.release()
        return ack

    # ------------------------------------------------------------------ health

    def gateways(self) -> dict[str, ConcentratorHealth]:
        return {gw.gateway_eui: gw for gw in self._gateways.values()}

    def health(self) -> dict[str, Any]:
        """Counters and per-forwarder health; cheap enough for every status-page refresh."""
        now = self._clock()
        return {
            "bound": None
            if self._transport is None
            else f"{self.bound_address[0]}:{self.bound_address[1]}",
            "rcvbuf": self._rcvbuf,
            # "on_ticks" while traffic is dense (POLL_TICK above), else "per_datagram"
            "reading": {"mode": "per_datagram" if self._poll is None else "on_ticks",
                        "ticks": self._ticks, "tick_ms": round(self._poll_tick * 1000, 3)},
            "datagrams": self._datagrams,
            "by_identifier": dict(self._by_identifier),
            "outcomes": dict(self._outcomes),
            "acks": self._outcomes["acked"],
            "rxpk": self._rxpk,
            "rxpk_bad": dict(self._rxpk_bad),
            "stats": self._stats,
            "malformed": dict(self._malformed),
            "gateways_not_kept": self._gateways_not_kept,
            "dropped": dict(self._dropped),
            "callback_errors": self._callback_errors,
            "socket_errors": self._socket_errors,
            "downlinks": {
                "sent": self._downlinks_sent,
                "refused": dict(self._downlinks_refused),
                "acked": dict(self._downlinks_acked),
                "pending": len(self._pending),
            },
            "duty_cycle": None if self._duty is None else self._duty.usage(),
            "gateways": {gw.gateway_eui: gw.as_dict(now) for gw in self._gateways.values()},
        }
