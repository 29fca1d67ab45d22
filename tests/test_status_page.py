"""The status page in a real browser, phone-sized: counters show, and it says when the gateway is gone."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from gateway.metrics import Metrics
from gateway.web.server import WebServer

pytestmark = pytest.mark.browser


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
