"""One Basics Station router (a local packet forwarder as the server sees it) and the file
that keeps its router_config history across restarts.

The history says which router_config was in force when: a frame is judged by the one in
force when it was heard. The file is rewritten only when the server sends a different
configuration (once per reconnect at most), with fsync and rename, so flash wear stays nil.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path
from typing import Any, Final

import aiohttp

from gateway.forward.station_msgs import RouterConfig, XtimeClock, eui_str

#: router_config versions kept per router (each with the time it came into force).
HISTORY: Final = 8
MAX_LOCALS: Final = 128  # rctx is 7 bits


class Router:
    """One station towards the server: its websocket, local gateways and router_config."""

    def __init__(self, router_id: int) -> None:
        self.router_id = router_id
        self.locals: list[int | None] = []  # index = rctx
        self.clocks: dict[int | None, XtimeClock] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.keepalive: asyncio.Task[None] | None = None
        self.muxs_uri: str | None = None
        self.muxs_failures = 0
        self.history: list[tuple[int, RouterConfig]] = []  # (since_us, config), oldest first
        self.config_source = "none"  # "none", "saved", "server"
        # ping payload -> its pong: a pong confirms only what was sent before its own ping
        self.pings: dict[bytes, asyncio.Future[None]] = {}
        self.ping_seq = 0
        self.muxtime: tuple[float, float] | None = None  # (MuxTime, monotonic when received)
        self.gps_offset_us: int | None = None
        self.counters: dict[str, int] = {"updf": 0, "jreq": 0, "propdf": 0, "rejoin": 0,
                                         "dnmsg": 0, "dntxed": 0}

    async def ping(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:  # noqa: ASYNC109
        """Ping and wait for its own pong: the server has read everything sent before."""
        self.ping_seq += 1
        payload = self.ping_seq.to_bytes(8, "big")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pings[payload] = fut
        try:
            await ws.ping(payload)
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            self.pings.pop(payload, None)
            if not fut.done():
                fut.cancel()

    def pong(self, payload: bytes) -> None:
        fut = self.pings.pop(payload, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def fail_pings(self, exc: BaseException) -> None:
        for fut in self.pings.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pings.clear()

    def rctx(self, local: int | None, rng: random.Random) -> int:
        if local not in self.locals:
            if len(self.locals) >= MAX_LOCALS:
                return 0
            self.locals.append(local)
            self.clocks[local] = XtimeClock(len(self.locals) - 1, rng)
        return self.locals.index(local)

    def config_at(self, received_us: int) -> RouterConfig | None:
        """The router_config in force when a frame was heard (the oldest known for older frames)."""
        chosen = self.history[0][1] if self.history else None
        for since, cfg in self.history:
            if since <= received_us:
                chosen = cfg
        return chosen

    def health(self) -> dict[str, Any]:
        current = self.history[-1][1] if self.history else None
        return {"router": eui_str(self.router_id), "connected": self.ws is not None and not self.ws.closed,
                "muxs": self.muxs_uri, "local_euis": [None if e is None else f"{e:016x}" for e in self.locals],
                "router_config": None if current is None else {**current.summary(), "from": self.config_source},
                "concentrator_restarts": sum(c.restarts for c in self.clocks.values()),
                **self.counters}


def load_history(path: Path) -> list[tuple[int, RouterConfig]]:
    """The saved history, oldest first; ValueError/KeyError/TypeError when it is unusable."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    return [(int(h["since_us"]), RouterConfig.parse(h["router_config"])) for h in saved["history"]][-HISTORY:]


def save_history(path: Path, history: list[tuple[int, RouterConfig]]) -> None:
    data = {"history": [{"since_us": s, "router_config": dict(c.raw)}
                        for s, c in history]}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
