"""What a technician can do from the page: check each backend, download the buffer, see the
running config with its secrets masked, restart a forwarder. Each needs the technician role
(state changes also the session's CSRF token) and is logged with who did it."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.web.session import require

log = logging.getLogger("schwebe.web")

_END = object()


class Actions:
    def __init__(self, *, check: Callable[[], Awaitable[list[dict[str, Any]]]],
                 running_config: Callable[[], dict[str, Any]],
                 restart_forwarder: Callable[[str], Awaitable[bool]],
                 buffer_path: Path, close_spot: Callable[[str, bool], bool]) -> None:
        self._check = check
        self._running_config = running_config
        self._restart = restart_forwarder
        self._buffer_path = buffer_path
        self._close_spot = close_spot
        self._checking = asyncio.Lock()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/config/running", self.running_config)
        app.router.add_post("/api/actions/check", self.check)
        app.router.add_post("/api/actions/restart", self.restart)
        app.router.add_get("/api/buffer/export", self.export)
        app.router.add_post("/api/actions/spot", self.spot)

    async def spot(self, request: web.Request) -> web.Response:
        """Close a spot (roadworks, an event) or reopen it: {"spot": ID, "closed": true|false}."""
        who = await require(request, "technician")
        try:
            body = await request.json()
            spot, closed = str(body["spot"])[:200], body["closed"]
            if not isinstance(closed, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'send {"spot": ID, "closed": true|false}'}, status=400)
        if not self._close_spot(spot, closed):
            return web.json_response({"error": f"no spot {spot!r}"}, status=404)
        log.warning("spot %s from the page", "closed" if closed else "reopened",
                    extra={"fields": {"user": who.user, "spot_id": spot}})
        return web.json_response({"spot": spot, "closed": closed})

    async def running_config(self, request: web.Request) -> web.Response:
        await require(request, "technician", csrf=False)
        return web.json_response(self._running_config(), dumps=lambda o: json.dumps(o, default=str))

    async def check(self, request: web.Request) -> web.Response:
        who = await require(request, "technician")
        if self._checking.locked():
            return web.json_response({"error": "a check is running; try again when it ends"},
                                     status=409)
        async with self._checking:
            results = await self._check()
        log.info("connectivity check", extra={"fields": {
            "user": who.user, "ok": [r["name"] for r in results if r["ok"]],
            "failed": [r["name"] for r in results if not r["ok"]]}})
        return web.json_response({"results": results})

    async def restart(self, request: web.Request) -> web.Response:
        who = await require(request, "technician")
        try:
            body = await request.json()
            name = str(body["forwarder"])[:64]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'send {"forwarder": NAME}'}, status=400)
        if not await self._restart(name):
            return web.json_response({"error": f"no forwarder {name!r}"}, status=404)
        log.warning("forwarder restarted from the page", extra={"fields": {
            "user": who.user, "forwarder": name}})
        return web.json_response({"restarted": name})

    async def export(self, request: web.Request) -> web.StreamResponse:
        """Every record in the buffer as JSON Lines, streamed (the store is read read-only
        beside the running daemon, as `schwebe buffer export` does)."""
        who = await require(request, "technician", csrf=False)
        from gateway.cli.buffer import export_rows

        log.info("buffer export downloaded", extra={"fields": {"user": who.user}})
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        resp = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="schwebe-buffer-{stamp}.jsonl"',
            "Cache-Control": "no-store"})
        await resp.prepare(request)
        # SQLite reads in one thread of their own; a bounded queue keeps memory flat and lets
        # a slow phone slow only this download
        chunks: queue.Queue[object] = queue.Queue(maxsize=8)
        stop = threading.Event()

        def produce() -> None:
            lines: list[str] = []
            try:
                for row in export_rows(self._buffer_path):
                    lines.append(json.dumps(row, separators=(",", ":")))
                    if len(lines) >= 500:
                        chunks.put("\n".join(lines) + "\n")
                        lines = []
                        if stop.is_set():
                            return
                if lines:
                    chunks.put("\n".join(lines) + "\n")
            except Exception as exc:  # a damaged store: say so at the end of the file
                chunks.put(json.dumps({"error": str(exc)[:200]}) + "\n")
            finally:
                chunks.put(_END)

        worker = threading.Thread(target=produce, name="buffer-export", daemon=True)
        worker.start()
        try:
            while (chunk := await asyncio.to_thread(chunks.get)) is not _END:
                assert isinstance(chunk, str)
                await resp.write(chunk.encode())
        finally:
            stop.set()
            while worker.is_alive():  # let the producer finish its put and see the stop
                try:
                    chunks.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp
