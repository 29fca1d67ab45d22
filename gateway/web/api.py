"""The JSON and text endpoints: /healthz, /api/status, /api/history, /api/session, /metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.metrics import Metrics
from gateway.web.history import History
from gateway.web.session import principal

StatusFn = Callable[[], dict[str, Any]]


class Api:
    def __init__(self, *, status: StatusFn, metrics: Metrics, healthy: Callable[[], bool],
                 history: History) -> None:
        self._status = status
        self._metrics = metrics
        self._healthy = healthy
        self._history = history

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/history", self.history)
        app.router.add_get("/api/session", self.session)
        app.router.add_get("/metrics", self.prometheus)

    async def healthz(self, request: web.Request) -> web.Response:
        # liveness only (systemd's watchdog); readiness is the verdict in /api/status
        ok = self._healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status(), dumps=dumps)

    async def history(self, request: web.Request) -> web.Response:
        return web.json_response(self._history.view(), dumps=dumps)

    async def session(self, request: web.Request) -> web.Response:
        """Who the page is logged in as, and the CSRF token its scripts send back."""
        who = principal(request)
        assert who is not None  # the middleware let no one through without one
        return web.json_response({"user": who.user, "role": who.role, "via": who.via,
                                  "csrf_token": who.csrf},
                                 headers={"Cache-Control": "no-store"})

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=self._metrics.prometheus(), content_type="text/plain")


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
