"""The web component: the technician's page, its JSON API, live frames and pictures.

Rooms: `session` (who is asking: login form, sessions, CSRF, Basic for scripts,
roles), `api` (status, history, metrics), `live` (Server-Sent Events), `history`
(the bounded samples behind the pictures). This module puts them together:
one middleware decides who is asking before any handler runs, and every
state-changing request needs a page session and its CSRF token. A slow phone
never slows the radio path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.metrics import Metrics
from gateway.remote import MAX_BUNDLE
from gateway.web.actions import Actions
from gateway.web.api import Api, StatusFn, dumps
from gateway.web.auth import bearer_ok, parse_basic
from gateway.web.guard import KEEPALIVE_S, ConnectionGuard, _Guarded
from gateway.web.history import History
from gateway.web.live import LiveFeed
from gateway.web.session import (
    COOKIE,
    PRINCIPAL_KEY,
    STATE_CHANGING,
    Accounts,
    Login,
    LoginRoutes,
    Principal,
    require,
)

log = logging.getLogger("schwebe.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: No inline scripts or styles: everything the page runs is a file it serves itself.
CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
              "form-action 'self'")
#: Sent by the page's own scripts with every request.
PAGE_HEADER: Final = "X-Schwebe-Page"
#: Paths anyone may fetch: liveness, the login form and the page's own files.
#: A TLS client must finish its handshake within this (a stalled one holds a socket).
HANDSHAKE_S: Final = 10.0
OPEN_PATHS: Final = frozenset({"/healthz", "/login", "/api/openapi.json"})


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: no MIME sniffing, no framing, no software versions, no inline code."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # same-origin: no referrer to other sites, while a same-site POST still names its
    # Origin (with no-referrer, Chromium sends "Origin: null" and the CSRF check refuses it)
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Server"] = "schwebe"


@web.middleware
async def _compress(request: web.Request, handler: Handler) -> web.StreamResponse:
    """gzip what a phone downloads again and again (the status every 2 s, the page's files):
    on a slow cell link bytes are what the technician waits for."""
    resp = await handler(request)
    if resp.prepared or "gzip" not in request.headers.get("Accept-Encoding", ""):
        return resp
    # a file's type is known only once it is opened: judge it by its name
    if (request.path.endswith((".js", ".css", ".html", ".json")) if isinstance(resp, web.FileResponse)
            else (resp.content_type or "").split(";")[0] in COMPRESSIBLE):
        resp.enable_compression(web.ContentCoding.gzip)
    return resp


COMPRESSIBLE: Final = frozenset({"application/json", "text/html", "text/css", "text/plain",
                                 "application/javascript", "text/javascript"})


def _static_dir() -> Path:
    return Path(str(resources.files("gateway.web").joinpath("static")))


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
        users: tuple[Any, ...] = (),
        session_idle: float = 900.0,
        metrics_token: str | None = None,
        open_read_only: bool = False,
        live: LiveFeed | None = None,
        history: History | None = None,
        upload_bundle: Callable[[bytes], Awaitable[dict[str, Any]]] | None = None,
        actions: Actions | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self._bind = bind
        self._metrics_token = metrics_token
        self._open = open_read_only
        self._upload_bundle = upload_bundle
        self._actions = actions
        self._tls = tls
        logins = [Login(username, "operator", password_hash)] if username and password_hash else []
        logins += [Login(u.name, u.role, u.password_hash) for u in users]
        self.accounts = Accounts(logins, idle=session_idle)
        self.live = live or LiveFeed()
        self.history = history or History()
        self._api = Api(status=status, metrics=metrics, healthy=healthy, history=self.history)
        static = _static_dir()
        self._login = LoginRoutes(self.accounts, lambda: (static / "login.html").read_text("utf-8"))
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._guard = ConnectionGuard()
        self.bound_address: tuple[str, int] | None = None
        if not open_read_only and not logins:
            log.warning(
                "no web login configured: only /healthz answers. Add a [[web.users]] entry "
                "(make its password_hash with `schwebe web hash-password`)."
            )

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[_compress, self._auth_middleware], client_max_size=64 * 1024)
        self._api.add_routes(app)
        self._login.add_routes(app)
        app.router.add_get("/api/live", self._live)
        app.router.add_get("/", self._index)
        app.router.add_post("/api/config/bundle", self._config_bundle)
        app.router.add_get("/api/openapi.json", self._openapi)
        if self._actions is not None:
            self._actions.add_routes(app)
        app.router.add_static("/static/", _static_dir(), follow_symlinks=False)
        app.on_response_prepare.append(_security_headers)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                                     keepalive_timeout=KEEPALIVE_S, shutdown_timeout=1.0)
        await self._runner.setup()
        inner = self._runner.server
        assert inner is not None
        loop = asyncio.get_running_loop()
        context = None
        if self._tls is not None:
            from gateway.web.tls import fingerprint, server_context

            context = server_context(*self._tls)
        self._server = await loop.create_server(
            lambda: _Guarded(inner(), self._guard), self._bind[0], self._bind[1],
            reuse_address=True, ssl=context,
            ssl_handshake_timeout=HANDSHAKE_S if context is not None else None)
        sockets = list(self._server.sockets)
        self.bound_address = sockets[0].getsockname()[:2] if sockets else self._bind
        fields: dict[str, Any] = {"url": self.url}
        if self._tls is not None:
            fields["certificate_sha256"] = fingerprint(self._tls[0])
        log.info("web page listening", extra={"fields": fields})

    @property
    def url(self) -> str:
        host, port = self.bound_address or self._bind
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"{'https' if self._tls else 'http'}://{shown}:{port}/"

    async def run(self) -> None:
        # aiohttp serves from its own tasks; nothing to do until cancelled
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            self.live.close_all()
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ who is asking

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._guard.request_seen(request.transport)
        path = request.path
        if request.method in STATE_CHANGING and not _same_origin(request):
            return web.json_response({"error": "cross-site request refused"}, status=403)
        if path in OPEN_PATHS or path.startswith("/static/"):
            return await handler(request)
        if path == "/metrics":
            # a token set is a token required, even where the page is open read-only
            if bearer_ok(request.headers.get("Authorization"), self._metrics_token) or (
                self._open and request.method == "GET" and not self._metrics_token
            ):
                return await handler(request)
            return web.json_response({"error": "bearer token required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        who = await self._who(request)
        if isinstance(who, web.StreamResponse):
            return who
        request[PRINCIPAL_KEY] = who
        if request.method in STATE_CHANGING:
            # every state-changing request, whatever route: a page session and its CSRF token
            # (Basic only with a body no cross-site form can send; the route decides the rest)
            await require(request, role="technician", csrf=True, basic=True)
        return await handler(request)

    async def _who(self, request: web.Request) -> Principal | web.StreamResponse:
        session = self.accounts.find(request.cookies.get(COOKIE))
        if session is not None:
            return Principal(session.user, session.role, "session", session.csrf)
        header = request.headers.get("Authorization")
        client = request.remote or "?"
        if header is not None:
            creds = parse_basic(header)
            wait = self.accounts.retry_after(client, creds[0] if creds else None)
            if wait > 0:
                return web.json_response(
                    {"error": "too many failed logins; try again later"}, status=429,
                    headers={"Retry-After": str(math.ceil(wait))})
            user = await self.accounts.basic(header, client)
            if user is not None:
                return Principal(user.name, user.role, "basic")
        elif self._open and request.method in ("GET", "HEAD"):
            return Principal(None, "viewer", "open")
        if header is None and request.method == "GET" and request.path == "/":
            raise web.HTTPSeeOther("/login")  # a browser without a session: the login form
        # The Basic challenge is for scripts: a browser that has (had) a page session, or the
        # page's own requests, get a plain 401 and go to the login form, never the browser's
        # Basic dialog.
        browser = COOKIE in request.cookies or PAGE_HEADER in request.headers
        return web.json_response(
            {"error": "login required: log in at /login, or send HTTP Basic (scripts)"},
            status=401, headers={} if browser else {
                "WWW-Authenticate": 'Basic realm="schwebe", charset="UTF-8"'})

    async def _openapi(self, request: web.Request) -> web.Response:
        """The JSON API described (OpenAPI 3.1), for the city's integrators."""
        return web.Response(body=(_static_dir() / "openapi.json").read_bytes(),
                            content_type="application/json")

    async def _config_bundle(self, request: web.Request) -> web.Response:
        """An on-site config bundle (`schwebe fleet bundle`) as the raw request body.

        Operators only. Only a raw tar body is taken (curl -u NAME --data-binary @FILE.tar
        -H 'Content-Type: application/x-tar'): a cross-site form cannot send that type, so
        HTTP Basic is accepted here; a page session sends its CSRF token as well."""
        if self._upload_bundle is None:
            raise web.HTTPNotFound()
        await require(request, role="operator", csrf=True, basic=True)
        if request.content_type not in ("application/x-tar", "application/octet-stream"):
            return web.json_response(
                {"error": "send the bundle as the body with Content-Type: application/x-tar"},
                status=415)
        body = await _read_bounded(request, MAX_BUNDLE)
        if body is None:
            return web.json_response({"error": f"bundle larger than {MAX_BUNDLE} bytes"}, status=413)
        try:
            state = await self._upload_bundle(body)
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        who = request[PRINCIPAL_KEY]
        log.info("config bundle uploaded", extra={"fields": {
            "user": who.user, "client": request.remote, "bytes": len(body),
            "state": state.get("state")}})
        ok = state.get("state") in ("confirming", "confirmed")
        return web.json_response(state, status=200 if ok else 422, dumps=dumps)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        who = request[PRINCIPAL_KEY]
        if who.via != "session":
            return await self.live.handle(request)
        token = request.cookies.get(COOKIE)
        return await self.live.handle(request, allowed=lambda: self.accounts.alive(token))

    async def _index(self, request: web.Request) -> web.Response:
        html = (_static_dir() / "index.html").read_text("utf-8")
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store"})


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes (read no further)."""
    if (request.content_length or 0) > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _same_origin(request: web.Request) -> bool:
    """A browser names the page that sent a POST; one from another site is refused outright."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site form or fetch (those always say)
    return urlsplit(origin).netloc == request.host
