"""Lean MQTT 3.1.1 client on asyncio for the MQTT forwarder's hot path: QoS 1 publish in batches.

One future per batch, resolved when the last PUBACK of the batch is in; PUBLISH encoded by
hand, PUBACK read without objects. Also CONNECT with will, TLS, keepalive and SUBSCRIBE.
No QoS 2, no MQTT 5, no reconnect (the DeliveryLoop owns that). Every input is size-bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import frames
from gateway.forward.tls import describe_tls_error

#: CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3), worded for an operator.
CONNACK_REFUSALS = {
    1: "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
    2: "client identifier rejected: set a different client_id",
    3: "server unavailable",
    4: "bad username or password: check username/password",
    5: "not authorized: check username/password and the broker's ACL",
}
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
#: Largest non-PUBLISH packet we accept from a broker (SUBACK for one topic is 3 bytes).
MAX_CONTROL_PACKET = 1024
_PUBACK_HEAD = 0x40
_TOPIC_CACHE_MAX = 4096
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class MqttWireError(Exception):
    """A connection or protocol failure; ``kind`` feeds the health counters (tls, auth, timeout...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Will:
    """Last will, published by the broker (QoS 1) when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    retain: bool = True


def _varint(n: int) -> bytes:
    if n > 268_435_455:
        raise ValueError(f"MQTT packet of {n} bytes exceeds the protocol maximum")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(value: str | bytes, what: str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError(f"MQTT {what} is {len(raw)} bytes; at most 65535 allowed")
    return struct.pack("!H", len(raw)) + raw


def encode_connect(client_id: str, *, keepalive: int, clean_session: bool = True, username: str | None = None,
                   password: str | None = None, will: Will | None = None) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = [_field(client_id, "client id")]
    if will is not None:
        flags |= 0x04 | 0x08 | (0x20 if will.retain else 0)  # will flag, will QoS 1, will retain
        payload += [_field(will.topic, "will topic"), _field(will.payload, "will message")]
    if username is not None:
        flags |= 0x80
        payload.append(_field(username, "username"))
        if password is not None:
            flags |= 0x40
            payload.append(_field(password, "password"))
    body = _field("MQTT", "protocol") + bytes((4, flags)) + struct.pack("!H", keepalive) + b"".join(payload)
    return b"\x10" + _varint(len(body)) + body


def encode_publish(topic: str, payload: bytes, *, packet_id: int, retain: bool = False) -> bytes:
    """One QoS 1 PUBLISH (the hot path inlines the same layout with a topic cache)."""
    tf = _field(topic, "topic")
    return (bytes((0x32 | retain,)) + _varint(len(tf) + 2 + len(payload)) + tf
            + packet_id.to_bytes(2, "big") + payload)


def publish_frames(
    messages: Sequence[tuple[str, bytes, bool]], start: int, room: int, pid: int,
    inflight: dict[int, Any], subacks: dict[int, Any], batch: Any, topics: dict[str, bytes],
    field_of: Callable[[str], bytes],
) -> tuple[bytes, int, int]:
    """QoS 1 PUBLISH packets for ``messages[start:start + room]`` (``(topic, payload, retain)``)
    in one bytes object: ``(packets, next index, last packet id)``. Each message takes the packet
    id after ``pid`` (1..65535, wrapping) that is neither in ``inflight`` nor in ``subacks``, and
    ``inflight[id] = batch``. A topic's field is ``topics[topic]``, else ``field_of(topic)``
    (which caches it). A topic or a packet the protocol refuses raises before any id is taken.
    The reference of the compiled ``frames.mqtt_publish_frames`` (ext/_mqtt_batch.pxi)."""
    stop = min(len(messages), start + room)
    fields = [topics.get(topic) or field_of(topic) for topic, _, _ in messages[start:stop]]
    lengths = [_varint(len(tf) + 2 + len(payload))
               for (_, payload, _), tf in zip(messages[start:stop], fields, strict=True)]
    out: list[bytes] = []
    for (_, payload, retain), tf, rl in zip(messages[start:stop], fields, lengths, strict=True):
        pid = pid % 0xFFFF + 1
        while pid in inflight or pid in subacks:
            pid = pid % 0xFFFF + 1
        inflight[pid] = batch
        out += (b"\x33" if retain else b"\x32", rl, tf, pid.to_bytes(2, "big"), payload)
    return b"".join(out), stop, pid


def encode_subscribe(topic: str, *, packet_id: int, qos: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + _field(topic, "topic filter") + bytes((qos,))
    return b"\x82" + _varint(len(body)) + body


class _Batch:
    __slots__ = ("fut", "left")

    def __init__(self, left: int, fut: asyncio.Future[None]) -> None:
        self.left = left
        self.fut = fut


MessageHandler = Callable[[str, bytes], None]
OversizeHandler = Callable[[str, int], None]
LostHandler = Callable[[MqttWireError], None]


class MqttConnection(asyncio.Protocol):
    """One broker session. Open with :meth:`open`; ``on_lost`` is called once if it dies on its own."""

    def __init__(self, *, where: str, max_inflight: int, max_payload: int,
                 on_message: MessageHandler | None, on_oversize: OversizeHandler | None,
                 on_lost: LostHandler | None) -> None:
        self.where = where
        self.max_inflight = max(1, max_inflight)
        self._low_water = self.max_inflight // 2
        self.max_payload = max_payload
        self.on_message = on_message
        self.on_oversize = on_oversize
        self.on_lost = on_lost
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._skip = 0
        self._inflight: dict[int, _Batch] = {}
        self._subacks: dict[int, asyncio.Future[int]] = {}
        self._next_pid = 0
        self._room: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[None] = loop.create_future()
        self._topics: dict[str, bytes] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self._last_tx = self._last_rx = loop.time()
        self._closing = False
        self.error: MqttWireError | None = None
        self.stats = {"puback_unknown": 0, "incoming": 0, "oversize": 0}

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    async def open(cls, host: str, port: int, *, client_id: str, keepalive: int = 30,
                   username: str | None = None, password: str | None = None, will: Will | None = None,
                   ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0,  # noqa: ASYNC109
                   max_inflight: int = 1000, max_payload: int = 64 << 10,
                   on_message: MessageHandler | None = None, on_oversize: OversizeHandler | None = None,
                   on_lost: LostHandler | None = None) -> MqttConnection:
        """Connect, send CONNECT, wait for CONNACK; raises :class:`MqttWireError` with a clear cause."""
        where = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        proto: MqttConnection | None = None

        def factory() -> MqttConnection:
            nonlocal proto
            proto = cls(where=where, max_inflight=max_inflight, max_payload=max_payload,
                        on_message=on_message, on_oversize=on_oversize, on_lost=None)
            return proto

        try:
            async with asyncio.timeout(timeout):
                # asyncio closes the socket itself when the TLS handshake fails: nothing leaks.
                await loop.create_connection(factory, host, port, ssl=ssl_context,
                                             ssl_handshake_timeout=timeout if ssl_context else None)
                assert proto is not None
                proto._write(encode_connect(client_id, keepalive=keepalive, username=username,
                                            password=password, will=will))
                await proto._connack
        except TimeoutError as exc:
            if proto is not None:
                proto.abort()
            stage = "CONNACK" if proto is not None else "TCP/TLS connection"
            raise MqttWireError("timeout", f"{where}: no {stage} within {timeout:g}s") from exc
        except MqttWireError:
            if proto is not None:
                proto.abort()
            raise
        except ssl.SSLError as exc:
            raise MqttWireError("tls", f"{where}: {describe_tls_error(exc)}") from exc
        except OSError as exc:
            raise MqttWireError("connect", f"{where}: {exc.strerror or exc}") from exc
        proto.on_lost = on_lost
        if keepalive > 0:
            proto._keepalive = asyncio.create_task(proto._ping(keepalive), name=f"mqtt-keepalive:{where}")
        return proto

    # ---- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._sock = sock if _QUICKACK is not None and sock is not None else None
        self._quickack()

    def _quickack(self) -> None:
        """Acknowledge the broker's segments at once (Linux re-arms delayed ACK after each read).

        mosquitto leaves Nagle on by default: after its first PUBACK of a batch it holds the
        rest until we ACK, and our delayed ACK waits ~40 ms. That cost 40 ms per batch
        (11 000 instead of 130 000 msgs/s on localhost; bench_mqtt_publish.py).
        """
        if self._sock is not None and _QUICKACK is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                self._sock = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closing:
            err = MqttWireError("closed", f"{self.where}: connection closed")
        elif isinstance(exc, ssl.SSLError):
            err = MqttWireError("tls", f"{self.where}: {describe_tls_error(exc)}")
        elif exc is not None:
            err = MqttWireError("connection_lost", f"{self.where}: connection lost: {exc}")
        else:
            err = MqttWireError("connection_lost", f"{self.where}: the broker closed the connection")
        self._fail(err)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        w, self._writable = self._writable, None
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        if self._sock is not None:
            self._quickack()
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip:]
            self._skip = 0
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        inflight = self._inflight
        try:
            while end - pos >= 2:
                head = buf[pos]
                if head == _PUBACK_HEAD and buf[pos + 1] == 2:
                    # The hot path: one dict pop and a decrement per PUBACK.
                    if end - pos < 4:
                        break
                    batch = inflight.pop((buf[pos + 2] << 8) | buf[pos + 3], None)
                    pos += 4
                    if batch is None:
                        self.stats["puback_unknown"] += 1
                        continue
                    batch.left -= 1
                    if not batch.left and not batch.fut.done():
                        batch.fut.set_result(None)
                    continue
                length, mult, i = 0, 1, pos + 1
                while True:
                    if i >= end:
                        return  # header incomplete; finally keeps the rest
                    b = buf[i]
                    i += 1
                    length += (b & 0x7F) * mult
                    if not b & 0x80:
                        break
                    mult *= 128
                    if i - pos > 4:
                        raise MqttWireError("protocol", f"{self.where}: malformed remaining length at "
                                            f"byte {i} of a packet of type {head >> 4}")
                kind = head >> 4
                if kind == 3 and length > self.max_payload + 0x10000 + 4:
                    if not self._oversize(head, buf, i, end, length):
                        return  # variable header not complete yet
                    pos = end if self._skip else i + length
                    continue
                if kind != 3 and length > MAX_CONTROL_PACKET:
                    raise MqttWireError("protocol", f"{self.where}: {length}-byte packet of type {kind} "
                                        f"from the broker exceeds {MAX_CONTROL_PACKET}")
                if end - i < length:
                    return
                self._packet(head, bytes(buf[i:i + length]))
                pos = i + length
        except MqttWireError as exc:
            self._fail(exc)
            self.abort()
        finally:
            if pos:
                del buf[:pos]
            if self._room is not None and len(inflight) <= self._low_water:
                room, self._room = self._room, None
                if not room.done():
                    room.set_result(None)

    def _oversize(self, head: int, buf: bytearray, i: int, end: int, length: int) -> bool:
        """A PUBLISH too large to take: count it, PUBACK it, drop its bytes as they come."""
        if end - i < 2:
            return False
        tlen = int.from_bytes(buf[i:i + 2], "big")
        qos = (head >> 1) & 3
        need = 2 + tlen + (2 if qos else 0)
        if end - i < need:
            return False
        topic = bytes(buf[i + 2:i + 2 + tlen]).decode(errors="replace")
        if qos == 1:
            self._write(b"\x40\x02" + bytes(buf[i + 2 + tlen:i + need]))
        self.stats["oversize"] += 1
        if self.on_oversize is not None:
            self.on_oversize(topic, length - need)
        have = end - i
        self._skip = max(0, length - have)
        return True

    def _packet(self, head: int, body: bytes) -> None:
        kind = head >> 4
        if kind == 3:
            self._incoming(head, body)
        elif kind == 2:  # CONNACK
            if len(body) != 2:
                raise MqttWireError("protocol", f"{self.where}: CONNACK of {len(body)} bytes")
            rc = body[1]
            if self._connack.done():
                return
            if rc:
                self._connack.set_exception(MqttWireError(
                    "auth" if rc in (4, 5) else "refused",
                    f"{self.where}: connection refused (code {rc}): {CONNACK_REFUSALS.get(rc, 'unknown reason')}"))
            else:
                self._connack.set_result(None)
        elif kind == 9:  # SUBACK
            pid = int.from_bytes(body[:2], "big")
            fut = self._subacks.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(body[2] if len(body) > 2 else 0x80)
        elif kind == 4:  # PUBACK with an unusual length: not from a 3.1.1 broker
            raise MqttWireError("protocol", f"{self.where}: PUBACK of {len(body)} bytes")
        elif kind in (11, 13):  # UNSUBACK, PINGRESP
            pass
        else:
            raise MqttWireError("protocol", f"{self.where}: unexpected packet type {kind} from the broker")

    def _incoming(self, head: int, body: bytes) -> None:
        qos = (head >> 1) & 3
        if qos == 2 or len(body) < 2:
            raise MqttWireError("protocol", f"{self.where}: PUBLISH with QoS {qos} or no topic; "
                                "we subscribe at QoS 1 at most")
        tlen = int.from_bytes(body[:2], "big")
        start = 2 + tlen + (2 if qos else 0)
        if start > len(body):
            raise MqttWireError("protocol", f"{self.where}: PUBLISH topic length {tlen} past its end")
        topic = body[2:2 + tlen].decode(errors="replace")
        if qos == 1:
            self._write(b"\x40\x02" + body[2 + tlen:start])
        payload = body[start:]
        self.stats["incoming"] += 1
        if len(payload) > self.max_payload:
            self.stats["oversize"] += 1
            if self.on_oversize is not None:
                self.on_oversize(topic, len(payload))
        elif self.on_message is not None:
            self.on_message(topic, payload)

    # ---- failure and close -----------------------------------------------------------------
    def _fail(self, err: MqttWireError) -> None:
        if self.error is not None:
            return
        self.error = err
        waiters: list[asyncio.Future[None] | asyncio.Future[int] | None] = [
            self._connack, self._room, self._writable, *self._subacks.values(),
            *{b.fut for b in self._inflight.values()}]
        for fut in waiters:
            if fut is not None and not fut.done():
                fut.set_exception(err)
                fut.exception()  # some have no awaiter any more (a batch that timed out)
        self._inflight.clear()
        self._subacks.clear()
        self._room = self._writable = None
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        if not self._closing and self.on_lost is not None:
            self.on_lost(err)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def close(self, *, disconnect: bool = True) -> None:
        """Deliberate close: DISCONNECT (the broker then drops the will), no ``on_lost``."""
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        t = self._transport
        if t is None or t.is_closing():
            return
        if disconnect and self.error is None:
            t.write(DISCONNECT)
        t.close()
        with contextlib.suppress(Exception):
            # Let the transport flush DISCONNECT and close the socket before returning.
            for _ in range(10):
                if self.error is not None:
                    break
                await asyncio.sleep(0.01)
        if self.error is None:
            t.abort()

    @property
    def connected(self) -> bool:
        return self.error is None and not self._closing

    # ---- sending ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._last_tx = self._loop.time()

    def _pid(self) -> int:
        pid = self._next_pid
        while True:
            pid = pid % 0xFFFF + 1
            if pid not in self._inflight and pid not in self._subacks:
                self._next_pid = pid
                return pid

    def _topic_field(self, topic: str) -> bytes:
        tf = self._topics.get(topic)
        if tf is None:
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()  # many parking spots: a bound, not an LRU, is enough
            tf = self._topics[topic] = _field(topic, "topic")
        return tf

    async def publish_many(self, messages: Sequence[tuple[str, bytes, bool]]) -> None:
        """Publish at QoS 1; returns when the broker has acknowledged every one of them.

        At most ``max_inflight`` unacknowledged at a time; raises :class:`MqttWireError`
        when the connection dies first (which messages got through is then unknown).
        """
        if self.error is not None:
            raise self.error
        if not messages:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        batch = _Batch(len(messages), fut)
        inflight = self._inflight
        msgs = messages if isinstance(messages, list) else list(messages)
        out: list[bytes] = []
        i, n = 0, len(msgs)
        while True:
            room = self.max_inflight - len(inflight)
            if room > 0:
                # The packets of as many messages as there is room for, in one call (C in the
                # compiled build: ext/_mqtt_batch.pxi; packet ids, in-flight entries, headers).
                args = (msgs, i, room, self._next_pid, inflight, self._subacks, batch,
                        self._topics, self._topic_field)
                packets, i, self._next_pid = frames.mqtt_publish_frames(*args) or publish_frames(*args)
                out.append(packets)
            if i >= n:
                break
            await self._flush(out)
            out = []
            if len(inflight) >= self.max_inflight:
                self._room = self._loop.create_future()
                await self._room
        await self._flush(out)
        await fut

    async def _flush(self, out: list[bytes]) -> None:
        if out:
            if self.error is not None:
                raise self.error
            self._write(b"".join(out))
        if self._writable is not None:
            await self._writable

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.publish_many(((topic, payload, retain),))

    async def subscribe(self, topic: str, *, qos: int = 1) -> int:
        """SUBSCRIBE one filter; returns the granted QoS, raises if the broker refused (0x80)."""
        if self.error is not None:
            raise self.error
        pid = self._pid()
        fut: asyncio.Future[int] = self._loop.create_future()
        self._subacks[pid] = fut
        self._write(encode_subscribe(topic, packet_id=pid, qos=qos))
        granted = await fut
        if granted == 0x80:
            raise MqttWireError("refused", f"{self.where}: subscription to {topic!r} refused by the broker (ACL?)")
        return granted

    async def _ping(self, keepalive: int) -> None:
        """PINGREQ when we have been quiet; a broker silent for 1.5 keepalives is dead."""
        loop = self._loop
        while self.error is None:
            await asyncio.sleep(keepalive / 2)
            now = loop.time()
            if now - self._last_rx > keepalive * 1.5:
                self._fail(MqttWireError("timeout", f"{self.where}: broker silent for "
                                         f"{now - self._last_rx:.1f}s (keepalive {keepalive}s)"))
                self.abort()
                return
            if now - self._last_tx >= keepalive / 2 and self._transport is not None:
                self._write(PINGREQ)
