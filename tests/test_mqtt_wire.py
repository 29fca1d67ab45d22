"""The lean MQTT 3.1.1 client against a scripted broker on 127.0.0.1: the bytes it sends, PUBACKs
in any chunking, the in-flight window, a dying or silent broker, oversized input.

The scripted broker is a plain asyncio server, so each test decides exactly what the broker
says and when; the forwarder's tests against real mosquitto are in test_forward_mqtt.py.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.forward.mqtt_wire import (
    MqttConnection,
    MqttWireError,
    Will,
    _varint,
    encode_connect,
    encode_publish,
)


def _u16(b: bytes, at: int) -> int:
    return int(struct.unpack_from("!H", b, at)[0])


class Broker:
    """Accepts one client; reads whole packets; the test answers with raw bytes."""

    def __init__(self, connack: bytes = b"\x20\x02\x00\x00") -> None:
        self.connack = connack
        self.packets: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            while True:
                head = (await reader.readexactly(1))[0]
                length, mult = 0, 1
                while True:
                    b = (await reader.readexactly(1))[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length)
                if head >> 4 == 1:
                    writer.write(self.connack)
                    self.connected.set()
                await self.packets.put((head, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Broker:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        if self.writer is not None:
            self.writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def take(self, kind: int) -> bytes:
        """Next packet of ``kind`` (CONNECT 1, PUBLISH 3, SUBSCRIBE 8...), skipping PINGREQs."""
        while True:
            head, body = await asyncio.wait_for(self.packets.get(), 5)
            if head >> 4 == kind:
                assert len(body) < 128, "tests keep packets short: a one-byte remaining length"
                return bytes([head, len(body)]) + body
            assert head >> 4 in (1, 12), f"unexpected packet type {head >> 4}"  # CONNECT, PINGREQ


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker() as b:
        yield b


def _publish_ids(packets: list[bytes]) -> list[int]:
    return [_u16(p, 4 + _u16(p, 2)) for p in packets]  # head, length, topic length, topic, packet id


async def test_connect_carries_will_credentials_and_keepalive(broker: Broker) -> None:
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw-1", keepalive=30,
                                     username="gw1", password="s3cret",
                                     will=Will("eu868/gateway/x/state/conn", b'{"state":"OFFLINE"}'))
    try:
        packet = await broker.take(1)
        body = packet[2:]
        expected = encode_connect("gw-1", keepalive=30, username="gw1", password="s3cret",
                                  will=Will("eu868/gateway/x/state/conn", b'{"state":"OFFLINE"}'))
        assert packet == expected
        assert body[:6] == b"\x00\x04MQTT" and body[6] == 4
        assert body[7] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, pass, will retain/QoS1/flag, clean
        assert _u16(body, 8) == 30
        assert body.endswith(b"\x00\x03gw1\x00\x06s3cret")
    finally:
        await conn.close()


@pytest.mark.parametrize(("code", "kind", "words"), [(5, "auth", "not authorized"),
                                                      (2, "refused", "client_id")])
async def test_refused_connack_is_a_clear_error(code: int, kind: str, words: str) -> None:
    async with Broker(connack=bytes([0x20, 2, 0, code])) as b:
        with pytest.raises(MqttWireError) as err:
            await MqttConnection.open("127.0.0.1", b.port, client_id="gw", password=None)
    assert err.value.kind == kind and words in str(err.value) and f"127.0.0.1:{b.port}" in str(err.value)


async def test_batch_completes_only_when_every_puback_is_in(broker: Broker) -> None:
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw")
    try:
        msgs = [(f"t/{i}", b"x" * i, i == 2) for i in range(5)]
        task = asyncio.create_task(conn.publish_many(msgs))
        sent = [await broker.take(3) for _ in msgs]
        assert sent == [encode_publish(t, p, packet_id=pid, retain=r)
                        for (t, p, r), pid in zip(msgs, _publish_ids(sent), strict=True)]
        assert sent[2][0] == 0x33 and sent[0][0] == 0x32  # QoS 1; retain only where asked
        assert broker.writer is not None
        for pid in _publish_ids(sent)[:4]:
            broker.writer.write(b"\x40\x02" + pid.to_bytes(2, "big"))
        await asyncio.sleep(0.1)
        assert not task.done(), "a batch must not complete before its last PUBACK"
        broker.writer.write(b"\x40\x02" + _publish_ids(sent)[4].to_bytes(2, "big"))
        await asyncio.wait_for(task, 5)
    finally:
        await conn.close()


async def test_remaining_length_of_one_two_and_three_bytes_is_what_the_encoder_writes(broker: Broker) -> None:
    # Payload sizes around the 127 and 16 383-byte remaining-length steps (an uplink's
    # PUBLISH is ~330 bytes: the two-byte form is the hot one).
    sizes = [119, 120, 121, 122, 300, 16_375, 16_376, 16_377, 16_378, 70_000]
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw")
    try:
        msgs = [("t/x", bytes([i]) * n, False) for i, n in enumerate(sizes)]
        task = asyncio.create_task(conn.publish_many(msgs))
        sent = []
        while len(sent) < len(msgs):
            head, body = await asyncio.wait_for(broker.packets.get(), 5)
            if head >> 4 == 3:
                sent.append((head, body))
        for (topic, payload, retain), (head, body) in zip(msgs, sent, strict=True):
            pid = _u16(body, 2 + len(topic))
            assert bytes([head]) + _varint(len(body)) + body == encode_publish(
                topic, payload, packet_id=pid, retain=retain)
        assert [len(b) for _, b in sent] == [n + 7 for n in sizes]  # topic field 5, id 2
        assert broker.writer is not None
        for _, body in sent:
            broker.writer.write(b"\x40\x02" + body[5:7])
        await asyncio.wait_for(task, 5)
    finally:
        await conn.close()


async def test_packet_ids_wrap_past_65535_and_skip_ids_still_in_use(broker: Broker) -> None:
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw")
    try:
        conn._next_pid = 0xFFFE
        conn._subacks[1] = asyncio.get_running_loop().create_future()  # a SUBSCRIBE awaiting its SUBACK
        task = asyncio.create_task(conn.publish_many([("t/a", b"1", False), ("t/b", b"2", False),
                                                      ("t/c", b"3", False)]))
        sent = [await broker.take(3) for _ in range(3)]
        assert _publish_ids(sent) == [0xFFFF, 2, 3]  # 0 is no packet id; 1 is taken
        assert broker.writer is not None
        for pid in _publish_ids(sent):
            broker.writer.write(b"\x40\x02" + pid.to_bytes(2, "big"))
        await asyncio.wait_for(task, 5)
    finally:
        conn._subacks.pop(1).cancel()
        await conn.close()


async def test_in_flight_window_bounds_unacknowledged_publishes(broker: Broker) -> None:
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw", max_inflight=4)
    task = asyncio.create_task(conn.publish_many([("t", b"%d" % i, False) for i in range(10)]))
    try:
        assert broker.writer is not None
        got: list[bytes] = []
        while len(got) < 10:
            got += [await broker.take(3) for _ in range(min(4, 10 - len(got)))]
            await asyncio.sleep(0.05)
            assert broker.packets.empty(), "more than 4 unacknowledged PUBLISH out"
            for pid in _publish_ids(got[-4:]):  # ack everything out, the window opens again
                broker.writer.write(b"\x40\x02" + pid.to_bytes(2, "big"))
        await asyncio.wait_for(task, 5)
        assert [p[-1:] for p in got] == [b"%d" % i for i in range(10)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await conn.close()


async def test_broker_dying_mid_batch_fails_the_batch_and_reports_the_loss_once(broker: Broker) -> None:
    lost: list[MqttWireError] = []
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw", on_lost=lost.append)
    task = asyncio.create_task(conn.publish_many([("t", b"a", False), ("t", b"b", False)]))
    await broker.take(3)
    assert broker.writer is not None
    broker.writer.transport.abort()
    with pytest.raises(MqttWireError) as err:
        await asyncio.wait_for(task, 5)
    assert err.value.kind == "connection_lost" and not conn.connected
    assert len(lost) == 1 and lost[0] is err.value
    with pytest.raises(MqttWireError):
        await conn.publish("t", b"c")
    await conn.close()


async def test_silent_broker_is_declared_dead_after_keepalive() -> None:
    async with Broker() as b:
        lost: list[MqttWireError] = []
        conn = await MqttConnection.open("127.0.0.1", b.port, client_id="gw", keepalive=1, on_lost=lost.append)
        await b.take(12)  # a PINGREQ while idle; the broker never answers it
        await asyncio.wait_for(_until(lambda: lost), 4)
        assert lost[0].kind == "timeout" and "keepalive 1s" in str(lost[0])
        await conn.close()


async def _until(cond: Any) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met within 10 s"
        await asyncio.sleep(0.02)


async def test_oversized_incoming_publish_is_dropped_acked_and_the_stream_stays_in_sync(broker: Broker) -> None:
    got: list[tuple[str, bytes]] = []
    big: list[tuple[str, int]] = []
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw", max_payload=1024,
                                     on_message=lambda t, p: got.append((t, p)),
                                     on_oversize=lambda t, n: big.append((t, n)))
    try:
        assert broker.writer is not None
        w = broker.writer
        huge = b"\x00\x05a/b/c\x00\x07" + b"z" * 300_000  # QoS 1, packet id 7, then the payload

        def publish(raw: bytes) -> bytes:
            n, vi = len(raw), bytearray()
            while True:
                n, d = divmod(n, 128)
                vi.append(d | (0x80 if n else 0))
                if not n:
                    return b"\x32" + bytes(vi) + raw
        w.write(publish(huge))
        w.write(publish(b"\x00\x05a/b/c\x00\x08" + b'{"ok":1}'))
        await asyncio.wait_for(_until(lambda: got), 5)
        assert big == [("a/b/c", 300_000)]
        assert got == [("a/b/c", b'{"ok":1}')]
        # Both acknowledged, so the broker does not hold them in flight for us forever.
        assert [await broker.take(4) for _ in range(2)] == [b"\x40\x02\x00\x07", b"\x40\x02\x00\x08"]
        assert conn.connected
    finally:
        await conn.close()


async def test_oversized_control_packet_ends_the_connection(broker: Broker) -> None:
    lost: list[MqttWireError] = []
    conn = await MqttConnection.open("127.0.0.1", broker.port, client_id="gw", on_lost=lost.append)
    assert broker.writer is not None
    broker.writer.write(b"\x90\xff\xff\x03")  # a SUBACK claiming ~64 KiB
    await asyncio.wait_for(_until(lambda: lost), 5)
    assert lost[0].kind == "protocol" and "exceeds" in str(lost[0])
    await conn.close()


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_pubacks_suback_and_publish_split_anywhere_parse_the_same(cuts: list[int]) -> None:
    async def run() -> None:
        got: list[tuple[str, bytes]] = []
        proto = MqttConnection(where="test", max_inflight=100, max_payload=1024,
                               on_message=lambda t, p: got.append((t, p)), on_oversize=None, on_lost=None)
        proto.connection_made(_FakeTransport())
        proto._connack.set_result(None)
        task = asyncio.create_task(proto.publish_many([("t", b"%d" % i, False) for i in range(6)]))
        sub = asyncio.create_task(proto.subscribe("a/command/down"))
        await asyncio.sleep(0)
        stream = b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid in range(1, 7))
        stream += b"\x90\x03\x00\x07\x01"  # SUBACK for packet id 7, QoS 1 granted
        topic = b"a/command/down"
        pub = struct.pack("!H", len(topic)) + topic + b'{"d":1}'
        stream += b"\x30" + bytes([len(pub)]) + pub  # a QoS 0 PUBLISH
        pos = 0
        for c in cuts:
            proto.data_received(stream[pos:pos + c])
            pos += c
        proto.data_received(stream[pos:])
        await asyncio.wait_for(task, 1)
        assert await asyncio.wait_for(sub, 1) == 1
        assert got == [("a/command/down", b'{"d":1}')]
        proto._closing = True
        proto.connection_lost(None)

    asyncio.run(run())
