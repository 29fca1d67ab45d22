"""The status page in a real browser, phone-sized: counters show, and it says when the gateway is gone."""

from __future__ import annotations

import time
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
                             "records_lost": 815, "records_recovered": 9185}],
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
        assert "815 records lost, 9185 recovered" in text
        assert "buffer.sqlite3.corrupt-20261125T021000Z" in text
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


def parking_status() -> dict[str, Any]:
    """Two sites, every state, one closed spot; a remote configuration that was refused."""
    s = status()
    s["forwarders"]["city-broker"]["connected"] = True
    spots: dict[str, Any] = {}
    states = ["free", "occupied", "free", "unknown", "closed", "occupied"]
    for i, st in enumerate(states):
        spots[f"wuppertal:parking:spot:{i + 1:04d}"] = {
            "status": st, "parking_site": "wuppertal:site:rathaus" if i < 4 else None,
            "changed_at": "2026-11-25T09:00:00+00:00", "last_heartbeat": "2026-11-25T09:30:00+00:00",
            "device": f"70b3d5e75e00000{i}", "battery": 3.4, "battery_unit": "V",
            "rssi": -101.0, "snr": 4.5, "category": "onStreet"}
    s["parking"] = {"spots": spots, "counters": {}}
    s["remote_config"] = {"version": 7, "state": "refused", "source": "fleet.example/targets",
                          "reason": "signature threshold not met (1 of 2)", "last_confirmed": 5}
    return s


async def test_parking_grid_by_site_with_tap_for_details(browser_page: Any) -> None:
    s = parking_status()
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: s, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        sites = page.locator("#spots .site")
        await expect(sites).to_have_count(2)
        rathaus = sites.filter(has_text="wuppertal:site:rathaus")
        await expect(rathaus).to_contain_text("free 2 · occupied 1 · unknown 1")
        other = sites.filter(has_text="wuppertal:parking:spot")
        await expect(other).to_contain_text("occupied 1 · closed 1")
        await expect(page.locator("#spots .tile.closed")).to_have_count(1)
        await expect(page.locator("#spot-summary")).to_contain_text("free 2 · occupied 2 · unknown 1 · closed 1")
        # tiles are coloured by state
        colours = await page.eval_on_selector_all(
            "#spots .tile", "ts => ts.map(t => [t.className, getComputedStyle(t).backgroundColor])")
        by_state = {c.split()[1]: bg for c, bg in colours}
        assert len(set(by_state.values())) == 4, by_state
        await expect(page.locator("#spot-details")).to_be_hidden()
        await page.locator('.tile[data-spot="wuppertal:parking:spot:0004"]').click()
        details = page.locator("#spot-details")
        await expect(details).to_be_visible()
        await expect(details).to_contain_text("wuppertal:parking:spot:0004: unknown")
        text = await details.inner_text()
        assert "3.4 V" in text and "RSSI -101 dBm" in text and "SNR 4.5 dB" in text
        assert "70b3d5e75e000003" in text and " ago" in text and "last change" in text
        # the remote configuration box: shown because the key exists, saying why
        remote = page.locator("#remote-box")
        await expect(remote).to_be_visible()
        await expect(remote).to_contain_text("refused")
        await expect(remote).to_contain_text("signature threshold not met")
        await expect(remote).to_contain_text("version 5")  # what runs meanwhile
        await page.screenshot(path=str(ARTEFACTS / "parking-grid.png"), full_page=True)
    finally:
        await server.stop()


async def test_remote_config_box_hidden_without_the_key(browser_page: Any) -> None:
    server = WebServer(bind=("127.0.0.1", 0), status=status, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        await browser_page.goto(server.url)
        await expect(browser_page.locator("#eui")).to_have_text("b827ebfffe000001")
        await expect(browser_page.locator("#remote-box")).to_be_hidden()
    finally:
        await server.stop()


async def test_live_table_updates_filters_and_pauses(browser_page: Any) -> None:
    from tests.test_web_live import uplink

    server = WebServer(bind=("127.0.0.1", 0), status=status, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        await expect(page.locator("#live-state")).to_have_text("live")
        for n in range(3):
            server.live.publish_record(uplink(dev_addr=0x26011234, fcnt=n))  # type: ignore[arg-type]
            server.live.publish_record(uplink(dev_addr=0x260abcde, fcnt=100 + n))  # type: ignore[arg-type]
        rows = page.locator("#live-rows tr")
        await expect(rows).to_have_count(6)
        first = await rows.first.inner_text()
        assert "260abcde" in first and "102" in first and "SF9" in first and "-97" in first
        await page.fill("#live-filter", "26011234")
        await expect(page.locator("#live-rows tr:visible")).to_have_count(3)
        server.live.publish_record(uplink(dev_addr=0x260abcde, fcnt=200))  # type: ignore[arg-type]
        server.live.publish_record(uplink(dev_addr=0x26011234, fcnt=9))  # type: ignore[arg-type]
        await expect(page.locator("#live-rows tr:visible")).to_have_count(4)
        await page.click("#live-pause")
        server.live.publish_record(uplink(dev_addr=0x26011234, fcnt=10))  # type: ignore[arg-type]
        await expect(page.locator("#live-state")).to_contain_text("paused (1 frames not shown)")
        assert await page.locator("#live-rows tr").count() == 7
        await page.screenshot(path=str(ARTEFACTS / "live-frames.png"))
    finally:
        await server.stop()


async def test_pictures_are_drawn_from_the_history(browser_page: Any) -> None:
    from gateway.web.history import History
    from tests.test_web_live import uplink

    now = [1_764_000_000.0]
    history = History(interval=60, radio_per_s=1e9, clock=lambda: now[0],
                      monotonic=lambda: now[0] + time.monotonic())
    for i in range(30):
        now[0] += 60
        history.sample({"b827ebfffe000001": 25 * i, "b827ebfffe000002": 10 * i}, 100 + i,
                       {"city-broker": float(i % 5)}, {"b827ebfffe000001": i / 3})
    for _ in range(20):
        history.observe(uplink())  # type: ignore[arg-type]
    errors: list[str] = []
    server = WebServer(bind=("127.0.0.1", 0), status=status, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True, history=history)
    await server.start()
    try:
        page = browser_page
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(server.url)
        for chart in ("chart-frames", "chart-buffer", "chart-lag", "chart-radio", "chart-airtime"):
            await expect(page.locator(f"#{chart} canvas")).to_have_count(1)
        legend = await page.inner_text("#chart-frames")
        assert "b827ebfffe000001" in legend and "b827ebfffe000002" in legend
        assert "SF9" in await page.inner_text("#chart-radio")
        # something was drawn: the canvas is not blank
        inked = await page.eval_on_selector("#chart-frames canvas", """c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
        assert inked > 500
        assert not [e for e in errors if "Content Security Policy" in e], errors
        await page.locator("#chart-frames").scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTEFACTS / "pictures.png"), full_page=True)
    finally:
        await server.stop()


async def test_log_in_on_a_phone_and_see_the_verdict(browser_page: Any) -> None:
    from gateway.verdict import verdict
    from gateway.web.auth import hash_password
    from tests.test_web_login import User

    s = troubled_status()
    s["verdict"] = verdict(s)
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: s, metrics=Metrics(),
                       healthy=lambda: True,
                       users=(User("tech", "technician", hash_password("ladder and lamp post")),))
    await server.start()
    errors: list[str] = []
    try:
        page = browser_page
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(server.url)
        await expect(page).to_have_url(server.url + "login")
        await page.fill("#username", "tech")
        await page.fill("#password", "wrong")
        await page.click("#login-button")
        await expect(page.locator("#message")).to_contain_text("Wrong user name or password")
        await page.fill("#username", "tech")
        await page.fill("#password", "ladder and lamp post")
        await page.click("#login-button")
        await expect(page).to_have_url(server.url)
        await expect(page.locator("#verdict")).to_contain_text("FAILING")
        await expect(page.locator("#verdict-reasons")).to_contain_text("city-broker")
        box = await page.locator("#verdict-box").bounding_box()
        assert box is not None and box["y"] + box["height"] < 844
        await expect(page.locator("#who")).to_contain_text("tech (technician)")
        cookies = await page.context.cookies()
        session = [c for c in cookies if c["name"] == "schwebe_session"]
        assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        await page.screenshot(path=str(ARTEFACTS / "logged-in-verdict.png"))
        # the session ends on the server (idle timeout, restart): the page goes to the form
        server.accounts.sessions.clear()
        await expect(page).to_have_url(server.url + "login", timeout=6000)
        await page.fill("#username", "tech")
        await page.fill("#password", "ladder and lamp post")
        await page.click("#login-button")
        await expect(page.locator("#who")).to_contain_text("tech (technician)")
        await page.click("#logout")
        await expect(page).to_have_url(server.url + "login")
        await page.goto(server.url)
        await expect(page).to_have_url(server.url + "login")
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        await server.stop()


async def test_the_real_daemon_with_a_dead_backend_after_login(browser_page: Any, tmp_path: Any) -> None:
    """`schwebe run`'s Gateway with a login and an HTTP backend nobody listens on: log in on a
    phone, the verdict names the backend, frames go by live, the grid fills."""
    import asyncio
    import socket

    from gateway.config import demo_config_text, load_config_text
    from gateway.pipeline import Gateway
    from gateway.web.auth import hash_password

    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    text = demo_config_text(str(tmp_path), 0, ports[0]).replace(
        "open_read_only = true",
        "[[web.users]]\n"
        f'name = "tech"\nrole = "technician"\npassword_hash = "{hash_password("lamp post 42")}"\n')
    text = text.replace("[log]", "[[forward.http]]\n"
                        f'name = "city-api"\nurl = "http://127.0.0.1:{ports[1]}/ingest"\n'
                        'timeout = "1s"\n\n[log]')
    gw = Gateway(load_config_text(text))
    task = asyncio.create_task(gw.serve(install_signals=False))
    try:
        await asyncio.wait_for(gw.supervisor.ready.wait(), 20)
        page = browser_page
        await page.goto(gw.web.url)
        await page.fill("#username", "tech")
        await page.fill("#password", "lamp post 42")
        await page.click("#login-button")
        await expect(page.locator("#verdict")).not_to_contain_text("OK", timeout=15000)
        await expect(page.locator("#verdict-reasons")).to_contain_text("city-api", timeout=15000)
        box = await page.locator("#verdict-box").bounding_box()
        assert box is not None and box["y"] + box["height"] < 844
        await expect(page.locator("#live-rows tr").first).to_be_visible(timeout=10000)
        await expect(page.locator("#spots .tile").first).to_be_visible()
        await expect(page.locator("#chart-buffer canvas")).to_have_count(1, timeout=15000)
        await page.screenshot(path=str(ARTEFACTS / "daemon-dead-backend.png"))
        # the technician checks the backends from the phone: the dead one fails at TCP
        page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await page.click("#check")
        await expect(page.locator("#check-results")).to_contain_text("city-api", timeout=15000)
        await expect(page.locator("#check-results")).to_contain_text("✗ tcp")
        await expect(page.locator("#check-results")).to_contain_text("✓ writable")
        await expect(page.locator("#export")).to_have_attribute("href", "/api/buffer/export")
        await page.locator("#tech-box").screenshot(path=str(ARTEFACTS / "technician-check.png"))
        # a spot closed for roadworks from the phone: the tile turns closed, the spot says so
        await page.locator("#spots .tile").first.click()
        spot_id = (await page.locator("#spot-details-title").inner_text()).split(":")[0:4]
        page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await page.click("#spot-close")
        await expect(page.locator("#spot-details-title")).to_contain_text(": closed", timeout=10000)
        assert gw.parking.spots()[":".join(spot_id)]["status"] == "closed"
    finally:
        gw.supervisor.request_stop()
        await asyncio.wait_for(task, 20)


async def test_readable_rates_units_and_tooltips(browser_page: Any) -> None:
    ticks = [0]

    def moving() -> dict[str, Any]:
        s = troubled_status()
        ticks[0] += 1
        s["counters"] = {"received": 1000 + 20 * ticks[0]}
        return s

    server = WebServer(bind=("127.0.0.1", 0), status=moving, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    try:
        page = browser_page
        await page.goto(server.url)
        # after the second refresh (2 s) the rate shows beside the total
        await expect(page.locator("#traffic")).to_contain_text("/s)", timeout=8000)
        radio = page.locator("#radio")
        await expect(radio).to_contain_text("temp 41 °C")
        await expect(radio).to_contain_text("ackr 100 %")
        tips = await page.eval_on_selector_all("#radio td[title]", "ts => ts.map(t => t.title)")
        assert any("rxnb" in t and "received" in t for t in tips), tips
        assert any("ackr" in t and "acknowledged" in t for t in tips), tips
        assert any("temperature" in t for t in tips), tips
        buf = await page.inner_text("#buffer")
        assert " ago)" in buf  # the last commit in local time with its age
    finally:
        await server.stop()


async def test_german_from_the_browser_and_english_by_the_switch(browser_page: Any) -> None:
    """A phone set to German gets the page in German, the verdict's reasons included (the
    first users are in Wuppertal); the switch in the header goes to English and stays."""
    from gateway.verdict import verdict

    s = troubled_status()
    s["verdict"] = verdict(s)
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: s, metrics=Metrics(),
                       healthy=lambda: True, open_read_only=True)
    await server.start()
    browser = browser_page.context.browser
    context = await browser.new_context(locale="de-DE", viewport={"width": 390, "height": 844})
    try:
        page = await context.new_page()
        await page.goto(server.url)
        await expect(page.locator("#verdict")).to_contain_text("STÖRUNG: jetzt handeln")
        await expect(page.locator("#verdict-reasons")).to_contain_text("Backend")
        await expect(page.locator("h2", has_text="Parkplätze")).to_be_visible()
        await expect(page.locator("html")).to_have_attribute("lang", "de")
        await page.screenshot(path=str(ARTEFACTS / "deutsch.png"))
        await page.click("#lang")
        await expect(page.locator("#verdict")).to_contain_text("FAILING: act now")
        await expect(page.locator("h2", has_text="Parking spots")).to_be_visible()
        await page.reload()  # the choice is kept
        await expect(page.locator("#verdict")).to_contain_text("FAILING: act now")
    finally:
        await context.close()
        await server.stop()
