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


async def test_page_on_the_real_demo_gateway(browser_page: Any, tmp_path: Any) -> None:
    """The page against the real daemon's /api/status (not a hand-made one): shapes cannot drift."""
    import asyncio
    from importlib import resources

    from gateway.config import load_config_text
    from gateway.pipeline import Gateway

    text = resources.files("gateway").joinpath("demo.toml").read_text("utf-8")
    text = text.replace("{data_dir}", str(tmp_path)).replace("{web_port}", "0")
    gw = Gateway(load_config_text(text))
    task = asyncio.create_task(gw.serve(install_signals=False))
    try:
        await asyncio.wait_for(gw.supervisor.ready.wait(), 20)
        page = browser_page
        await page.goto(gw.web.url)
        await expect(page.locator("#eui")).to_have_text("b827ebfffe000001")
        await expect(page.locator("#summary")).to_contain_text("healthy")
        await expect(page.locator("#gnss")).to_contain_text("satellites", timeout=10000)
        await expect(page.locator("#spots")).to_contain_text("demo:parking:", timeout=10000)
        await expect(page.locator("#forwarders")).to_contain_text("local-sink")
        await expect(page.locator("#forwarders")).to_contain_text("connected")
        # counters move while the page is open
        first = await page.inner_text("#traffic")
        await page.wait_for_timeout(2500)
        assert await page.inner_text("#traffic") != first
    finally:
        gw.supervisor.request_stop()
        await asyncio.wait_for(task, 20)
