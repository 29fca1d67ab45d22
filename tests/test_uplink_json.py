"""The compiled shortcut from an uplink record to its ChirpStack JSON (ext/_uplink_json.pxi)
writes the bytes the general path writes (cbor2 -> uplink_frame -> orjson), or declines.

It answers the records the gateway makes (checked on real PUSH_DATA below); on anything odd it
may decline, never differ. The `slow` variant runs 30 000 random bodies (CI runs it).
"""

from __future__ import annotations

import base64
import importlib
from types import ModuleType
from typing import Any

import cbor2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import frames
from gateway.forward import chirpstack_json as cs
from gateway.records import make_record

EUI = "b827ebfffe000001"


def _compiled() -> ModuleType:
    try:
        return importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        # test_frames.py::test_compiled_extension_is_built fails in CI when this happens.
        pytest.skip("gateway.frames._frames_c is not built")


def general(body: bytes, received_us: int, replay: bool) -> tuple[str, bytes] | str:
    """The general path's answer, or the name of what it raised."""
    try:
        decoded = cbor2.loads(body)
        eui = str(decoded.get("gateway_eui") or "fallback")
        return eui, orjson.dumps(cs.uplink_frame(decoded, received_us, replay=replay))
    except Exception as exc:  # the kind of failure is the answer
        return type(exc).__name__


def check(body: bytes, received_us: int, replay: bool) -> bool:
    """Assert agreement; True when the shortcut answered."""
    fast = _compiled().uplink_json_fast(body, received_us, replay)
    if fast is None:
        return False
    assert fast == general(body, received_us, replay), cbor2.loads(body)
    return True


def _push(rxpk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    datagram = frames.encode_push_data(7, 0xAA555A0000000101, rxpk)
    return [rx.fields for rx in frames.decode_push_data(datagram).rxpk]


PHY = base64.b64encode(bytes.fromhex("40a1b2c3d400010001112233aabbccdd")).decode()
TYPICAL = [
    # lora_pkt_fwd without GPS: no "time"; the receive time stands in
    {"tmst": 3512348611, "chan": 2, "rfch": 0, "freq": 868.5, "stat": 1, "modu": "LORA",
     "datr": "SF7BW125", "codr": "4/5", "rssi": -35, "lsnr": 5.1, "size": 16, "data": PHY},
    # with GPS time and tmms, a negative SNR, SF12, 4/6
    {"time": "2026-12-04T10:00:00.123456Z", "tmms": 1417000000123, "tmst": 1, "chan": 7,
     "rfch": 1, "freq": 867.9, "stat": 1, "modu": "LORA", "datr": "SF12BW125", "codr": "4/6",
     "rssi": -119, "rssis": -121, "lsnr": -17.5, "foff": -1200, "size": 16, "data": PHY},
    # a bad CRC, FSK, a time without the zone
    {"tmst": 99, "chan": 8, "rfch": 1, "freq": 868.8, "stat": -1, "modu": "FSK", "datr": 50000,
     "rssi": -80, "size": 16, "data": PHY, "time": "2026-12-04T10:00:00.5"},
    # 250 kHz, an integer SNR, no codr
    {"tmst": 0, "chan": 6, "rfch": 1, "freq": 868.3, "stat": 0, "modu": "LORA",
     "datr": "SF7BW250", "rssi": -60, "lsnr": 7, "size": 16, "data": PHY},
]


@pytest.mark.parametrize("replay", [False, True])
def test_the_records_the_gateway_makes_take_the_shortcut_and_match(replay: bool) -> None:
    for fields in _push(TYPICAL):
        record = make_record("uplink", "gwmp:0", {"gateway_eui": EUI, "rxpk": fields}, 1764842400123456)
        assert check(record.body, record.received_us, replay), fields


def test_the_mqtt_forwarder_sends_the_same_message_either_way() -> None:
    """What a subscriber receives does not depend on the build (the twin has no shortcut)."""
    record = make_record("uplink", "gwmp:0", {"gateway_eui": EUI, "rxpk": _push(TYPICAL)[1]}, 5)
    eui, payload = cs.uplink_message(record.body, record.received_us, "ffffffffffffffff")
    assert (eui, payload) == general(record.body, record.received_us, False)
    frame = orjson.loads(payload)
    assert frame["rxInfo"]["gwTime"] == "2026-12-04T10:00:00.123456Z"
    assert frame["rxInfo"]["timeSinceGpsEpoch"] == "1417000000.123s"
    assert frame["txInfo"] == {"frequency": 867900000, "modulation": {"lora": {
        "bandwidth": 125000, "spreadingFactor": 12, "codeRate": "CR_4_6"}}}


@pytest.mark.parametrize("body", [
    {"gateway_eui": EUI, "rxpk": {"data": PHY, "rsig": [{"ant": 0}]}},  # an array: declined
    {"gateway_eui": "", "rxpk": {"data": PHY}},  # topic takes the forwarder's own EUI
    {"gateway_eui": EUI, "rxpk": {"data": PHY, "rssi": True}},  # a bool is an int to Python
    {"gateway_eui": EUI, "rxpk": {"data": PHY, "lsnr": 1e-7}},  # "1e-07" vs orjson's "1e-7"
    {"gateway_eui": EUI, "rxpk": {"data": PHY, "modu": "LORA", "datr": "SF7BW125\n"}},  # re's $
    {"gateway_eui": EUI, "rxpk": {"data": "Zm9v\"", "freq": 868.1}},  # needs escaping
    {"gateway_eui": EUI, "rxpk": {"data": PHY, "freq": float("nan")}},
    {"gateway_eui": EUI, "rxpk": {"data": PHY, "chan": 2**64}},
    {"gateway_eui": EUI},  # no rxpk: the general path raises KeyError
    [1, 2],
])
def test_odd_bodies_are_left_to_the_general_path(body: Any) -> None:
    encoded = cbor2.dumps(body)
    assert _compiled().uplink_json_fast(encoded, 1, False) is None


KEYS = ["data", "time", "tmms", "rssi", "lsnr", "chan", "rfch", "tmst", "stat", "freq", "modu",
        "datr", "codr", "size", "foff", "rssis"]
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-200, max_value=2**33),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e10),
    st.booleans(), st.none(),
    st.text(max_size=12),
    st.text(alphabet="SFBW0123456789LORAFSK/45ILZ+-:T. \n\"", max_size=12),
    st.sampled_from(["LORA", "FSK", "SF7BW125", "SF12BW500", "SF07BW0125", "SF123BW125", "4/5",
                     "4/5LI", "2/3", "4/9", "2026-12-04T10:00:00Z", "2026-12-04T10:00:00+01:00",
                     "2026-12-04T10:00:00", "", PHY]),
)
bodies = st.fixed_dictionaries(
    {"gateway_eui": st.one_of(st.just(EUI), st.text(max_size=8), st.integers())},
    optional={"rxpk": st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), scalars,
                                      max_size=14),
              "extra": scalars},
)
# Bodies as gateways make them, each field varied over its plausible range: most take the shortcut.
plausible = st.fixed_dictionaries({"gateway_eui": st.just(EUI), "rxpk": st.fixed_dictionaries({}, optional={
    "data": st.one_of(st.just(PHY), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-",
                                            max_size=80)),
    "time": st.one_of(st.sampled_from(["2026-12-04T10:00:00.123456Z", "2026-12-04T10:00:00", "x", ""]),
                      st.datetimes().map(lambda d: d.isoformat())),
    "tmms": st.one_of(st.integers(min_value=0, max_value=2**53), st.floats(min_value=0, max_value=1e13)),
    "rssi": st.one_of(st.integers(min_value=-140, max_value=0), st.floats(min_value=-140, max_value=0)),
    "lsnr": st.one_of(st.floats(min_value=-25, max_value=15), st.integers(min_value=-25, max_value=15)),
    "chan": st.integers(min_value=0, max_value=15), "rfch": st.integers(min_value=0, max_value=1),
    "tmst": st.integers(min_value=-(2**40), max_value=2**40), "stat": st.integers(min_value=-2, max_value=2),
    "freq": st.one_of(st.floats(min_value=100, max_value=1000), st.integers(min_value=100, max_value=1000)),
    "modu": st.sampled_from(["LORA", "FSK", "X"]),
    "datr": st.one_of(st.sampled_from(["SF7BW125", "SF12BW125", "SF9BW500", "SF5BW812", "SF7BW12500"]),
                      st.integers(min_value=0, max_value=300_000), st.floats(min_value=0, max_value=3e5)),
    "codr": st.sampled_from(["4/5", "4/6", "4/7", "4/8", "2/3", "1/2", "4/5LI", "4/8LI", "5/6", "4/9", "OFF"]),
})})
received = st.one_of(st.integers(min_value=0, max_value=2**62), st.integers(min_value=-(2**63), max_value=2**64))

QUICK = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
THOROUGH = settings(max_examples=30_000, deadline=None, suppress_health_check=list(HealthCheck))


def _random_body(body: dict[str, Any], received_us: int, replay: bool) -> None:
    check(cbor2.dumps(body), received_us, replay)


def _mutated(body: dict[str, Any], cut: int, flip: int) -> None:
    data = bytearray(cbor2.dumps(body))
    if data:
        data[flip % len(data)] ^= 0xFF
    check(bytes(data[: len(data) - cut % (len(data) + 1)]), 1, False)


@QUICK
@given(st.one_of(plausible, bodies), received, st.booleans())
def test_random_bodies_agree_or_decline(body: dict[str, Any], received_us: int, replay: bool) -> None:
    _random_body(body, received_us, replay)


@QUICK
@given(bodies, st.integers(min_value=0), st.integers(min_value=0))
def test_mutated_cbor_agrees_or_declines(body: dict[str, Any], cut: int, flip: int) -> None:
    _mutated(body, cut, flip)


@pytest.mark.slow
@THOROUGH
@given(st.one_of(plausible, bodies), received, st.booleans())
def test_random_bodies_agree_or_decline_thorough(body: dict[str, Any], received_us: int, replay: bool) -> None:
    _random_body(body, received_us, replay)
