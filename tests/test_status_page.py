"""The status page in a real browser, phone-sized: counters show, and it says when the gateway is gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from gateway.metrics import Metrics
from gateway.web.server import WebServer

pytestmark = pytest.mark.browser

#: Screenshots a reviewer can look at after a run (ignored by git).
ARTEFACTS = Path(__file__).resolve().parent.parent / "test-artefacts"
ARTEFACTS.mkdir(exist_ok=True)


def status() -> dict[str, Any]:
    return {
        "gateway": {"eui": "b827ebfffe000001", "uptime_s": 12.0, "parser": "cython"},
        "healthy": True,
        "counters": {"received": 42, "forwarded": 40},
        "buffer": {"records": 2, "bytes": 300},
        "forwarders": {"city-broker": {"connected": False, "acked": 40, "lag_records": 2}},
        "parking": {"spots": {"wuppertal:parking:spot:0002": {"status": "occupied"}}},
        "components": {"web": {"running": True, "restarts": 0}},
    }


async def test_page_shows_counters_and_states(browser_page: Any) -> None:
    server = WebServer(bind=("127.0.0.1", 0), status=status, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        await expect(page.locator("#eui")).to_have_text("b827ebfffe000001")
        traffic = await page.inner_text("#traffic")
        assert "received" in traffic and "42" in traffic
        forwarders = await page.inner_text("#forwarders")
        assert "city-broker" in forwarders and "DOWN" in forwarders
        assert "occupied" in await page.inner_text("#spots")
        await server.stop()
        await expect(page.locator("#summary")).to_contain_text("cannot reach", timeout=10000)
    finally:
        await server.stop()


def troubled_status() -> dict[str, Any]:
    """What a technician meets after a bad night: the page must say it without scrolling JSON."""
    s = status()
    s["buffer"] = {
        "records": 120000, "pending_records": 7, "bytes": 50 << 20, "max_bytes": 64 << 20,
        "last_commit": "2026-11-25T03:00:00+00:00",
        "oldest_age_s": {"uplink": 7300.0, "parking": None},
        "cursors": {"city-broker": {"depth_records": 119000, "lag_s": 7300.0}},
        "drops": {"full": {"uplink": 4100}, "max_age": {"stats": 12}},
        "write_errors": {"disk_full": 3}, "last_write_error": "database or disk is full",
        "recovery_events": [{"time": "2026-11-25T02:10:00+00:00", "kind": "corrupt_store",
                             "moved_to": "/var/lib/schwebe/buffer.sqlite3.corrupt-20261125T021000Z",
                             "records_lost": 815}],
    }
    s["forwarders"]["city-broker"]["last_error"] = "connect: connection refused"
    s["sources"] = {
        "gwmp:0": {
            "bound": "127.0.0.1:1700", "datagrams": 900, "rxpk": 880,
            "malformed": {"bad_json": 4},
            "gateways": {"b827ebfffe000001": {"last_seen_s_ago": 1.5, "rxpk": 880, "rxpk_bad": 2,
                                              "stat": {"rxnb": 12, "ackr": 100.0, "temp": 41}}},
            "downlinks": {"sent": 3, "refused": {"DUTY_CYCLE_OVERFLOW": 1}, "acked": {"NONE": 3}},
            "duty_cycle": {"b827ebfffe000001": [
                {"band": "868.000-868.600 MHz", "used_s": 9.0, "allowance_s": 36.0},
                {"band": "869.400-869.650 MHz", "used_s": 0.0, "allowance_s": 360.0}]},
        },
        "modbus:bay": {"units": [
            {"unit": 1, "spot_id": "bay:01", "status": "occupied", "seconds_since_ok": 0.4,
             "crc_errors": 0, "timeouts": 0, "last_error": None},
            {"unit": 2, "spot_id": "bay:02", "status": "unknown", "seconds_since_ok": 95.0,
             "crc_errors": 7, "timeouts": 30, "last_error": "unit 2: no reply within 0.2 s"},
        ]},
    }
    return s


async def test_page_puts_drops_corruption_and_silent_devices_first(browser_page: Any) -> None:
    server = WebServer(bind=("127.0.0.1", 0), status=troubled_status, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        alerts = page.locator("#alerts")
        await expect(alerts).to_contain_text("corrupt_store")
        text = await alerts.inner_text()
        assert "815 records lost" in text and "buffer.sqlite3.corrupt-20261125T021000Z" in text
        assert "dropped (full)" in text and "uplink 4100" in text
        assert "disk_full 3" in text and "database or disk is full" in text
        assert "forwarder city-broker down" in text and "connection refused" in text
        assert "bad_json 4" in text
        assert "wired unit 2 silent" in text and "no reply" in text
        # the alerts box sits above everything else on a phone-sized screen
        box = await page.locator("#alerts-box").bounding_box()
        traffic = await page.locator("#traffic").bounding_box()
        assert box is not None and traffic is not None and box["y"] < traffic["y"]
        buf = await page.inner_text("#buffer")
        assert "78.1 %" in buf and "119000 records" in buf and "2.0 h" in buf
        radio = await page.inner_text("#radio")
        assert "b827ebfffe000001" in radio and "ackr 100" in radio and "temp 41" in radio
        assert "refused 1" in radio and "25.0 %" in radio and "869.400" not in radio
        wired = await page.inner_text("#wired")
        assert "bay:02" in wired and "unknown" in wired and "crc 7" in wired
    finally:
        await server.stop()


async def test_no_alerts_box_when_all_is_well(browser_page: Any) -> None:
    healthy = status()
    healthy["forwarders"]["city-broker"]["connected"] = True
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: healthy, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        await expect(page.locator("#eui")).to_have_text("b827ebfffe000001")
        await expect(page.locator("#alerts-box")).to_be_hidden()
        assert "none" in await page.inner_text("#buffer")  # dropped: none
    finally:
        await server.stop()


async def test_page_on_the_real_demo_gateway(browser_page: Any, tmp_path: Any) -> None:
    """The page against the real daemon's /api/status (not a hand-made one): shapes cannot drift."""
    import asyncio
    import socket

    from gateway.config import demo_config_text, load_config_text
    from gateway.pipeline import Gateway

    lns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lns.bind(("127.0.0.1", 0))
    lns_port = lns.getsockname()[1]
    lns.close()
    gw = Gateway(load_config_text(demo_config_text(str(tmp_path), 0, lns_port)))
    task = asyncio.create_task(gw.serve(install_signals=False))
    try:
        await asyncio.wait_for(gw.supervisor.ready.wait(), 20)
        page = browser_page
        await page.goto(gw.web.url)
        await expect(page.locator("#eui")).to_have_text("b827ebfffe000001")
        await expect(page.locator("#summary")).to_contain_text("healthy")
        await expect(page.locator("#verdict")).to_contain_text("OK: data flows")
        await expect(page.locator("#gnss")).to_contain_text("satellites", timeout=10000)
        await expect(page.locator("#spots")).to_contain_text("demo:parking:", timeout=10000)
        await expect(page.locator("#forwarders")).to_contain_text("local-sink")
        await expect(page.locator("#forwarders")).to_contain_text("connected")
        await expect(page.locator("#radio")).to_contain_text("concentrator b827ebfffe000001")
        await expect(page.locator("#wired")).to_contain_text("demo:parking:wired:01")
        await expect(page.locator("#buffer")).to_contain_text("dropped")
        # counters move while the page is open
        first = await page.inner_text("#traffic")
        await page.wait_for_timeout(2500)
        assert await page.inner_text("#traffic") != first
    finally:
        gw.supervisor.request_stop()
        await asyncio.wait_for(task, 20)


async def test_verdict_and_its_reasons_show_first_on_a_phone(browser_page: Any) -> None:
    """The verdict is computed by the daemon (gateway/verdict.py) from the same status; the
    page shows it and each reason with its action above the fold of a 390x844 phone."""
    from gateway.verdict import verdict

    s = troubled_status()
    s["sources"]["modbus:0"] = {"kind": "modbus", "port": "/dev/ttyUSB0", "connected": False,
                                "last_error": "could not open port /dev/ttyUSB0", "units": []}
    s["verdict"] = verdict(s)
    s["healthy"] = False
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: s, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        await expect(page.locator("#verdict")).to_contain_text("FAILING")
        reasons = page.locator("#verdict-reasons")
        await expect(reasons).to_contain_text("RS-485 adapter /dev/ttyUSB0 missing")
        await expect(reasons).to_contain_text("check the USB cable")
        await expect(reasons).to_contain_text("cannot write the buffer: database or disk is full")
        box = await page.locator("#verdict").bounding_box()
        assert box is not None and box["y"] + box["height"] < 844  # no scrolling needed
        await expect(page.locator("#summary")).to_contain_text("failing")
        await page.screenshot(path=str(ARTEFACTS / "verdict-failing.png"))
    finally:
        await server.stop()
