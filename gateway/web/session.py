"""Who is asking: page sessions (login form, cookie, CSRF token), Basic for scripts, roles.

A technician logs in on a phone with the form at /login and gets a session cookie
(HttpOnly, SameSite=Strict, Secure under TLS) that ends after `[web] session_idle`
without a request. Scripts (curl on /api/status) may still send HTTP Basic. A browser
replays cached Basic credentials to any site that links here, so with Basic nothing
changes unless the body has a type no cross-site form can send (a bundle upload as
application/x-tar); a page session sends its CSRF token with every change instead.

Every password check costs one scrypt run in a worker thread, one at a time,
for an unknown name too (no user enumeration by timing, no stalled radio path);
`Lockout` counts failures per client and per login name.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from aiohttp import web

from gateway.web.auth import Lockout, parse_basic, verify_password

log = logging.getLogger("schwebe.web")

Role = Literal["viewer", "technician", "operator"]
#: What each role may do includes everything the roles before it may.
ROLES: Final[tuple[Role, ...]] = ("viewer", "technician", "operator")
COOKIE: Final = "schwebe_session"
#: Sessions kept at once; the least recently used goes first (a phone per technician).
MAX_SESSIONS: Final = 64
#: Longest login name or password looked at (bytes beyond are not hashed).
MAX_FIELD: Final = 256
STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: What a page on another site can POST here without asking first (CORS "simple" types).
FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                               "text/plain"})


@dataclass(frozen=True, slots=True)
class Login:
    name: str
    role: Literal["technician", "operator"]
    password_hash: str = field(repr=False)


@dataclass(slots=True)
class Session:
    user: str
    role: Role
    csrf: str = field(repr=False)
    last_seen: float


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made this request, and how: 'session', 'basic' or 'open' (demo on loopback)."""

    user: str | None
    role: Role
    via: Literal["session", "basic", "open"]
    csrf: str | None = field(default=None, repr=False)


#: Where the middleware leaves the request's Principal for handlers and `require`.
PRINCIPAL_KEY: Final = web.RequestKey("schwebe.principal", Principal)


class Accounts:
    """The configured logins, the open sessions and the lockout, for one web server."""

    def __init__(self, logins: tuple[Login, ...] | list[Login], *, idle: float = 900.0,
                 clock: Callable[[], float] = time.monotonic,
                 lockout: Lockout | None = None) -> None:
        self.logins = {u.name: u for u in logins}
        self.idle = idle
        self.clock = clock
        self.lockout = lockout or Lockout(clock=clock)
        self.sessions: dict[str, Session] = {}  # sha256(cookie) hex -> session
        self._verified: dict[bytes, tuple[float, Login]] = {}  # sha256(Basic header) -> expiry
        self._scrypt_slot = asyncio.Semaphore(1)
        # An unknown name is checked against a hash of the same cost as a real one, so a
        # wrong name takes as long as a wrong password.
        ref = next(iter(self.logins.values()), None)
        params = ref.password_hash.split("$")[1:4] if ref else ["16384", "8", "1"]
        self._dummy = "$".join(["scrypt", *params, "00" * 16, "00" * 32])

    # ------------------------------------------------------------------ passwords

    async def check(self, name: str, password: str, client: str) -> Login | None:
        """The login for this name and password, or None (counted against client and name).

        The caller has checked `retry_after` first."""
        name, password = name[:MAX_FIELD], password[:MAX_FIELD]
        user = self.logins.get(name)
        stored = user.password_hash if user is not None else self._dummy
        async with self._scrypt_slot:
            ok = await asyncio.to_thread(verify_password, password, stored)
        if user is None or not ok:
            self.lockout.failed(client, name)
            log.warning("failed web login", extra={"fields": {"user": name[:64], "client": client}})
            return None
        self.lockout.succeeded(client, name)
        return user

    def retry_after(self, client: str, name: str | None = None) -> float:
        return self.lockout.retry_after(client, name)

    async def basic(self, header: str, client: str) -> Login | None:
        # A header that is not valid UTF-8 arrives with surrogate escapes: hash it as bytes.
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        now = self.clock()
        hit = self._verified.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        creds = parse_basic(header)
        if creds is None:
            self.lockout.failed(client, None)
            return None
        user = await self.check(creds[0], creds[1], client)
        if user is not None:
            if len(self._verified) > 32:
                self._verified.clear()
            self._verified[key] = (now + 300, user)
        return user

    # ------------------------------------------------------------------ sessions

    def open(self, user: Login) -> tuple[str, Session]:
        """A new session for `user`: the cookie value (only the client keeps it) and the session."""
        now = self.clock()
        self._expire(now)
        while len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(min(self.sessions, key=lambda k: self.sessions[k].last_seen))
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.role, secrets.token_urlsafe(32), now)
        self.sessions[_digest(token)] = session
        return token, session

    def find(self, token: str | None) -> Session | None:
        if not token or len(token) > 128:
            return None
        now = self.clock()
        key = _digest(token)
        session = self.sessions.get(key)
        if session is None:
            return None
        if now - session.last_seen > self.idle:
            del self.sessions[key]
            return None
        session.last_seen = now
        return session

    def alive(self, token: str | None) -> bool:
        """Whether this session still holds (without counting as a request)."""
        session = self.sessions.get(_digest(token)) if token else None
        return session is not None and self.clock() - session.last_seen <= self.idle

    def close(self, token: str | None) -> None:
        if token:
            self.sessions.pop(_digest(token), None)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self.sessions.items() if now - s.last_seen > self.idle]:
            del self.sessions[key]


def _digest(token: str) -> str:
    # Only a digest of the cookie is kept: a memory dump does not hand out live sessions.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def principal(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL_KEY)


async def csrf_token_of(request: web.Request) -> str | None:
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


async def require(request: web.Request, role: Role = "operator", csrf: bool = True,
                  basic: bool = False) -> Principal:
    """The caller of a route that needs `role`; raises 401/403 otherwise.

    With `csrf` (every state-changing route), the request must come from a page session and
    carry that session's CSRF token in `X-CSRF-Token` or a `csrf_token` form field. A route
    meant for scripts passes `basic=True`: then HTTP Basic may change it too, with a body
    whose Content-Type no cross-site form can send (a bundle upload as application/x-tar).
    """
    who = principal(request)
    if who is None or (who.via == "open" and role != "viewer"):
        raise web.HTTPUnauthorized(text='{"error": "login required"}',
                                   content_type="application/json")
    if ROLES.index(who.role) < ROLES.index(role):
        raise web.HTTPForbidden(text=f'{{"error": "needs the {role} role"}}',
                                content_type="application/json")
    if csrf and who.via == "basic" and not basic:
        raise web.HTTPForbidden(text='{"error": "log in on the page to change anything"}',
                                content_type="application/json")
    if csrf and who.via == "basic":
        # A browser replays cached Basic credentials to any site that links here, but only
        # with what a cross-site form can send; a body of another type needs a CORS preflight
        # this server never grants. So Basic changes something only with such a body.
        sent_type = request.headers.get("Content-Type")
        if sent_type is None or request.content_type in FORM_TYPES:
            raise web.HTTPForbidden(
                text='{"error": "with HTTP Basic only a raw body (e.g. application/x-tar) is '
                     'taken; log in on the page to change anything else"}',
                content_type="application/json")
    elif csrf:
        if who.via != "session" or who.csrf is None:
            raise web.HTTPForbidden(text='{"error": "log in on the page to change anything"}',
                                    content_type="application/json")
        sent = await csrf_token_of(request)
        if not sent or not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"),
                                               who.csrf.encode()):
            raise web.HTTPForbidden(text='{"error": "missing or wrong CSRF token; reload the page"}',
                                    content_type="application/json")
    return who


# ---------------------------------------------------------------------- the login page


class LoginRoutes:
    """GET/POST /login and POST /logout (CONTRACTS.md "Web endpoints")."""

    def __init__(self, accounts: Accounts, page: Callable[[], str]) -> None:
        self.accounts = accounts
        self._page = page

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/login", self.form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)

    def _render(self, message: str | None, status: int, headers: dict[str, str] | None = None
                ) -> web.Response:
        html = self._page()
        if message:
            # the only text put into the page is ours, escaped anyway
            from html import escape

            html = html.replace("<!--message-->", f'<p id="message" role="alert">{escape(message)}</p>')
        return web.Response(text=html, content_type="text/html", status=status,
                            headers={"Cache-Control": "no-store", **(headers or {})})

    async def form(self, request: web.Request) -> web.Response:
        if not self.accounts.logins:
            return self._render("No login is configured on this gateway: set [[web.users]] "
                                "(schwebe web hash-password makes the hash).", 200)
        return self._render(None, 200)

    async def login(self, request: web.Request) -> web.Response:
        client = request.remote or "?"
        form = await request.post()
        name, password = form.get("username"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return self._render("Enter a user name and a password.", 400)
        wait = self.accounts.retry_after(client, name[:MAX_FIELD])
        if wait > 0:
            seconds = str(max(1, round(wait + 0.5)))
            return self._render(f"Too many failed logins: try again in {seconds} s.", 429,
                                {"Retry-After": seconds})
        user = await self.accounts.check(name, password, client)
        if user is None:
            return self._render("Wrong user name or password.", 401)
        token, _ = self.accounts.open(user)
        log.info("web login", extra={"fields": {"user": user.name, "role": user.role,
                                                "client": client}})
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.secure,
                        path="/")
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        # the middleware has checked the session and its CSRF token (a POST like any other)
        self.accounts.close(request.cookies.get(COOKIE))
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp
