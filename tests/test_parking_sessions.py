"""Device sessions: ABP and OTAA (join watched up and down), FCnt rollover, replays, bad MICs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ParkingDevice
from gateway.frames import build as B
from gateway.frames import lorawan as L
from gateway.frames import parse_phy
from gateway.parking.sessions import SessionTable, UplinkResult, fcnt_candidates

NWK = bytes(range(16))
APP = bytes(range(16, 32))
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
ABP_EUI = 0x70B3D50000000001
OTAA_EUI = 0x70B3D50000000002
JOIN_EUI = 0x70B3D57ED0000000


def abp(dev_eui: int = ABP_EUI, dev_addr: int = 0x26011234) -> ParkingDevice:
    return ParkingDevice(dev_eui=dev_eui, model="nwave/nps405", spot_id=f"spot:{dev_eui:x}",
                         dev_addr=dev_addr, nwk_s_key=NWK, app_s_key=APP)


def otaa(dev_eui: int = OTAA_EUI, app_key: bytes = APP_KEY) -> ParkingDevice:
    return ParkingDevice(dev_eui=dev_eui, model="nwave/nps405", spot_id=f"spot:{dev_eui:x}",
                         app_key=app_key)


def up(table: SessionTable, frame: bytes) -> UplinkResult:
    p = parse_phy(frame)
    assert p.dev_addr is not None and p.fcnt is not None and p.frm_payload is not None
    return table.data_uplink(p.raw, p.dev_addr, p.fcnt, p.fport, p.frm_payload)


def data(fcnt: int, payload: bytes = b"\x01", *, dev_addr: int = 0x26011234,
         nwk: bytes = NWK, app: bytes = APP, fport: int = 1) -> bytes:
    return B.build_data_uplink(dev_addr=dev_addr, fcnt=fcnt, fport=fport, payload=payload,
                               nwk_s_key=nwk, app_s_key=app)


def join(table: SessionTable, dev_nonce: int, *, dev_eui: int = OTAA_EUI,
         app_key: bytes = APP_KEY) -> bool:
    raw = B.build_join_request(app_key, join_eui=JOIN_EUI, dev_eui=dev_eui, dev_nonce=dev_nonce)
    p = parse_phy(raw)
    assert p.join_eui is not None and p.dev_eui is not None and p.dev_nonce is not None
    return table.join_request(raw, p.join_eui, p.dev_eui, p.dev_nonce)


def accept(app_key: bytes = APP_KEY, *, dev_addr: int = 0x00ABCDEF, join_nonce: int = 0x123456,
           net_id: int = 0x000013, cflist: bytes | None = None) -> bytes:
    return B.build_join_accept(app_key, join_nonce=join_nonce, net_id=net_id, dev_addr=dev_addr,
                               cflist=cflist)


def keys_for(dev_nonce: int, app_key: bytes = APP_KEY, join_nonce: int = 0x123456,
             net_id: int = 0x000013) -> L.SessionKeys10:
    return L.derive_session_keys_10(app_key, join_nonce=join_nonce, net_id=net_id,
                                    dev_nonce=dev_nonce)


# ---------------------------------------------------------------------------- ABP


def test_abp_frame_is_verified_and_decrypted() -> None:
    table = SessionTable([abp()])
    r = up(table, data(7, b"\x05\x06\x07", fport=3))
    assert r.verdict == "ok"
    assert r.device is not None and r.device.dev_eui == ABP_EUI
    assert (r.fcnt, r.fport, r.plaintext) == (7, 3, b"\x05\x06\x07")
    h = table.health()[f"{ABP_EUI:016x}"]
    assert (h["frames"], h["decoded"], h["fcnt_up"], h["dev_addr"]) == (1, 1, 7, "26011234")


def test_fport_zero_is_decrypted_with_the_network_key() -> None:
    table = SessionTable([abp()])
    frame = B.build_data_frame(mtype=2, dev_addr=0x26011234, fcnt=1, fport=0, payload=b"\x02",
                               nwk_s_key=NWK, app_s_key=APP)
    r = up(table, frame)
    assert (r.verdict, r.plaintext) == ("ok", b"\x02")


def test_replayed_frame_is_rejected_and_counted() -> None:
    table = SessionTable([abp()])
    f5, f6 = data(5), data(6)
    assert up(table, f5).verdict == "ok"
    assert up(table, f6).verdict == "ok"
    assert up(table, f5).verdict == "replay"
    assert up(table, f6).verdict == "replay"  # same counter twice is a replay too
    h = table.health()[f"{ABP_EUI:016x}"]
    assert (h["replays"], h["decoded"], h["fcnt_up"]) == (2, 2, 6)
    assert up(table, data(7)).verdict == "ok"  # the device goes on after the attack


def test_tampered_frame_is_rejected_and_counted() -> None:
    table = SessionTable([abp()])
    frame = bytearray(data(1, b"\x01\x02"))
    frame[-6] ^= 0x01  # one bit of the encrypted payload
    assert up(table, bytes(frame)).verdict == "mic"
    wrong_key = data(2, nwk=bytes(16))
    assert up(table, wrong_key).verdict == "mic"
    h = table.health()[f"{ABP_EUI:016x}"]
    assert (h["mic_failures"], h["decoded"], h["fcnt_up"]) == (2, 0, None)
    assert up(table, data(3)).verdict == "ok"  # rejected frames did not move the counter


def test_unknown_devaddr_is_counted_not_touched() -> None:
    table = SessionTable([abp()])
    r = up(table, data(1, dev_addr=0x26019999))
    assert r.verdict == "unknown_device"
    assert table.unknown_device == 1
    assert table.health()[f"{ABP_EUI:016x}"]["frames"] == 0


def test_two_devices_sharing_a_devaddr_are_told_apart_by_mic() -> None:
    other_nwk, other_app = bytes([9] * 16), bytes([8] * 16)
    b = ParkingDevice(dev_eui=0x99, model="nwave/nps405", spot_id="b", dev_addr=0x26011234,
                      nwk_s_key=other_nwk, app_s_key=other_app)
    table = SessionTable([abp(), b])
    r = up(table, data(1, b"\x42", nwk=other_nwk, app=other_app))
    assert r.verdict == "ok" and r.device is not None and r.device.dev_eui == 0x99
    assert r.plaintext == b"\x42"
    assert table.health()[f"{ABP_EUI:016x}"]["frames"] == 0


# ---------------------------------------------------------------------------- FCnt


def test_fcnt_rollover_increments_the_upper_half() -> None:
    table = SessionTable([abp()])
    for fcnt in (65533, 65535):
        assert up(table, data(fcnt)).verdict == "ok"
    r = up(table, data(0x10000))  # on air: FCnt 0
    assert (r.verdict, r.fcnt) == ("ok", 0x10000)
    r = up(table, data(0x10002, b"\x09"))
    assert (r.verdict, r.fcnt, r.plaintext) == ("ok", 0x10002, b"\x09")
    # The pre-rollover frame 65535 now looks like "0xffff below the counter": a replay.
    assert up(table, data(65535)).verdict == "replay"
    assert table.health()[f"{ABP_EUI:016x}"]["fcnt_up"] == 0x10002


@given(last=st.integers(0, 0xFFFFFFFE), step=st.integers(1, 0xFFFF))
def test_fcnt_candidates_recover_any_forward_step(last: int, step: int) -> None:
    true = last + step
    if true > 0xFFFFFFFF:
        return
    first, _replay = fcnt_candidates(last, true & 0xFFFF)
    assert first == true


@given(last=st.integers(0, 0xFFFFFFFF), back=st.integers(0, 0xFFFF))
def test_fcnt_candidates_offer_the_old_counter_as_replay(last: int, back: int) -> None:
    old = last - back
    if old < 0:
        return
    first, replay = fcnt_candidates(last, old & 0xFFFF)
    assert replay == old
    assert first is None or first > last  # never mistaken for a new frame


# ---------------------------------------------------------------------------- OTAA


def test_otaa_join_then_first_frame_confirms_the_session() -> None:
    table = SessionTable([otaa()])
    assert join(table, dev_nonce=0x0102)
    assert table.join_accept(accept()) == [otaa()]
    h = table.health()[f"{OTAA_EUI:016x}"]
    assert h["session_pending"] and h["dev_addr"] is None and h["sessions"] == 0
    k = keys_for(0x0102)
    r = up(table, data(0, b"\x01", dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key))
    assert (r.verdict, r.new_session, r.plaintext) == ("ok", True, b"\x01")
    h = table.health()[f"{OTAA_EUI:016x}"]
    assert (h["dev_addr"], h["sessions"], h["session_pending"], h["fcnt_up"]) == (
        "00abcdef", 1, False, 0)


def test_join_accept_with_cflist_is_understood() -> None:
    table = SessionTable([otaa()])
    join(table, 7)
    assert table.join_accept(accept(cflist=bytes(range(16)))) == [otaa()]
    k = keys_for(7)
    r = up(table, data(1, dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key))
    assert r.verdict == "ok"


def test_old_session_serves_until_the_new_one_is_confirmed() -> None:
    table = SessionTable([otaa()])
    join(table, 1)
    table.join_accept(accept(dev_addr=0x01000001))
    k1 = keys_for(1)
    assert up(table, data(0, dev_addr=0x01000001, nwk=k1.nwk_s_key, app=k1.app_s_key)).verdict == "ok"
    # Rejoin: a new join request and accept go by, but the device may never have heard it.
    join(table, 2)
    table.join_accept(accept(dev_addr=0x01000002, join_nonce=0x000777))
    r = up(table, data(1, b"\x33", dev_addr=0x01000001, nwk=k1.nwk_s_key, app=k1.app_s_key))
    assert (r.verdict, r.plaintext, r.new_session) == ("ok", b"\x33", False)
    k2 = keys_for(2, join_nonce=0x000777)
    r = up(table, data(0, dev_addr=0x01000002, nwk=k2.nwk_s_key, app=k2.app_s_key))
    assert (r.verdict, r.new_session) == ("ok", True)
    # Now the old session is gone: its frames are unknown DevAddr traffic.
    assert up(table, data(2, dev_addr=0x01000001, nwk=k1.nwk_s_key, app=k1.app_s_key)).verdict == (
        "unknown_device")
    assert table.health()[f"{OTAA_EUI:016x}"]["sessions"] == 2


def test_retried_join_the_accept_answers_either_nonce() -> None:
    # The device retried (DevNonce 10, then 11); which one the network answered is only
    # known once a data frame verifies.
    table = SessionTable([otaa()])
    join(table, 10)
    join(table, 11)
    table.join_accept(accept())
    k = keys_for(10)
    r = up(table, data(0, dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key))
    assert (r.verdict, r.new_session) == ("ok", True)


def test_join_request_with_bad_mic_is_ignored() -> None:
    table = SessionTable([otaa()])
    assert not join(table, 5, app_key=bytes(16))
    assert table.join_accept(accept()) == []  # no genuine pending join to answer
    h = table.health()[f"{OTAA_EUI:016x}"]
    assert (h["mic_failures"], h["join_requests"], h["join_accepts"]) == (1, 0, 0)
    assert table.join_accepts_unmatched == 1


def test_join_accept_for_another_key_is_not_ours() -> None:
    table = SessionTable([otaa()])
    join(table, 5)
    assert table.join_accept(accept(app_key=bytes([7] * 16))) == []
    assert not table.health()[f"{OTAA_EUI:016x}"]["session_pending"]


def test_join_request_of_unconfigured_device_counts_unknown() -> None:
    table = SessionTable([otaa()])
    assert not join(table, 5, dev_eui=0x1234)
    assert table.unknown_device == 1


def test_otaa_replay_and_tamper_after_join() -> None:
    table = SessionTable([otaa()])
    join(table, 3)
    table.join_accept(accept())
    k = keys_for(3)
    frames = [data(i, dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key) for i in range(3)]
    assert [up(table, f).verdict for f in frames] == ["ok", "ok", "ok"]
    assert up(table, frames[1]).verdict == "replay"
    bad = bytearray(frames[2])
    bad[-1] ^= 0xFF
    assert up(table, bytes(bad)).verdict == "mic"
    h = table.health()[f"{OTAA_EUI:016x}"]
    assert (h["replays"], h["mic_failures"], h["decoded"]) == (1, 1, 3)


# ---------------------------------------------------------------------------- state


def test_state_round_trip_keeps_sessions_and_counters() -> None:
    table = SessionTable([abp(), otaa()])
    up(table, data(41))
    join(table, 3)
    table.join_accept(accept())
    k = keys_for(3)
    up(table, data(9, dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key))
    state = table.to_state()
    again = SessionTable([abp(), otaa()])
    assert again.load_state(state) == []
    assert up(again, data(41)).verdict == "replay"
    assert up(again, data(9, dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key)).verdict == (
        "replay")
    assert up(again, data(10, dev_addr=0x00ABCDEF, nwk=k.nwk_s_key, app=k.app_s_key)).verdict == (
        "ok")


def test_abp_state_is_dropped_when_config_keys_change() -> None:
    table = SessionTable([abp()])
    up(table, data(100))
    state = table.to_state()
    rekeyed = ParkingDevice(dev_eui=ABP_EUI, model="nwave/nps405", spot_id="x",
                            dev_addr=0x26011234, nwk_s_key=bytes([3] * 16), app_s_key=APP)
    again = SessionTable([rekeyed])
    again.load_state(state)
    assert again.health()[f"{ABP_EUI:016x}"]["fcnt_up"] is None


def test_state_of_removed_device_is_noted_not_loaded() -> None:
    table = SessionTable([abp()])
    up(table, data(1))
    notes = SessionTable([otaa()]).load_state(table.to_state())
    assert notes == [f"device {ABP_EUI:016x} is no longer configured"]


def test_keys_never_appear_in_health_or_repr() -> None:
    table = SessionTable([abp(), otaa()])
    join(table, 3)
    table.join_accept(accept())
    text = repr(table.health()) + repr(table.devices)
    for key in (NWK, APP, APP_KEY, keys_for(3).nwk_s_key, keys_for(3).app_s_key):
        assert key.hex() not in text
        assert repr(key) not in text


def test_duplicate_dev_eui_in_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        SessionTable([abp(), abp()])
