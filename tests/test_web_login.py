"""The page's login: form and sessions, roles, CSRF, lockout per client and per name, CSP."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config import ConfigError, load_config_text
from gateway.metrics import Metrics
from gateway.web.auth import Lockout, hash_password
from gateway.web.server import CSP, WebServer
from gateway.web.session import Accounts, Login, require

TECH_PW = "ladder and lamp post"
OP_PW = "operator's long passphrase"
TECH_HASH = hash_password(TECH_PW)
OP_HASH = hash_password(OP_PW)


class User:
    def __init__(self, name: str, role: str, password_hash: str) -> None:
        self.name, self.role, self.password_hash = name, role, password_hash


async def changed(request: web.Request) -> web.Response:
    await require(request, role="technician")
    return web.json_response({"done": True})


async def operator_only(request: web.Request) -> web.Response:
    who = await require(request, role="operator")
    return web.json_response({"done": True, "user": who.user})


@pytest.fixture
async def base() -> AsyncIterator[str]:
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: {"counters": {"received": 7}},
                       metrics=Metrics(), healthy=lambda: True,
                       users=(User("tech", "technician", TECH_HASH), User("op", "operator", OP_HASH)))
    app = server.make_app()
    app.router.add_post("/test/change", changed)
    app.router.add_post("/test/operator", operator_only)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def jar_session() -> aiohttp.ClientSession:
    # unsafe: the cookie jar keeps cookies for an IP address host (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def log_in(s: aiohttp.ClientSession, base: str, user: str, pw: str) -> str:
    """Log in through the form; returns the page session's CSRF token."""
    async with s.post(base + "/login", data={"username": user, "password": pw},
                      allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with s.get(base + "/api/session") as r:
        assert r.status == 200
        return str((await r.json())["csrf_token"])


async def test_form_login_gives_a_strict_httponly_session_cookie(base: str) -> None:
    async with jar_session() as s:
        async with s.get(base + "/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with s.get(base + "/login") as r:
            assert r.status == 200 and 'name="password"' in await r.text()
        async with s.post(base + "/login", data={"username": "tech", "password": TECH_PW},
                          allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        async with s.get(base + "/api/status") as r:
            assert r.status == 200 and (await r.json())["counters"]["received"] == 7
        async with s.get(base + "/") as r:
            assert r.status == 200 and 'id="verdict"' in await r.text()
        async with s.get(base + "/api/session") as r:
            me = await r.json()
        assert me["user"] == "tech" and me["role"] == "technician" and len(me["csrf_token"]) >= 32


async def test_wrong_pair_is_401_then_429_with_retry_after(base: str) -> None:
    async with jar_session() as s:
        codes = []
        for _ in range(6):
            async with s.post(base + "/login", data={"username": "tech", "password": "guess"}) as r:
                codes.append(r.status)
                text = await r.text()
                retry = r.headers.get("Retry-After")
        assert codes == [401] * 5 + [429], codes
        assert retry is not None and int(retry) >= 1 and "try again in" in text
        # locked: the right password waits too (no oracle for the guesser)
        async with s.post(base + "/login", data={"username": "tech", "password": TECH_PW},
                          allow_redirects=False) as r:
            assert r.status == 429
        async with s.get(base + "/api/status") as r:
            assert r.status == 401


async def test_the_form_says_what_went_wrong_without_echoing_input(base: str) -> None:
    async with jar_session() as s, s.post(
            base + "/login", data={"username": "<b>x</b>", "password": "p"}) as r:
        text = await r.text()
    assert r.status == 401 and "Wrong user name or password" in text and "<b>x</b>" not in text


async def test_state_changes_need_the_sessions_csrf_token(base: str) -> None:
    async with jar_session() as s:
        token = await log_in(s, base, "tech", TECH_PW)
        async with s.post(base + "/test/change") as r:
            assert r.status == 403 and "CSRF" in (await r.json())["error"]
        async with s.post(base + "/test/change", headers={"X-CSRF-Token": "x" * 43}) as r:
            assert r.status == 403
        async with s.post(base + "/test/change", headers={"X-CSRF-Token": token}) as r:
            assert r.status == 200
        async with s.post(base + "/test/change", data={"csrf_token": token}) as r:
            assert r.status == 200  # a form field does as well as the header
        # a browser posting from another site is refused whatever it carries
        async with s.post(base + "/test/change", headers={"X-CSRF-Token": token,
                                                           "Origin": "http://evil.example"}) as r:
            assert r.status == 403


async def test_roles_and_basic_is_for_reading_only(base: str) -> None:
    async with jar_session() as s:
        token = await log_in(s, base, "tech", TECH_PW)
        async with s.post(base + "/test/operator", headers={"X-CSRF-Token": token}) as r:
            assert r.status == 403 and "operator" in (await r.json())["error"]
    async with jar_session() as s:
        token = await log_in(s, base, "op", OP_PW)
        async with s.post(base + "/test/operator", headers={"X-CSRF-Token": token}) as r:
            assert r.status == 200 and (await r.json())["user"] == "op"
    auth = {"Authorization": "Basic " + base64.b64encode(f"op:{OP_PW}".encode()).decode()}
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/api/status", headers=auth) as r:
            assert r.status == 200  # curl in a script still reads the status
        async with s.post(base + "/test/operator", headers=auth) as r:
            assert r.status == 403  # but changes nothing: browsers replay Basic cross-site


async def test_logout_ends_the_session(base: str) -> None:
    async with jar_session() as s:
        token = await log_in(s, base, "tech", TECH_PW)
        async with s.post(base + "/logout", allow_redirects=False) as r:
            assert r.status == 403  # logging someone out is a change too
        async with s.post(base + "/logout", headers={"X-CSRF-Token": token},
                          allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with s.get(base + "/api/status") as r:
            assert r.status == 401


async def test_an_unknown_name_costs_the_same_scrypt_run(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.web.session as session

    seen: list[str] = []
    real = session.verify_password

    def counting(password: str, stored: str) -> bool:
        seen.append(stored.split("$")[1])
        return real(password, stored)

    monkeypatch.setattr(session, "verify_password", counting)
    async with jar_session() as s:
        for name in ("nobody", "tech"):
            async with s.post(base + "/login", data={"username": name, "password": "wrong"}) as r:
                assert r.status == 401
    assert seen == ["16384", "16384"]  # the unknown name ran scrypt at the same cost


def test_sessions_end_after_the_idle_timeout() -> None:
    now = [1000.0]
    accounts = Accounts([Login("tech", "technician", TECH_HASH)], idle=600, clock=lambda: now[0])
    token, _ = accounts.open(Login("tech", "technician", TECH_HASH))
    now[0] += 599
    assert accounts.find(token) is not None  # a request keeps it alive
    now[0] += 599
    assert accounts.find(token) is not None
    now[0] += 601
    assert accounts.find(token) is None
    assert accounts.find("forged") is None and accounts.find("x" * 10_000) is None


def test_a_name_locks_for_every_client_but_not_other_names() -> None:
    now = [0.0]
    lock = Lockout(free=5, account_free=20, clock=lambda: now[0])
    for i in range(21):  # a botnet: one guess from each of 21 addresses
        lock.failed(f"10.0.0.{i}", "tech")
    assert lock.retry_after("10.9.9.9", "tech") > 0
    assert lock.retry_after("10.9.9.9", "op") == 0
    lock.succeeded("10.9.9.9", "tech")
    assert lock.retry_after("10.9.9.10", "tech") == 0


def test_the_page_has_no_inline_script_or_style() -> None:
    assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP
    static = Path(str(resources.files("gateway.web").joinpath("static")))
    for name in ("index.html", "login.html"):
        html = (static / name).read_text()
        assert "<style" not in html, name
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), name
        assert not re.search(r"\s(on\w+|style)\s*=", html), name
    for asset in ("app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css",
                  "vendor/LICENSE"):
        assert (static / asset).is_file(), asset


async def test_csp_and_assets_are_served(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/login") as r:
            assert r.headers["Content-Security-Policy"] == CSP
        async with s.get(base + "/static/app.js") as r:
            assert r.status == 200 and "EventSource" in await r.text()
        async with s.get(base + "/static/vendor/uPlot.iife.min.js") as r:
            assert r.status == 200
        from yarl import URL

        # nothing outside the static folder, however the path is spelt
        async with s.get(URL(base + "/static/%2E%2E/session.py", encoded=True)) as r:
            assert r.status in (403, 404) and "Accounts" not in await r.text()


def web_config(extra: str) -> Any:
    return load_config_text(f'[gateway]\neui = "b827ebfffe000001"\ndata_dir = "/tmp/x"\n{extra}')


def test_config_users_roles_and_the_old_single_login() -> None:
    cfg = web_config(f'[web]\nusername = "admin"\npassword_hash = "{OP_HASH}"\n'
                     f'[[web.users]]\nname = "tech"\nrole = "technician"\npassword_hash = "{TECH_HASH}"\n')
    logins = {u.name: u.role for u in cfg.web.logins()}
    assert logins == {"admin": "operator", "tech": "technician"}
    assert cfg.web.session_idle == 900.0
    assert TECH_HASH not in repr(cfg)


@pytest.mark.parametrize(("extra", "problem"), [
    ('[[web.users]]\nname = "tech"\nrole = "technician"\npassword_hash = "hunter2"\n',
     "web.users[0].password_hash: not a scrypt hash"),
    (f'[[web.users]]\nname = "tech"\nrole = "admin"\npassword_hash = "{TECH_HASH}"\n',
     "web.users[0].role: 'admin' is not one of 'technician', 'operator'"),
    (f'[[web.users]]\nname = "a"\nrole = "operator"\npassword_hash = "{TECH_HASH}"\n'
     f'[[web.users]]\nname = "a"\nrole = "technician"\npassword_hash = "{TECH_HASH}"\n',
     "web.users[1].name: 'a' is already a login"),
    ('[[web.users]]\nname = "tech"\nrole = "technician"\n',
     "web.users[0].password_hash: required key is missing"),
])
def test_bad_web_users_are_refused_by_key_path(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        web_config(extra)
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems
    assert "hunter2" not in str(exc.value)


async def test_the_session_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    server = WebServer(bind=("127.0.0.1", 0), status=lambda: {}, metrics=Metrics(),
                       healthy=lambda: True, users=(User("tech", "technician", TECH_HASH),))
    runner = web.AppRunner(server.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as s, s.post(
                f"https://127.0.0.1:{port}/login", data={"username": "tech", "password": TECH_PW},
                allow_redirects=False, ssl=False) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        await runner.cleanup()


async def test_a_bundle_upload_takes_an_operator_by_basic_or_session() -> None:
    """POST /api/config/bundle: operators only; Basic (curl) with a raw tar body, a page
    session with its CSRF token; a form body by Basic is refused (a cross-site form could
    send it with the browser's cached credentials)."""
    got: list[bytes] = []

    async def upload(blob: bytes) -> dict[str, Any]:
        got.append(blob)
        return {"state": "confirming", "version": 3}

    server = WebServer(bind=("127.0.0.1", 0), status=lambda: {}, metrics=Metrics(),
                       healthy=lambda: True, upload_bundle=upload,
                       users=(User("tech", "technician", TECH_HASH), User("op", "operator", OP_HASH)))
    await server.start()
    url = server.url + "api/config/bundle"
    tar = {"Content-Type": "application/x-tar"}

    def basic(user: str, pw: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data=b"tar-1", headers={**tar, **basic("op", OP_PW)}) as r:
                assert r.status == 200 and (await r.json())["version"] == 3
            async with s.post(url, data=b"tar-2", headers={**tar, **basic("tech", TECH_PW)}) as r:
                assert r.status == 403  # technicians do not change the configuration
            async with s.post(url, data={"f": "x"}, headers=basic("op", OP_PW)) as r:
                assert r.status == 403
            async with s.post(url, data=b"tar-3", headers={
                    **tar, **basic("op", OP_PW), "Origin": "http://evil.example"}) as r:
                assert r.status == 403
            import io

            async with s.post(url, data=io.BytesIO(b"x" * (4 << 20 | 1)),
                              headers={**tar, **basic("op", OP_PW)}) as r:
                assert r.status == 413
        async with jar_session() as s:
            base = server.url.rstrip("/")
            token = await log_in(s, base, "op", OP_PW)
            async with s.post(url, data=b"tar-4", headers=tar) as r:
                assert r.status == 403  # a session without its CSRF token
            async with s.post(url, data=b"tar-5", headers={**tar, "X-CSRF-Token": token}) as r:
                assert r.status == 200
        assert got == [b"tar-1", b"tar-5"]
    finally:
        await server.stop()


async def test_logout_ends_the_live_stream(base: str) -> None:
    async with jar_session() as s:
        token = await log_in(s, base, "tech", TECH_PW)
        async with s.get(base + "/api/live") as stream:
            assert stream.status == 200
            await stream.content.readline()  # the stream is open
            async with s.post(base + "/logout", headers={"X-CSRF-Token": token},
                              allow_redirects=False) as r:
                assert r.status == 303
            # the server ends the stream within a couple of seconds
            import asyncio

            rest = await asyncio.wait_for(stream.content.read(), 5)
            assert b"data:" not in rest


def test_sessions_are_bounded_and_only_digests_are_kept() -> None:
    from gateway.web.session import MAX_SESSIONS

    now = [0.0]
    accounts = Accounts([], idle=600, clock=lambda: now[0])
    user = Login("tech", "technician", TECH_HASH)
    tokens = []
    for _ in range(MAX_SESSIONS + 1):
        now[0] += 1
        tokens.append(accounts.open(user)[0])
    assert len(accounts.sessions) == MAX_SESSIONS
    assert accounts.find(tokens[0]) is None  # the least recently used went first
    assert accounts.find(tokens[-1]) is not None
    assert not any(t in accounts.sessions for t in tokens)  # a memory dump holds no cookie


async def test_a_browser_never_gets_the_basic_dialog(base: str) -> None:
    """The Basic challenge is for scripts; a lost page session gets a plain 401 (the page then
    goes to the login form) instead of the browser's own password dialog."""
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/api/status") as r:
            assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]  # curl
        async with s.get(base + "/api/status", headers={"X-Schwebe-Page": "1"}) as r:
            assert r.status == 401 and "WWW-Authenticate" not in r.headers
        async with s.get(base + "/api/live", headers={"Cookie": "schwebe_session=expired"}) as r:
            assert r.status == 401 and "WWW-Authenticate" not in r.headers
