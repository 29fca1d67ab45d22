"""The MQTT forwarder's batch in two calls (ext/_mqtt_batch.pxi): a batch of uplink records to
its messages (``uplink_publishes``) and a run of messages to their PUBLISH packets
(``mqtt_publish_frames``). What a broker receives must not depend on the build: the compiled
calls give the messages of the forwarder's general path and the bytes of the connection's
reference (``mqtt_wire.publish_frames``, what the twin's build sends)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.forward import chirpstack_json as cs
from gateway.forward.mqtt_wire import _field, _varint, publish_frames
from gateway.frames import _frames_py as twin
from gateway.records import Record, make_record
from tests.test_uplink_json import TYPICAL, _push

EUI = "aa555a0000000101"
OTHER = "0016c001ff10a235"
NOW = 1_764_842_400_000_000
LATE_AFTER = 5_000_000


def _compiled() -> ModuleType:
    try:
        return importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        # test_frames.py::test_compiled_extension_is_built fails in CI when this happens.
        pytest.skip("gateway.frames._frames_c is not built")


def _uplink(eui: str, fields: dict[str, Any], received_us: int) -> Record:
    return make_record("uplink", "gwmp:0", {"gateway_eui": eui, "rxpk": fields}, received_us)


def _general(records: list[tuple[int, Record]], prefix: str) -> tuple[list[tuple[str, bytes, bool]], list[str]]:
    """What MqttForwarder.send's per-record loop makes of a batch of uplinks."""
    msgs, euis = [], []
    for _, r in records:
        eui, payload = cs.uplink_message(r.body, r.received_us, "ffffffffffffffff",
                                         replay=NOW - r.received_us > LATE_AFTER)
        msgs.append((f"{prefix}/gateway/{eui}/event/up", payload, False))
        if eui not in euis:
            euis.append(eui)
    return msgs, euis


def test_a_batch_of_uplinks_gives_the_general_paths_messages() -> None:
    fields = _push(TYPICAL)
    # two gateways interleaved, fresh and late (a backlog after an outage) records
    records = [(i, _uplink(EUI if i % 3 else OTHER, fields[i % len(fields)],
                           NOW - (LATE_AFTER * 2 if i % 4 == 0 else 1000)))
               for i in range(1, 25)]
    got = _compiled().uplink_publishes(records, NOW, LATE_AFTER, "city/lora")
    assert got == _general(records, "city/lora")
    msgs, euis = got
    assert euis == [EUI, OTHER]  # first seen first: the order the forwarder subscribes in
    assert sum(b'"replay":"true"' in m[1] for m in msgs) == 6
    # the twin has no one-pass encoder: its forwarder takes the general path for every batch
    assert twin.uplink_publishes(records, NOW, LATE_AFTER, "city/lora") is None


@pytest.mark.parametrize("odd", [
    make_record("parking", "edge", {"spot_id": "A1", "occupied": True}, NOW),
    make_record("stats", "gwmp:0", {"gateway_eui": EUI, "stat": {"rxnb": 1}}, NOW),
    _uplink(EUI, {"data": "AA==", "rsig": [{"ant": 0}]}, NOW),  # the encoder declines an array
    Record("uplink", "gwmp:0", -1, _uplink(EUI, _push(TYPICAL)[0], NOW).body),  # before 1970
])
def test_one_record_the_shortcut_cannot_take_sends_the_batch_the_general_way(odd: Record) -> None:
    records = [(1, _uplink(EUI, _push(TYPICAL)[0], NOW)), (2, odd)]
    assert _compiled().uplink_publishes(records, NOW, LATE_AFTER, "p") is None
    assert _compiled().uplink_publishes(records[:1], NOW, LATE_AFTER, "p") is not None


def test_an_empty_batch_has_no_messages() -> None:
    assert _compiled().uplink_publishes([], NOW, LATE_AFTER, "p") == ([], [])


class _Topics:
    """The connection's topic cache and its miss path (MqttConnection._topic_field)."""

    def __init__(self) -> None:
        self.cache: dict[str, bytes] = {}
        self.misses: list[str] = []

    def field_of(self, topic: str) -> bytes:
        self.misses.append(topic)
        tf = self.cache[topic] = _field(topic, "topic")
        return tf


def _both(messages: list[tuple[str, bytes, bool]], start: int, room: int, pid: int,
          inflight: dict[int, Any], subacks: dict[int, Any]) -> tuple[Any, ...]:
    """Run the compiled call and the reference on copies of the same state."""
    out = []
    for frame in (_compiled().mqtt_publish_frames, publish_frames):
        fl, topics = dict(inflight), _Topics()
        got = frame(messages, start, room, pid, fl, dict(subacks), "batch", topics.cache, topics.field_of)
        out.append((got, fl, topics.misses))
    assert out[0] == out[1]
    return out[0]


def _expected_packet(topic: str, payload: bytes, retain: bool, pid: int) -> bytes:
    """A QoS 1 PUBLISH as MQTT 3.1.1 section 3.3 lays it out."""
    tf = _field(topic, "topic")
    return (bytes((0x33 if retain else 0x32,)) + _varint(len(tf) + 2 + len(payload)) + tf
            + pid.to_bytes(2, "big") + payload)


def test_publish_packets_are_the_protocols_bytes_and_take_free_ids() -> None:
    messages = [("a/b", b"x" * 10, False), ("a/b", b"y" * 200, True),  # 1- and 2-byte lengths
                ("c", b"z" * 20000, False)]  # a 3-byte remaining length
    (packets, stop, last), inflight, misses = _both(messages, 0, 10, 6, {7: "other"}, {9: "sub"})
    # 7 is in flight and 9 is a SUBSCRIBE's: the messages take 8, 10 and 11
    assert packets == b"".join(_expected_packet(t, p, r, i)
                               for (t, p, r), i in zip(messages, (8, 10, 11), strict=True))
    assert (stop, last) == (3, 11)
    assert inflight == {7: "other", 8: "batch", 10: "batch", 11: "batch"}
    assert misses == ["a/b", "c"]  # each topic's field made once, then cached


def test_publish_packets_stop_at_the_room_left_and_go_on_from_there() -> None:
    messages = [(f"t/{i % 3}", bytes([i]) * i, i % 2 == 0) for i in range(10)]
    (first, stop, last), inflight, _ = _both(messages, 0, 4, 0, {}, {})
    assert (stop, last, sorted(inflight)) == (4, 4, [1, 2, 3, 4])
    (rest, stop, last), inflight, _ = _both(messages, 4, 100, last, inflight, {})
    assert (stop, last) == (10, 10)
    assert first + rest == b"".join(_expected_packet(t, p, r, i + 1)
                                    for i, (t, p, r) in enumerate(messages))


def test_packet_ids_wrap_after_65535_and_never_take_zero() -> None:
    (_, _, last), inflight, _ = _both([("t", b"", False)] * 3, 0, 3, 65534, {1: "old"}, {})
    assert sorted(inflight) == [1, 2, 3, 65535] and last == 3  # 65535, then 1 is taken: 2, 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.binary(max_size=300), st.booleans()),
                max_size=12),
       st.integers(0, 65535), st.sets(st.integers(1, 65535), max_size=20), st.integers(1, 15))
def test_publish_packets_match_the_reference(messages: list[tuple[str, bytes, bool]], pid: int,
                                             busy: set[int], room: int) -> None:
    if messages:
        _both(messages, 0, room, pid, dict.fromkeys(busy, "x"), {})


def test_a_topic_the_protocol_refuses_raises_before_any_id_is_taken() -> None:
    messages = [("ok", b"1", False), ("x" * 70000, b"2", False)]
    for frame in (_compiled().mqtt_publish_frames, publish_frames):
        inflight: dict[int, Any] = {}
        topics = _Topics()
        with pytest.raises(ValueError, match="65535"):
            frame(messages, 0, 10, 0, inflight, {}, "b", topics.cache, topics.field_of)
        assert inflight == {}


def test_a_payload_that_is_not_bytes_goes_to_the_reference() -> None:
    messages = [("t", bytearray(b"abc"), False)]
    topics = _Topics()
    assert _compiled().mqtt_publish_frames(messages, 0, 5, 0, {}, {}, "b", topics.cache,
                                           topics.field_of) is None
    packets, _, _ = publish_frames(messages, 0, 5, 0, {}, {}, "b", topics.cache, topics.field_of)
    assert packets == _expected_packet("t", b"abc", False, 1)
