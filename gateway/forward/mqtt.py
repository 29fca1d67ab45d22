"""MQTT forwarder (aiomqtt): uplinks and stats in the ChirpStack MQTT forwarder layout, parking state.

QoS 1 throughout; a record counts as delivered only after the broker's PUBACK. Keeps a
retained ``state/conn`` (last will OFFLINE) and relays ``command/down`` to the local packet
forwarder. Never logs the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiomqtt
import cbor2
import orjson

from gateway.config import MqttForward
from gateway.forward import chirpstack_json as cs
from gateway.forward.base import Forwarder, ForwarderError, SendResult
from gateway.forward.ngsi import NewestPerSpot
from gateway.records import Record

log = logging.getLogger(__name__)

NATURAL_KINDS = ("uplink", "stats", "parking")
_TOPIC_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


class DownlinkRelay(Protocol):
    """What a local packet-forwarder source offers for downlinks (``drivers.gwmp_server``)."""

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

    def __init__(
        self,
        cfg: MqttForward,
        *,
        gateway_eui: int,
        relays: Sequence[DownlinkRelay] = (),
        publish_timeout: float = 15.0,
        max_inflight: int = 200,
    ) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or NATURAL_KINDS,
                         dev_addr_prefixes=cfg.dev_addr_prefixes)
        self.cfg = cfg
        self.host, self.port, self.tls = parse_broker_url(cfg.url)
        self.prefix = cfg.topic_prefix.strip("/")
        self.gateway_eui = f"{gateway_eui:016x}"
        self.relays = list(relays)
        self.publish_timeout = publish_timeout
        self.max_inflight = max_inflight
        self._client: aiomqtt.Client | None = None
        self._listener: asyncio.Task[None] | None = None
        self._downlinks: set[asyncio.Task[None]] = set()
        self._subscribed: set[str] = set()
        self._local_euis: set[str] = set()
        self.counters: dict[str, int] = {"published": 0, "pubacked": 0, "downlinks": 0}
        self.downlink_status: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        # A backlog state arriving after a newer live one must not become the retained state.
        self.newest = NewestPerSpot()

    # ---- topics ----------------------------------------------------------------------------
    def gateway_topic(self, eui: str, leaf: str) -> str:
        return f"{self.prefix}/gateway/{eui}/{leaf}"

    def parking_topic(self, spot_id: str) -> str:
        return f"{self.prefix}/parking/{spot_topic_level(spot_id)}/state"

    def message_for(self, record: Record) -> tuple[str, bytes, bool] | None:
        """(topic, payload, retain) for a record, or None for a kind this backend does not take."""
        body = cbor2.loads(record.body)
        if record.kind == "uplink":
            eui = str(body.get("gateway_eui") or self.gateway_eui)
            frame = cs.uplink_frame(body, record.received_us, replay=bool(body.get("replay")))
            return self.gateway_topic(eui, "event/up"), _dumps(frame), False
        if record.kind == "stats":
            eui = str(body.get("gateway_eui") or self.gateway_eui)
            return self.gateway_topic(eui, "event/stats"), _dumps(cs.gateway_stats(body)), False
        if record.kind == "parking":
            return self.parking_topic(str(body["spot_id"])), _dumps(body), True
        return None

    # ---- connection ------------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ca = str(self.cfg.ca_file) if self.cfg.ca_file else None
        ctx = ssl.create_default_context(cafile=ca)
        if self.cfg.cert_file:
            ctx.load_cert_chain(str(self.cfg.cert_file), str(self.cfg.key_file) if self.cfg.key_file else None)
        return ctx

    async def connect(self) -> None:
        conn_topic = self.gateway_topic(self.gateway_eui, "state/conn")
        try:
            tls = self._tls_context()
        except (OSError, ssl.SSLError) as exc:
            raise ForwarderError("tls_config", f"forward.mqtt {self.name}: TLS files "
                                 f"(ca_file/cert_file/key_file) unusable: {exc}") from exc
        client = aiomqtt.Client(
            self.host, self.port,
            identifier=self.cfg.client_id or f"schwebe-{self.gateway_eui}-{self.name}",
            username=self.cfg.username, password=self.cfg.password,
            will=aiomqtt.Will(conn_topic, _dumps(cs.conn_state(self.gateway_eui, False)), qos=1, retain=True),
            tls_context=tls, keepalive=max(1, int(self.cfg.keepalive)), timeout=10.0,
            max_inflight_messages=self.max_inflight, clean_session=True,
            logger=log.getChild("paho"),
        )
        # aiomqtt warns above 10 pending publishes; a batch is hundreds by design.
        client.pending_calls_threshold = 1 << 30
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise ForwarderError("connect", f"MQTT broker {self.host}:{self.port}: {exc}") from exc
        self._client = client
        # One event per connection: a listener of an earlier one cannot mark this one broken.
        self.broken = broken = asyncio.Event()
        try:
            await client.publish(conn_topic, _dumps(cs.conn_state(self.gateway_eui, True)), qos=1, retain=True)
            self._subscribed = set()
            self._listener = asyncio.create_task(self._listen(client, broken), name=f"mqtt-down:{self.name}")
            await self._subscribe_down(self.gateway_eui)
            for eui in self._local_euis:
                await self._subscribe_down(eui)
        except aiomqtt.MqttError as exc:
            await self.close()
            raise ForwarderError("connect", f"MQTT broker {self.host}:{self.port}: {exc}") from exc
        log.info("MQTT %s connected to %s:%d (tls=%s)", self.name, self.host, self.port, self.tls)

    async def _subscribe_down(self, eui: str) -> None:
        if eui in self._subscribed or self._client is None:
            return
        self._subscribed.add(eui)
        await self._client.subscribe(self.gateway_topic(eui, "command/down"), qos=1)

    async def close(self) -> None:
        client, self._client = self._client, None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        if client is None:
            return
        with contextlib.suppress(Exception):
            # A clean stop says OFFLINE itself; the will covers the unclean ones.
            await client.publish(self.gateway_topic(self.gateway_eui, "state/conn"),
                                 _dumps(cs.conn_state(self.gateway_eui, False)),
                                 qos=1, retain=True, timeout=2.0)
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)

    # ---- delivery --------------------------------------------------------------------------
    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        client = self._client
        if client is None:
            raise ForwarderError("disconnected", f"MQTT {self.name}: not connected")
        pubs: list[Awaitable[None]] = []
        new_euis: list[str] = []
        spots: list[tuple[str, Any]] = []
        for _seq, record in records:
            try:
                if record.kind == "parking":
                    body = cbor2.loads(record.body)
                    if self.newest.is_stale(str(body["spot_id"]), body.get("observed_at")):
                        self.counters["stale_skipped"] = self.counters.get("stale_skipped", 0) + 1
                        continue
                    spots.append((str(body["spot_id"]), body.get("observed_at")))
                msg = self.message_for(record)
            except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError) as exc:
                # A malformed body can never succeed; acked so it does not block the rest.
                self.errors["bad_record"] = self.errors.get("bad_record", 0) + 1
                log.warning("MQTT %s: skipping malformed %s record: %s", self.name, record.kind, exc)
                continue
            if msg is None:
                continue
            topic, payload, retain = msg
            if record.kind == "uplink":
                eui = topic.split("/")[-3]
                if eui not in self._local_euis:
                    self._local_euis.add(eui)
                    new_euis.append(eui)
            pubs.append(client.publish(topic, payload, qos=1, retain=retain, timeout=self.publish_timeout))
        self.counters["published"] += len(pubs)
        try:
            await asyncio.gather(*pubs)
            for eui in new_euis:
                await self._subscribe_down(eui)
        except aiomqtt.MqttError as exc:
            kind = "timeout" if "timed out" in str(exc).lower() else "publish"
            self.errors[kind] = self.errors.get(kind, 0) + 1
            raise ForwarderError(kind, f"MQTT {self.name} publish to {self.host}:{self.port}: {exc}") from exc
        self.counters["pubacked"] += len(pubs)
        for spot, when in spots:
            self.newest.delivered(spot, when)
        return SendResult.all()

    # ---- downlinks -------------------------------------------------------------------------
    async def _listen(self, client: aiomqtt.Client, broken: asyncio.Event) -> None:
        """Relay downlink commands until the connection ends; then say so through ``broken``.

        Without this an idle forwarder (no records to publish) would keep a dead client:
        no downlinks, and ``state/conn`` not republished after a broker restart.
        """
        try:
            async for message in client.messages:
                parts = str(message.topic).split("/")
                if len(parts) < 3 or parts[-2:] != ["command", "down"]:
                    continue
                eui = parts[-3]
                payload = message.payload
                raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
                task = asyncio.create_task(self._downlink(client, eui, raw), name=f"mqtt-downlink:{eui}")
                self._downlinks.add(task)
                task.add_done_callback(self._downlinks.discard)
        except aiomqtt.MqttError as exc:
            self.errors["connection_lost"] = self.errors.get("connection_lost", 0) + 1
            log.warning("MQTT %s: connection to %s:%d lost: %s", self.name, self.host, self.port, exc)
        broken.set()  # cancellation (close) skips this: a deliberate close is not a failure

    async def _downlink(self, client: aiomqtt.Client, eui: str, raw: bytes) -> None:
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
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.gateway_topic(eui, "event/ack"),
                                 _dumps(cs.downlink_tx_ack(eui, downlink_id, statuses)), qos=1)

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
                "connected": self._client is not None, **self.counters,
                "downlink_status": dict(self.downlink_status), "errors": dict(self.errors)}

