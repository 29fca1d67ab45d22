"""Spot state: changes, heartbeats, timeouts to unknown, closed spots, state round trip."""

from __future__ import annotations

import pytest

from gateway.parking.spots import SpotTable, iso_us

S = 1_000_000  # µs per second
T0 = 1_764_000_000 * S


def test_first_report_changes_unknown_to_the_reported_status() -> None:
    t = SpotTable()
    assert t.report("a", "occupied", T0, device="dev1", battery=3.6, battery_unit="V",
                    rssi=-97.0, snr=7.5)
    v = t.view()["a"]
    assert v["status"] == "occupied"
    assert v["changed_at"] == v["last_heartbeat"] == iso_us(T0)
    assert (v["device"], v["battery"], v["battery_unit"], v["rssi"], v["snr"]) == (
        "dev1", 3.6, "V", -97.0, 7.5)


def test_same_status_and_heartbeats_refresh_without_a_change() -> None:
    t = SpotTable()
    t.report("a", "free", T0, device="d")
    assert not t.report("a", "free", T0 + 60 * S, device="d")
    assert not t.report("a", None, T0 + 120 * S, device="d", battery=3.1, battery_unit="V")
    v = t.view()["a"]
    assert v["changed_at"] == iso_us(T0)
    assert v["last_heartbeat"] == iso_us(T0 + 120 * S)
    assert v["battery"] == 3.1
    assert v["status"] == "free"


def test_missing_heartbeat_turns_the_spot_unknown_once() -> None:
    t = SpotTable()
    t.report("a", "occupied", T0, device="d")
    t.report("b", "free", T0 + 50 * S, device="e")
    expired = t.sweep(T0 + 61 * S, 60 * S)
    assert [s.spot_id for s in expired] == ["a"]
    assert t.view()["a"]["status"] == "unknown"
    assert t.view()["a"]["changed_at"] == iso_us(T0 + 61 * S)
    assert t.view()["b"]["status"] == "free"
    assert t.sweep(T0 + 62 * S, 60 * S) == []  # already unknown: no second record
    assert t.report("a", "free", T0 + 70 * S, device="d")  # back to life


def test_closed_spots_and_never_heard_spots_do_not_expire() -> None:
    t = SpotTable()
    t.ensure("silent")
    t.report("c", "closed", T0, device="modbus:3")
    assert t.sweep(T0 + 10_000 * S, 60 * S) == []
    assert t.view()["c"]["status"] == "closed"
    assert t.view()["silent"] == {
        "status": "unknown", "changed_at": None, "last_heartbeat": None, "device": None,
        "battery": None, "battery_unit": None, "rssi": None, "snr": None, "category": None,
    }


def test_bad_status_is_refused_with_the_spot_named() -> None:
    with pytest.raises(ValueError, match="spot a: status 'parked'"):
        SpotTable().report("a", "parked", T0, device="d")


def test_state_round_trip() -> None:
    t = SpotTable()
    t.ensure("a", category="offStreet")
    t.report("a", "occupied", T0, device="d", battery=92.0, battery_unit="%")
    t.report("b", "free", T0 + 1, device="modbus:1")
    again = SpotTable()
    assert again.load_state(t.to_state()) == []
    assert again.view() == t.view()


def test_broken_entries_are_noted_and_the_rest_loaded() -> None:
    t = SpotTable()
    notes = t.load_state({"version": 1, "spots": {
        "good": {"status": "free", "heartbeat_us": T0},
        "bad": {"status": "parked"},
        "worse": {"status": "free", "battery": "full"},
    }})
    assert list(t.view()) == ["good"]
    assert len(notes) == 2 and "bad" in notes[0] and "battery" in notes[1]


def test_whole_document_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="version 1"):
        SpotTable().load_state([1, 2, 3])


def test_iso_us_keeps_microseconds_in_utc() -> None:
    assert iso_us(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z"
