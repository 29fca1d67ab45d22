"""MQTT forwarder: uplinks and stats in the ChirpStack MQTT forwarder layout, parking state.

QoS 1 throughout; a record counts as delivered only after the broker's PUBACK (wire level in
``mqtt_wire``). Keeps a retained ``state/conn`` (last will OFFLINE) and relays ``command/down``
to the local packet forwarder. Never logs the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import cbor2
import orjson

from gateway import frames
from gateway.config import MqttForward
from gateway.forward import chirpstack_json as cs
from gateway.forward.base import Broken, Forwarder, ForwarderError, SendResult
from gateway.forward.mqtt_wire import MqttConnection, MqttWireError, Will
from gateway.forward.ngsi import NewestPerSpot
from gateway.forward.tls import client_tls_context
from gateway.records import Record, now_us

log = logging.getLogger(__name__)

NATURAL_KINDS = ("uplink", "stats", "parking")
_TOPIC_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


class DownlinkRelay(Protocol):
    """What a radio source offers for downlinks (``drivers.gwmp_server``, ``drivers.concentratord``)."""

    def send_downlink(self, gateway_eui: int | None, txpk: Mapping[str, Any]) -> Awaitable[dict[str, Any]]: ...


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:1883`` / ``mqtts://host:8883`` -> (host, port, tls)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "tcp", "mqtts", "ssl", "tls") or not parts.hostname:
        raise ValueError(f"forward.mqtt.url {url!r}: use mqtt://host[:port] or mqtts://host[:port]")
    tls = scheme in ("mqtts", "ssl", "tls")
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


def spot_topic_level(spot_id: str) -> str:
    """A spot id as one topic level: '/', '+', '#' would split or wildcard it, so they become '_'."""
    return spot_id.translate(_TOPIC_UNSAFE) or "_"


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=lambda o: o.hex() if isinstance(o, bytes) else str(o),
                        option=orjson.OPT_NON_STR_KEYS)


class MqttForwarder(Forwarder):
    """One broker connection per (re)connect; the DeliveryLoop owns backoff and cursors."""

    #: At most one publish batch per 20 ms of live traffic: at 2 000 frames/s that is ~40
    #: messages a write instead of ~2 without it (the loopback writes, wakeups and the delivery
    #: loop's turn per batch were most of the daemon's CPU, bench_end_to_end.py --daemon; 5 ms
    #: left ~11 a batch and 77 µs a frame, 20 ms 49 µs). A frame waits 20 ms at most for it; a
    #: lone frame after a quiet spell goes at once, a full batch from a backlog never waits.
    coalesce = 0.02

    def __init__(
        self,
        cfg: MqttForward,
        *,
        gateway_eui: int,
        relays: Sequence[DownlinkRelay] = (),
        publish_timeout: float = 15.0,
        connect_timeout: float = 10.0,
        max_inflight: int = 1000,
        max_downlink_bytes: int = 64 << 10,
        max_pending_downlinks: int = 32,
        late_after: float = 10.0,
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or NATURAL_KINDS,
                         dev_addr_prefixes=cfg.dev_addr_prefixes, net_ids=cfg.net_ids)
        self.cfg = cfg
        self.host, self.port, self.tls = parse_broker_url(cfg.url)
        self.prefix = cfg.topic_prefix.strip("/")
        self.gateway_eui = f"{gateway_eui:016x}"
        self.relays = list(relays)
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.max_inflight = max_inflight
        self.max_downlink_bytes = max_downlink_bytes
        self.max_pending_downlinks = max_pending_downlinks
        self.late_after_us = int(late_after * 1_000_000)
        self.clock_us = clock_us
        self._conn: MqttConnection | None = None
        self._downlinks: set[asyncio.Task[None]] = set()
        self._subscribed: set[str] = set()
        self._local_euis: set[str] = set()
        self.counters: dict[str, int] = {"published": 0, "pubacked": 0, "downlinks": 0}
        self.downlink_status: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        # A backlog state arriving after a newer live one must not become the retained state.
        self.newest = NewestPerSpot()
        # Remote configuration rides on this connection (gateway/remote/manager.py).
        self._listen: tuple[str, ...] = ()
        self._listener: Callable[[str, bytes], None] | None = None
        self._listen_max = 0
        self._retained: dict[str, bytes] = {}

    # ---- other users of the connection -----------------------------------------------------
    def listen(self, topics: Sequence[str], on_message: Callable[[str, bytes], None], *,
               max_bytes: int) -> None:
        """Subscribe ``topics`` on every connection and hand their messages to ``on_message``
        (up to ``max_bytes`` each; downlinks keep their own, smaller limit)."""
        self._listen = tuple(topics)
        self._listener = on_message
        self._listen_max = max_bytes
        conn = self._conn
        if conn is not None and conn.connected:
            self._background(self._subscribe_listen(conn))

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Keep ``topic`` retained on the broker: now if connected, else at the next connect."""
        self._retained[topic] = payload
        conn = self._conn
        if conn is not None and conn.connected:
            self._background(conn.publish(topic, payload, retain=True))

    def _background(self, aw: Any) -> None:
        async def guarded() -> None:
            with contextlib.suppress(MqttWireError, TimeoutError):
                await asyncio.wait_for(aw, self.publish_timeout)

        task = asyncio.create_task(guarded())
        self._downlinks.add(task)
        task.add_done_callback(self._downlinks.discard)

    async def _subscribe_listen(self, conn: MqttConnection) -> None:
        for topic in self._listen:
            await asyncio.wait_for(conn.subscribe(topic, qos=1), self.publish_timeout)

    def _listened(self, topic: str) -> bool:
        for pattern in self._listen:
            if pattern.endswith("/#") and topic.startswith(pattern[:-1]):
                return True
            if topic == pattern:
                return True
        return False

    # ---- topics ----------------------------------------------------------------------------
    def gateway_topic(self, eui: str, leaf: str) -> str:
        return f"{self.prefix}/gateway/{eui}/{leaf}"

    def parking_topic(self, spot_id: str) -> str:
        return f"{self.prefix}/parking/{spot_topic_level(spot_id)}/state"

    def message_for(self, record: Record) -> tuple[str, bytes, bool] | None:
        """(topic, payload, retain) for a record, or None for a kind this backend does not take."""
        if record.kind == "uplink":
            return self._uplink(record)[1]
        body = cbor2.loads(record.body)
        if record.kind == "stats":
            eui = str(body.get("gateway_eui") or self.gateway_eui)
            return self.gateway_topic(eui, "event/stats"), _dumps(cs.gateway_stats(body)), False
        if record.kind == "parking":
            return self.parking_topic(str(body["spot_id"])), _dumps(body), True
        return None

    def _uplink(self, record: Record, now_us: int | None = None) -> tuple[str, tuple[str, bytes, bool]]:
        """(gateway EUI, message) for an uplink record; ``now_us``: the batch's moment."""
        # Sent more than late_after after receipt (a backlog after an outage): marked, so a
        # network server does not take a replayed frame for a fresh one.
        received_us = record.received_us
        late = (self.clock_us() if now_us is None else now_us) - received_us > self.late_after_us
        eui, payload = cs.uplink_message(record.body, received_us, self.gateway_eui, replay=late)
        return eui, (f"{self.prefix}/gateway/{eui}/event/up", payload, False)

    # ---- connection ------------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return client_tls_context(f"forward.mqtt {self.name}", ca_file=self.cfg.ca_file,
                                  cert_file=self.cfg.cert_file, key_file=self.cfg.key_file)

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def connect(self) -> None:
        conn_topic = self.gateway_topic(self.gateway_eui, "state/conn")
        try:
            tls = self._tls_context()
        except ValueError as exc:
            self._count("tls_config")
            raise ForwarderError("tls_config", str(exc)) from exc
        # One event per connection: the end of an earlier one cannot mark this one broken.
        self.broken = broken = Broken()
        try:
            conn = await MqttConnection.open(
                self.host, self.port,
                client_id=self.cfg.client_id or f"schwebe-{self.gateway_eui}-{self.name}",
                keepalive=max(1, int(self.cfg.keepalive)),
                username=self.cfg.username, password=self.cfg.password,
                will=Will(conn_topic, _dumps(cs.conn_state(self.gateway_eui, False)), retain=True),
                ssl_context=tls, timeout=self.connect_timeout, max_inflight=self.max_inflight,
                max_payload=max(self.max_downlink_bytes, self._listen_max),
                on_message=self._on_message,
                on_oversize=self._on_oversize, on_lost=lambda err: self._on_lost(err, broken),
            )
        except MqttWireError as exc:
            kind, hint = exc.kind, ""
            if kind == "connection_lost":
                kind = "connect"  # before CONNACK: the connection never was up
                if self.tls and self.cfg.cert_file is None:
                    # A TLS 1.3 broker refusing a client without certificate may reset the
                    # connection before its alert can be read.
                    hint = " (no client certificate configured: if the broker requires one, set cert_file and key_file)"
            self._count(kind)
            raise ForwarderError(kind, f"MQTT broker {exc}{hint}") from exc
        self._conn = conn
        try:
            await asyncio.wait_for(conn.publish(conn_topic, _dumps(cs.conn_state(self.gateway_eui, True)),
                                                retain=True), self.publish_timeout)
            self._subscribed = set()
            await self._subscribe_down(self.gateway_eui)
            for eui in self._local_euis:
                await self._subscribe_down(eui)
            await self._subscribe_listen(conn)
            for topic, payload in self._retained.items():
                await asyncio.wait_for(conn.publish(topic, payload, retain=True), self.publish_timeout)
        except (MqttWireError, TimeoutError) as exc:
            await self.close()
            kind = getattr(exc, "kind", "timeout")
            self._count(kind)
            raise ForwarderError(kind, f"MQTT broker {self.host}:{self.port}: after CONNACK: "
                                 f"{exc or 'no PUBACK/SUBACK in time'}") from exc
        log.info("MQTT %s connected to %s:%d (tls=%s)", self.name, self.host, self.port, self.tls)

    def _on_lost(self, err: MqttWireError, broken: Broken) -> None:
        """Connection died on its own: counted, and ``broken`` wakes an idle DeliveryLoop.

        Without this an idle forwarder (no records to publish) would keep a dead connection:
        no downlinks, and ``state/conn`` not republished after a broker restart.
        """
        self._count("connection_lost")
        log.warning("MQTT %s: %s", self.name, err)
        broken.set()

    async def _subscribe_down(self, eui: str) -> None:
        if eui in self._subscribed or self._conn is None:
            return
        self._subscribed.add(eui)
        await asyncio.wait_for(self._conn.subscribe(self.gateway_topic(eui, "command/down"), qos=1),
                               self.publish_timeout)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.connected:
            with contextlib.suppress(MqttWireError, TimeoutError):
                # A clean stop says OFFLINE itself; the will covers the unclean ones.
                await asyncio.wait_for(conn.publish(self.gateway_topic(self.gateway_eui, "state/conn"),
                                                    _dumps(cs.conn_state(self.gateway_eui, False)),
                                                    retain=True), 2.0)
        await conn.close()

    # ---- delivery --------------------------------------------------------------------------
    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        conn = self._conn
        if conn is None or not conn.connected:
            raise ForwarderError("disconnected", f"MQTT {self.name}: not connected")
        msgs: list[tuple[str, bytes, bool]] = []
        new_euis: list[str] = []
        spots: list[tuple[str, int]] = []
        local = self._local_euis
        now = self.clock_us()  # one moment for the batch: "late" is judged against it
        # The usual batch, uplinks only, in one call (compiled build: ext/_mqtt_batch.pxi);
        # the loop below gives the same messages and takes every other batch.
        fast = frames.uplink_publishes(records, now, self.late_after_us, self.prefix)
        if fast is not None:
            msgs, euis = fast
            new_euis = [eui for eui in euis if eui not in local]
            local.update(new_euis)
        for seq, record in records if fast is None else ():
            try:
                if record.kind == "uplink":
                    eui, up = self._uplink(record, now)
                    if eui not in local:
                        local.add(eui)
                        new_euis.append(eui)
                    msgs.append(up)
                    continue
                if record.kind == "parking":
                    body = cbor2.loads(record.body)
                    if self.newest.is_stale(str(body["spot_id"]), seq):
                        self.counters["stale_skipped"] = self.counters.get("stale_skipped", 0) + 1
                        continue
                    spots.append((str(body["spot_id"]), seq))
                msg = self.message_for(record)
            except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError) as exc:
                # A malformed body can never succeed; acked so it does not block the rest.
                self._count("bad_record")
                log.warning("MQTT %s: skipping malformed %s record: %s", self.name, record.kind, exc)
                continue
            if msg is not None:
                msgs.append(msg)
        self.counters["published"] += len(msgs)
        try:
            # The cursor moves only when this returns: every PUBACK of the batch is in.
            # asyncio.timeout, not wait_for: no task of its own for every batch.
            async with asyncio.timeout(self.publish_timeout):
                await conn.publish_many(msgs)
            for eui in new_euis:
                await self._subscribe_down(eui)
        except TimeoutError as exc:
            self._count("timeout")
            raise ForwarderError("timeout", f"MQTT {self.name} publish to {self.host}:{self.port}: "
                                 f"no PUBACK within {self.publish_timeout:g}s") from exc
        except MqttWireError as exc:
            kind = "connection_lost" if exc.kind in ("connection_lost", "closed") else exc.kind
            if kind != "connection_lost":
                self._count(kind)  # connection_lost was counted by _on_lost already
            raise ForwarderError(kind, f"MQTT {self.name} publish: {exc}") from exc
        self.counters["pubacked"] += len(msgs)
        for spot, when in spots:
            self.newest.delivered(spot, when)
        return SendResult.all()

    # ---- downlinks -------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._listener is not None and self._listened(topic):
            self._listener(topic, payload)
            return
        parts = topic.split("/")
        if len(parts) < 3 or parts[-2:] != ["command", "down"]:
            return
        if len(payload) > self.max_downlink_bytes:
            self._on_oversize(topic, len(payload))
            return
        if len(self._downlinks) >= self.max_pending_downlinks:
            # A flood of commands must not grow tasks without bound; a class A window is gone anyway.
            self._count("downlink_overload")
            self._count_downlink("INTERNAL_ERROR")
            return
        conn = self._conn
        if conn is None:
            return
        eui = parts[-3]
        task = asyncio.create_task(self._downlink(conn, eui, payload), name=f"mqtt-downlink:{eui}")
        self._downlinks.add(task)
        task.add_done_callback(self._downlinks.discard)

    def _on_oversize(self, topic: str, size: int) -> None:
        self._count("downlink_too_large")
        self._count_downlink("INVALID")
        log.warning("MQTT %s: dropped a %d-byte message on %s: larger than %d bytes",
                    self.name, size, topic, self.max_downlink_bytes)

    async def _downlink(self, conn: MqttConnection, eui: str, raw: bytes) -> None:
        self.counters["downlinks"] += 1
        try:
            frame = orjson.loads(raw)
            items = frame["items"]
            downlink_id = int(frame.get("downlinkId", 0))
            if not isinstance(items, list) or not items:
                raise cs.DownlinkError("items: at least one item required")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._count_downlink("INVALID")
            log.warning("MQTT %s: unusable downlink on %s: %s", self.name, eui, exc)
            return
        target = int(eui, 16) if eui in self._local_euis else None
        statuses: list[str] = []
        for i, item in enumerate(items):
            if statuses and statuses[-1] == "OK":
                statuses.append("IGNORED")
                continue
            try:
                txpk = cs.txpk_from_item(item, f"items[{i}]")
            except cs.DownlinkError as exc:
                log.warning("MQTT %s: downlink %d for %s: %s", self.name, downlink_id, eui, exc)
                statuses.append("INTERNAL_ERROR")
                continue
            statuses.append(await self._relay(target, txpk))
        for s in statuses:
            self._count_downlink(s)
        with contextlib.suppress(MqttWireError, TimeoutError):
            await asyncio.wait_for(conn.publish(self.gateway_topic(eui, "event/ack"),
                                                _dumps(cs.downlink_tx_ack(eui, downlink_id, statuses))),
                                   self.publish_timeout)

    async def _relay(self, target: int | None, txpk: dict[str, Any]) -> str:
        if not self.relays:
            return "INTERNAL_ERROR"
        status = "INTERNAL_ERROR"
        for relay in self.relays:
            ack = await relay.send_downlink(target, txpk)
            status = cs.tx_ack_status(ack)
            if ack.get("error") != "UNKNOWN_GATEWAY":
                return status
        return status

    def _count_downlink(self, status: str) -> None:
        self.downlink_status[status] = self.downlink_status.get(status, 0) + 1

    def health(self) -> dict[str, Any]:
        return {"broker": f"{self.host}:{self.port}", "tls": self.tls,
                "connected": self._conn is not None and self._conn.connected, **self.counters,
                "downlink_status": dict(self.downlink_status), "errors": dict(self.errors)}

