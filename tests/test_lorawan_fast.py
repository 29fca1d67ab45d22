"""The fast paths of edge parking give the answers of the plain ones.

SessionCrypto10 against data_mic_10 / crypt_frm_payload (which test_lorawan.py checks against
published vectors), spot_reader against parking_status / battery, the session's inline FCnt
rule against fcnt_candidates, and iso_us against datetime.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ParkingDevice
from gateway.frames import build as B
from gateway.frames import lorawan as L
from gateway.frames import parse_phy
from gateway.parking import registry
from gateway.parking.sessions import SessionTable
from gateway.parking.spots import iso_us

keys = st.binary(min_size=16, max_size=16)
u32 = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=400)
@given(nwk=keys, app=keys, addr=u32, fcnt=u32, uplink=st.booleans(),
       msg=st.binary(max_size=255), payload=st.binary(max_size=242),
       fport=st.sampled_from([0, 1, 2, 10, 223, 255]))
def test_session_crypto_equals_plain_functions(nwk: bytes, app: bytes, addr: int, fcnt: int,
                                               uplink: bool, msg: bytes, payload: bytes,
                                               fport: int) -> None:
    c = L.SessionCrypto10(addr, nwk, app)
    assert c.data_mic(uplink=uplink, fcnt=fcnt, msg=msg) == L.data_mic_10(
        nwk, uplink=uplink, dev_addr=addr, fcnt=fcnt, msg=msg)
    key = nwk if fport == 0 else app
    assert c.crypt_frm_payload(fport=fport, uplink=uplink, fcnt=fcnt, data=payload) == (
        L.crypt_frm_payload(key, uplink=uplink, dev_addr=addr, fcnt=fcnt, data=payload))


@settings(max_examples=100)
@given(nwk=keys, addr=u32, calls=st.lists(
    st.tuples(u32, st.booleans(), st.binary(max_size=255)), min_size=2, max_size=12))
def test_session_crypto_mics_in_sequence_stay_right(
        nwk: bytes, addr: int, calls: list[tuple[int, bool, bytes]]) -> None:
    # The object carries a CBC chain from one MIC to the next; any order and mix of lengths
    # (complete and padded last blocks) must still give each message its own MIC.
    c = L.SessionCrypto10(addr, nwk, bytes(16))
    for fcnt, uplink, msg in calls:
        assert c.data_mic(uplink=uplink, fcnt=fcnt, msg=msg) == L.data_mic_10(
            nwk, uplink=uplink, dev_addr=addr, fcnt=fcnt, msg=msg)


def test_session_crypto_on_published_vectors() -> None:
    # lora-packet mic_test "data 1", and TTS TestUplinkDownlinkMIC (both directions).
    raw = bytes.fromhex("40F17DBE4900020001954378762B11FF0D")
    p = parse_phy(raw)
    assert p.dev_addr is not None and p.fcnt is not None
    lp = L.SessionCrypto10(p.dev_addr, bytes.fromhex("44024241ed4ce9a68c6a8bc055233fd3"),
                           bytes(16))
    assert lp.data_mic(uplink=True, fcnt=p.fcnt, msg=raw[:-4]) == raw[-4:]
    tts = L.SessionCrypto10(0x01020304, bytes([1] * 16), bytes([1] * 16))
    msg = bytes.fromhex("40040302010001000101020304")
    assert tts.data_mic(uplink=True, fcnt=1, msg=msg).hex() == "3b073182"
    assert tts.data_mic(uplink=False, fcnt=1, msg=msg).hex() == "a5609fa9"


def test_session_crypto_rejects_what_the_plain_functions_reject() -> None:
    with pytest.raises(ValueError, match="NwkSKey must be 16 bytes"):
        L.SessionCrypto10(1, bytes(15), bytes(16))
    with pytest.raises(ValueError, match="AppSKey must be 16 bytes"):
        L.SessionCrypto10(1, bytes(16), bytes(17))
    with pytest.raises(ValueError, match="DevAddr must fit in 32 bits"):
        L.SessionCrypto10(1 << 32, bytes(16), bytes(16))
    c = L.SessionCrypto10(1, bytes(16), bytes(16))
    for bad in (-1, 1 << 32):
        with pytest.raises(ValueError, match="FCnt must fit in 32 bits"):
            c.data_mic(uplink=True, fcnt=bad, msg=b"\x40")
        with pytest.raises(ValueError, match="FCnt must fit in 32 bits"):
            c.crypt_frm_payload(fport=1, uplink=True, fcnt=bad, data=b"\x01")
    with pytest.raises(ValueError, match="at most 255 bytes"):
        c.data_mic(uplink=True, fcnt=1, msg=bytes(256))
    with pytest.raises(ValueError, match="longer than LoRaWAN allows"):
        c.crypt_frm_payload(fport=1, uplink=True, fcnt=1, data=bytes(16 * 255 + 1))
    # A failed call leaves the object usable (the CBC chain is only moved by a finished MIC).
    assert c.data_mic(uplink=True, fcnt=1, msg=b"\x40") == L.data_mic_10(
        bytes(16), uplink=True, dev_addr=1, fcnt=1, msg=b"\x40")


def _decoded_samples() -> list[tuple[str, Mapping[str, Any]]]:
    """What every decoder makes of a spread of payloads, plus shapes no decoder makes."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    payloads = [b"", b"\x00", b"\x01", b"\xff", bytes(range(12)), bytes(range(200, 212)),
                b"\x81\x0b\x14", b"\x00\x64\x28\x01\x02\x03"]
    for model in registry.list_models():
        for fport in (0, 1, 2, 3, 5, 6, 10, 85, 102):
            for payload in payloads:
                out.append((model, registry.decode_uplink(model, fport, payload)))
        out += [
            (model, {}),
            (model, {"data": None}),
            (model, {"data": [1, 2]}),
            (model, {"errors": ["x"]}),
            (model, {"data": MappingProxyType({"occupied": True, "alarmPark": 1,
                                               "battery_voltage": 3.5, "volt": 3,
                                               "battery": 90, "distance_alarming": 0})}),
            (model, {"data": {"occupied": 1, "alarmPark": False, "battery_voltage": True,
                              "volt": "3.1", "battery": 7, "position": "tilt"}}),
        ]
    return out


@pytest.mark.parametrize("below", [None, 500])
def test_spot_reader_equals_parking_status_and_battery(below: int | None) -> None:
    readers = {m: registry.spot_reader(m, occupied_below_mm=below)
               for m in registry.list_models()}
    for model, decoded in _decoded_samples():
        expected = (registry.parking_status(model, decoded, occupied_below_mm=below),
                    registry.battery(model, decoded))
        assert readers[model](decoded) == expected, (model, decoded)


def test_spot_reader_rejects_an_unknown_model() -> None:
    with pytest.raises(registry.UnknownModel):
        registry.spot_reader("acme/none")


NWK = bytes(range(16))
APP = bytes(range(16, 32))
ADDR = 0x26011234


@settings(max_examples=300)
@given(last=st.one_of(u32, st.sampled_from([0, 0xFFFF, 0x10000, 0x1FFFF, 0xFFFEFFFF,
                                            0xFFFF0000, 0xFFFFFFFE])),
       step=st.integers(1, 0xFFFF))
def test_session_accepts_the_next_counters_and_rejects_replays(last: int, step: int) -> None:
    # The session's inline counter rule (for the usual next frame) must agree with
    # fcnt_candidates: a frame up to 65535 counts ahead is new, the same frame again a replay.
    nxt = last + step
    if nxt > 0xFFFFFFFF:
        return
    dev = ParkingDevice(dev_eui=1, model="nwave/nps405", spot_id="s", dev_addr=ADDR,
                        nwk_s_key=NWK, app_s_key=APP)
    table = SessionTable([dev])
    session = table.devices[1].session
    assert session is not None
    session.fcnt_up = last
    frame = B.build_data_uplink(dev_addr=ADDR, fcnt=nxt, fport=1, payload=b"\x05",
                                nwk_s_key=NWK, app_s_key=APP)
    p = parse_phy(frame)
    assert p.dev_addr is not None and p.fcnt is not None and p.frm_payload is not None
    r = table.data_uplink(p.raw, p.dev_addr, p.fcnt, p.fport, p.frm_payload)
    assert (r.verdict, r.fcnt, r.plaintext) == ("ok", nxt, b"\x05")
    again = table.data_uplink(p.raw, p.dev_addr, p.fcnt, p.fport, p.frm_payload)
    assert again.verdict == "replay"
    assert session.fcnt_up == nxt


@given(st.integers(-(10**15), 4 * 10**15))
def test_iso_us_matches_datetime(us: int) -> None:
    expected = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us))
    assert iso_us(us) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
