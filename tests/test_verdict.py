"""The verdict a technician reads first: each rule, on the status shapes the daemon produces."""

from __future__ import annotations

import copy
from typing import Any

from gateway.verdict import verdict

HEALTHY: dict[str, Any] = {
    "gateway": {"uptime_s": 3600.0},
    "components": {"buffer": {"running": True}, "gwmp:0": {"running": True},
                   "simulator": {"running": False}},
    "sources": {
        "gwmp:0": {"bound": "127.0.0.1:1700", "datagrams": 500,
                   "gateways": {"aa555a0000000101": {"last_seen_s_ago": 4.0}}},
        "modbus:0": {"kind": "modbus", "port": "/dev/ttyUSB0", "connected": True,
                     "last_error": None, "units": [{"unit": 1, "spot_id": "s1", "status": "free"}]},
        "gnss": {"kind": "gnss", "port": "/dev/ttyACM0", "connected": True, "last_error": None},
    },
    "forwarders": {
        "city": {"connected": True, "acked": 500, "last_ack_age_s": 1.0, "lag_records": 0,
                 "last_error": None},
        "lns": {"connected": True, "acked": 500, "last_ack_age_s": 1.0, "lag_records": 0,
                "last_error": None},
    },
    "buffer": {"recovery_events": [], "write_errors": {}, "last_write_error": None},
}


def one(s: dict[str, Any]) -> tuple[str, dict[str, str]]:
    v = verdict(s)
    assert len(v["reasons"]) == 1, v
    return v["state"], v["reasons"][0]


def test_ok_only_when_everything_flows() -> None:
    assert verdict(HEALTHY) == {"state": "ok", "reasons": []}


def test_forwarder_that_never_reached_its_backend() -> None:
    s = copy.deepcopy(HEALTHY)
    s["forwarders"]["city"] = {"connected": False, "acked": 0, "last_ack_age_s": None,
                               "lag_records": 40, "last_error": "connect: refused"}
    state, r = one(s)
    assert state == "degraded" and r["component"] == "forward:city"
    assert "never reached its backend: connect: refused" in r["problem"]
    assert "40 records wait in the buffer" in r["action"]


def test_connection_refused_after_working_and_every_backend_down_is_failing() -> None:
    s = copy.deepcopy(HEALTHY)
    for f in s["forwarders"].values():
        f.update(connected=False, lag_records=7, last_error="send: connection refused")
    v = verdict(s)
    assert v["state"] == "failing"
    assert v["reasons"][0]["problem"] == "no backend receives data"
    assert sum("backend not answering: send: connection refused" in r["problem"]
               for r in v["reasons"]) == 2


def test_packet_forwarder_never_heard_and_stopped() -> None:
    state, r = one(_gwmp(datagrams=0))
    assert state == "degraded"
    assert r["problem"] == "packet forwarder never heard on 127.0.0.1:1700"
    assert "systemctl status lora-pkt-fwd" in r["action"]
    state, r = one(_gwmp(gateways={"aa555a0000000101": {"last_seen_s_ago": 900.0}}))
    assert "not heard for 15 min" in r["problem"]
    # just started: silence is not yet a problem
    s = _gwmp(datagrams=0)
    s["gateway"]["uptime_s"] = 5.0
    assert verdict(s)["state"] == "ok"


def _gwmp(**fields: Any) -> dict[str, Any]:
    s = copy.deepcopy(HEALTHY)
    s["sources"]["gwmp:0"].update(fields)
    return s


def test_serial_ports_missing_name_the_adapter_not_the_detector() -> None:
    s = copy.deepcopy(HEALTHY)
    s["sources"]["modbus:0"].update(connected=False,
                                    last_error="[Errno 2] could not open port /dev/ttyUSB0")
    s["sources"]["modbus:0"]["units"][0]["status"] = "unknown"
    state, r = one(s)
    assert state == "degraded" and r["problem"].startswith("RS-485 adapter /dev/ttyUSB0 missing")
    assert "USB cable" in r["action"]
    s = copy.deepcopy(HEALTHY)
    s["sources"]["gnss"].update(connected=False, last_error="No such file or directory")
    state, r = one(s)
    assert r["problem"].startswith("GNSS receiver /dev/ttyACM0 missing")


def test_silent_wired_detector_on_a_working_bus() -> None:
    s = copy.deepcopy(HEALTHY)
    s["sources"]["modbus:0"]["units"][0]["status"] = "unknown"
    _state, r = one(s)
    assert "unit 1 (s1) does not answer" in r["problem"] and "wiring" in r["action"]


def test_buffer_corrupt_and_disk_full() -> None:
    s = copy.deepcopy(HEALTHY)
    s["buffer"]["recovery_events"] = [{"time": "2026-12-01T00:00:00Z",
                                       "moved_to": "/var/lib/schwebe/buffer.sqlite3.corrupt-x"}]
    state, r = one(s)
    assert state == "degraded" and "corrupt" in r["problem"] and "SD card" in r["action"]
    s = copy.deepcopy(HEALTHY)
    s["buffer"].update(write_errors={"full": 3}, last_write_error="database or disk is full")
    state, r = one(s)
    assert state == "failing" and "database or disk is full" in r["problem"]
    assert "df -h" in r["action"]


def test_a_stopped_component_is_failing() -> None:
    s = copy.deepcopy(HEALTHY)
    s["components"]["gwmp:0"] = {"running": False, "last_error": "boom"}
    state, r = one(s)
    assert state == "failing" and r["component"] == "gwmp:0" and "boom" in r["problem"]
