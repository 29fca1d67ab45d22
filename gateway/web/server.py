"""The web component: /healthz, /api/status, /metrics and the status page.

Read-only views of state handed in as callables; a slow phone never slows the
radio path. `schwebe run` asks for a login for all but /healthz; /metrics takes
a bearer token; the demo may serve its read-only endpoints openly on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.metrics import Metrics
from gateway.remote import MAX_BUNDLE
from gateway.web.auth import Lockout, bearer_ok, parse_basic, verify_password

log = logging.getLogger("schwebe.web")

StatusFn = Callable[[], dict[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: no MIME sniffing, no framing by another site, no software versions."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Server"] = "schwebe"


class WebServer:
    name = "web"

    def __init__(
        self,
        *,
        bind: tuple[str, int],
        status: StatusFn,
        metrics: Metrics,
        healthy: Callable[[], bool],
        username: str | None = None,
        password_hash: str | None = None,
        metrics_token: str | None = None,
        open_read_only: bool = False,
        upload_bundle: Callable[[bytes], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._bind = bind
        self._status = status
        self._metrics = metrics
        self._healthy = healthy
        self._username = username
        self._password_hash = password_hash
        self._metrics_token = metrics_token
        self._open = open_read_only
        self._upload_bundle = upload_bundle
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._guard = ConnectionGuard()
        self._verified: dict[bytes, float] = {}  # sha256(header) -> expiry; scrypt is slow
        self._scrypt_slot = asyncio.Semaphore(1)
        self._lockout = Lockout()
        self.bound_address: tuple[str, int] | None = None
        if not open_read_only and not (username and password_hash):
            log.warning(
                "no web login configured: only /healthz answers. Set [web] username and "
                "password_hash (make one with `schwebe web hash-password`)."
            )

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware], client_max_size=64 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/metrics", self._prometheus)
        app.router.add_get("/", self._index)
        app.router.add_post("/api/config/bundle", self._config_bundle)
        app.on_response_prepare.append(_security_headers)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                                     keepalive_timeout=KEEPALIVE_S)
        await self._runner.setup()
        inner = self._runner.server
        assert inner is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guarded(inner(), self._guard), self._bind[0], self._bind[1],
            reuse_address=True)
        sockets = list(self._server.sockets)
        self.bound_address = sockets[0].getsockname()[:2] if sockets else self._bind
        log.info("web page listening", extra={"fields": {"url": self.url}})

    @property
    def url(self) -> str:
        host, port = self.bound_address or self._bind
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{port}/"

    async def run(self) -> None:
        # aiohttp serves from its own tasks; nothing to do until cancelled
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ auth

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._guard.request_seen(request.transport)
        path = request.path
        if path == "/healthz":
            return await handler(request)
        if path == "/metrics":
            # a token set is a token required, even where the page is open read-only
            if bearer_ok(request.headers.get("Authorization"), self._metrics_token) or (
                self._open and request.method == "GET" and not self._metrics_token
            ):
                return await handler(request)
            return web.json_response({"error": "bearer token required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if self._open and request.method in ("GET", "HEAD"):
            return await handler(request)
        client = request.remote or "?"
        wait = self._lockout.retry_after(client)
        if wait > 0:
            return web.json_response(
                {"error": "too many failed logins; try again later"}, status=429,
                headers={"Retry-After": str(math.ceil(wait))})
        if await self._login_ok(request.headers.get("Authorization"), client):
            return await handler(request)
        return web.json_response(
            {"error": "login required"}, status=401,
            headers={"WWW-Authenticate": 'Basic realm="schwebe", charset="UTF-8"'},
        )

    async def _login_ok(self, header: str | None, client: str) -> bool:
        if not (self._username and self._password_hash and header):
            return False
        # A header that is not valid UTF-8 arrives with surrogate escapes: hash it as bytes.
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        now = time.monotonic()
        if self._verified.get(key, 0) > now:
            return True
        creds = parse_basic(header)
        if creds is None:
            self._lockout.failed(client)
            return False
        user_ok = hmac.compare_digest(creds[0].encode("utf-8", "surrogateescape"),
                                      self._username.encode())
        # scrypt runs for a wrong user too (no user enumeration by timing), one at a time and
        # off the event loop (a login storm must never delay the radio path).
        async with self._scrypt_slot:
            password_ok = await asyncio.to_thread(verify_password, creds[1], self._password_hash)
        if not (user_ok and password_ok):
            self._lockout.failed(client)
            log.warning("failed web login", extra={"fields": {"user": creds[0][:64], "client": client}})
            return False
        self._lockout.succeeded(client)
        if len(self._verified) > 32:
            self._verified.clear()
        self._verified[key] = now + 300
        return True

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def _api_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status(), dumps=_dumps)

    async def _config_bundle(self, request: web.Request) -> web.Response:
        """An on-site config bundle (`schwebe fleet bundle`) as the raw request body.

        Only a raw tar body is taken (curl --data-binary @FILE.tar -H 'Content-Type:
        application/x-tar'): a cross-site form cannot send one, so a logged-in browser
        cannot be made to upload by another site."""
        if self._upload_bundle is None:
            raise web.HTTPNotFound()
        if request.content_type not in ("application/x-tar", "application/octet-stream"):
            return web.json_response(
                {"error": "send the bundle as the body with Content-Type: application/x-tar"},
                status=415)
        if (request.content_length or 0) > MAX_BUNDLE:
            return web.json_response({"error": f"bundle larger than {MAX_BUNDLE} bytes"}, status=413)
        body = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            body += chunk
            if len(body) > MAX_BUNDLE:
                return web.json_response({"error": f"bundle larger than {MAX_BUNDLE} bytes"},
                                         status=413)
        try:
            state = await self._upload_bundle(bytes(body))
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        log.info("config bundle uploaded", extra={"fields": {
            "client": request.remote, "bytes": len(body), "state": state.get("state")}})
        ok = state.get("state") in ("confirming", "confirmed")
        return web.json_response(state, status=200 if ok else 422, dumps=_dumps)

    async def _prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=self._metrics.prometheus(), content_type="text/plain")

    async def _index(self, request: web.Request) -> web.Response:
        html = resources.files("gateway.web").joinpath("static/index.html").read_text("utf-8")
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"})


#: A connection must send a whole request head within this (slow-header clients are cut off).
HEADER_TIMEOUT_S = 10.0
#: An idle kept-alive connection is closed after this.
KEEPALIVE_S = 15.0
#: Connections at once: a phone opens a handful; more is someone holding sockets.
MAX_CONNECTIONS = 64


class ConnectionGuard:
    """Bounds the page's connections: how many at once, and how long one may take to say
    what it wants. aiohttp has no limit on either, so 200 slow-header clients could hold
    the port for as long as they liked."""

    def __init__(self) -> None:
        self.open: dict[asyncio.BaseTransport, None] = {}  # oldest first
        self._served: set[asyncio.BaseTransport] = set()
        self.refused = 0
        self.timed_out = 0

    def opened(self, transport: asyncio.BaseTransport) -> bool:
        if len(self.open) >= MAX_CONNECTIONS:
            # full: the oldest connection that never sent a request makes room, so a crowd
            # of slow clients cannot keep the technician's phone out
            silent = next((t for t in self.open if t not in self._served), None)
            if silent is None:
                self.refused += 1
                return False
            self.timed_out += 1
            self.open.pop(silent)
            silent.close()
        self.open[transport] = None
        asyncio.get_running_loop().call_later(HEADER_TIMEOUT_S, self._deadline, transport)
        return True

    def request_seen(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._served.add(transport)

    def closed(self, transport: asyncio.BaseTransport) -> None:
        self.open.pop(transport, None)
        self._served.discard(transport)

    def _deadline(self, transport: asyncio.BaseTransport) -> None:
        if transport in self.open and transport not in self._served:
            self.timed_out += 1
            transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's bounds around it."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard.opened(transport):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self._made = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._made:
            self._guard.closed(self._transport)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)
