"""Web component: who may see what (no default password, secrets never shown)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.metrics import Metrics
from gateway.web.auth import hash_password, verify_password
from gateway.web.server import WebServer

PASSWORD = "correct horse battery"


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


async def started(**kw: object) -> WebServer:
    metrics = Metrics()
    metrics.inc("records_received", kind="uplink")
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: {"counters": {"received": 1}},
                       metrics=metrics, healthy=lambda: True, **kw)  # type: ignore[arg-type]
    await server.start()
    return server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_run_mode_asks_for_a_login(session: aiohttp.ClientSession) -> None:
    server = await started(username="tech", password_hash=hash_password(PASSWORD),
                           metrics_token="s3cret-token")
    base = server.url.rstrip("/")
    try:
        async with session.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json()) == {"ok": True}
        async with session.get(base + "/api/status") as r:
            assert r.status == 401
            assert "Basic" in r.headers["WWW-Authenticate"]
        async with session.get(base + "/api/status", headers=basic("tech", "wrong")) as r:
            assert r.status == 401
        async with session.get(base + "/api/status", headers=basic("tech", PASSWORD)) as r:
            assert r.status == 200 and (await r.json())["counters"]["received"] == 1
        async with session.get(base + "/", headers=basic("tech", PASSWORD)) as r:
            assert r.status == 200 and "Schwebe" in await r.text()
        async with session.get(base + "/metrics", headers=basic("tech", PASSWORD)) as r:
            assert r.status == 401  # a login is not the metrics token
        async with session.get(base + "/metrics", headers={"Authorization": "Bearer s3cret-token"}) as r:
            assert r.status == 200
            assert 'schwebe_records_received{kind="uplink"} 1' in await r.text()
    finally:
        await server.stop()


async def test_without_configured_login_nothing_but_healthz(session: aiohttp.ClientSession) -> None:
    server = await started()
    base = server.url.rstrip("/")
    try:
        async with session.get(base + "/healthz") as r:
            assert r.status == 200
        for path in ("/", "/api/status", "/metrics"):
            async with session.get(base + path, headers=basic("admin", "admin")) as r:
                assert r.status == 401, path
    finally:
        await server.stop()


async def test_demo_mode_serves_read_only_openly(session: aiohttp.ClientSession) -> None:
    server = await started(open_read_only=True)
    base = server.url.rstrip("/")
    try:
        async with session.get(base + "/api/status") as r:
            assert r.status == 200
        async with session.post(base + "/api/status") as r:
            assert r.status in (401, 405)
    finally:
        await server.stop()


async def test_request_bodies_are_bounded(session: aiohttp.ClientSession) -> None:
    server = await started(username="tech", password_hash=hash_password(PASSWORD))
    try:
        async with session.post(server.url + "api/status", data=b"x" * 200_000,
                                headers=basic("tech", PASSWORD)) as r:
            assert r.status in (405, 413)
    finally:
        await server.stop()


def test_password_hash_roundtrip() -> None:
    h = hash_password(PASSWORD)
    assert PASSWORD not in h
    assert verify_password(PASSWORD, h)
    assert not verify_password("nope", h)
    assert not verify_password(PASSWORD, "garbage")
