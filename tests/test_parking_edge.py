"""EdgeParking end to end: uplink records and downlink txpks in, spot state and parking records out."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ParkingDevice
from gateway.frames import b64encode
from gateway.frames import build as B
from gateway.frames import lorawan as L
from gateway.parking.edge import SESSIONS_FILE, SPOTS_FILE, EdgeParking
from gateway.parking.encode import encode_status
from gateway.parking.spots import iso_us
from gateway.records import Record, make_record

S = 1_000_000
T0 = 1_764_000_000.0  # seconds
GW = "b827ebfffe000001"

ABP_NWK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ABP_APP = bytes.fromhex("101112131415161718191a1b1c1d1e1f")
ABP_ADDR = 0x26011234
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = 0x70B3D57ED0000000

ABP_DEV = ParkingDevice(dev_eui=0x70B3D50000000001, model="nwave/nps405",
                        spot_id="city:spot:0001", dev_addr=ABP_ADDR, nwk_s_key=ABP_NWK,
                        app_s_key=ABP_APP)
OTAA_DEV = ParkingDevice(dev_eui=0x70B3D50000000002, model="bosch/tps110",
                         spot_id="city:spot:0002", app_key=APP_KEY, category="offStreet")
COUNTER_DEV = ParkingDevice(dev_eui=0x70B3D50000000003, model="nwave/ncc405",
                            spot_id="city:gate:0001", dev_addr=0x26015678, nwk_s_key=ABP_NWK,
                            app_s_key=ABP_APP)
SECRETS = (ABP_NWK, ABP_APP, APP_KEY)


class Clock:
    """The wall clock; ``stepped`` is how far it was set by hand (the monotonic clock did not
    move by that much)."""

    def __init__(self, t: float = T0) -> None:
        self.t = t
        self.stepped = 0.0

    def mono(self) -> float:
        return self.t - self.stepped

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class Wired:
    spot_id: str
    status: str
    unit: int
    value: int | None
    observed_us: int


def uplink(phy: bytes, at: float, *, rssi: int = -101, lsnr: float = 6.5) -> Record:
    rxpk = {"time": "x", "tmst": 1, "freq": 868.1, "stat": 1, "modu": "LORA",
            "datr": "SF9BW125", "codr": "4/5", "rssi": rssi, "lsnr": lsnr, "size": len(phy),
            "data": b64encode(phy)}
    return make_record("uplink", "gwmp:0", {"gateway_eui": GW, "rxpk": rxpk},
                       received_us=int(at * S))


def abp_frame(fcnt: int, occupied: bool, *, heartbeat: bool = False,
              dev: ParkingDevice = ABP_DEV) -> bytes:
    fport, payload = encode_status(dev.model, occupied, heartbeat=heartbeat)
    assert dev.dev_addr is not None and dev.nwk_s_key and dev.app_s_key
    return B.build_data_uplink(dev_addr=dev.dev_addr, fcnt=fcnt, fport=fport, payload=payload,
                               nwk_s_key=dev.nwk_s_key, app_s_key=dev.app_s_key)


class Harness:
    def __init__(self, tmp: Path, devices: list[ParkingDevice], *, heartbeats: bool = False,
                 timeout: float = 3600.0) -> None:
        self.records: list[Record] = []
        self.clock = Clock()
        self.edge = EdgeParking(devices, tmp, timeout, heartbeats, self.records.append,
                                clock=self.clock, save_interval=0.01, sweep_interval=0.01,
                                monotonic=self.clock.mono)

    def bodies(self) -> list[dict[str, Any]]:
        out = []
        for r in self.records:
            assert (r.kind, r.source) == ("parking", "parking")
            out.append(r.decoded())
        return out

    def status(self, spot: str) -> str:
        return str(self.edge.spots()[spot]["status"])

    def device(self, dev: ParkingDevice) -> dict[str, Any]:
        h: dict[str, Any] = self.edge.health()["devices"][f"{dev.dev_eui:016x}"]
        return h


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path, [ABP_DEV, OTAA_DEV, COUNTER_DEV])


# ---------------------------------------------------------------------------- radio


def test_abp_change_emits_a_parking_record(h: Harness) -> None:
    assert h.status(ABP_DEV.spot_id) == "unknown"
    h.edge.observe_uplink(uplink(abp_frame(1, True), T0 + 0.000123))
    assert h.status(ABP_DEV.spot_id) == "occupied"
    [body] = h.bodies()
    assert body == {
        "spot_id": "city:spot:0001",
        "status": "occupied",
        "observed_at": iso_us(int((T0 + 0.000123) * S)),
        "device": "70b3d50000000001",
        "data": {"data": {"type": "parking_status", "occupied": True,
                          "previous_state_duration": 5, "previous_state_duration_error": 0,
                          "previous_state_duration_overflow": False}},
        "category": "onStreet",
        "rssi": -101.0,
        "snr": 6.5,
    }
    assert h.records[0].received_us == int((T0 + 0.000123) * S)
    assert body["observed_at"].endswith(".000123Z")


def test_heartbeat_updates_battery_and_records_only_when_asked(tmp_path: Path) -> None:
    for heartbeats, expected in ((False, 1), (True, 2)):
        hx = Harness(tmp_path / str(heartbeats), [ABP_DEV], heartbeats=heartbeats)
        hx.edge.observe_uplink(uplink(abp_frame(1, False), T0))
        hx.edge.observe_uplink(uplink(abp_frame(2, False, heartbeat=True), T0 + 600))
        spot = hx.edge.spots()[ABP_DEV.spot_id]
        assert (spot["status"], spot["battery"], spot["battery_unit"]) == ("free", 3.52, "V")
        assert spot["last_heartbeat"] == iso_us(int((T0 + 600) * S))
        assert spot["changed_at"] == iso_us(int(T0 * S))
        assert len(hx.records) == expected
        if heartbeats:
            assert hx.bodies()[1]["battery"] == 3.52
            assert hx.bodies()[1]["data"]["data"]["type"] == "heartbeat"


def test_a_car_counter_is_a_counter_not_a_spot(h: Harness) -> None:
    # never a spot, so never an "unknown" spot on the page
    assert COUNTER_DEV.spot_id not in h.edge.spots()
    assert h.edge.counters()[COUNTER_DEV.spot_id]["count"] is None
    h.edge.observe_uplink(uplink(abp_frame(1, False, heartbeat=True, dev=COUNTER_DEV), T0))
    counter = h.edge.counters()[COUNTER_DEV.spot_id]
    assert (counter["count"], counter["battery"], counter["battery_unit"]) == (None, 3.52, "V")
    assert counter["last_heard"] == iso_us(int(T0 * S))
    assert h.records == []  # a heartbeat changes no count
    assert h.device(COUNTER_DEV)["decoded"] == 1
    # a count update (encode_status puts `minutes` in the counter field) is an event record
    fport, payload = encode_status(COUNTER_DEV.model, False, heartbeat=False, minutes=42)
    assert COUNTER_DEV.dev_addr is not None and COUNTER_DEV.nwk_s_key and COUNTER_DEV.app_s_key
    frame = B.build_data_uplink(dev_addr=COUNTER_DEV.dev_addr, fcnt=2, fport=fport,
                                payload=payload, nwk_s_key=COUNTER_DEV.nwk_s_key,
                                app_s_key=COUNTER_DEV.app_s_key)
    h.edge.observe_uplink(uplink(frame, T0 + 60))
    assert h.edge.counters()[COUNTER_DEV.spot_id]["count"] == 42
    assert COUNTER_DEV.spot_id not in h.edge.spots()
    [rec] = h.records
    assert (rec.kind, rec.decoded()["event"]) == ("event", "car_counter")
    assert rec.decoded()["detail"]["count"] == 42
    assert rec.decoded()["detail"]["counter_id"] == COUNTER_DEV.spot_id


def test_otaa_join_watched_then_data_decoded_with_derived_keys(h: Harness) -> None:
    dev_nonce = 0x3A1F
    jr = B.build_join_request(APP_KEY, join_eui=JOIN_EUI, dev_eui=OTAA_DEV.dev_eui,
                              dev_nonce=dev_nonce)
    h.edge.observe_uplink(uplink(jr, T0))
    ja = B.build_join_accept(APP_KEY, join_nonce=0x00ABCD, net_id=0x000013,
                             dev_addr=0x260B0001, cflist=bytes(16))
    txpk = {"imme": False, "tmst": 6_000_000, "freq": 868.1, "rfch": 0, "powe": 14,
            "modu": "LORA", "datr": "SF9BW125", "codr": "4/5", "ipol": True,
            "size": len(ja), "data": b64encode(ja)}
    h.edge.observe_downlink(GW, txpk)
    assert h.device(OTAA_DEV)["session_pending"]
    keys = L.derive_session_keys_10(APP_KEY, join_nonce=0x00ABCD, net_id=0x000013,
                                    dev_nonce=dev_nonce)
    for fcnt, occupied in ((0, True), (1, False)):
        fport, payload = encode_status(OTAA_DEV.model, occupied)
        frame = B.build_data_uplink(dev_addr=0x260B0001, fcnt=fcnt, fport=fport,
                                    payload=payload, nwk_s_key=keys.nwk_s_key,
                                    app_s_key=keys.app_s_key)
        h.edge.observe_uplink(uplink(frame, T0 + 10 + fcnt))
        assert h.status(OTAA_DEV.spot_id) == ("occupied" if occupied else "free")
    assert [b["status"] for b in h.bodies()] == ["occupied", "free"]
    assert h.bodies()[0]["device"] == "70b3d50000000002"
    d = h.device(OTAA_DEV)
    assert (d["dev_addr"], d["sessions"], d["decoded"], d["session_pending"]) == (
        "260b0001", 1, 2, False)
    assert h.edge.spots()[OTAA_DEV.spot_id]["category"] == "offStreet"


def test_replayed_and_tampered_uplinks_change_nothing(h: Harness) -> None:
    first = abp_frame(10, True)
    h.edge.observe_uplink(uplink(first, T0))
    h.edge.observe_uplink(uplink(abp_frame(11, False), T0 + 1))
    h.edge.observe_uplink(uplink(first, T0 + 2))  # an attacker replays "occupied"
    tampered = bytearray(abp_frame(12, True))
    tampered[-5] ^= 0x01
    h.edge.observe_uplink(uplink(bytes(tampered), T0 + 3))
    assert h.status(ABP_DEV.spot_id) == "free"
    assert len(h.records) == 2
    d = h.device(ABP_DEV)
    assert (d["frames"], d["decoded"], d["replays"], d["mic_failures"]) == (4, 2, 1, 1)


def test_fcnt_rollover_through_the_edge(h: Harness) -> None:
    h.edge.observe_uplink(uplink(abp_frame(65535, True), T0))
    h.edge.observe_uplink(uplink(abp_frame(65536, False), T0 + 1))  # on air: 0
    assert h.status(ABP_DEV.spot_id) == "free"
    assert h.device(ABP_DEV)["fcnt_up"] == 65536


def test_unknown_devices_are_counted_and_left_alone(h: Harness) -> None:
    stranger = B.build_data_uplink(dev_addr=0x01020304, fcnt=1, fport=1, payload=b"\x01",
                                   nwk_s_key=bytes(16), app_s_key=bytes(16))
    h.edge.observe_uplink(uplink(stranger, T0))
    jr = B.build_join_request(bytes(16), join_eui=1, dev_eui=0xDEAD, dev_nonce=1)
    h.edge.observe_uplink(uplink(jr, T0))
    assert h.edge.health()["unknown_device"] == 2
    assert h.records == []
    assert all(d["frames"] == 0 for d in h.edge.health()["devices"].values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from([0x40, 0x80, 0x44, 0x9C, 0x41, 0x60, 0xA0, 0x00, 0xC0, 0xE0]),
       addr=st.sampled_from([0x01020304, ABP_DEV.dev_addr or 0]), fopts_len=st.integers(0, 15),
       length=st.integers(-3, 3) | st.integers(-12, 12), stat=st.sampled_from([1, 0, -1, None]))
def test_the_unknown_address_shortcut_counts_as_the_full_parse_does(
        tmp_path_factory: pytest.TempPathFactory, head: int, addr: int, fopts_len: int,
        length: int, stat: int | None) -> None:
    """observe_rxpk skips parsing a data uplink from a DevAddr no device has (given the frame's
    bytes, as the packet-forwarder door gives them): what it counts must not change, around the
    shortest frame the FOpts length allows too."""
    raw = (bytes([head]) + addr.to_bytes(4, "little") + bytes([0x20 | fopts_len])
           + bytes(range(40)))[: max(1, 12 + fopts_len + length)]
    rxpk: dict[str, Any] = {"data": b64encode(raw)} | ({} if stat is None else {"stat": stat})
    health = []
    for given_raw in (raw, None):  # the shortcut, then the full path (it decodes "data")
        hx = Harness(tmp_path_factory.mktemp("e"), [ABP_DEV])
        hx.edge.observe_rxpk(dict(rxpk), int(T0 * S), given_raw)
        health.append({k: v for k, v in hx.edge.health().items() if k != "devices"}
                      | {"device": hx.device(ABP_DEV), "records": len(hx.records)})
    assert health[0] == health[1]


def test_garbage_and_crc_errors_never_raise(h: Harness) -> None:
    bad_rxpks: list[dict[str, Any]] = [{"data": "!!!"}, {"data": ""}, {}, {"data": 5},
                                       {"data": b64encode(b"\x40\x01")}]
    for rxpk in bad_rxpks:
        h.edge.observe_rxpk(rxpk, int(T0 * S))
    crc_bad = {"stat": -1, "data": b64encode(abp_frame(1, True))}
    h.edge.observe_rxpk(crc_bad, int(T0 * S))
    h.edge.observe_downlink(GW, {"data": "%%%"})
    h.edge.observe_downlink(GW, {"data": b64encode(b"\x20" + bytes(5))})
    assert h.edge.health()["bad_frames"] == 5
    assert h.status(ABP_DEV.spot_id) == "unknown"


# ---------------------------------------------------------------------------- time


def test_heartbeat_timeout_turns_spot_unknown_with_a_record(tmp_path: Path) -> None:
    hx = Harness(tmp_path, [ABP_DEV], timeout=3600)
    hx.edge.observe_uplink(uplink(abp_frame(1, True), T0))
    hx.clock.t = T0 + 3599
    assert hx.edge.sweep() == 0
    hx.clock.t = T0 + 3601
    assert hx.edge.sweep() == 1
    assert hx.status(ABP_DEV.spot_id) == "unknown"
    body = hx.bodies()[-1]
    assert (body["status"], body["observed_at"], body["device"]) == (
        "unknown", iso_us(int((T0 + 3601) * S)), "70b3d50000000001")
    assert body["data"] == {"reason": "heartbeat_timeout", "last_heartbeat": iso_us(int(T0 * S))}
    hx.edge.observe_uplink(uplink(abp_frame(2, True), T0 + 3700))
    assert hx.status(ABP_DEV.spot_id) == "occupied"  # the sensor is back


@pytest.mark.parametrize("step", [3 * 365 * 86400.0, -3 * 365 * 86400.0])
def test_heartbeat_timeout_counts_real_time_across_a_clock_step(tmp_path: Path, step: float) -> None:
    hx = Harness(tmp_path, [ABP_DEV], timeout=3600)
    hx.edge.observe_uplink(uplink(abp_frame(1, True), T0))
    hx.clock.t += 100
    hx.clock.t += step  # NTP arrives late (forwards), or a time source that ran ahead is fixed
    hx.clock.stepped += step
    assert hx.edge.sweep() == 0  # not "silent for three years"
    spot = hx.edge.spots()[ABP_DEV.spot_id]
    assert (spot["status"], spot["last_heartbeat"]) == ("occupied", iso_us(int((T0 + step) * S)))
    hx.clock.t += 3499
    assert hx.edge.sweep() == 0
    hx.clock.t += 2
    assert hx.edge.sweep() == 1  # an hour after the sensor's last word, not three years
    assert hx.status(ABP_DEV.spot_id) == "unknown"


async def test_run_sweeps_and_saves_in_the_background(tmp_path: Path) -> None:
    hx = Harness(tmp_path, [ABP_DEV], timeout=60)
    hx.edge.observe_uplink(uplink(abp_frame(1, True), T0))
    hx.clock.t = T0 + 61
    task = asyncio.create_task(hx.edge.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if (tmp_path / SPOTS_FILE).exists() and hx.status(ABP_DEV.spot_id) == "unknown":
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = json.loads((tmp_path / SPOTS_FILE).read_text())
    assert saved["spots"][ABP_DEV.spot_id]["status"] == "unknown"


# ---------------------------------------------------------------------------- restart


async def test_restart_keeps_spots_and_sessions(tmp_path: Path) -> None:
    hx = Harness(tmp_path, [ABP_DEV, OTAA_DEV])
    jr = B.build_join_request(APP_KEY, join_eui=JOIN_EUI, dev_eui=OTAA_DEV.dev_eui, dev_nonce=9)
    hx.edge.observe_uplink(uplink(jr, T0))
    ja = B.build_join_accept(APP_KEY, join_nonce=1, net_id=0x13, dev_addr=0x260B0002)
    hx.edge.observe_downlink(GW, {"data": b64encode(ja)})
    keys = L.derive_session_keys_10(APP_KEY, join_nonce=1, net_id=0x13, dev_nonce=9)

    def otaa_frame(fcnt: int, occupied: bool) -> bytes:
        fport, payload = encode_status(OTAA_DEV.model, occupied)
        return B.build_data_uplink(dev_addr=0x260B0002, fcnt=fcnt, fport=fport, payload=payload,
                                   nwk_s_key=keys.nwk_s_key, app_s_key=keys.app_s_key)

    hx.edge.observe_uplink(uplink(otaa_frame(0, True), T0 + 5))
    old_abp = abp_frame(7, True)
    hx.edge.observe_uplink(uplink(old_abp, T0 + 6))
    await hx.edge.stop()
    for name in (SPOTS_FILE, SESSIONS_FILE):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600

    again = Harness(tmp_path, [ABP_DEV, OTAA_DEV])
    spots = again.edge.spots()
    assert spots[ABP_DEV.spot_id]["status"] == "occupied"
    assert spots[ABP_DEV.spot_id]["rssi"] == -101.0
    assert spots[OTAA_DEV.spot_id]["status"] == "occupied"
    assert spots[OTAA_DEV.spot_id]["changed_at"] == iso_us(int((T0 + 5) * S))
    # The session came back: no new join needed, and old frames are still replays.
    again.edge.observe_uplink(uplink(old_abp, T0 + 7))
    assert again.device(ABP_DEV)["replays"] == 1
    again.edge.observe_uplink(uplink(otaa_frame(1, False), T0 + 8))
    assert again.status(OTAA_DEV.spot_id) == "free"


def test_corrupt_state_is_moved_aside_and_startup_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / SPOTS_FILE).write_text('{"version": 1, "spots": {"a": ')
    (tmp_path / SESSIONS_FILE).write_bytes(b"\xff\xfe")
    with caplog.at_level(logging.ERROR, logger="schwebe.parking"):
        hx = Harness(tmp_path, [ABP_DEV])
    assert hx.status(ABP_DEV.spot_id) == "unknown"
    assert sum("corrupt" in r.getMessage() for r in caplog.records) == 2
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not (tmp_path / SPOTS_FILE).exists()
    assert any(n.startswith(SPOTS_FILE + ".corrupt-") for n in names)
    assert any(n.startswith(SESSIONS_FILE + ".corrupt-") for n in names)
    hx.edge.observe_uplink(uplink(abp_frame(1, False), T0))
    hx.edge.save()
    assert Harness(tmp_path, [ABP_DEV]).status(ABP_DEV.spot_id) == "free"


def test_saves_are_batched_not_per_frame(tmp_path: Path) -> None:
    hx = Harness(tmp_path, [ABP_DEV])
    for fcnt in range(1, 6):
        hx.edge.observe_uplink(uplink(abp_frame(fcnt, fcnt % 2 == 0), T0 + fcnt))
    assert list(tmp_path.iterdir()) == []  # nothing written until a save is due
    hx.edge.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [SESSIONS_FILE, SPOTS_FILE]


# ---------------------------------------------------------------------------- wired


def test_wired_readings_feed_the_same_spot_state(h: Harness) -> None:
    spot = "city:spot:0100"
    h.edge.observe_wired(Wired(spot, "occupied", 3, 1, int(T0 * S)))
    h.edge.observe_wired(Wired(spot, "occupied", 3, 1, int((T0 + 1) * S)))  # a poll: no record
    h.edge.observe_wired(Wired(spot, "free", 3, 0, int((T0 + 2) * S)))
    assert [b["status"] for b in h.bodies()] == ["occupied", "free"]
    assert h.bodies()[1] == {"spot_id": spot, "status": "free",
                             "observed_at": iso_us(int((T0 + 2) * S)), "device": "modbus:3",
                             "data": {"unit": 3, "value": 0}}
    assert h.edge.spots()[spot]["last_heartbeat"] == iso_us(int((T0 + 2) * S))


def test_wired_bay_occupied_all_night_is_not_a_missed_heartbeat(tmp_path: Path) -> None:
    """The detector is polled and reports only changes: a car parked for longer than the radio
    heartbeat timeout keeps its bay occupied (its driver marks a silent unit unknown itself)."""
    hx = Harness(tmp_path, [ABP_DEV], timeout=3600)
    spot = "city:spot:0100"
    hx.edge.observe_wired(Wired(spot, "occupied", 3, 1, int(T0 * S)))
    hx.edge.observe_uplink(uplink(abp_frame(1, True), T0))
    hx.clock.t = T0 + 10 * 3600
    assert hx.edge.sweep() == 1  # the radio sensor, not the wired bay
    assert hx.status(spot) == "occupied"
    assert hx.status(ABP_DEV.spot_id) == "unknown"
    hx.edge.observe_wired(Wired(spot, "unknown", 3, None, int((T0 + 10 * 3600) * S)))
    assert hx.status(spot) == "unknown"  # as the driver says when the unit stops answering


def test_operator_closure_holds_against_the_sensor_and_lifts_to_its_last_word(
    tmp_path: Path,
) -> None:
    """Roadworks: the city closes a spot in config. It reads ``closed`` (with a record) whatever
    its sensor says, the sensor's battery and heartbeat still count, and once the closure is
    lifted the spot shows what the sensor last reported, again with a record."""
    hx = Harness(tmp_path, [ABP_DEV])
    hx.edge = EdgeParking([ABP_DEV], tmp_path, 3600.0, False, hx.records.append, clock=hx.clock,
                          save_interval=0.01, sweep_interval=0.01,
                          closed_spots=[ABP_DEV.spot_id, "city:spot:0999"])
    hx.clock.t = T0
    assert hx.edge.apply_closures() == 2
    assert hx.status(ABP_DEV.spot_id) == "closed" and hx.status("city:spot:0999") == "closed"
    assert sorted((b["spot_id"], b["status"], b["data"]["reason"]) for b in hx.bodies()) == [
        (ABP_DEV.spot_id, "closed", "closed_by_operator"),
        ("city:spot:0999", "closed", "closed_by_operator"),
    ]
    n = len(hx.records)
    hx.edge.observe_uplink(uplink(abp_frame(1, True), T0 + 10))  # a car parks in the closed spot
    assert hx.status(ABP_DEV.spot_id) == "closed" and len(hx.records) == n
    assert hx.edge.spots()[ABP_DEV.spot_id]["last_heartbeat"] == iso_us(int((T0 + 10) * S))
    hx.clock.t = T0 + 5 * 3600
    assert hx.edge.sweep() == 0  # a closure is not a silent sensor
    hx.edge.save()

    lifted: list[Record] = []
    again = EdgeParking([ABP_DEV], tmp_path, 3600.0, False, lifted.append, clock=hx.clock)
    assert again.spots()[ABP_DEV.spot_id]["status"] == "closed"  # as saved, until applied
    assert again.apply_closures() == 2
    assert again.spots()[ABP_DEV.spot_id]["status"] == "occupied"  # the sensor's last word
    assert again.spots()["city:spot:0999"]["status"] == "unknown"  # never heard from
    bodies = {r.decoded()["spot_id"]: r.decoded() for r in lifted}
    assert bodies[ABP_DEV.spot_id]["status"] == "occupied"
    assert bodies[ABP_DEV.spot_id]["data"] == {"reason": "closure_lifted"}


# ---------------------------------------------------------------------------- secrets


async def test_no_key_in_views_logs_or_spot_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hx = Harness(tmp_path, [ABP_DEV, OTAA_DEV])
    jr = B.build_join_request(APP_KEY, join_eui=JOIN_EUI, dev_eui=OTAA_DEV.dev_eui, dev_nonce=4)
    hx.edge.observe_uplink(uplink(jr, T0))
    ja = B.build_join_accept(APP_KEY, join_nonce=1, net_id=0x13, dev_addr=0x260B0003)
    hx.edge.observe_downlink(GW, {"data": b64encode(ja)})
    hx.edge.observe_uplink(uplink(abp_frame(1, True), T0))
    bad = bytearray(abp_frame(2, True))
    bad[-1] ^= 1
    hx.edge.observe_uplink(uplink(bytes(bad), T0))
    await hx.edge.stop()
    keys = L.derive_session_keys_10(APP_KEY, join_nonce=1, net_id=0x13, dev_nonce=4)
    text = (json.dumps(hx.edge.spots()) + json.dumps(hx.edge.health())
            + (tmp_path / SPOTS_FILE).read_text() + caplog.text
            + "".join(repr(r.decoded()) for r in hx.records))
    for key in (*SECRETS, keys.nwk_s_key, keys.app_s_key):
        assert key.hex() not in text
    # The session file needs them to survive a restart; it is the only place, and 0600.
    assert keys.app_s_key.hex() in (tmp_path / SESSIONS_FILE).read_text()


# ---------------------------------------------------------------------------- robustness


def test_genuine_frame_the_decoder_rejects_changes_nothing(h: Harness) -> None:
    h.edge.observe_uplink(uplink(abp_frame(1, True), T0))
    odd = B.build_data_uplink(dev_addr=ABP_ADDR, fcnt=2, fport=77, payload=b"\x00",
                              nwk_s_key=ABP_NWK, app_s_key=ABP_APP)
    h.edge.observe_uplink(uplink(odd, T0 + 1))
    assert h.status(ABP_DEV.spot_id) == "occupied"
    assert h.edge.spots()[ABP_DEV.spot_id]["last_heartbeat"] == iso_us(int((T0 + 1) * S))
    assert len(h.records) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=40), mtype=st.integers(0, 7), as_downlink=st.booleans())
def test_random_frames_never_raise(h: Harness, body: bytes, mtype: int, as_downlink: bool) -> None:
    # Random bodies behind the configured DevAddr reach the MIC check; others the parser.
    phy = bytes((mtype << 5,)) + (ABP_ADDR.to_bytes(4, "little") + body if mtype in (2, 4)
                                  else body)
    if as_downlink:
        h.edge.observe_downlink(GW, {"data": b64encode(phy)})
    else:
        h.edge.observe_rxpk({"data": b64encode(phy), "rssi": "loud"}, int(T0 * S))
    assert h.status(ABP_DEV.spot_id) == "unknown"


def test_a_replay_flood_is_counted_in_full_but_logged_sparsely(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    frame = abp_frame(1, True)
    h.edge.observe_uplink(uplink(frame, T0))
    with caplog.at_level(logging.WARNING, logger="schwebe.parking"):
        for _ in range(10):
            h.edge.observe_uplink(uplink(frame, T0 + 1))
    assert h.device(ABP_DEV)["replays"] == 10
    assert [r.fields["count"] for r in caplog.records] == [1, 2, 4, 8]  # type: ignore[attr-defined]


def test_a_spot_closed_from_the_page_stays_closed_after_a_restart(tmp_path: Path) -> None:
    from gateway.parking.edge import EdgeParking

    def edge() -> EdgeParking:
        return EdgeParking([], tmp_path, 3600.0, False, emit=records.append,
                           closed_spots=("site:2",))

    records: list[Any] = []
    e = edge()
    e.spot_table.ensure("site:1")
    e.spot_table.ensure("site:2")
    e.apply_closures()  # as at start: the config's closure
    assert e.set_closed("site:1", True) and not e.set_closed("site:9", True)
    assert e.set_closed("site:2", False)  # the config closed it; the technician reopened it
    assert e.spots()["site:1"]["status"] == "closed" and e.spots()["site:2"]["status"] != "closed"
    assert [(r.decoded()["spot_id"], r.decoded()["data"]["reason"]) for r in records] == [
        ("site:2", "closed_by_operator"), ("site:1", "closed_by_operator"),
        ("site:2", "closure_lifted")]
    e2 = edge()  # a restart: the page's choices hold over the config's list
    e2.spot_table.ensure("site:1")
    e2.spot_table.ensure("site:2")
    e2.apply_closures()
    assert e2.spots()["site:1"]["status"] == "closed" and e2.spots()["site:2"]["status"] != "closed"
