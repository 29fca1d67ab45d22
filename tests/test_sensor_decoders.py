"""Parking sensor decoders: the Device Repository examples, robustness, occupancy mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.parking.encode import encode_status
from gateway.parking.registry import (
    UnknownModel,
    battery,
    battery_unit,
    decode_uplink,
    list_models,
    parking_status,
)

VECTOR_DIR = Path(__file__).parent / "vectors" / "sensors"
MODELS = [
    "nwave/nps310sm",
    "nwave/nps405",
    "nwave/ncc405",
    "bosch/tps110",
    "dingtek/do200",
    "dingtek/do201",
    "dingtek/do202",
    "tekzitel/tekzipark",
    "milesight-iot/em400-mud",
]
SPOT_MODELS = [m for m in MODELS if m != "nwave/ncc405"]


def _vectors() -> list[Any]:
    cases = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        for example in doc["examples"]:
            cases.append(
                pytest.param(doc["model"], example, id=f"{path.stem}:{example['description']}")
            )
    return cases


def _json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize(("model", "example"), _vectors())
def test_repository_example(model: str, example: dict[str, Any]) -> None:
    got = decode_uplink(model, example["fPort"], bytes.fromhex(example["bytes"]))
    assert got == example["output"]
    # Same JSON types too: 3 and 3.0 compare equal in Python but not on a dashboard.
    assert json.dumps(got, sort_keys=True) == json.dumps(example["output"], sort_keys=True)


def test_every_model_has_examples_or_is_known_to_have_none() -> None:
    covered = {json.loads(p.read_text())["model"] for p in VECTOR_DIR.glob("*.json")}
    # The repository's TEKZIPARK codec description lists no examples.
    assert covered == set(MODELS) - {"tekzitel/tekzipark"}


def test_list_models_names_every_supported_device() -> None:
    assert list_models() == sorted(MODELS)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        decode_uplink("nwave/nps999", 1, b"\x01")
    assert isinstance(info.value, UnknownModel)
    message = str(info.value)
    assert "nwave/nps999" in message and "nwave/nps405" in message and "bosch/tps110" in message


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    fport=st.integers(min_value=0, max_value=255),
    payload=st.binary(max_size=40),
)
def test_random_bytes_never_raise(model: str, fport: int, payload: bytes) -> None:
    got = decode_uplink(model, fport, payload)
    assert isinstance(got, dict)
    assert "data" in got or "errors" in got
    assert _json_round_trip(got) == got  # only JSON values, no NaN, no bytes
    assert parking_status(model, got) in (None, "free", "occupied", "unknown", "closed")
    level = battery(model, got)
    assert level is None or isinstance(level, float)


@pytest.mark.parametrize("model", MODELS)
@given(payload=st.binary(max_size=30))
@settings(max_examples=60, deadline=None)
def test_every_length_on_the_main_ports(model: str, payload: bytes) -> None:
    for fport in (1, 2, 3, 6, 10, 85):
        got = decode_uplink(model, fport, payload)
        assert _json_round_trip(got) == got


@pytest.mark.parametrize(
    ("model", "fport", "payload", "errors"),
    [
        ("dingtek/do201", 1, bytes(23), ["unknown FPort"]),
        ("dingtek/do201", 3, bytes(5), ["wrong length"]),
        ("dingtek/do200", 3, bytes(23), ["wrong length"]),
        ("dingtek/do202", 3, b"", ["wrong length"]),
        # A 16-byte frame that is not a parameter packet is refused, not misread.
        ("dingtek/do202", 3, bytes(16), ["wrong length"]),
        ("tekzitel/tekzipark", 5, b"\x80", ["unknown FPort"]),
    ],
)
def test_codec_errors(model: str, fport: int, payload: bytes, errors: list[str]) -> None:
    assert decode_uplink(model, fport, payload) == {"errors": errors}


def test_short_nwave_startup_reads_like_the_javascript_codec() -> None:
    # Missing bytes concatenate as "undefined"; the reset cause is left out.
    assert decode_uplink("nwave/nps405", 3, b"\x02") == {
        "data": {"type": "startup", "firmware_version": "2.undefined.undefined", "occupied": False}
    }


def test_nps405_heartbeat_without_temperature_gives_null_and_no_health() -> None:
    got = decode_uplink("nwave/nps405", 2, b"\x01\x80")
    assert got["data"]["temperature"] is None
    assert got["data"]["battery_voltage"] == 3.012
    assert "battery_health" not in got["data"]


@pytest.mark.parametrize(
    ("raw_temp", "battery_byte", "health"),
    [
        (0x00, 125, "normal"),
        (0x00, 124, "low"),
        (0x00, 99, "critical"),
        (0xD8, 100, "normal"),
        (0xD8, 99, "low"),
    ],
)
def test_nps405_battery_health_thresholds_follow_temperature(
    raw_temp: int, battery_byte: int, health: str
) -> None:
    got = decode_uplink("nwave/nps405", 2, bytes((0, battery_byte, raw_temp)))
    assert got["data"]["battery_health"] == health


def test_nps405_duration_overflow_and_negative_tag_id() -> None:
    got = decode_uplink("nwave/nps405", 10, bytes((0xFF, 0x80, 0, 0, 1)))
    assert got["data"]["previous_state_duration"] == 660
    assert got["data"]["previous_state_duration_error"] is None
    assert got["data"]["previous_state_duration_overflow"] is True
    assert got["data"]["tag_id"] == "-7FFFFFFF"  # JS signed 32-bit toString(16)


def test_bosch_debug_timestamp_is_signed_like_javascript() -> None:
    got = decode_uplink("bosch/tps110", 6, bytes((1, 0, 0, 0x80, 0x25, 0x13, 0, 0, 7, 0)))
    assert got["data"] == {
        "type": "debug",
        "timestamp": -2147483647,
        "debugCode": 0x325,
        "sequenceNumber": 7,
    }


def test_tekzipark_beacons_and_short_port2() -> None:
    got = decode_uplink("tekzitel/tekzipark", 1, bytes((0xA0, 0xF6, 3, 0xC4, 0x12, 0x34, 0x56)))
    assert got["data"]["Temperature"] == -10
    assert got["data"]["Beacon_RSSI"] == -60
    assert got["data"]["Beacons"] == [0x1234, 0x5600]
    short = decode_uplink("tekzitel/tekzipark", 2, bytes((0x90, 5)))
    # Byte 10 overwrites the Obstruction flag; when absent the member is dropped.
    assert "Obstruction" not in short["data"] and "Parking_ID" not in short["data"]


def test_em400_stops_at_unknown_channel_and_keeps_what_it_read() -> None:
    got = decode_uplink("milesight-iot/em400-mud", 85, bytes.fromhex("01755affff04824408"))
    assert got == {"data": {"battery": 90}}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("occupied", [True, False])
@pytest.mark.parametrize("heartbeat", [False, True])
def test_encode_then_decode_gives_back_the_occupancy(
    model: str, occupied: bool, heartbeat: bool
) -> None:
    fport, payload = encode_status(model, occupied, heartbeat=heartbeat)
    decoded = decode_uplink(model, fport, payload)
    assert "errors" not in decoded
    expected = ("occupied" if occupied else "free") if model in SPOT_MODELS else None
    assert parking_status(model, decoded) == expected


def test_nps405_encoded_duration_survives_the_7_bit_code() -> None:
    fport, payload = encode_status("nwave/nps405", True, minutes=150)
    data = decode_uplink("nwave/nps405", fport, payload)["data"]
    assert data["previous_state_duration"] <= 150 < data["previous_state_duration"] + 5


def test_status_none_for_uplinks_without_occupancy() -> None:
    params = decode_uplink("dingtek/do201", 3, bytes.fromhex("80003103100101181e3c003c14000081"))
    assert "data" in params and parking_status("dingtek/do201", params) is None
    assert parking_status("nwave/nps405", decode_uplink("nwave/nps405", 6, b"\x01")) is None
    assert parking_status("nwave/nps405", {"errors": ["x"]}) is None
    registration = decode_uplink("nwave/nps405", 10, bytes(5))
    assert parking_status("nwave/nps405", registration) is None


def test_em400_status_tilt_threshold_and_alarm() -> None:
    model = "milesight-iot/em400-mud"
    example = decode_uplink(model, 85, bytes.fromhex("01755c0367010104824408050001"))
    assert parking_status(model, example) == "unknown"  # tilted: reading is meaningless
    plain = decode_uplink(model, 85, bytes.fromhex("04822003"))  # 800 mm, no alarm field
    assert parking_status(model, plain) is None
    assert parking_status(model, plain, occupied_below_mm=1500) == "occupied"
    assert parking_status(model, plain, occupied_below_mm=500) == "free"


def test_battery_levels_and_units() -> None:
    nps = decode_uplink("nwave/nps405", 2, bytes.fromhex("00d3d800590b"))
    assert battery("nwave/nps405", nps) == 3.344 and battery_unit("nwave/nps405") == "V"
    em = decode_uplink("milesight-iot/em400-mud", 85, bytes.fromhex("01755c"))
    assert battery("milesight-iot/em400-mud", em) == 92.0
    assert battery_unit("milesight-iot/em400-mud") == "%"
    assert battery("bosch/tps110", decode_uplink("bosch/tps110", 2, b"\x01\x10")) is None
    assert battery_unit("bosch/tps110") is None
