"""Web component: who may see what (no default password, secrets never shown)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

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
        # the login form is open to anyone: a 200 kB body is refused before it is read
        async with session.post(server.url + "login", data=b"x" * 200_000, headers={
                "Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 413
    finally:
        await server.stop()


def test_password_hash_roundtrip() -> None:
    h = hash_password(PASSWORD)
    assert PASSWORD not in h
    assert verify_password(PASSWORD, h)
    assert not verify_password("nope", h)
    assert not verify_password(PASSWORD, "garbage")


async def test_guessing_is_locked_out_with_retry_after(session: aiohttp.ClientSession) -> None:
    server = await started(username="tech", password_hash=hash_password(PASSWORD))
    base = server.url.rstrip("/")
    try:
        codes = []
        for _ in range(6):
            async with session.get(base + "/api/status", headers=basic("tech", "guess")) as r:
                codes.append(r.status)
                retry = r.headers.get("Retry-After")
        assert codes[:5] == [401] * 5 and codes[5] == 429, codes
        assert retry is not None and int(retry) >= 1
        # while locked, even the right password waits (no oracle for the guesser)
        async with session.get(base + "/api/status", headers=basic("tech", PASSWORD)) as r:
            assert r.status == 429
    finally:
        await server.stop()


async def test_a_wrong_user_costs_the_same_scrypt_as_a_wrong_password(
        session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.web.session as srv

    calls: list[str] = []
    real = srv.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(srv, "verify_password", counting)
    server = await started(username="tech", password_hash=hash_password(PASSWORD))
    base = server.url.rstrip("/")
    try:
        for user in ("nobody", "tech"):
            async with session.get(base + "/api/status", headers=basic(user, "wrong")) as r:
                assert r.status == 401
        assert calls == ["wrong", "wrong"]  # the unknown user was hashed too
    finally:
        await server.stop()


async def test_a_non_utf8_auth_header_is_a_401_not_a_500() -> None:
    import asyncio

    server = await started(username="tech", password_hash=hash_password(PASSWORD))
    host, port = server.bound_address or ("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \xff\xfe\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        await server.stop()


async def test_a_login_storm_does_not_stall_the_event_loop(session: aiohttp.ClientSession) -> None:
    """scrypt runs in a worker thread: the loop (the radio path) keeps ticking meanwhile."""
    import asyncio

    server = await started(username="tech", password_hash=hash_password(PASSWORD))
    base = server.url.rstrip("/")
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async def guess(i: int) -> int:
        # distinct client addresses are not possible here; distinct users keep every
        # attempt under the per-client threshold long enough to measure
        async with session.get(base + "/api/status", headers=basic(f"u{i}", "wrong")) as r:
            return r.status

    try:
        tick = asyncio.create_task(ticker())
        codes = await asyncio.gather(*(guess(i) for i in range(4)))
        stop.set()
        await tick
        assert all(c in (401, 429) for c in codes)
        # four scrypt runs on the loop would block it ~50 ms each; off the loop the worst
        # gap stays near the ticker's own period (generous bound for a shared CI machine)
        assert max(gaps) < 0.04, f"event loop stalled {max(gaps) * 1000:.0f} ms"
    finally:
        await server.stop()


async def test_answers_carry_security_headers_and_no_versions(session: aiohttp.ClientSession) -> None:
    server = await started(username="tech", password_hash=hash_password(PASSWORD))
    base = server.url.rstrip("/")
    try:
        for path in ("/healthz", "/api/status"):
            async with session.get(base + path) as r:
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["X-Frame-Options"] == "DENY"
                assert r.headers["Server"] == "schwebe"
                assert "aiohttp" not in r.headers["Server"] and "Python" not in r.headers["Server"]
    finally:
        await server.stop()


async def test_slow_header_clients_cannot_hold_the_page(session: aiohttp.ClientSession,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """200 clients that open a connection and trickle a request head (slowloris): the page
    still answers a phone at once, and the silent connections are cut after the deadline."""
    import asyncio

    import gateway.web.guard as web_server

    monkeypatch.setattr(web_server, "HEADER_TIMEOUT_S", 1.0)
    server = await started(open_read_only=True)
    host, port = server.bound_address  # type: ignore[misc]
    slow = []
    for _ in range(200):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # never finished
        slow.append((reader, writer))
    async with session.get(server.url + "api/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200
    assert len(server._guard.open) <= web_server.MAX_CONNECTIONS
    await asyncio.sleep(1.5)
    closed = 0
    for reader, writer in slow:
        try:
            data = await asyncio.wait_for(reader.read(100), 0.5)
        except (ConnectionError, TimeoutError):
            continue
        closed += data == b""  # EOF: the server hung up
        writer.close()
    assert closed == 200, f"only {closed} of 200 slow connections were cut"
    assert len(server._guard.open) <= 1  # the phone's kept-alive connection only
    await server.stop()


async def test_openapi_describes_every_route_and_the_status_it_serves(tmp_path: Path) -> None:
    """/api/openapi.json names every route the server has (and no other), with the least role
    each needs; a real gateway's /api/status has what the description requires."""
    import json

    from gateway.config import demo_config_text, load_config_text
    from gateway.pipeline import Gateway

    gw = Gateway(load_config_text(demo_config_text(str(tmp_path), 0, 1700)))
    app = gw.web.make_app()
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and not r.resource.canonical.startswith("/static")
              and r.method != "HEAD"}
    server = await started(open_read_only=True)
    try:
        async with aiohttp.ClientSession() as s, s.get(server.url + "api/openapi.json") as r:
            assert r.status == 200
            spec = await r.json()
    finally:
        await server.stop()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert documented == routes
    assert all(op["x-schwebe-role"] in ("none", "viewer", "technician", "operator")
               for ops in spec["paths"].values() for op in ops.values())
    schema = spec["paths"]["/api/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    status = json.loads(json.dumps(gw.status(), default=str))
    assert set(schema["required"]) <= status.keys()
    assert status["verdict"]["state"] in schema["properties"]["verdict"]["properties"]["state"]["enum"]


async def test_what_a_phone_downloads_again_and_again_is_gzipped(session: aiohttp.ClientSession) -> None:
    server = await started(open_read_only=True)
    try:
        for path in ("api/status", "static/app.js", ""):
            async with session.get(server.url + path, headers={"Accept-Encoding": "gzip"}) as r:
                assert r.status == 200 and r.headers.get("Content-Encoding") == "gzip", path
        async with session.get(server.url + "api/status", headers={"Accept-Encoding": "identity"}) as r:
            assert "Content-Encoding" not in r.headers
    finally:
        await server.stop()
